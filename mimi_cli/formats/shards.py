"""Token datasets on disk: Parquet shards (or .npy files plus a manifest), written atomically.

One row per input (per channel). `codes` is list<list<int16>> ([codebooks][frames]), a type
pyarrow, pandas and Hugging Face `datasets` read as they are. The dataset's provenance (tool
version, model, K, rates) is JSON under the Parquet key `mimi_cli` of every shard. A shard is
written under a temporary name and renamed when complete, so a crash leaves only whole shards.
"""
from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import MimiError
from ..spec import FRAME_SAMPLES, MAX_CODEBOOKS, SAMPLE_RATE
from .limits import ExpansionBudget, check_pages, open_parquet, parquet_footer, plain, row_groups
from .paths import UnsafePathError, confined, npy_file_name, regular_file
from .provenance import METADATA_KEY, ProvenanceError, find, is_int, sidecar_path, write_sidecar
from .storage import Location, atomic_write, first_line, readable

SHARD_ROWS = 4096  # a shard is closed at this many rows ...
SHARD_CODE_BYTES = 64 << 20  # ... or this many bytes of codes, whichever comes first ...
COMMIT_SECONDS = 30.0  # ... or when its oldest row is this old: a crash loses at most that much work
# Rows per Parquet row group, the unit training readers deal out to ranks and workers and shuffle:
# several per shard, so that a few shards still give every DataLoader worker an even share.
ROW_GROUP_ROWS = 1024
# Bounds on what a reader accepts from a dataset, so a crafted file costs an error, not all memory.
MAX_ROW_GROUP_BYTES = 2 << 30
MAX_NPY_BYTES = 256 << 20

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
    ("source_fingerprint", pa.string()),  # items inside a tar or Parquet: a hash of their bytes; else null
]
# Where --format npy puts its .npy files: a folder that Parquet readers pointed at the dataset skip
# (pyarrow skips names starting with `_`, `datasets` folders starting with `__`).
NPY_DIR = "__codes__"
NPY_COLUMNS = [c for c in COLUMNS if c[0] != "codes"] + [("npy_path", pa.string())]


class DatasetError(MimiError):
    """A token dataset that cannot be read or cannot be added to."""


@dataclass(frozen=True)
class SourceInfo:
    """What a row records of its input: its own rate and channel count, and what resume compares
    (a file's size and mtime; an item's size and the fingerprint of its bytes). Stored as the
    `source_*` columns."""

    sample_rate: int = 0
    channels: int = 0
    bytes: int = 0
    mtime_ns: int = 0
    fingerprint: str | None = None

    COLUMNS = ("source_sample_rate", "source_channels", "source_bytes", "source_mtime_ns", "source_fingerprint")

    def columns(self) -> dict:
        return dict(zip(self.COLUMNS, (self.sample_rate, self.channels, self.bytes, self.mtime_ns,
                                       self.fingerprint)))

    @property
    def resume_key(self) -> tuple[int, int, str | None]:
        return self.bytes, self.mtime_ns, self.fingerprint

    @classmethod
    def from_columns(cls, record, i: int | None = None) -> SourceInfo:
        """From a mapping of the `source_*` columns: of one row, or of row `i` of column arrays."""
        *numbers, fp = [record[c] if i is None else record[c][i] for c in cls.COLUMNS]
        return cls(*(int(v) for v in numbers), str(fp) if fp else None)


@dataclass
class Row:
    id: str
    channel: int
    codes: np.ndarray  # [K, frames] int16
    num_samples: int
    source: SourceInfo
    kept: dict = field(default_factory=dict)  # the input's own fields (--keep-columns), as their own columns

    def as_dict(self) -> dict:
        frames = self.codes.shape[1]
        return {"id": self.id, "channel": self.channel, "codes": self.codes, "num_frames": frames,
                "num_samples": self.num_samples, "duration_s": self.num_samples / SAMPLE_RATE, **self.source.columns(),
                **self.kept}


def _table(rows: list[dict], columns, metadata: dict) -> pa.Table:
    schema = pa.schema([pa.field(n, t) for n, t in columns], metadata={METADATA_KEY: json.dumps(metadata)})
    arrays = []
    for name, typ in columns:
        if name == "codes":
            arrays.append(_codes_array([r["codes"] for r in rows]))
        else:
            arrays.append(pa.array([r.get(name) for r in rows], type=typ))
    return pa.Table.from_arrays(arrays, schema=schema)


