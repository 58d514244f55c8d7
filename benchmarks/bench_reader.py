"""How fast `TokenDataset` feeds a training loop, against a bare pyarrow scan of the same shards.

  python benchmarks/bench_reader.py [--rows 20000] [--min-frames 50] [--max-frames 400] [--workers 0,2]
                                    [--batch-sizes 16,64] [--epochs 3]

The dataset is written with mimi's own shard writer (random codes, K=8). Each figure is frames
per second, the median over `--epochs` epochs, with its ratio to the bare scan's:

- bare pyarrow scan: pyarrow reads the `codes` column shard by shard and hands its flat values
  to numpy, the least any reader must do (single process; pyarrow's own threads allowed).
- TokenDataset: a DataLoader over it (shuffled, batches padded by `collate`), with persistent
  workers; the first epoch, with the workers' start-up, is timed apart and not in the median.
- DataLoader hand-over alone: the same DataLoader settings over a dataset that yields rows
  already in memory (the same lengths), so no reading at all: what a DataLoader's workers cost
  by themselves, the ceiling for any dataset read through them.
"""
import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from mimi_cli.data import TokenDataset, collate
from mimi_cli.formats.shards import Row, ShardWriter, SourceInfo

K = 8


def write(directory: Path, rows: int, lo: int, hi: int) -> list[int]:
    rng = np.random.default_rng(0)
    meta = {"tool": "mimi-cli", "model": {"source": "synthetic"}, "num_codebooks": K, "codebook_size": 2048,
            "frame_rate": 12.5, "sample_rate": 24000, "channels": "mix"}
    writer = ShardWriter(directory, meta, sidecar=True)
    lengths = []
    for i in range(rows):
        n = int(rng.integers(lo, hi + 1))
        lengths.append(n)
        writer.add(Row(f"utt{i:06d}", -1, rng.integers(0, 2048, (K, n), dtype=np.int16), n * 1920,
                       SourceInfo(24000, 1, 1, 1)))
        writer.commit_if_due()
    writer.flush()
    return lengths


def bare_scan(directory: Path) -> int:
    frames = 0
    for shard in sorted(directory.glob("*.parquet")):
        for batch in pq.ParquetFile(shard).iter_batches(columns=["codes"]):
            values = batch.column("codes").values.values.to_numpy()  # every token, as numpy
            frames += values.size // K
    return frames


class InMemory(IterableDataset):
    """Rows of the given lengths, made once per worker: a dataset that costs nothing to read."""

    def __init__(self, lengths: list[int]) -> None:
        self.lengths = lengths

    def __iter__(self):
        info = get_worker_info()
        index, readers = (info.id, info.num_workers) if info is not None else (0, 1)
        rows = [{"id": f"utt{i:06d}", "codes": torch.zeros(K, n, dtype=torch.int16)}
                for i, n in enumerate(self.lengths) if i % readers == index]
        yield from rows


def epochs(dataset, workers: int, batch_size: int, count: int) -> tuple[list[float], int]:
    """Seconds of each epoch, the first (with the workers' start-up) included, and the frames of one."""
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, collate_fn=collate,
                        persistent_workers=workers > 0)
    seconds = []
    for epoch in range(count):
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(epoch)
        start = time.perf_counter()
        frames = sum(int(b["lengths"].sum()) for b in loader)
        seconds.append(time.perf_counter() - start)
    return seconds, frames


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--min-frames", type=int, default=50)
    ap.add_argument("--max-frames", type=int, default=400)
    ap.add_argument("--workers", default="0,2")
    ap.add_argument("--batch-sizes", default="16,64")
    ap.add_argument("--epochs", type=int, default=3)
    a = ap.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="mimi-reader-")) / "tokens"
    lengths = write(directory, a.rows, a.min_frames, a.max_frames)
    total = sum(lengths)
    size = sum(p.stat().st_size for p in directory.glob("*.parquet"))
    print(f"{a.rows} rows, {total} frames of {K} codebooks, {size / 2**20:.0f} MiB in "
          f"{len(list(directory.glob('*.parquet')))} shards; torch {torch.__version__}")
    bare_scan(directory)  # the files into the page cache, as they are for every run after
    bare = []
    for _ in range(a.epochs):
        start = time.perf_counter()
        assert bare_scan(directory) == total
        bare.append(time.perf_counter() - start)
    base = total / statistics.median(bare)
    print(f"  {'bare pyarrow scan':50s} {base / 1e6:6.2f} M frames/s  100.0%")
    for w in map(int, a.workers.split(",")):
        for b in map(int, a.batch_sizes.split(",")):
            for name, dataset in (("TokenDataset", TokenDataset(directory, shuffle=True, seed=0)),
                                  ("DataLoader hand-over alone", InMemory(lengths))):
                seconds, frames = epochs(dataset, w, b, a.epochs + 1)
                assert frames == total, (name, frames, total)
                rate = total / statistics.median(seconds[1:])
                print(f"  {f'{name}, {w} workers, batch {b}':50s} {rate / 1e6:6.2f} M frames/s  {rate / base:6.1%}"
                      f"  (first epoch {seconds[0]:.2f} s)", flush=True)


if __name__ == "__main__":
    main()
