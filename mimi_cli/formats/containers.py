"""Corpora that hold their audio inside other files: WebDataset `.tar` shards, and Hugging Face
audio Parquet (a `{bytes, path}` struct column, what `datasets` writes for its Audio feature).

Listing a container reads it once, a member or a row group at a time: each item's bytes are
hashed (the content fingerprint that resume compares) and their header probed (the length that
batching uses), and nothing is kept but that, the item's own fields and where it lies. The
encode reads the item again when its batch comes, by offset in a tar and by row group in Parquet.
"""
from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import MimiError
from .audio import AUDIO_EXTENSIONS, AudioError, probe_bytes
from .limits import (
    LimitError,
    batches,
    open_parquet,
    paged_dictionary,
    parquet_footer,
    parse_json,
    plain_type,
    python_values,
)
from .storage import Location, first_line, open_read
from .tar import TarDamage, tar_entries

MAX_ITEM_BYTES = 2 << 30  # one item's audio; a crafted header claiming more is an error row, not a read
MAX_FIELD_BYTES = 1 << 20  # a .json / .txt member read for its fields
MAX_ROW_GROUP_BYTES = 4 << 30  # a Parquet row group of audio read whole
WINDOW_BYTES = 128 << 20  # consecutive row groups up to this size are batched together (and held while read)
_AUDIO_EXTS = {e.lstrip(".") for e in AUDIO_EXTENSIONS}
_KEY = re.compile(r"^((?:.*/|)[^./]+)[.]([^/]*)$")  # webdataset's key / extension split of a member name


class ContainerError(MimiError):
    """A container that cannot be listed at all (not a tar, not Parquet, no audio column)."""


class RefusedContainer(ContainerError):
    """A container refused unread, past one of mimi's bounds (docs/security.md), which may hold audio."""