def _codes_array(codes: list[np.ndarray]) -> pa.ListArray:
    """list<list<int16>> from [K, frames] arrays, built from flat buffers (no Python loops over tokens)."""
    flat = np.concatenate([c.reshape(-1) for c in codes]).astype(np.int16) if codes else np.zeros(0, np.int16)
    inner_lengths = np.concatenate([np.full(c.shape[0], c.shape[1]) for c in codes]) if codes else np.zeros(0)
    inner_offsets = np.concatenate([[0], np.cumsum(inner_lengths)]).astype(np.int32)
    outer_offsets = np.concatenate([[0], np.cumsum([c.shape[0] for c in codes])]).astype(np.int32)
    inner = pa.ListArray.from_arrays(pa.array(inner_offsets), pa.array(flat, type=pa.int16()))
    return pa.ListArray.from_arrays(pa.array(outer_offsets), inner)


# How shards are stored: zstd with dictionaries; or, where that packs values tighter than a reader
# lets a downloaded file expand (a long run of one letter, hours of digital silence), plain and
# uncompressed, which takes on disk the room the values take once read.
PACKED = {"compression": "zstd"}
UNPACKED = {"compression": "none", "use_dictionary": False}


def write_parquet_atomic(path: Location, table: pa.Table) -> None:
    """Writes `table` to `path` whole or not at all (OutputError naming the path on failure), in a
    form that mimi's readers accept: what it writes is read back with the bounds a downloaded
    token dataset is held to (`check_readable`), and written UNPACKED if PACKED goes past them."""
    for options in (PACKED, UNPACKED):
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, row_group_size=ROW_GROUP_ROWS, **options)
        data = sink.getvalue()
        try:
            check_readable(pa.BufferReader(data), data.size, path)
            break
        except DatasetError as e:
            refused = e
    else:
        raise DatasetError(f"cannot write {path} so that mimi can read it back: {refused}")
    with atomic_write(path) as f:
        f.write(data)


class ShardWriter:
    """Buffers rows and writes them as numbered, complete Parquet shards in a directory.

    `add` only buffers; the caller commits with `commit_if_due` at points where every buffered
    input is whole (all channels of a file), so a shard never holds half an input.
    """

    def __init__(self, directory: Location, metadata: dict, prefix: str = "part", npy_root: Location | None = None,
                 commit_seconds: float = COMMIT_SECONDS, sidecar: bool = False):
        self.directory, self.metadata, self.prefix = directory, metadata, prefix
        self.sidecar = sidecar  # the directory is the dataset: its first shard brings the sidecar
        self.npy_root = npy_root  # set: codes go to .npy files and shards are the manifest
        self.commit_seconds = commit_seconds
        self.kept_types: dict[str, pa.DataType] = {}  # columns kept from the inputs, after ours (keep_columns)
        self.rows: list[dict] = []
        self.code_bytes = 0
        self.oldest = 0.0
        directory.mkdir(parents=True, exist_ok=True)
        taken = [int(p.stem.rsplit("-", 1)[1]) for p in directory.glob(f"{prefix}-*.parquet")
                 if p.stem.rsplit("-", 1)[1].isdigit()]
        self.next_index = max(taken, default=-1) + 1

    def keep_columns(self, types: dict[str, pa.DataType]) -> None:
        """Adds the inputs' own columns (name -> Arrow type) to every shard written from now on."""
        self.kept_types = dict(types)

    def add(self, row: Row) -> None:
        d = row.as_dict()
        if self.npy_root is not None:
            rel = f"{NPY_DIR}/{npy_file_name(row.id, row.channel)}"
            try:
                target = confined(self.npy_root, rel)
            except UnsafePathError as e:
                raise DatasetError(f"id {row.id!r} cannot name a .npy file: {e}") from None
            with atomic_write(target) as f:
                np.save(f, row.codes)
            d["npy_path"] = rel
        if not self.rows:
            self.oldest = time.monotonic()
        self.rows.append(d)
        self.code_bytes += row.codes.nbytes

    def due(self, lookahead_s: float = 0.0) -> bool:
        """Whether the buffer should become a shard now: full, or its oldest row would be older than
        `commit_seconds` after `lookahead_s` more (the time until the next chance to commit)."""
        return bool(self.rows) and (len(self.rows) >= SHARD_ROWS or self.code_bytes >= SHARD_CODE_BYTES
                                    or time.monotonic() - self.oldest + lookahead_s >= self.commit_seconds)

    def commit_if_due(self, lookahead_s: float = 0.0) -> None:
        if self.due(lookahead_s):
            self.flush()

    def flush(self) -> None:
        """Writes the buffered rows as one complete shard (nothing if the buffer is empty)."""
        if not self.rows:
            return
        columns = (NPY_COLUMNS if self.npy_root is not None else COLUMNS) + list(self.kept_types.items())
        path = self.directory / f"{self.prefix}-{self.next_index:05d}.parquet"
        write_parquet_atomic(path, _table(self.rows, columns, self.metadata))
        if self.sidecar:
            write_sidecar(self.directory, self.metadata)
            self.sidecar = False
        self.next_index += 1
        self.rows, self.code_bytes = [], 0


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


