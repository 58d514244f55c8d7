"""Token datasets on disk: Parquet shards (or .npy files plus a manifest), written atomically.

One row per input (per channel). `codes` is list<list<int16>> ([codebooks][frames]), a type
pyarrow, pandas and Hugging Face `datasets` read as they are. The dataset's provenance (tool
version, model, K, rates) is JSON under the Parquet key `mimi_cli` of every shard. A shard is
written under a temporary name and renamed when complete, so a crash leaves only whole shards.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .storage import Location, readable

METADATA_KEY = b"mimi_cli"
SHARD_ROWS = 4096  # a shard is closed at this many rows ...
SHARD_CODE_BYTES = 64 << 20  # ... or this many bytes of codes, whichever comes first

COLUMNS = [  # name, type, meaning (docs/token-format.md repeats this)
    ("id", pa.string()),
    ("channel", pa.int16()),  # -1: channels mixed to mono; else the source channel encoded
    ("codes", pa.list_(pa.list_(pa.int16()))),
    ("num_frames", pa.int32()),
    ("num_samples", pa.int64()),  # at 24 kHz before padding: decode trims to exactly this
    ("duration_s", pa.float64()),
    ("source_sample_rate", pa.int32()),
    ("source_channels", pa.int16()),
    ("source_bytes", pa.int64()),  # size and mtime of the input, to resume safely
    ("source_mtime_ns", pa.int64()),
]
NPY_COLUMNS = [c for c in COLUMNS if c[0] != "codes"] + [("npy_path", pa.string())]


class DatasetError(Exception):
    """A token dataset that cannot be read or cannot be added to."""


@dataclass
class Row:
    id: str
    channel: int
    codes: np.ndarray  # [K, frames] int16
    num_samples: int
    source_sample_rate: int
    source_channels: int
    source_bytes: int
    source_mtime_ns: int

    def as_dict(self) -> dict:
        frames = self.codes.shape[1]
        return {"id": self.id, "channel": self.channel, "codes": self.codes, "num_frames": frames,
                "num_samples": self.num_samples, "duration_s": self.num_samples / 24000,
                "source_sample_rate": self.source_sample_rate, "source_channels": self.source_channels,
                "source_bytes": self.source_bytes, "source_mtime_ns": self.source_mtime_ns}


def _table(rows: list[dict], columns, metadata: dict) -> pa.Table:
    schema = pa.schema([pa.field(n, t) for n, t in columns], metadata={METADATA_KEY: json.dumps(metadata)})
    arrays = []
    for name, typ in columns:
        if name == "codes":
            arrays.append(_codes_array([r["codes"] for r in rows]))
        else:
            arrays.append(pa.array([r[name] for r in rows], type=typ))
    return pa.Table.from_arrays(arrays, schema=schema)


def _codes_array(codes: list[np.ndarray]) -> pa.ListArray:
    """list<list<int16>> from [K, frames] arrays, built from flat buffers (no Python loops over tokens)."""
    flat = np.concatenate([c.reshape(-1) for c in codes]).astype(np.int16) if codes else np.zeros(0, np.int16)
    inner_lengths = np.concatenate([np.full(c.shape[0], c.shape[1]) for c in codes]) if codes else np.zeros(0)
    inner_offsets = np.concatenate([[0], np.cumsum(inner_lengths)]).astype(np.int32)
    outer_offsets = np.concatenate([[0], np.cumsum([c.shape[0] for c in codes])]).astype(np.int32)
    inner = pa.ListArray.from_arrays(pa.array(inner_offsets), pa.array(flat, type=pa.int16()))
    return pa.ListArray.from_arrays(pa.array(outer_offsets), inner)


def _codes_of(column: pa.ChunkedArray) -> list[np.ndarray]:
    """[K, frames] int16 arrays back from a list<list<int16>> column."""
    out = []
    for chunk in column.chunks:
        outer = chunk.offsets.to_numpy()
        inner = chunk.values
        inner_offsets = inner.offsets.to_numpy()
        values = inner.values.to_numpy(zero_copy_only=False)
        for i in range(len(chunk)):
            a, b = outer[i], outer[i + 1]
            start, stop = inner_offsets[a], inner_offsets[b]
            out.append(values[start:stop].reshape(b - a, -1) if b > a else np.zeros((0, 0), np.int16))
    return out


def write_parquet_atomic(path: Location, table: pa.Table) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as f:
        pq.write_table(table, f, compression="zstd")
    tmp.replace(path)


class ShardWriter:
    """Buffers rows and writes them as numbered, complete Parquet shards in a directory."""

    def __init__(self, directory: Location, metadata: dict, prefix: str = "part", npy_root: Location | None = None):
        self.directory, self.metadata, self.prefix = directory, metadata, prefix
        self.npy_root = npy_root  # set: codes go to .npy files and shards are the manifest
        self.rows: list[dict] = []
        self.code_bytes = 0
        directory.mkdir(parents=True, exist_ok=True)
        taken = [int(p.stem.rsplit("-", 1)[1]) for p in directory.glob(f"{prefix}-*.parquet")
                 if p.stem.rsplit("-", 1)[1].isdigit()]
        self.next_index = max(taken, default=-1) + 1

    def add(self, row: Row) -> None:
        d = row.as_dict()
        if self.npy_root is not None:
            rel = row_file_name(row.id, row.channel, "npy")
            target = self.npy_root / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.tmp")
            with tmp.open("wb") as f:
                np.save(f, row.codes)
            tmp.replace(target)
            d["npy_path"] = rel
        self.rows.append(d)
        self.code_bytes += row.codes.nbytes
        if len(self.rows) >= SHARD_ROWS or self.code_bytes >= SHARD_CODE_BYTES:
            self.flush()

    def flush(self) -> None:
        """Writes the buffered rows as one complete shard (nothing if the buffer is empty)."""
        if not self.rows:
            return
        columns = NPY_COLUMNS if self.npy_root is not None else COLUMNS
        path = self.directory / f"{self.prefix}-{self.next_index:05d}.parquet"
        write_parquet_atomic(path, _table(self.rows, columns, self.metadata))
        self.next_index += 1
        self.rows, self.code_bytes = [], 0


def row_file_name(item_id: str, channel: int, extension: str) -> str:
    """The file a row is written to (codes or decoded audio): its id with the audio extension
    replaced, and the channel added for per-channel rows (`a/b.wav` -> `a/b.npy`, `a/b.ch1.npy`)."""
    stem = item_id.rsplit(".", 1)[0] if "." in item_id.rsplit("/", 1)[-1] else item_id
    return f"{stem}.ch{channel}.{extension}" if channel >= 0 else f"{stem}.{extension}"


# -- reading -----------------------------------------------------------------------------------
def shard_files(path: Location) -> list[Location]:
    """The complete shards of a dataset: a .parquet file, or the shards in a directory."""
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted((p for p in path.glob("*.parquet") if not p.name.startswith(".")), key=str)
        if not files:
            raise DatasetError(f"{path}: no .parquet shards in this directory")
        return files
    raise DatasetError(f"{path}: no such token file or directory")


def read_metadata(path: Location) -> dict:
    """The dataset's provenance (from its first shard)."""
    try:
        meta = pq.read_schema(readable(shard_files(path)[0])).metadata or {}
    except (pa.ArrowInvalid, OSError) as e:
        raise DatasetError(f"{path}: not a readable Parquet token file ({e})") from None
    if METADATA_KEY not in meta:
        raise DatasetError(f"{path}: a Parquet file, but not one written by mimi (no '{METADATA_KEY.decode()}' "
                           "metadata)")
    return json.loads(meta[METADATA_KEY])


def read_table(path: Location, columns: list[str] | None = None) -> pa.Table:
    files = shard_files(path)
    try:
        tables = [pq.read_table(readable(f), columns=columns) for f in files]
    except (pa.ArrowInvalid, OSError) as e:
        raise DatasetError(f"{path}: cannot read token shards ({e})") from None
    return pa.concat_tables(tables, promote_options="default") if len(tables) > 1 else tables[0]


def iter_rows(path: Location, ids: set[str] | None = None) -> Iterator[dict]:
    """Rows as dicts with `codes` as an int16 array [K, frames] (npy datasets load their files)."""
    read_metadata(path)
    root = path if path.is_dir() else path.parent
    for shard in shard_files(path):
        table = pq.read_table(readable(shard))
        codes = _codes_of(table.column("codes")) if "codes" in table.column_names else None
        rest = table.drop_columns(["codes"]) if codes is not None else table
        for i, r in enumerate(rest.to_pylist()):
            if ids is not None and r["id"] not in ids:
                continue
            r["codes"] = codes[i] if codes is not None else np.load(readable(root / r["npy_path"]))
            yield r
