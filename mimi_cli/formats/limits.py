"""Bounds on what a crafted file can make a reader do, and the readers that hold to them.

Every byte of a corpus is untrusted (docs/security.md): a line-based reader caps each line, a
compressed file may expand only so far, and JSON is nested only so deep, so that a small file
costs at most a bounded amount of memory and time. Each limit is named once here.
"""
from __future__ import annotations

import gzip
import io
import json
import os
import threading
import zlib
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..errors import MimiError

MAX_LINE_BYTES = 8 << 20  # one manifest line (a lhotse MixedCut with many tracks is a few kB)
MAX_JSON_DEPTH = 64  # lhotse cuts nest about 8 deep; the JSON fields of a tar sample, less
MAX_JSON_BYTES = 1 << 20  # a JSON member of a tar sample
# A compressed manifest may expand to this many times its size, plus a little: lhotse and
# NeMo manifests gzip about 5-10x; a gzip bomb expands a thousandfold.
MAX_EXPANSION = 32
EXPANSION_SLACK_BYTES = 16 << 20
READ_BYTES = 1 << 20
# Rows of a Parquet row group whose columns read include text read as a dictionary: pyarrow puts
# every value stored outside the file's dictionary into one in-memory dictionary for the whole
# row group, so memory grows with its rows. This is pyarrow's default row group size.
MAX_DICTIONARY_ROWS = 1 << 20
MAX_NESTED_VALUES = 1 << 20  # values in the lists and structs of a slice's kept cells, in all
SLICE_ROWS = 8192  # rows of a row group turned into Python values at a time (strings take ten times Arrow's bytes)
# A streamed read (`batches`) takes rows in batches that the page headers show cannot hold more
# than this once read, and refuses a page of text (not audio) that decompresses to more than
# MAX_TEXT_PAGE_BYTES (a manifest line is at most MAX_LINE_BYTES).
BATCH_BYTES = 64 << 20
MAX_TEXT_PAGE_BYTES = 32 << 20
# A Parquet footer may take FOOTER_BYTES, or 1/FOOTER_SHARE of its file where that is more (real
# files of many row groups have footers of megabytes); its bytes are walked before it is parsed.
FOOTER_BYTES = 4 << 20
FOOTER_SHARE = 16
# What pyarrow's parse of a footer may take (`pages.footer_parse_bytes`), or twice the file where
# that is more; the footers kept parsed for reuse take this much in all.
FOOTER_PARSE_BYTES = 32 << 20


class LimitError(MimiError, ValueError):
    """Input that goes past one of the bounds above; the message says which and where."""


def parse_json(data: bytes | str, what: str = "JSON", checked: bool = True) -> object:
    """The value of a JSON document nested at most MAX_JSON_DEPTH deep; LimitError for deeper
    documents, ValueError for ones that are not JSON. `checked=False` leaves the depth to a caller
    that walks the value anyway (the parser itself stops at Python's recursion limit)."""
    try:
        value = json.loads(data)
    except RecursionError:
        raise LimitError(f"{what} is nested over {MAX_JSON_DEPTH} deep") from None
    if checked and json_depth(value) > MAX_JSON_DEPTH:
        raise LimitError(f"{what} is nested over {MAX_JSON_DEPTH} deep")
    return value


def json_depth(value: object) -> int:
    """How deep lists and objects nest in a parsed JSON value (a scalar: 0), walked without recursion."""
    deepest = 0
    pending = [(value, 1)]
    while pending:
        v, depth = pending.pop()
        items = v.values() if isinstance(v, dict) else v if isinstance(v, list) else None
        if items is None:
            continue
        deepest = max(deepest, depth)
        if deepest > MAX_JSON_DEPTH:
            return deepest
        pending.extend((child, depth + 1) for child in items if isinstance(child, dict | list))
    return deepest