_READ_ERRORS = (pa.ArrowException, OSError, ValueError, EOFError)  # what pyarrow raises on a bad file (and LimitError)


def _parquet(shard: Location, source=None, size: int | None = None) -> pq.ParquetFile:
    """The shard opened (its footer read, its pages' sizes checked: `check_pages`), or DatasetError
    if it is no readable Parquet file; `source` and `size`: its bytes, where they are not (yet) at
    `shard`."""
    try:
        source, size = source or readable(shard), shard.stat().st_size if size is None else size
        metadata = parquet_footer(shard, source, size)  # kept: a reader opens a shard for each row group
        check_pages(shard, source, size, metadata)
        return open_parquet(source, size, metadata=metadata)
    except _READ_ERRORS as e:
        raise DatasetError(f"{shard}: not a readable Parquet token file ({first_line(e)})") from None


class NoProvenanceError(DatasetError):
    """Token shards with no provenance at all: rewritten by a tool that drops Parquet metadata."""


def read_metadata(path: Location) -> dict:
    """The dataset's provenance (its first shard's footer, else its sidecar), checked to be usable;
    NoProvenanceError if it has neither."""
    footer = _parquet(shard_files(path)[0]).schema_arrow.metadata or {}
    try:
        found = find(path, footer)
    except ProvenanceError as e:
        raise DatasetError(str(e)) from None
    if found is None:
        raise NoProvenanceError(f"{path}: Parquet without mimi's provenance (no '{METADATA_KEY.decode()}' footer "
                                f"metadata and no {sidecar_path(path).name}): it was not written by mimi, or was "
                                "rewritten by a tool that drops it")
    return found[0]


def _check_schema(shard: Location, schema: pa.Schema) -> None:
    """DatasetError unless the shard has the columns a reader needs, of usable types."""
    def need(name: str, ok, what: str) -> None:
        if name not in schema.names:
            raise DatasetError(f"{shard}: no '{name}' column (a token dataset has id, channel, codes or npy_path, "
                               "num_frames, num_samples)")
        kind = schema.field(name).type
        kind = kind.value_type if pa.types.is_dictionary(kind) else kind  # text stored with a dictionary
        if not ok(kind):
            raise DatasetError(f"{shard}: column '{name}' is {kind}, expected {what}")

    listy = (pa.types.is_list, pa.types.is_large_list)
    need("id", lambda t: pa.types.is_string(t) or pa.types.is_large_string(t), "string")
    for name in ("channel", "num_samples"):
        need(name, pa.types.is_integer, "an integer")
    if "codes" in schema.names or "npy_path" not in schema.names:
        need("codes", lambda t: any(f(t) for f in listy) and any(f(t.value_type) for f in listy)
             and pa.types.is_integer(t.value_type.value_type), "list<list<int16>>")
    else:
        need("npy_path", lambda t: pa.types.is_string(t) or pa.types.is_large_string(t), "string")


def read_table(path: Location, columns: list[str] | None = None, optional: tuple[str, ...] = ()) -> pa.Table:
    """The dataset's rows (these columns); `optional` ones read as null from shards that lack them."""
    files = shard_files(path)

    def one(f: Location) -> pa.Table:
        parquet = _parquet(f)
        names = set(parquet.schema_arrow.names)
        # ParquetFile.read drops a column it does not find; a required one missing is an error.
        missing = [c for c in columns or () if c not in names and c not in optional]
        if missing:
            raise DatasetError(f"{f}: no column {', '.join(missing)}; this is not a mimi token dataset")
        wanted = columns if columns is None or not optional else [c for c in columns if c in names or c not in optional]
        groups = [t for _, t in row_groups(parquet, f.stat().st_size, wanted, MAX_ROW_GROUP_BYTES)]
        table = plain(pa.concat_tables(groups) if groups else parquet.schema_arrow.empty_table())
        table = table if wanted is None else table.select(wanted)
        if not optional or columns is None:
            return table
        for c in columns:
            if c not in names and c in optional:
                table = table.append_column(c, pa.nulls(table.num_rows))
        return table.select(columns)

    try:
        tables = [one(f) for f in files]
        return pa.concat_tables(tables, promote_options="default") if len(tables) > 1 else tables[0]
    except _READ_ERRORS as e:
        raise DatasetError(f"{path}: cannot read token shards ({first_line(e)})") from None


