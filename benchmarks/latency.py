"""Live-stream latency, three ways:

  pipe: End-to-end latency of `mimi stream-encode` in a real pipe, and whether encode | decode keeps up.
    python benchmarks/latency.py pipe [--seconds 20] [--weights synthetic] [--threads N] [--write-ms 80]
                                      [--input wav|ogg|webm]

    Audio is written into the pipe at real-time pace, one 80 ms frame at a time (or in pieces of
    --write-ms, as a sound card delivers periods). Latency is the time from writing a frame's last
    sample to reading that frame's codes from the other end. `--input ogg|webm` sends the audio as
    Ogg/Opus or WebM/Opus (libopus, 20 ms packets), each packet's bytes when its last sample is due,
    so latency counts from the same moment as for WAV and includes the Opus decoder's share.

  timeline: Where a piped frame's latency goes: `encode_stream` in this process, fed over an OS pipe at
    real-time pace, with the codec step timed. Splits the latency into read -> step start, the step,
    and step end -> codes written (the pipe's two ends in another process add their own wake-ups).

    python benchmarks/latency.py timeline [--frames 150] [--threads 2] [--weights synthetic]

  parts: Where a batch-1 streaming encode step goes, with idle gaps as in a live pipe.
    python benchmarks/latency.py parts [--gap-ms 65] [--frames 150] [--tiny] [--moshi]

    Times the SEANet front, the back (last downsampling), the transformer, the 12.5 Hz downsampling
    and the RVQ of whole-frame steps, each after `--gap-ms` of idling. `--tiny` runs the tiny test
    config widened to 8 layers: next to no arithmetic, so what it takes is the per-op overhead of
    the eager step. `--moshi` also times Kyutai's reference step with the same gaps (run with the
    a python that has moshi installed and PYTHONPATH=.), for ratios taken in the same minute.
"""
import argparse
import dataclasses
import io
import os
import statistics
import subprocess
import sys
import threading
import time

import numpy as np
import torch
from commands import run_commands

from mimi_cli import streaming
from mimi_cli.codec import MimiConfig, load_codec
from mimi_cli.formats.pcm import streaming_wav_header


def _pipe_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--weights", default="synthetic")
    p.add_argument("--threads", type=int, default=None, help="torch threads of each mimi process (default: mimi's)")
    p.add_argument("--write-ms", type=int, default=80, help="write the audio in pieces this long (divides 80)")
    p.add_argument("--input", choices=["wav", "ogg", "webm"], default="wav", help="what goes into the pipe")


def _timeline_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--frames", type=int, default=150)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--weights", default="synthetic")


def _parts_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--gap-ms", type=float, default=65)
    p.add_argument("--frames", type=int, default=150)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--moshi", action="store_true")


def pipe(a: argparse.Namespace) -> None:
    env = {**os.environ, "MIMI_WEIGHTS": a.weights}
    MIMI = [sys.executable, "-m", "mimi_cli.cli"]
    HEADER = streaming_wav_header(24000, "s16le")
    frames = int(a.seconds * 12.5)
    audio = (0.2 * np.sin(np.arange(frames * 1920) / 9) * 32767).astype("<i2").tobytes()
    pieces_of = None  # for a container: the bytes of each 20 ms piece, by its index
    if a.input != "wav":
        a.write_ms = 20
        HEADER, pieces_of = b"", opus_pieces(np.frombuffer(audio, "<i2") / 32768, a.input)


    def feed(proc, sent, ready):
        proc.stdin.write(HEADER)
        proc.stdin.flush()
        ready.wait(60)  # the model is loaded and warmed up: the clock starts now
        start = time.perf_counter()
        pieces = 80 // a.write_ms
        step = 3840 // pieces
        for f in range(frames):
            for p in range(pieces):  # piece p of frame f is complete at (f + (p + 1) / pieces) * 80 ms
                time.sleep(max(0.0, start + (f + (p + 1) / pieces) * 0.08 - time.perf_counter()))
                if pieces_of is not None:
                    proc.stdin.write(pieces_of[f * pieces + p])
                else:
                    proc.stdin.write(audio[f * 3840 + p * step:f * 3840 + (p + 1) * step])
                proc.stdin.flush()
            sent.append(time.perf_counter())
        proc.stdin.close()


    if pieces_of is not None:  # the headers of the container, before the clock starts
        first = pieces_of[0]
        HEADER, pieces_of[0] = first, b""

    # 1. stream-encode alone: per-frame latency.
    THREADS = ["--threads", str(a.threads)] if a.threads else []
    enc = subprocess.Popen([*MIMI, "stream-encode", *THREADS, "--output-format", "binary", "--quiet"],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, bufsize=0)
    sent: list[float] = []
    ready = threading.Event()
    threading.Thread(target=feed, args=(enc, sent, ready), daemon=True).start()
    enc.stdout.read(20)  # the token header: written once the model is ready and the WAV header read
    ready.set()
    got = []
    while len(got) < frames:
        if len(enc.stdout.read(16)) < 16:
            break
        got.append(time.perf_counter())
    enc.wait()
    lat = (np.array(got[:len(sent)]) - np.array(sent[:len(got)])) * 1000
    print(f"stream-encode: {len(lat)} frames, latency from a frame's last sample to its codes: "
          f"p50 {np.percentile(lat, 50):.1f} ms, p99 {np.percentile(lat, 99):.1f} ms, max {lat.max():.1f} ms")

    # 2. stream-encode | stream-decode: does audio come out at real-time pace?
    enc = subprocess.Popen([*MIMI, "stream-encode", *THREADS, "--quiet"], stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, bufsize=0)
    dec = subprocess.Popen([*MIMI, "stream-decode", *THREADS, "--raw", "--quiet"], stdin=enc.stdout,
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, bufsize=0)
    sent = []
    ready = threading.Event()
    threading.Thread(target=feed, args=(enc, sent, ready), daemon=True).start()
    time.sleep(10)  # both models loaded and warmed up (no header to wait for with --raw)
    ready.set()
    arrivals = []
    while True:
        chunk = dec.stdout.read(3840)
        if not chunk:
            break
        arrivals.append(time.perf_counter())
    lag = (np.array(arrivals[:len(sent)]) - np.array(sent[:len(arrivals)])) * 1000
    half = len(lag) // 2
    drift = np.median(lag[half:]) - np.median(lag[:half])
    keeps_up = abs(drift) < 40 and np.percentile(lag, 99) < 500
    print(f"stream-encode | stream-decode: {len(arrivals)} frames of audio out; lag behind the input "
          f"p50 {np.percentile(lag, 50):.0f} ms, p99 {np.percentile(lag, 99):.0f} ms; "
          f"second half vs first half median lag {drift:+.0f} ms: "
          + ("keeps up with real time" if keeps_up else "FALLS BEHIND real time"))


