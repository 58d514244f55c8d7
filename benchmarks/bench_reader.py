"""How fast `TokenDataset` feeds a training loop, against a bare pyarrow scan of the same shards.

  python benchmarks/bench_reader.py [--rows 20000] [--min-frames 50] [--max-frames 400] [--workers 0,2]
                                    [--batch-sizes 16,64] [--rounds 3]

The dataset is written with mimi's own shard writer (random codes, K=8). Each round times, one
after the other: a bare scan (pyarrow reads the `codes` column shard by shard and hands its flat
values to numpy, the least any reader must do), then a DataLoader over `TokenDataset` for each
number of workers and batch size (shuffled, batches padded by `collate`, worker start-up
included). The figure is frames per second, each as a median over the rounds, and its ratio to
the bare scan's.
"""
import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from torch.utils.data import DataLoader

from mimi_cli.data import TokenDataset, collate
from mimi_cli.formats.shards import Row, ShardWriter, SourceInfo

K = 8


def write(directory: Path, rows: int, lo: int, hi: int) -> int:
    rng = np.random.default_rng(0)
    meta = {"tool": "mimi-cli", "model": {"source": "synthetic"}, "num_codebooks": K, "codebook_size": 2048,
            "frame_rate": 12.5, "sample_rate": 24000, "channels": "mix"}
    writer = ShardWriter(directory, meta, sidecar=True)
    frames = 0
    for i in range(rows):
        n = int(rng.integers(lo, hi + 1))
        frames += n
        writer.add(Row(f"utt{i:06d}", -1, rng.integers(0, 2048, (K, n), dtype=np.int16), n * 1920,
                       SourceInfo(24000, 1, 1, 1)))
        writer.commit_if_due()
    writer.flush()
    return frames


def bare_scan(directory: Path) -> int:
    frames = 0
    for shard in sorted(directory.glob("*.parquet")):
        for batch in pq.ParquetFile(shard).iter_batches(columns=["codes"]):
            values = batch.column("codes").values.values.to_numpy()  # every token, as numpy
            frames += values.size // K
    return frames


def loader(directory: Path, workers: int, batch_size: int) -> int:
    ds = TokenDataset(directory, shuffle=True, seed=0)
    return sum(int(b["lengths"].sum()) for b in DataLoader(ds, batch_size=batch_size, num_workers=workers,
                                                          collate_fn=collate))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--min-frames", type=int, default=50)
    ap.add_argument("--max-frames", type=int, default=400)
    ap.add_argument("--workers", default="0,2")
    ap.add_argument("--batch-sizes", default="16,64")
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="mimi-reader-")) / "tokens"
    total = write(directory, a.rows, a.min_frames, a.max_frames)
    size = sum(p.stat().st_size for p in directory.glob("*.parquet"))
    print(f"{a.rows} rows, {total} frames of {K} codebooks, {size / 2**20:.0f} MiB in "
          f"{len(list(directory.glob('*.parquet')))} shards")
    runs = {"bare pyarrow scan": lambda: bare_scan(directory)}
    for w in map(int, a.workers.split(",")):
        for b in map(int, a.batch_sizes.split(",")):
            runs[f"TokenDataset, {w} workers, batch {b}"] = lambda w=w, b=b: loader(directory, w, b)
    rates: dict[str, list[float]] = {name: [] for name in runs}
    for r in range(a.rounds):
        for name, fn in runs.items():
            start = time.perf_counter()
            frames = fn()
            seconds = time.perf_counter() - start
            assert frames == total, (name, frames, total)
            rates[name].append(frames / seconds)
            print(f"round {r + 1}: {name}: {seconds:.2f} s", flush=True)
    base = statistics.median(next(iter(rates.values())))
    for name, values in rates.items():
        m = statistics.median(values)
        print(f"  {name:36s} {m / 1e6:7.2f} M frames/s  {m / base:6.1%} of the bare scan")


if __name__ == "__main__":
    main()