def open_shard(shard: Location, source=None, size: int | None = None) -> pq.ParquetFile:
    """A shard ready to read row groups from: its footer read, its columns and sizes checked
    (`source`, `size`: as `_parquet` takes them)."""
    parquet = _parquet(shard, source, size)
    _check_schema(shard, parquet.schema_arrow)
    for g in range(parquet.metadata.num_row_groups):
        if parquet.metadata.row_group(g).total_byte_size > MAX_ROW_GROUP_BYTES:
            raise DatasetError(f"{shard}: row group {g} holds over {MAX_ROW_GROUP_BYTES >> 30} GiB; "
                               "mimi reads row groups up to that size")
    return parquet


def check_readable(source, size: int, shard: Location) -> None:
    """DatasetError where mimi's readers would refuse the shard `shard` whose bytes are at `source`
    (`size` of them): its footer, columns and sizes (`open_shard`), and every row group's values
    against the row group's budget (`read_group`) and the file's (`read_table`)."""
    parquet = open_shard(shard, source, size)
    try:
        for g, table in row_groups(parquet, size, None):
            ExpansionBudget.row_group(parquet, g).spend(table)
    except _READ_ERRORS as e:
        raise DatasetError(f"{shard}: cannot read its rows ({first_line(e)})") from None


def read_group(parquet: pq.ParquetFile, shard: Location, group: int, root: Location, codebook_size: int,
               ids: set[str] | None = None, columns: list[str] | None = None, first_row: int = 0,
               threads: bool = True) -> Iterator[dict]:
    """The rows of one row group, as `iter_rows` gives them; `columns` (None: all) are read besides
    the ones every reader needs; `first_row` is the group's first row number in the shard;
    `threads=False` reads without pyarrow's thread pool (for readers that are processes of their own)."""
    names = parquet.schema_arrow.names
    if columns is not None:
        needed = ["id", "channel", "num_samples", "codes" if "codes" in names else "npy_path", *columns]
        columns = list(dict.fromkeys(c for c in needed if c in names))
    number = first_row
    try:
        table = parquet.read_row_group(group, columns=columns, use_threads=threads)
        ExpansionBudget.row_group(parquet, group).spend(table)
        table = plain(table)
        for batch in table.to_batches(max_chunksize=1024):
            codes = _codes_of(batch.column("codes"), codebook_size) if "codes" in batch.schema.names else None
            rest = batch.drop_columns(["codes"]) if codes is not None else batch
            for i, r in enumerate(rest.to_pylist(), start=number):
                if ids is not None and r["id"] not in ids:
                    continue
                r["codes"] = codes[i - number] if codes is not None else _npy_codes(root, r.get("npy_path"),
                                                                                    codebook_size)
                if (error := _row_error(r)) is not None:
                    r = {"id": r["id"] if isinstance(r["id"], str) and r["id"] else f"{shard.name}: row {i}",
                         "channel": r["channel"], "error": error}
                yield r
            number += batch.num_rows
    except _READ_ERRORS as e:
        raise DatasetError(f"{shard}: cannot read its rows ({first_line(e)})") from None


def iter_rows(path: Location, ids: set[str] | None = None, codebook_size: int | None = None) -> Iterator[dict]:
    """Rows as dicts with `codes` as an int16 array [K, frames] (npy datasets load their files).

    A row that cannot be used (no id, ragged or out-of-range codes, an unsafe `npy_path` ...)
    comes as a dict with an "error" key saying why, and the reading goes on; a shard that cannot
    be read at all raises DatasetError. `codebook_size` (default: the provenance's) bounds codes.
    """
    size = codebook_size or read_metadata(path)["codebook_size"]
    root = dataset_root(path)
    for shard in shard_files(path):
        parquet = open_shard(shard)
        first = 0
        for g in range(parquet.metadata.num_row_groups):
            yield from read_group(parquet, shard, g, root, size, ids, first_row=first)
            first += parquet.metadata.row_group(g).num_rows


def dataset_root(path: Location) -> Location:
    """What a dataset's `npy_path`s are relative to: its directory (a single file's folder)."""
    return path if path.is_dir() else path.parent


def _row_error(r: dict) -> str | None:
    """Why a row read from a dataset cannot be used, or None (its codes are checked as they are read)."""
    if not isinstance(r["id"], str) or not r["id"]:
        return "the row has no id"
    codes = r["codes"]
    if isinstance(codes, str):
        return codes
    if codes is None:
        return "the row has no codes"
    if not is_int(r["channel"]) or r["channel"] < -1:
        return f"channel {r['channel']!r} is not -1 or a channel number"
    k, frames = codes.shape
    if not 1 <= k <= MAX_CODEBOOKS:
        return f"the row has {k} codebooks, not 1..{MAX_CODEBOOKS}"
    n = r["num_samples"]
    if not is_int(n) or not 0 <= n <= frames * FRAME_SAMPLES:
        return f"num_samples {n!r} does not fit its {frames} frames"
    return None


