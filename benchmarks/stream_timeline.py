"""Where a piped frame's latency goes: `encode_stream` in this process, fed over an OS pipe at
real-time pace, with the codec step timed. Splits the latency into read -> step start, the step,
and step end -> codes written (the pipe's two ends in another process add their own wake-ups).

  python benchmarks/stream_timeline.py [--frames 150] [--threads 2] [--weights synthetic]
"""
import argparse
import io
import os
import struct
import threading
import time

import numpy as np
import torch

from mimi_cli import streaming
from mimi_cli.codec.load import load_codec

ap = argparse.ArgumentParser()
ap.add_argument("--frames", type=int, default=150)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--weights", default="synthetic")
a = ap.parse_args()
torch.set_num_threads(a.threads)
codec = load_codec(a.weights, device="cpu")
HEADER = (b"RIFF" + struct.pack("<I", 0xFFFFFFFF) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 1, 24000, 48000, 2, 16)
          + b"data" + struct.pack("<I", 0xFFFFFFFF))
audio = (0.2 * np.sin(np.arange(a.frames * 1920) / 9) * 32767).astype("<i2").tobytes()
read_end, write_end = os.pipe()
sent: list[float] = []


def writer() -> None:
    os.write(write_end, HEADER)
    time.sleep(1.0)  # warm-up happens before the header is read; then the clock starts
    start = time.perf_counter()
    for f in range(a.frames):
        time.sleep(max(0.0, start + (f + 1) * 0.08 - time.perf_counter()))
        os.write(write_end, audio[f * 3840:(f + 1) * 3840])
        sent.append(time.perf_counter())
    os.close(write_end)


steps: list[tuple[float, float]] = []
encode_step = codec.encode_step


def timed_step(*args, **kwargs):
    t0 = time.perf_counter()
    out = encode_step(*args, **kwargs)
    if out.shape[-1]:
        steps.append((t0, time.perf_counter()))
    return out


codec.encode_step = timed_step


class Sink(io.RawIOBase):
    def __init__(self) -> None:
        self.times: list[float] = []

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        if len(b) == 16:  # one frame of 8 codebooks, binary
            self.times.append(time.perf_counter())
        return len(b)


sink = Sink()
threading.Thread(target=writer, daemon=True).start()
streaming.encode_stream(codec, os.fdopen(read_end, "rb", buffering=0), sink, 8, "binary")
n = min(len(sent), len(steps), len(sink.times))
frame_steps = steps[-n:]  # the first steps are the warm-up's
sent_t = np.array(sent[-n:])
start_t, end_t = np.array([s for s, _ in frame_steps]), np.array([e for _, e in frame_steps])
out_t = np.array(sink.times[-n:])
print(f"{n} frames, p50: read -> step start {np.median(start_t - sent_t) * 1e3:.2f} ms, "
      f"step {np.median(end_t - start_t) * 1e3:.2f} ms, step end -> written {np.median(out_t - end_t) * 1e3:.2f} ms, "
      f"total {np.median(out_t - sent_t) * 1e3:.2f} ms")