def is_gzip(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(".gz")


def expansion_limit(compressed_bytes: int) -> int:
    """How many bytes a compressed file of `compressed_bytes` may expand to."""
    return EXPANSION_SLACK_BYTES + MAX_EXPANSION * compressed_bytes


def read_lines(path: Path) -> Iterator[bytes]:
    """The non-empty lines of a text file (gzip-compressed if it ends in `.gz`), stripped, as
    bytes, each at most MAX_LINE_BYTES; a gzip file read no further than `expansion_limit` of
    its size. Going past a bound raises LimitError after the lines before it; so do damaged
    gzip data; an unreadable file raises OSError."""
    compressed = is_gzip(path)
    limit = expansion_limit(os.path.getsize(path)) if compressed else None
    total = 0
    carry = b""
    with (gzip.open(path, "rb") if compressed else open(path, "rb")) as f:
        while True:
            try:
                chunk = f.read(READ_BYTES)
            except (EOFError, zlib.error, gzip.BadGzipFile) as e:
                raise LimitError(f"damaged gzip data ({e})") from None
            total += len(chunk)
            if limit is not None and total > limit:
                raise LimitError(f"it decompresses to over {MAX_EXPANSION} times its size (a gzip bomb?); "
                                 "mimi stops reading there")
            lines = (carry + chunk).split(b"\n")
            carry = lines.pop() if chunk else b""
            for line in lines:
                line = line.strip()
                if len(line) > MAX_LINE_BYTES:
                    raise LimitError(f"a line of over {MAX_LINE_BYTES >> 20} MiB")
                if line:
                    yield line
            if len(carry) > MAX_LINE_BYTES:
                raise LimitError(f"a line of over {MAX_LINE_BYTES >> 20} MiB")
            if not chunk:
                return


# Bytes a value of each physical type takes once read (text and bytes: at least their 4-byte length).
_WIDTH = {"BOOLEAN": 1, "INT32": 4, "FLOAT": 4, "INT64": 8, "DOUBLE": 8, "INT96": 12, "BYTE_ARRAY": 4}


def check_row_groups(meta: pq.FileMetaData, file_bytes: int) -> None:
    """LimitError if a Parquet file of `file_bytes` would expand past what that size allows (a
    decompression bomb), judged from its footer `meta`: the row groups' stated sizes, and each
    fixed-width column's value count times its width (dictionary and run-length encoding let a
    few bytes stand for millions of values, which the stated sizes do not show)."""
    for g in range(meta.num_row_groups):
        if meta.row_group(g).num_columns != meta.num_columns:
            raise LimitError(f"row group {g} lists {meta.row_group(g).num_columns} column chunks, its schema "
                             f"{meta.num_columns} columns")
    limit = expansion_limit(file_bytes)
    expanded = sum(meta.row_group(g).total_byte_size for g in range(meta.num_row_groups))
    counted = stored = 0
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        for c in range(group.num_columns):
            column = group.column(c)
            stored += max(0, column.total_compressed_size)
            width = _WIDTH.get(column.physical_type) or (
                column.type_length if column.physical_type == "FIXED_LEN_BYTE_ARRAY" else 0)
            counted += column.num_values * (width or 4)
    if stored > file_bytes:
        raise LimitError(f"its footer claims {stored} bytes of columns in a file of {file_bytes}")
    if max(expanded, counted) > limit:
        raise LimitError(f"it expands to {max(expanded, counted)} bytes from {file_bytes}, over {MAX_EXPANSION} "
                         "times (a decompression bomb?)")


def dictionary_columns(pf, columns: list[str] | None = None, streamed: bool = False) -> list[str]:
    """The text and bytes columns (dotted paths) of `columns` (top-level names or dotted paths;
    None: all), to read as Arrow dictionaries (`read_dictionary=`), so that a value repeated a
    million times is not copied a million times before `ExpansionBudget` has counted it: every
    one, whatever the footer says of dictionary pages (a footer can hide one). `streamed`: for
    `batches`, which bounds each batch of rows by their pages instead, so only text inside lists
    (where a row's values are not bounded by its pages)."""
    meta, schema = pf.metadata, pf.schema
    return sorted(schema.column(c).path for c in range(meta.num_columns)
                  if schema.column(c).physical_type == "BYTE_ARRAY" and _selected(schema.column(c).path, columns)
                  and (not streamed or schema.column(c).max_repetition_level > 0))


def paged_dictionary(source, file_bytes: int, meta: pq.FileMetaData, group: int, path: str) -> bool:
    """Whether the chunk of column `path` (dotted) in row group `group` holds a dictionary page,
    as its page headers say (`pages.chunk_pages`)."""
    from .pages import chunk_pages

    return any(meta.row_group(group).column(c).path_in_schema == path
               and chunk_pages(source, file_bytes, meta, group, c).dictionary for c in range(meta.num_columns))


def check_pages(location, source, file_bytes: int, meta: pq.FileMetaData) -> None:
    """LimitError if the pages of a Parquet file read a row group at a time whole (token shards)
    decompress to more than its `file_bytes` may expand to (`ExpansionBudget.spend_pages`), as
    their headers say; once for each version of the file its footer is kept for (`parquet_footer`:
    a reader opens a shard for each row group it reads). `batches` spends them a row group at a
    time instead."""
    from .pages import chunk_pages

    key = _identity(location, source, file_bytes)
    if _footers.paged(key):
        return
    budget = ExpansionBudget(file_bytes)
    with _seekable(source) as f:
        for g in range(meta.num_row_groups):
            for c in range(meta.num_columns):
                budget.spend_pages(chunk_pages(f, file_bytes, meta, g, c).expanded)
    _footers.mark_paged(key)


@contextmanager
def _seekable(source):
    """`source` as a seekable file: opened here if it is a path."""
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as f:
            yield f
    else:
        yield source


def _selected(path: str, columns: list[str] | None) -> bool:
    """Whether reading `columns` reads the column chunk at `path` (a struct's fields with it)."""
    return columns is None or any(path == c or path.startswith(c + ".") for c in columns)


class ExpansionBudget:
    """Counts the bytes that a Parquet file's text and bytes values take once expanded, row group
    by row group, and apart from them what its pages decompress to; LimitError once either passes
    `expansion_limit` of the file's size."""

    def __init__(self, file_bytes: int) -> None:
        self.limit, self.used, self.paged = expansion_limit(file_bytes), 0, 0

    def spend_pages(self, expanded: int) -> None:
        """Counts what pages decompress to (`pages.ChunkPages.expanded`), apart from the values:
        pyarrow inflates a page whole whether or not its values are used (a dictionary of one
        unused 32 MiB entry in every row group costs time and shows in no value)."""
        self.paged += expanded
        if self.paged > self.limit:
            raise LimitError(f"its pages decompress to over {self.limit} bytes, over {MAX_EXPANSION} times its size "
                             "(a decompression bomb?)")

    @classmethod
    def row_group(cls, pf: pq.ParquetFile, group: int) -> ExpansionBudget:
        """A budget for one row group: what its stored columns may expand to (`check_row_groups`
        holds their stated sizes to the file's)."""
        meta = pf.metadata.row_group(group)
        return cls(sum(max(0, meta.column(c).total_compressed_size) for c in range(meta.num_columns)))

    def spend(self, table: pa.Table) -> None:
        for column in table.columns:
            for chunk in column.chunks:
                pending = [chunk]
                while pending:
                    array = pending.pop()
                    kind = array.type
                    if pa.types.is_struct(kind):
                        pending.extend(array.field(i) for i in range(kind.num_fields))
                    elif pa.types.is_map(kind):
                        self.used += 8 * len(array)
                        pending.extend(_map_values(array))
                    elif pa.types.is_list(kind) or pa.types.is_large_list(kind):
                        self.used += 8 * len(array)  # offsets; the values these rows hold, not the whole child
                        pending.append(array.flatten())
                    elif pa.types.is_fixed_size_list(kind):
                        pending.append(array.flatten())
                    elif pa.types.is_dictionary(kind) and _is_text(kind.value_type):
                        lengths = pc.binary_length(array.dictionary)
                        self.used += int(pc.sum(pc.take(lengths, array.indices)).as_py() or 0)  # nulls: none
                    else:
                        self.used += array.nbytes
        if self.used > self.limit:
            raise LimitError(f"its values expand to over {self.limit} bytes, over {MAX_EXPANSION} times its size "
                             "(a decompression bomb?)")


def footer_limit(file_bytes: int) -> int:
    """The most bytes a Parquet file of `file_bytes` may give its footer."""
    return max(FOOTER_BYTES, file_bytes // FOOTER_SHARE)


def read_footer(source, file_bytes: int) -> pq.FileMetaData:
    """A Parquet file's footer (`source` a path, or open and seekable; `file_bytes` long), not yet
    checked (`check_row_groups`). Files read more than once take theirs from `parquet_footer`."""
    return _read_footer(source, file_bytes)[0]


def _read_footer(source, file_bytes: int) -> tuple[pq.FileMetaData, int]:
    """The footer, parsed once the length the file states for it (in its last 8 bytes) is within
    `footer_limit` and what its parse takes (`pages.footer_parse_bytes`, walked in its bytes) is
    within FOOTER_PARSE_BYTES or twice the file; and that."""
    from .pages import footer_parse_bytes

    with _seekable(source) as f:
        f.seek(max(0, file_bytes - 8))
        tail = f.read(8)
        # no Parquet magic: not Parquet at all (an audio file, say), which pyarrow says below
        length = int.from_bytes(tail[:4], "little") if len(tail) == 8 and tail[4:] == b"PAR1" else 0
        if length > footer_limit(file_bytes):
            raise LimitError(f"its footer takes {length} bytes, over the {footer_limit(file_bytes)} mimi reads for a "
                             "file of its size (so many row groups and columns); rewrite it with fewer, larger row "
                             "groups")
        cost = 0
        if 0 < length <= file_bytes - 8:  # else pyarrow says what is wrong
            f.seek(file_bytes - 8 - length)
            cost = footer_parse_bytes(f.read(length), max(FOOTER_PARSE_BYTES, 2 * file_bytes))
        f.seek(0)
        return pq.ParquetFile(f).metadata, cost


@dataclass
class _Footer:
    """A parsed footer kept for reuse: what `check_row_groups` said of it, what its parse takes,
    and whether `check_pages` has passed the file's pages."""

    metadata: pq.FileMetaData
    refusal: LimitError | None
    cost: int
    paged: bool = False


class _Footers:
    """Footers kept parsed, by file version (`_identity`), for the listing passes, the reader
    threads and the shard reader, so that a file's footer is parsed once, not once per pass,
    thread, row group and open: the latest, and those before it while their parses take
    FOOTER_PARSE_BYTES in all."""

    def __init__(self) -> None:
        self.lock, self.held = threading.Lock(), OrderedDict()

    def get(self, location, source, file_bytes: int, checked: bool = True) -> pq.FileMetaData:
        key = _identity(location, source, file_bytes)
        with self.lock:
            footer = self.held.get(key)
            if footer is not None:
                self.held.move_to_end(key)
            else:
                metadata, cost = _read_footer(source, file_bytes)
                footer = _Footer(metadata, None, cost)
                try:
                    check_row_groups(metadata, file_bytes)
                except LimitError as e:
                    footer.refusal = e
                if key is not None:
                    self.held[key] = footer
                    while len(self.held) > 1 and sum(f.cost for f in self.held.values()) > FOOTER_PARSE_BYTES:
                        self.held.popitem(last=False)
        if checked and footer.refusal is not None:
            raise LimitError(str(footer.refusal))
        return footer.metadata

    def paged(self, key: tuple | None) -> bool:
        """Whether `check_pages` has passed the pages of the file version `key`."""
        with self.lock:
            return key in self.held and self.held[key].paged

    def mark_paged(self, key: tuple | None) -> None:
        with self.lock:
            if key in self.held:
                self.held[key].paged = True


def _identity(location, source, file_bytes: int) -> tuple | None:
    """What tells this version of a file from another: a local file's device, inode, size and
    times (a change time no one can set back), a remote one's path, size and modification time;
    None where nothing does (bytes in memory, a remote file with no time), and what is known of
    it is not kept."""
    if isinstance(source, (io.BytesIO, pa.BufferReader)):  # not (yet) the bytes at `location`
        return None
    try:
        st = os.stat(source) if isinstance(source, (str, os.PathLike)) else os.fstat(source.fileno())
        return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns
    except (AttributeError, OSError, io.UnsupportedOperation):
        pass
    try:
        st = location.stat()
    except OSError:
        return None
    return (str(location), file_bytes, st.st_mtime_ns) if st.st_mtime_ns and st.st_size == file_bytes else None


_footers = _Footers()


def parquet_footer(location, source, file_bytes: int, checked: bool = True) -> pq.FileMetaData:
    """The footer of the Parquet file at `location` (a Path or RemotePath; open as `source`, of
    `file_bytes`), read and checked (`read_footer`, `check_row_groups`) once for all its readers.
    `checked=False`: its schema only is wanted, and a file refused for what it would expand to is
    returned all the same (its rows are refused when they are read)."""
    return _footers.get(location, source, file_bytes, checked)


def open_parquet(source, file_bytes: int, columns: list[str] | None = None, streamed: bool = False,
                 metadata: pq.FileMetaData | None = None) -> pq.ParquetFile:
    """A Parquet file ready to read `columns` from (None: all), with its footer checked: `metadata`
    from `parquet_footer`, else read now (`read_footer`, `check_row_groups`). Their text and bytes
    columns are read as dictionaries (`dictionary_columns`: spend what they expand to on an
    ExpansionBudget before taking values out), and then no row group may have over
    MAX_DICTIONARY_ROWS rows. `streamed`: to read with `batches`."""
    if metadata is None:
        metadata = read_footer(source, file_bytes)
        check_row_groups(metadata, file_bytes)
    pf = pq.ParquetFile(source, metadata=metadata)
    dictionary = dictionary_columns(pf, columns, streamed)
    if not dictionary:
        return pf
    meta = pf.metadata
    for g in range(meta.num_row_groups):  # every row group: a column is read as a dictionary in all of them
        group = meta.row_group(g)
        if group.num_rows > MAX_DICTIONARY_ROWS:
            raise LimitError(f"row group {g} holds {group.num_rows} rows, over the {MAX_DICTIONARY_ROWS} mimi reads "
                             "at once where it reads text; rewrite it with smaller row groups (pyarrow's "
                             "row_group_size)")
    try:
        return pq.ParquetFile(source, metadata=metadata, read_dictionary=dictionary)
    except KeyError as e:  # a column chunk whose path the schema does not have
        raise LimitError(f"its footer names a column {e} that its schema does not have") from None


def row_groups(pf: pq.ParquetFile, file_bytes: int, columns: list[str] | None, max_bytes: int | None = None
               ) -> Iterator[tuple[int, pa.Table]]:
    """Each row group of `pf` (opened by `open_parquet` for `columns`, its pages checked by
    `check_pages`) as its number and a table of `columns`, its values spent on one
    ExpansionBudget for the file: LimitError past it, or before reading a row group whose footer
    states over `max_bytes`."""
    budget = ExpansionBudget(file_bytes)
    for g in range(pf.metadata.num_row_groups):
        _check_group_bytes(pf, g, max_bytes)
        table = pf.read_row_group(g, columns=columns)
        budget.spend(table)
        yield g, table


def _check_group_bytes(pf: pq.ParquetFile, group: int, max_bytes: int | None) -> None:
    """LimitError before reading a row group whose footer states over `max_bytes` (None: any)."""
    if max_bytes is not None and pf.metadata.row_group(group).total_byte_size > max_bytes:
        raise LimitError(f"row group {group} holds over {max_bytes >> 30} GiB; rewrite it with smaller row groups")


def batches(pf: pq.ParquetFile, source, file_bytes: int, columns: list[str], blobs: tuple[str, ...] = (),
            max_bytes: int | None = None) -> Iterator[tuple[int, int, pa.Table]]:
    """Each row group of `pf` (opened by `open_parquet(..., streamed=True)` from `source`, of
    `file_bytes`) as tables of `columns`, each with its row group and its first row there: at most
    SLICE_ROWS rows, read in batches that the page headers show hold at most about BATCH_BYTES
    (`batch_rows`), so a row group of long distinct text is never all in memory at once. Values are
    spent on one ExpansionBudget for the file: LimitError past it, or before reading a row group
    whose footer states over `max_bytes`, or whose pages `batch_rows` refuses."""
    budget = ExpansionBudget(file_bytes)
    dictionaries = _Dictionaries(source, pf, columns)
    for g in range(pf.metadata.num_row_groups):
        _check_group_bytes(pf, g, max_bytes)
        rows = batch_rows(pf, source, file_bytes, g, columns, blobs, dictionaries, budget)
        start, pending, held, size = 0, [], 0, 0
        for batch in pf.iter_batches(batch_size=rows, row_groups=[g], columns=columns, use_threads=False):
            table = pa.Table.from_batches([batch])
            budget.spend(table)
            if pending and (held + table.num_rows > SLICE_ROWS or size + table.nbytes > BATCH_BYTES):
                yield g, start, pa.concat_tables(pending)
                start, pending, held, size = start + held, [], 0, 0
            pending.append(table)
            held, size = held + table.num_rows, size + table.nbytes
        if pending:
            yield g, start, pa.concat_tables(pending)


def batch_rows(pf: pq.ParquetFile, source, file_bytes: int, group: int, columns: list[str],
               blobs: tuple[str, ...] = (), dictionaries: _Dictionaries | None = None,
               budget: ExpansionBudget | None = None) -> int:
    """The most rows (a power of two, at most SLICE_ROWS) a batch of row group `group` may take
    so that it holds at most BATCH_BYTES once read (or, where one row's pages are larger, no more
    than they are), judged from the page headers of the columns read (`pages.chunk_pages`): a page
    is held whole while its rows are read, takes at most its values times their width once
    decoded, a plain value lies within its page, and a value from a dictionary is at most the
    dictionary's longest (read by pyarrow where it meets the dictionary first, else the dictionary
    page's size). LimitError for a page over what the whole file may expand to, a page of text
    (not `blobs`, audio bytes) over MAX_TEXT_PAGE_BYTES, and columns inside lists (whose rows
    their pages do not bound) over BATCH_BYTES in all, and pages past `budget`'s (its
    `spend_pages`)."""
    from .pages import chunk_pages

    meta, schema = pf.metadata, pf.schema
    rows = meta.row_group(group).num_rows
    windows = []  # per flat column: (its pages' first rows, their rows, their bytes once read, a row's own bytes)
    listed = 0  # bytes of the pages of columns inside lists
    biggest = 0  # the largest page of any column, once read
    for c in range(meta.num_columns):
        leaf, chunk = schema.column(c), meta.row_group(group).column(c)
        if not _selected(leaf.path, columns):
            continue
        width = leaf.length if chunk.physical_type == "FIXED_LEN_BYTE_ARRAY" else _WIDTH.get(chunk.physical_type, 8)
        pages = chunk_pages(source, file_bytes, meta, group, c)
        if pages.largest > expansion_limit(file_bytes):
            raise LimitError(f"row group {group}: a page of column {leaf.path!r} decompresses to {pages.largest} "
                             f"bytes, over {MAX_EXPANSION} times the file's size")
        if chunk.physical_type == "BYTE_ARRAY" and pages.largest > MAX_TEXT_PAGE_BYTES and leaf.path not in blobs:
            raise LimitError(f"row group {group}: a page of column {leaf.path!r} holds over "
                             f"{MAX_TEXT_PAGE_BYTES >> 20} MiB of text")
        if pages.packed > BATCH_BYTES:  # a page held whole that packs as no audio does
            raise LimitError(f"row group {group}: a page of column {leaf.path!r} decompresses to {pages.packed} "
                             "bytes, over 8 times what it takes in the file (a decompression bomb?)")
        if budget is not None:  # after the checks above, which say more of a page that is refused
            budget.spend_pages(pages.expanded)
        sizes = [u + n * max(0, width or 0) for n, u in pages.data]
        biggest = max([biggest, *sizes])
        if leaf.max_repetition_level > 0:
            listed += sum(sizes) + pages.dictionary_bytes
            continue
        longest = pages.dictionary_bytes  # a dictionary value (0: no dictionary)
        if pages.dictionary_first and longest * min(rows, SLICE_ROWS) > BATCH_BYTES:
            dictionaries = dictionaries or _Dictionaries(source, pf, columns)
            found = dictionaries.longest(group, leaf.path)
            longest = longest if found is None else found
        per_row = 16 + pages.delta + longest  # offsets, validity; a prefix-coded value is at most its page
        counts = np.array([max(n, 1) for n, _ in pages.data], np.int64)  # a page of no values is still read
        windows.append((np.cumsum(counts) - counts, counts, np.array(sizes, np.int64), per_row))
    if listed > BATCH_BYTES:
        raise LimitError(f"row group {group}: its columns inside lists take {listed >> 20} MiB once read, over the "
                         f"{BATCH_BYTES >> 20} MiB mimi reads at once; rewrite it with smaller row groups")
    one_row = _batch_bytes(1, rows, windows)  # a row's own pages are read whatever the batch
    if one_row > BATCH_BYTES + biggest:
        raise LimitError(f"row group {group}: one row's pages take {one_row} bytes once read, more than "
                         f"{BATCH_BYTES >> 20} MiB besides its largest page")
    allowed = max(BATCH_BYTES, one_row)
    batch = SLICE_ROWS
    while batch > 1 and _batch_bytes(batch, rows, windows) > allowed:
        batch //= 2
    return batch


def _batch_bytes(batch: int, rows: int, windows) -> int:
    """The most bytes a batch of `batch` rows can hold, over every batch of the row group: per
    column, the pages it overlaps (computed over the pages, not the rows: a footer's row count
    is not trusted) and its rows' own bytes."""
    total = 0
    for starts, counts, sizes, per_row in windows:
        total += min(batch, max(rows, 1)) * per_row
        if not len(sizes):
            continue
        first, last = starts // batch, (starts + counts - 1) // batch  # the batches each page overlaps
        order = np.argsort(first, kind="stable")
        by_first, added = first[order], np.cumsum(sizes[order])
        order = np.argsort(last, kind="stable")
        by_last, removed = last[order], np.cumsum(sizes[order])
        candidates = np.unique(first)  # a batch's sum only rises where a page begins
        opened = added[np.searchsorted(by_first, candidates, "right") - 1]
        closed_at = np.searchsorted(by_last, candidates, "left") - 1
        closed = np.where(closed_at >= 0, removed[np.maximum(closed_at, 0)], 0)
        total += int((opened - closed).max())
    return total


class _Dictionaries:
    """The longest value of a column chunk's dictionary, as pyarrow reads it: the first row read
    as a dictionary, which brings the chunk's dictionary page whole; None where it cannot tell."""

    def __init__(self, source, pf: pq.ParquetFile, columns: list[str]) -> None:
        self.source, self.pf, self.columns = source, pf, columns
        self.reader: pq.ParquetFile | None = None

    def longest(self, group: int, path: str) -> int | None:
        if self.reader is None:
            self.reader = pq.ParquetFile(self.source, metadata=self.pf.metadata,
                                         read_dictionary=dictionary_columns(self.pf, self.columns))
        try:
            batch = next(self.reader.iter_batches(batch_size=1, row_groups=[group], columns=[path],
                                                  use_threads=False), None)
            array = None if batch is None else batch.column(0)
            while array is not None and pa.types.is_struct(array.type):  # down to the one field read
                array = array.field(0) if array.type.num_fields == 1 else None
        except (KeyError, IndexError, ValueError, pa.ArrowException):  # then the dictionary page's size bounds it
            return None
        if array is None or not pa.types.is_dictionary(array.type):
            return None
        return int(pc.max(pc.binary_length(array.dictionary)).as_py() or 0)


def slices(table: pa.Table, rows: int | None = None) -> Iterator[tuple[int, pa.Table]]:
    """`table` in pieces of `rows` (default SLICE_ROWS; no copies), each with its first row's number."""
    rows = rows or SLICE_ROWS
    for start in range(0, table.num_rows, rows):
        yield start, table.slice(start, rows)


def python_values(column: pa.Array | pa.ChunkedArray) -> list:
    """A column's values as Python objects, a dictionary column's decoded first (taking values
    from a dictionary one at a time is many times slower); spend its size first. LimitError for
    lists holding over MAX_NESTED_VALUES values in all (a few bytes of Parquet each, but a Python
    object each)."""
    column = plain_column(column)
    if pa.types.is_nested(column.type):
        chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
        if sum(_count(chunk) for chunk in chunks) > MAX_NESTED_VALUES:
            raise LimitError(f"{len(column)} rows hold over {MAX_NESTED_VALUES} values in lists or structs")
    return column.to_pylist()


def _count(array: pa.Array) -> int:
    """How many values `array` holds, counting every level of its lists and structs."""
    kind = array.type
    if pa.types.is_dictionary(kind):
        return len(array)
    if pa.types.is_struct(kind):
        return len(array) + sum(_count(array.field(i)) for i in range(kind.num_fields))
    if pa.types.is_map(kind):
        return len(array) + sum(_count(values) for values in _map_values(array))
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        return len(array) + _count(array.flatten())
    return len(array)


def _map_values(array: pa.MapArray) -> list[pa.Array]:
    """The keys and items of a map column's rows (`flatten` has no kernel for dictionary items)."""
    offsets = array.offsets.to_numpy(zero_copy_only=False)
    start, stop = int(offsets[0]), int(offsets[-1])
    return [array.keys.slice(start, stop - start), array.items.slice(start, stop - start)]


def plain_type(kind: pa.DataType) -> pa.DataType:
    """A dictionary type as its values' type; any other as it is."""
    return kind.value_type if pa.types.is_dictionary(kind) else kind


def plain_column(column: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """A dictionary column decoded to its values' type (once its size is spent); any other as it is."""
    return column.cast(column.type.value_type) if pa.types.is_dictionary(column.type) else column


def plain(table: pa.Table) -> pa.Table:
    """`table` with its top-level dictionary columns as their plain type (once their size is spent)."""
    return pa.table({name: plain_column(column) for name, column in zip(table.column_names, table.columns)})


def _is_text(kind: pa.DataType) -> bool:
    return (pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or pa.types.is_string(kind)
            or pa.types.is_large_string(kind))