def fingerprint(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


@dataclass(frozen=True)
class TarMember:
    """An audio member of a tar, by where its data starts."""

    container: Location
    offset: int
    size: int

    locality = ""  # read by offset: any order is cheap

    def read(self) -> bytes:
        with open_read(self.container) as f:
            f.seek(self.offset)
            data = f.read(self.size)
        if len(data) != self.size:
            raise AudioError(f"the tar ends inside this member ({len(data)} of {self.size} bytes)")
        return data


@dataclass(frozen=True)
class ParquetCell:
    """The audio bytes of one row of a Parquet file, by row group and row within it; `window`
    numbers the run of consecutive row groups (up to WINDOW_BYTES) it is batched within."""

    container: Location
    column: str
    row_group: int
    row: int
    window: int = 0

    @property
    def locality(self) -> str:
        """Items of one window are batched together: its row groups are read whole, once."""
        return f"{self.container}#{self.window}"

    def read(self) -> bytes:
        data = _row_group_bytes(self)[self.row].as_py()
        if data is None:
            raise AudioError("the row's audio bytes are null")
        return data


_cache = threading.local()  # each reader thread holds the row groups of the window it reads now


def forget_row_groups() -> None:
    """Frees the row groups this thread holds: for a thread that reads one item, not a window."""
    _cache.window = None
    _cache.groups, _cache.metadata = {}, None


def _row_group_bytes(cell: ParquetCell) -> pa.Array:
    window = (str(cell.container), cell.column, cell.window)
    if getattr(_cache, "window", None) != window:
        _cache.window, _cache.groups, _cache.metadata = window, {}, None  # the last window's are freed first
    if cell.row_group not in _cache.groups:
        try:
            with open_read(cell.container) as f:
                blobs = f"{cell.column}.bytes"  # read as a dictionary where its pages hold one, as it was listed
                size = cell.container.stat().st_size
                if _cache.metadata is None:  # once a window: the footer is shared, not parsed again
                    _cache.metadata = parquet_footer(cell.container, f, size)
                metadata = _cache.metadata
                dictionary = [blobs] if paged_dictionary(f, size, metadata, cell.row_group, blobs) else None
                pf = pq.ParquetFile(f, metadata=metadata, read_dictionary=dictionary)
                table = pf.read_row_group(cell.row_group, columns=[blobs])
        except (pa.ArrowException, OSError, ValueError) as e:
            raise AudioError(f"cannot read its Parquet row group {cell.row_group}: {first_line(e)}") from None
        _cache.groups[cell.row_group] = table.column(0).combine_chunks().field("bytes")
    return _cache.groups[cell.row_group]


@dataclass
class Item:
    """One item found in a container: where its audio lies and what it was when listed, or the
    error that makes it an error row."""

    key: str
    member: TarMember | ParquetCell | None
    size: int = 0
    mtime_ns: int = 0  # lhotse cuts: their audio file's (tar and Parquet items have a fingerprint instead)
    fingerprint: str = ""
    duration_s: float = 0.0
    fields: dict = field(default_factory=dict)
    path: str | None = None  # Parquet: the row's `path` (read from it when its bytes are null)
    error: str | None = None


def _described(item: Item, data: bytes) -> Item:
    """`item` with its bytes' size, fingerprint and length, or the reason they are no audio."""
    item.size, item.fingerprint = len(data), fingerprint(data)
    try:
        item.duration_s = probe_bytes(data).duration_s
    except AudioError as e:
        item.error = str(e)
    return item


# -- WebDataset -----------------------------------------------------------------------------------
def split_key(name: str) -> tuple[str, str] | None:
    """(key, extension) of a member name as webdataset splits it (`a/b.seg.flac` -> `a/b`, `seg.flac`)."""
    m = _KEY.match(name)
    return (m.group(1), m.group(2).lower()) if m else None


def tar_items(container: Location, skipped: list[str] | None = None) -> Iterator[Item]:
    """The samples of a WebDataset shard in tar order: one item per key with an audio member (its
    first), fields from its `.json` member and its other small members (`.txt` as `txt`); the
    member names of keys without audio are added to `skipped`.

    A shard cut short or damaged yields every sample before the damage, then one error item;
    ContainerError only if not even its first header is a tar header."""
    try:
        with open_read(container) as f:
            yield from _samples(f, container, skipped if skipped is not None else [])
    except OSError as e:
        raise ContainerError(f"{container}: cannot read it ({first_line(e)})") from None


def _samples(f, container: Location, skipped: list[str]) -> Iterator[Item]:
    current: Item | None = None
    names: list[str] = []  # the current key's members
    entries = tar_entries(f)
    while True:
        try:
            entry = next(entries, None)
        except TarDamage as e:
            if current is None and e.offset == 0:
                raise ContainerError(f"{container}: not a readable tar file ({e})") from None
            yield from _sample(current, names, skipped)
            yield Item(f"<after {current.key if current else 'the start'}>", None, error=f"damaged tar: {e}")
            return
        if entry is None:
            break
        if entry.kind == "directory":
            continue
        parts = split_key(entry.name)
        if parts is None:
            skipped.append(entry.name)
            continue
        key, ext = parts
        if current is not None and key != current.key:
            yield from _sample(current, names, skipped)
            current, names = None, []
        if current is None:
            current = Item(key, None)
        names.append(entry.name)
        last = ext.rsplit(".", 1)[-1]
        if entry.kind != "file":
            current.error = current.error or (f"its member {entry.name} is a {entry.kind}; mimi reads regular "
                                              "members only")
        elif last in _AUDIO_EXTS and current.member is None and current.error is None:
            if entry.size > MAX_ITEM_BYTES:
                current.error = f"its audio member {entry.name} is over {MAX_ITEM_BYTES >> 30} GiB"
                continue
            current.member = TarMember(container, entry.offset, entry.size)
            _described(current, _read_at(f, entry.offset, entry.size))
        elif last not in _AUDIO_EXTS and entry.size <= MAX_FIELD_BYTES:
            _add_fields(current, ext, _read_at(f, entry.offset, entry.size), entry.name)
    yield from _sample(current, names, skipped)


def _sample(item: Item | None, names: list[str], skipped: list[str]) -> Iterator[Item]:
    """A finished key as an item, if it has audio (or an error); a key of other members only is
    no sample, and its members go to `skipped`."""
    if item is not None and (item.member is not None or item.error is not None):
        yield item
    elif item is not None:
        skipped.extend(names)


def _read_at(f, offset: int, size: int) -> bytes:
    f.seek(offset)
    return f.read(size)


def _add_fields(item: Item, ext: str, data: bytes, name: str) -> None:
    if ext == "json":
        try:
            value = parse_json(data, name)
        except LimitError as e:
            item.error = item.error or str(e)
            return
        except (ValueError, UnicodeDecodeError):
            item.error = item.error or f"{name} is not valid JSON"
            return
        if isinstance(value, dict):
            item.fields.update({k: v for k, v in value.items() if k not in item.fields})
        return
    try:
        item.fields.setdefault(ext, data.decode("utf-8"))
    except UnicodeDecodeError:
        pass  # binary members (.npy, .pth, ...) are not fields


# -- Hugging Face audio Parquet --------------------------------------------------------------------
def audio_columns(schema: pa.Schema) -> list[str]:
    """The columns holding audio as `datasets` stores it: a struct with a `bytes` field."""
    return [f.name for f in schema if pa.types.is_struct(f.type)
            and "bytes" in [f.type.field(i).name for i in range(f.type.num_fields)]]


def _check_audio_column(container: Location, schema: pa.Schema, column: str) -> None:
    """ContainerError unless `column` holds `bytes` as binary and `path` (if any) as a string."""
    if len(schema.get_all_field_indices(column)) != 1:
        raise ContainerError(f"{container}: {len(schema.get_all_field_indices(column))} columns are named {column!r}")
    names = [f.name for f in schema.field(column).type]
    if len(set(names)) != len(names):
        raise ContainerError(f"{container}: column {column!r} names a field twice ({', '.join(names)}): not audio as "
                             "Hugging Face `datasets` stores it")
    fields = {f.name: plain_type(f.type)
              for f in schema.field(column).type}
    binary = (pa.types.is_binary, pa.types.is_large_binary, pa.types.is_null)
    text = (pa.types.is_string, pa.types.is_large_string, pa.types.is_null)
    if not any(ok(fields["bytes"]) for ok in binary):
        raise ContainerError(f"{container}: column {column!r} holds its bytes as {fields['bytes']}, not binary: "
                             "not audio as Hugging Face `datasets` stores it")
    if "path" in fields and not any(ok(fields["path"]) for ok in text):
        raise ContainerError(f"{container}: column {column!r} holds its path as {fields['path']}, not a string: "
                             "not audio as Hugging Face `datasets` stores it")


def parquet_items(container: Location, column: str, keep: tuple[str, ...]) -> Iterator[Item]:
    """Every row of an audio Parquet file as an item keyed `ROW` (its index in the file), read a
    row group at a time; fields are the `keep` columns, `path` the row's path."""
    columns = [column, *keep]
    try:
        with open_read(container) as f:
            file_bytes = container.stat().st_size
            blobs = (f"{column}.bytes",)
            pf = open_parquet(f, file_bytes, columns, streamed=True, metadata=parquet_footer(container, f, file_bytes))
            _check_audio_column(container, pf.schema_arrow, column)
            row, window, window_bytes, last = 0, 0, 0, -1
            for g, start, part in batches(pf, f, file_bytes, columns, blobs, MAX_ROW_GROUP_BYTES):
                if g != last:
                    size = pf.metadata.row_group(g).total_byte_size
                    if window_bytes and window_bytes + size > WINDOW_BYTES:
                        window, window_bytes = window + 1, 0
                    window_bytes, last = window_bytes + size, g
                audio = part.column(column).combine_chunks()
                data, paths = audio.field("bytes"), _struct_paths(audio)
                kept = {c: python_values(part.column(c)) for c in keep}
                valid = audio.is_valid().to_pylist()
                for i in range(part.num_rows):
                    item = Item(str(row), None, path=paths[i], fields={c: kept[c][i] for c in keep})
                    blob = data[i].as_py() if valid[i] else None
                    if blob is not None:
                        item.member = ParquetCell(container, column, g, start + i, window)
                        _described(item, blob)
                    elif not paths[i]:
                        item.error = "the row holds no audio (its bytes and path are null)"
                    yield item
                    row += 1
    except (pa.ArrowException, OSError, ValueError) as e:  # ValueError: LimitError, and text that is not UTF-8
        raise ContainerError(f"{container}: cannot read it as Parquet ({first_line(e)})") from None


def parquet_paths(container: Location, column: str) -> Iterator[list[str | None]]:
    """The `path` of every row of an audio Parquet file (None where empty), a slice of a row group at a time,
    reading that field alone; ContainerError where the file cannot be read."""
    # A dotted name selects a struct's field; a column whose name holds a dot is read whole.
    columns = [column if "." in column else f"{column}.path"]
    try:
        with open_read(container) as f:
            file_bytes = container.stat().st_size
            pf = open_parquet(f, file_bytes, columns, streamed=True, metadata=parquet_footer(container, f, file_bytes))
            _check_audio_column(container, pf.schema_arrow, column)
            if "path" not in [field.name for field in pf.schema_arrow.field(column).type]:
                yield [None]  # no row has a path (the footer's row count is not trusted to say how many)
                return
            for _, _, part in batches(pf, f, file_bytes, columns, (f"{column}.bytes",)):
                yield _struct_paths(part.column(column).combine_chunks())
    except (pa.ArrowException, OSError, ValueError) as e:  # ValueError: LimitError, and text that is not UTF-8
        raise ContainerError(f"{container}: cannot read it as Parquet ({first_line(e)})") from None


def _struct_paths(audio: pa.StructArray) -> list[str | None]:
    names = [audio.type.field(i).name for i in range(audio.type.num_fields)]
    if "path" not in names:
        return [None] * len(audio)
    return [p if p else None for p in python_values(audio.field("path"))]