def opus_pieces(audio: np.ndarray, container: str) -> list[bytes]:
    """24 kHz audio as Ogg/Opus or WebM/Opus, libopus at 32 kbit/s: the bytes each 20 ms piece
    adds to the stream (the container's headers come with the first)."""
    import av

    out: list[bytes] = []

    class Sink:
        def write(self, data) -> int:
            out.append(bytes(data))
            return len(data)

    options = {"flush_packets": "1", **({"page_duration": "20000"} if container == "ogg" else
                                        {"live": "1", "cluster_time_limit": "20"})}
    mux = av.open(Sink(), "w", format=container, options=options)
    stream = mux.add_stream("libopus", rate=24000)
    stream.layout, stream.bit_rate = "mono", 32000
    pieces: list[bytes] = []
    for i in range(0, audio.size, 480):
        frame = av.AudioFrame.from_ndarray(audio[None, i:i + 480].astype(np.float32), format="flt", layout="mono")
        frame.sample_rate, frame.pts = 24000, i
        for packet in stream.encode(frame):
            mux.mux(packet)
        pieces.append(b"".join(out))
        out.clear()
    for packet in stream.encode(None):
        mux.mux(packet)
    mux.close()
    pieces[-1] += b"".join(out)
    return pieces


def timeline(a: argparse.Namespace) -> None:
    torch.set_num_threads(a.threads)
    codec = load_codec(a.weights, device="cpu")
    HEADER = streaming_wav_header(24000, "s16le")
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
          f"step {np.median(end_t - start_t) * 1e3:.2f} ms, "
          f"step end -> written {np.median(out_t - end_t) * 1e3:.2f} ms, "
          f"total {np.median(out_t - sent_t) * 1e3:.2f} ms")


def parts(a: argparse.Namespace) -> None:
    if a.frames <= 10:
        raise SystemExit("latency.py parts: --frames must be above 10 (the first 10 steps warm up)")
    torch.set_num_threads(a.threads)
    config = dataclasses.replace(MimiConfig.tiny(), num_layers=8) if a.tiny else MimiConfig()
    codec = load_codec("synthetic:3" if a.tiny else "synthetic:0", device="cpu", config=config)
    spent: dict[str, float] = {}


    def timed(obj, name: str, label: str) -> None:
        """Wraps obj.name so that each call's time adds to spent[label]."""
        fn = getattr(obj, name)

        def wrapper(*args, **kwargs):
            t = time.perf_counter()
            out = fn(*args, **kwargs)
            spent[label] = spent.get(label, 0.0) + time.perf_counter() - t
            return out
        setattr(obj, name, wrapper)


    timed(codec.encoder, "front", "front")
    timed(codec.encoder, "back", "back")
    timed(codec.encoder_transformer, "forward", "transformer")
    timed(codec.downsample, "forward", "downsample")
    timed(codec.quantizer, "encode", "rvq")
    state = codec.init_encoder_state(1)
    frame = 0.1 * torch.randn(1, codec.frame_samples)
    rows = []
    for _ in range(a.frames):
        spent.clear()
        time.sleep(a.gap_ms / 1000)
        t = time.perf_counter()
        codec.encode_step(state, frame)
        rows.append({**spent, "step": time.perf_counter() - t})
    rows = rows[10:]
    print(f"{'tiny (8 layers)' if a.tiny else 'full'} codec, {a.threads} threads, {a.gap_ms:.0f} ms gaps, p50 ms:")
    for key in rows[0]:
        print(f"  {key:12s} {statistics.median(r[key] for r in rows) * 1000:6.2f}")

    if a.moshi:
        from mimi_cli.bench import MoshiEngine

        step = MoshiEngine(load_codec("synthetic:0", device="cpu"), 8).stream_encoder(1)
        x = 0.1 * torch.randn(1, 1, 1920)
        times = []
        for _ in range(a.frames):
            time.sleep(a.gap_ms / 1000)
            t = time.perf_counter()
            step(x)
            times.append(time.perf_counter() - t)
        print(f"  moshi step   {statistics.median(times[10:]) * 1000:6.2f}")


COMMANDS = {"pipe": (_pipe_args, pipe), "timeline": (_timeline_args, timeline), "parts": (_parts_args, parts)}


def main() -> None:
    run_commands(__doc__, COMMANDS)


if __name__ == "__main__":
    main()
