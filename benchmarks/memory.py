"""Memory, two ways:

  long-file: Peak memory of an offline encode of a long file (default one hour), through the library.
    python benchmarks/memory.py long-file [--minutes 60]

  stream: Does `mimi stream-encode` grow with stream length? Feeds N minutes of audio as fast as it
    is consumed and samples the process's resident memory.

    python benchmarks/memory.py stream [--minutes 5]
"""
import argparse
import os
import subprocess
import sys
import threading
import time

import numpy as np
import torch
from commands import run_commands

from mimi_cli.bench import peak_rss_mb
from mimi_cli.codec import SAMPLE_RATE, load_codec
from mimi_cli.formats.pcm import streaming_wav_header


def _long_file_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--minutes", type=float, default=60)


def _stream_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--minutes", type=float, default=5)


def long_file(a: argparse.Namespace) -> None:
    codec = load_codec("synthetic", device="cpu")
    audio = 0.1 * torch.randn(1, 1, int(a.minutes * 60 * SAMPLE_RATE))
    print(f"audio {audio.numel() * 4 / 2**20:.0f} MB in memory; RSS before encode {peak_rss_mb():.0f} MB")
    start = time.perf_counter()
    codes = codec.encode(audio, 8)
    took = time.perf_counter() - start
    print(f"{a.minutes:g} min -> codes {tuple(codes.shape)} in {took:.0f} s ({a.minutes * 60 / took:.1f}x real time); "
          f"peak RSS {peak_rss_mb():.0f} MB")


def stream(a: argparse.Namespace) -> None:
    env = {**os.environ, "MIMI_WEIGHTS": "synthetic"}
    proc = subprocess.Popen([sys.executable, "-m", "mimi_cli.cli", "stream-encode", "--quiet"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    header = streaming_wav_header(24000, "s16le")
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


COMMANDS = {"long-file": (_long_file_args, long_file), "stream": (_stream_args, stream)}


def main() -> None:
    run_commands(__doc__, COMMANDS)


if __name__ == "__main__":
    main()
