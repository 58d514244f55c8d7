"""Codec speed on this machine, side by side with Kyutai's moshi when it is importable.

  python benchmarks/bench_codec.py [--compare moshi] [--seconds 30] [--threads 2] [--json out.json]

To compare with moshi, run it with a python that has `moshi` installed and this repo on the path:
  PYTHONPATH=. /path/to/moshi-venv/bin/python benchmarks/bench_codec.py --compare moshi
"""
from __future__ import annotations

import argparse
import json
import sys

from mimi_cli.bench import BenchSettings, format_report, run_bench


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default="synthetic")
    ap.add_argument("--compare", default=None)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--streams", default="1,4,16,32,64")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    settings = BenchSettings(seconds=a.seconds, streams=tuple(int(n) for n in a.streams.split(",")))
    result = run_bench(a.weights, device="cpu", dtype=a.dtype, threads=a.threads, settings=settings,
                       compare=a.compare, log=lambda m: print(m, file=sys.stderr))
    print(format_report(result))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result.as_dict(), f, indent=2)


if __name__ == "__main__":
    main()
