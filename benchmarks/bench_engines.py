"""Local engine vs Ray engine (a local 2-CPU Ray cluster) on the same corpus, same process.

  python benchmarks/bench_engines.py [--files 60] [--max-s 12]
"""
import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import ray

from mimi_cli.codec import load_codec
from mimi_cli.encode import EncodeOptions, encode_dataset
from mimi_cli.ray_engine import RayEngine


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=60)
    ap.add_argument("--max-s", type=float, default=12.0)
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mimi-engines-"))
    subprocess.run([sys.executable, str(Path(__file__).parents[1] / "scripts" / "make_audio.py"), str(work / "audio"),
                    "--files", str(a.files), "--max-s", str(a.max_s)], check=True)
    codec = load_codec("synthetic", device="cpu")
    local = encode_dataset(codec, [str(work / "audio")], work / "local", EncodeOptions())
    print(f"local engine: {local.audio_seconds:.0f} s of audio in {local.wall_seconds:.1f} s = "
          f"{local.audio_seconds / local.wall_seconds:.1f}x real time")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    # Logical CPUs: the model workers and the read tasks share the 2 cores (readers need a share, or
    # the model workers would hold every CPU and nothing could be read).
    for workers, threads in ((1, 2), (2, 1)):
        start = time.perf_counter()
        engine = RayEngine("synthetic", device="cpu", workers=workers, cpus_per_worker=1.5 / workers,
                           threads_per_worker=threads, read_cpus=0.5)
        summary = encode_dataset(codec, [str(work / "audio")], work / f"ray{workers}", EncodeOptions(), engine=engine)
        took = time.perf_counter() - start
        print(f"ray engine, {workers} worker(s) x {threads} thread(s): {summary.audio_seconds:.0f} s of audio in "
              f"{took:.1f} s = {summary.audio_seconds / took:.1f}x real time (incl. worker start and model load)")


if __name__ == "__main__":
    main()
