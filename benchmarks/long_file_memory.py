"""Peak memory of an offline encode of a long file (default one hour), through the library.

  python benchmarks/long_file_memory.py [--minutes 60]
"""
import argparse
import time

import torch

from mimi_cli.bench import peak_rss_mb
from mimi_cli.codec import SAMPLE_RATE, load_codec

ap = argparse.ArgumentParser()
ap.add_argument("--minutes", type=float, default=60)
a = ap.parse_args()
codec = load_codec("synthetic", device="cpu")
audio = 0.1 * torch.randn(1, 1, int(a.minutes * 60 * SAMPLE_RATE))
print(f"audio {audio.numel() * 4 / 2**20:.0f} MB in memory; RSS before encode {peak_rss_mb():.0f} MB")
start = time.perf_counter()
codes = codec.encode(audio, 8)
took = time.perf_counter() - start
print(f"{a.minutes:g} min -> codes {tuple(codes.shape)} in {took:.0f} s ({a.minutes * 60 / took:.1f}x real time); "
      f"peak RSS {peak_rss_mb():.0f} MB")
