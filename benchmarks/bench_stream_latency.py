"""End-to-end latency of `mimi stream-encode` in a real pipe, and whether encode | decode keeps up.

  python benchmarks/bench_stream_latency.py [--seconds 20] [--weights synthetic] [--threads N]
                                            [--write-ms 80]

Audio is written into the pipe at real-time pace, one 80 ms frame at a time (or in pieces of
--write-ms, as a sound card delivers periods). Latency is the time from writing a frame's last
sample to reading that frame's codes from the other end.
"""
import argparse
import os
import struct
import subprocess
import sys
import threading
import time

import numpy as np

ap = argparse.ArgumentParser()
ap.add_argument("--seconds", type=float, default=20)
ap.add_argument("--weights", default="synthetic")
ap.add_argument("--threads", type=int, default=None, help="torch threads of each mimi process (default: mimi's)")
ap.add_argument("--write-ms", type=int, default=80, help="write the audio in pieces this long (divides 80)")
a = ap.parse_args()
env = {**os.environ, "MIMI_WEIGHTS": a.weights}
MIMI = [sys.executable, "-m", "mimi_cli.cli"]
HEADER = (b"RIFF" + struct.pack("<I", 0xFFFFFFFF) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 1, 24000, 48000, 2, 16)
          + b"data" + struct.pack("<I", 0xFFFFFFFF))
frames = int(a.seconds * 12.5)
audio = (0.2 * np.sin(np.arange(frames * 1920) / 9) * 32767).astype("<i2").tobytes()


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
            proc.stdin.write(audio[f * 3840 + p * step:f * 3840 + (p + 1) * step])
            proc.stdin.flush()
        sent.append(time.perf_counter())
    proc.stdin.close()


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
enc = subprocess.Popen([*MIMI, "stream-encode", *THREADS, "--quiet"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                       stderr=subprocess.DEVNULL, env=env, bufsize=0)
dec = subprocess.Popen([*MIMI, "stream-decode", *THREADS, "--raw", "--quiet"], stdin=enc.stdout, stdout=subprocess.PIPE,
                       stderr=subprocess.DEVNULL, env=env, bufsize=0)
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