def _out_of_range(codebook_size: int) -> str:
    return f"codes out of range 0..{codebook_size - 1}"


def _segment_counts(flags: np.ndarray, starts: np.ndarray, stops: np.ndarray) -> np.ndarray:
    """How many of `flags` are set in each [start, stop) (a running sum: empty ranges count 0)."""
    running = np.concatenate([[0], np.cumsum(flags, dtype=np.int64)])
    return running[stops] - running[starts]


def _codes_of(column: pa.Array, codebook_size: int) -> list[np.ndarray | str | None]:
    """[K, frames] int16 arrays back from a list<list<int>> column, from its flat buffers and checked
    in bulk (a Python step per row, none per codebook or token); None for a null row, and a
    string saying why for a row that holds nulls, ragged codebooks or codes out of range."""
    inner, leaves = column.values, column.values.values
    outer, inner_offsets = column.offsets.to_numpy(), inner.offsets.to_numpy()
    values = (leaves.fill_null(0) if leaves.null_count else leaves).to_numpy(zero_copy_only=False)
    first, last = outer[:-1], outer[1:]  # each row's codebooks: inner[first:last]
    starts, stops = inner_offsets[first], inner_offsets[last]  # and its tokens: values[starts:stops]
    why: dict[int, str] = {}
    if inner.null_count or leaves.null_count:
        nulls = np.zeros(len(column), np.int64)
        if inner.null_count:
            nulls += _segment_counts(~inner.is_valid().to_numpy(zero_copy_only=False), first, last)
        if leaves.null_count:
            nulls += _segment_counts(~leaves.is_valid().to_numpy(zero_copy_only=False), starts, stops)
        why.update((i, "the row's codes hold nulls") for i in np.flatnonzero(nulls))
    frames = np.diff(inner_offsets)  # each codebook's length
    changes = _segment_counts(frames[1:] != frames[:-1], first, np.maximum(last - 1, first))
    for i in np.flatnonzero(changes):
        lengths = frames[first[i]:last[i]]
        why.setdefault(i, f"ragged codes: codebooks of {lengths.min()} to {lengths.max()} frames")
    if values.size and (values.min() < 0 or values.max() >= codebook_size):
        bad = _segment_counts((values < 0) | (values >= codebook_size), starts, stops)
        why.update((i, _out_of_range(codebook_size)) for i in np.flatnonzero(bad) if i not in why)
    values = values.astype(np.int16, copy=False)  # in range, so exact
    valid = column.is_valid().to_numpy(zero_copy_only=False) if column.null_count else None
    out: list[np.ndarray | str | None] = []
    for i, (a, b, start, stop) in enumerate(zip(first.tolist(), last.tolist(), starts.tolist(), stops.tolist())):
        if valid is not None and not valid[i]:
            out.append(None)
        elif i in why:
            out.append(why[i])
        else:
            out.append(values[start:stop].reshape(b - a, -1) if b > a else np.zeros((0, 0), np.int16))
    return out


def _npy_codes(root: Location, name: object, codebook_size: int) -> np.ndarray | str:
    """A row's codes from its .npy, checked as `_codes_of` checks a column's, or why not."""
    codes = _load_npy(root, name)
    if isinstance(codes, str):
        return codes
    if codes.size and (codes.min() < 0 or codes.max() >= codebook_size):
        return _out_of_range(codebook_size)
    return codes.astype(np.int16, copy=False)


def _load_npy(root: Location, name: object) -> np.ndarray | str:
    """A row's codes from its .npy (confined to the dataset and to regular files), or why not."""
    try:
        path = regular_file(confined(root, name))
        if path.stat().st_size > MAX_NPY_BYTES:
            return f"npy_path {name!r} is over {MAX_NPY_BYTES >> 20} MiB"
        codes = np.load(readable(path), allow_pickle=False)
    except UnsafePathError as e:
        return f"npy_path refused: {e}"
    except (OSError, ValueError, EOFError) as e:
        return f"npy_path {name!r}: not a readable .npy ({first_line(e)})"
    if codes.ndim != 2 or not np.issubdtype(codes.dtype, np.integer):
        return f"npy_path {name!r} holds {codes.dtype} {codes.shape}, not integer codes [K, frames]"
    return codes
