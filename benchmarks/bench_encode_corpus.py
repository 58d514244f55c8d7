"""`mimi encode` throughput on a corpus against the codec core's own offline encode speed.

  python benchmarks/bench_encode_corpus.py [--files 200] [--min-s 1] [--max-s 20] [--device cpu]
                                           [--readers 2,8]

Both figures come from the same process: the core encodes one 30 s clip (median of 3), then the
whole dataset pipeline (reading, resampling, batching, Parquet writing) runs on the corpus, once
per number of background readers given.
"""
import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from mimi_cli.bench import timed
from mimi_cli.codec import load_codec
from mimi_cli.encode import EncodeOptions, encode_dataset


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=200)
    ap.add_argument("--min-s", type=float, default=1.0)
    ap.add_argument("--max-s", type=float, default=20.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--readers", default=None, help="comma-separated reader counts (default: mimi's)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    work = Path(tempfile.mkdtemp(prefix="mimi-corpus-"))
    subprocess.run([sys.executable, str(Path(__file__).parents[1] / "scripts" / "make_audio.py"), str(work / "audio"),
                    "--files", str(a.files), "--min-s", str(a.min_s), "--max-s", str(a.max_s)], check=True)
    codec = load_codec("synthetic", device=a.device)
    clip = 0.1 * torch.randn(1, 1, 30 * 24000)
    codec.encode(clip, 8)
    times = [timed(lambda: codec.encode(clip, 8), codec.device) for _ in range(3)]
    core = 30 / statistics.median(times)
    print(f"core offline encode: {core:.1f}x real time (30 s clip), {codec.device}")
    for readers in a.readers.split(",") if a.readers else [None]:
        options = EncodeOptions(overwrite=True, **({} if readers is None else {"readers": int(readers)}))
        summary = encode_dataset(codec, [str(work / "audio")], work / "tokens.parquet", options)
        pipeline = summary.audio_seconds / summary.wall_seconds
        print(f"mimi encode pipeline, {options.readers} readers: {summary.files} files, "
              f"{summary.audio_seconds / 60:.1f} min of audio in {summary.wall_seconds:.1f} s = {pipeline:.1f}x "
              f"real time ({pipeline / core:.0%} of the core)", flush=True)


if __name__ == "__main__":
    main()
