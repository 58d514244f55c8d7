"""`TokenDataset`: a token dataset as a PyTorch IterableDataset, split by row groups across
distributed ranks and DataLoader workers, every row once per epoch."""
from __future__ import annotations

import random
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from ..formats.shards import (
    DatasetError,
    NoProvenanceError,
    dataset_root,
    open_shard,
    read_group,
    read_metadata,
    shard_files,
)
from ..formats.storage import Location, as_location

CROPS = ("random", "start")


@dataclass(frozen=True)
class _Unit:
    """One row group: the unit of work that ranks and workers share out."""

    shard: Location
    group: int
    first_row: int
    num_rows: int


class TokenDataset(IterableDataset):
    """Rows of a token dataset (`mimi encode` output: a Parquet file, a shard directory, an npy
    dataset, or a pyarrow-filesystem URI) as `{"id", "codes": int16 [K, T], *columns}`.

    - Row groups are shared out across ranks (`rank` / `world_size`, else those of
      `torch.distributed` if it is initialised when the dataset is made or `set_epoch` is
      called) and DataLoader workers: each row is read by one of them, once per epoch.
    - `shuffle`: the row groups in a seeded order (the same on every rank), then rows through a
      buffer of `buffer_size`; `set_epoch(n)` gives epoch n's order, reproducibly.
    - `num_codebooks`: the first K codebooks (default: all stored). `max_frames`: rows longer
      than this are cropped, at a seeded random start (`crop="random"`) or from their start.
    - Memory holds one row group and the shuffle buffer, not the dataset. Rows a dataset cannot
      use (ragged codes, out-of-range values) are skipped with a warning.
    """

    def __init__(self, path: str | Location, num_codebooks: int | None = None, columns: Sequence[str] = (),
                 shuffle: bool = False, seed: int = 0, rank: int | None = None, world_size: int | None = None,
                 max_frames: int | None = None, crop: str = "random", buffer_size: int = 1024) -> None:
        super().__init__()
        self.path = as_location(path)
        if crop not in CROPS:
            raise ValueError(f"crop={crop!r}: one of {', '.join(CROPS)}")
        if max_frames is not None and max_frames < 1:
            raise ValueError(f"max_frames={max_frames}: give a positive number of frames, or None")
        if (rank is None) != (world_size is None) or (world_size is not None and not 0 <= rank < world_size):
            raise ValueError(f"rank={rank}, world_size={world_size}: give both, with 0 <= rank < world_size")
        try:
            meta = read_metadata(self.path)
        except NoProvenanceError:  # rewritten by another tool: the columns are what matter
            meta = None
        self.metadata = meta
        self.codebook_size = meta["codebook_size"] if meta else 1 << 15
        stored = meta["num_codebooks"] if meta else None
        if num_codebooks is not None and stored is not None and num_codebooks > stored:
            raise DatasetError(f"num_codebooks={num_codebooks}: {self.path} stores only {stored} codebooks")
        self.num_codebooks = num_codebooks
        self.columns = tuple(columns)
        self.shuffle, self.seed, self.max_frames, self.crop = shuffle, seed, max_frames, crop
        self.buffer_size = max(1, buffer_size)
        self.given_rank = rank, world_size
        self.rank, self.world_size = self._ranks()
        # In shared memory, so that DataLoader workers kept across epochs (persistent_workers=True)
        # see set_epoch: each holds its own copy of the dataset, but the same tensor.
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()
        self.units: list[_Unit] = []
        for shard in shard_files(self.path):
            parquet = open_shard(shard)
            missing = [c for c in self.columns if c not in parquet.schema_arrow.names]
            if missing:
                raise DatasetError(f"{shard}: no column {missing[0]!r} (its columns: "
                                   f"{', '.join(parquet.schema_arrow.names)})")
            first = 0
            for g in range(parquet.metadata.num_row_groups):
                n = parquet.metadata.row_group(g).num_rows
                self.units.append(_Unit(shard, g, first, n))
                first += n

    @property
    def num_rows(self) -> int:
        """Rows in the whole dataset (all ranks together)."""
        return sum(u.num_rows for u in self.units)

    @property
    def epoch(self) -> int:
        return int(self._epoch[0])

    def set_epoch(self, epoch: int) -> None:
        """The epoch whose order the next iteration gives (call it on every rank, before each
        epoch; DataLoader workers see it, persistent ones too)."""
        self._epoch[0] = int(epoch)
        self.rank, self.world_size = self._ranks()

    def _ranks(self) -> tuple[int, int]:
        """The ranks given, else those of torch.distributed if it is initialised (asked here, in
        the training process: DataLoader workers do not see the process group), else (0, 1)."""
        if self.given_rank[0] is not None:
            return self.given_rank
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1

    def _place(self) -> tuple[int, int]:
        """(this reader's index, readers in all): rank-major over ranks x DataLoader workers."""
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        return self.rank * workers + worker, self.world_size * workers

    def my_units(self) -> list[_Unit]:
        """The row groups this rank and worker read this epoch, in order."""
        index, readers = self._place()
        order = list(range(len(self.units)))
        if self.shuffle:
            np.random.default_rng([self.seed, self.epoch]).shuffle(order)
        return [self.units[i] for i in order[index::readers]]

    def __iter__(self) -> Iterator[dict]:
        index, _ = self._place()
        rng = np.random.default_rng([self.seed, self.epoch, index, 1])
        rows = self._rows(self.my_units(), rng)
        return _buffered(rows, self.buffer_size, rng) if self.shuffle else rows

    def _rows(self, units: list[_Unit], rng: np.random.Generator) -> Iterator[dict]:
        root = dataset_root(self.path)
        # DataLoader workers are the parallelism: pyarrow's threads in each would fight over the
        # same cores (as torch's would, which is why DataLoader gives each worker one).
        threads = get_worker_info() is None
        opened: tuple[Location, object] | None = None
        for u in units:
            if opened is None or opened[0] != u.shard:
                opened = (u.shard, open_shard(u.shard))
            skipped = []
            for r in read_group(opened[1], u.shard, u.group, root, self.codebook_size, columns=list(self.columns),
                                first_row=u.first_row, threads=threads):
                if "error" in r:
                    skipped.append(f"{r['id']}: {r['error']}")
                    continue
                item = self._item(r, rng)
                if item is None:
                    skipped.append(f"{r['id']}: it has {r['codes'].shape[0]} codebooks, fewer than "
                                   f"num_codebooks={self.num_codebooks}")
                    continue
                yield item
            if skipped:
                warnings.warn(f"{u.shard}: {len(skipped)} unusable rows skipped (first: {skipped[0]})", stacklevel=2)

    def _item(self, r: dict, rng: np.random.Generator) -> dict | None:
        codes = r["codes"]
        if self.num_codebooks is not None:
            if codes.shape[0] < self.num_codebooks:
                return None
            codes = codes[:self.num_codebooks]
        if self.max_frames is not None and codes.shape[1] > self.max_frames:
            start = int(rng.integers(0, codes.shape[1] - self.max_frames + 1)) if self.crop == "random" else 0
            codes = codes[:, start:start + self.max_frames]
        return {"id": r["id"], "codes": torch.from_numpy(np.array(codes, dtype=np.int16)),  # a writable copy
                **{c: r.get(c) for c in self.columns}}


def _buffered(rows: Iterator[dict], size: int, rng: np.random.Generator) -> Iterator[dict]:
    """Rows in a shuffled order through a buffer of `size`: each new row takes a random slot and
    the row it displaces goes out."""
    pick = random.Random(int(rng.integers(1 << 62))).randrange  # per-row draws: the stdlib's are cheaper
    buffer: list[dict] = []
    for row in rows:
        if len(buffer) < size:
            buffer.append(row)
            continue
        i = pick(size)
        buffer[i], row = row, buffer[i]
        yield row
    rng.shuffle(buffer)
    yield from buffer
