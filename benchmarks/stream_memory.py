"""Does `mimi stream-encode` grow with stream length? Feeds N minutes of audio as fast as it
is consumed and samples the process's resident memory.

  python benchmarks/stream_memory.py [--minutes 5]
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
ap.add_argument("--minutes", type=float, default=5)
a = ap.parse_args()
env = {**os.environ, "MIMI_WEIGHTS": "synthetic"}
proc = subprocess.Popen([sys.executable, "-m", "mimi_cli.cli", "stream-encode", "--quiet"], stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
header = (b"RIFF" + struct.pack("<I", 0xFFFFFFFF) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 1, 24000, 48000, 2, 16)
          + b"data" + struct.pack("<I", 0xFFFFFFFF))
second = (0.2 * np.sin(np.arange(24000) / 9) * 32767).astype("<i2").tobytes()


def feed():
    proc.stdin.write(header)
    for _ in range(int(a.minutes * 60)):
        proc.stdin.write(second)
    proc.stdin.close()


def rss_mb() -> float:
    with open(f"/proc/{proc.pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


threading.Thread(target=feed, daemon=True).start()
threading.Thread(target=lambda: proc.stdout.read(), daemon=True).start()
samples = []
while proc.poll() is None:
    time.sleep(5)
    try:
        samples.append(rss_mb())
    except (OSError, StopIteration):
        break
warm = samples[2:] if len(samples) > 4 else samples
print(f"{a.minutes:g} min of audio through stream-encode: RSS after warm-up {warm[0]:.0f} MB, "
      f"at the end {warm[-1]:.0f} MB, max {max(warm):.0f} MB ({len(samples)} samples)")
