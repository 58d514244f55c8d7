"""The page headers of a Parquet column chunk, read as pyarrow will meet them, before it reads the
pages: what the footer says of a chunk (its dictionary page, its sizes) is not what the reader
goes by, so a footer can hide a dictionary page whose one value every row repeats.

A chunk's pages start where pyarrow starts them (the footer's data page offset, or its dictionary
page offset if that comes first) and follow each other, a Thrift header then the page's bytes,
until the chunk's values are all seen or its bytes end. Headers are in Thrift's compact protocol;
this module reads the few fields it needs and skips the rest.
"""
from __future__ import annotations

from dataclasses import dataclass

from .limits import LimitError

DATA_PAGE, DICTIONARY_PAGE, DATA_PAGE_V2 = 0, 2, 3
MAX_HEADER_BYTES = 16 << 20  # pyarrow's own bound on one page header
MAX_THRIFT_DEPTH = 64
# Values in one page header: a real one has a few dozen (its sizes, encodings and statistics);
# each skipped costs a few microseconds here, so millions of empty ones would cost seconds.
MAX_HEADER_VALUES = 1 << 16
# pyarrow reads up to this much past a chunk's stated end for files of parquet-mr 1.2.8 and before,
# which left the dictionary page's header out of the chunk's size.
OLD_WRITER_PADDING = 100


DICTIONARY_ENCODINGS = (2, 8)  # PLAIN_DICTIONARY, RLE_DICTIONARY
DELTA_BYTE_ARRAY = 7
PACKED = 8  # audio compresses two or three times at most; a page packed tighter than this is worth a look


@dataclass(frozen=True)
class ChunkPages:
    """What a column chunk's page headers say: whether it has a dictionary page and the most
    bytes one decompresses to; whether pyarrow meets that dictionary, whole, at the chunk's first
    value (a dictionary page, then a data page of dictionary indices); each data page's values
    and decompressed bytes, in order; the most bytes any page decompresses to; and the chunk's
    bytes, headers included, as stored and once decompressed (what an honest footer states)."""

    dictionary: bool
    dictionary_bytes: int
    dictionary_first: bool
    data: tuple[tuple[int, int], ...]
    largest: int
    packed: int  # the most bytes a page decompresses to that is over PACKED times its stored bytes (0: none)
    delta: int  # the most bytes a page of prefix-coded values (DELTA_BYTE_ARRAY) decompresses to (0: none)
    stored: int
    expanded: int


class _Short(LimitError):
    """The header runs past the bytes read so far (read more, or refuse it)."""


class _Thrift:
    """A reader of Thrift's compact protocol over bytes."""

    def __init__(self, data: bytes, max_values: int | None = MAX_HEADER_VALUES) -> None:
        self.data, self.at, self.values, self.max_values = data, 0, 0, max_values

    def byte(self) -> int:
        if self.at >= len(self.data):
            raise _Short
        self.at += 1
        return self.data[self.at - 1]

    def varint(self) -> int:
        value = shift = 0
        while True:
            b = self.byte()
            value |= (b & 0x7F) << shift
            if not b & 0x80:
                return value
            shift += 7
            if shift > 63:
                raise ValueError("a Thrift integer over 64 bits")

    def integer(self, bits: int = 64) -> int:
        """A zigzag integer of `bits` (16, 32, 64), cut to that width before it is decoded, as
        Thrift's own readers do (a varint may carry more bits than its type)."""
        n = self.varint() & ((1 << bits) - 1)
        return (n >> 1) ^ -(n & 1)

    def skip_bytes(self, n: int) -> None:
        if n < 0:
            raise ValueError("a negative Thrift length")
        if self.at + n > len(self.data):
            raise _Short
        self.at += n

    def fields(self):
        """(field id, type) of each field of a struct, until its end."""
        last = 0
        while True:
            head = self.byte()
            kind = head & 0x0F
            if kind == 0:
                return
            delta = head >> 4
            last = last + delta if delta else self.integer(16)
            yield last, kind

    def skip(self, kind: int, depth: int = 0) -> None:
        if depth > MAX_THRIFT_DEPTH:
            raise ValueError(f"Thrift nested over {MAX_THRIFT_DEPTH} deep")
        self.values += 1
        if self.max_values is not None and self.values > self.max_values:
            raise ValueError(f"over {self.max_values} Thrift values in one header")
        if kind in (1, 2):  # a struct field's boolean is in its type
            return
        if kind == 3:
            self.skip_bytes(1)
        elif kind in (4, 5, 6):
            self.varint()  # any width: only skipped
        elif kind == 7:
            self.skip_bytes(8)
        elif kind == 8:
            self.skip_bytes(self.varint())
        elif kind in (9, 10):
            size, element = self.list_header()
            for _ in range(size):
                if element in (1, 2):
                    self.skip(3, depth + 1)  # a boolean in a list takes a byte
                else:
                    self.skip(element, depth + 1)
        elif kind == 11:
            size = self.varint()
            if size:
                types = self.byte()
                for _ in range(size):
                    for kind in (types >> 4, types & 0x0F):
                        if kind in (1, 2):
                            self.skip(3, depth + 1)  # a boolean in a map takes a byte
                        else:
                            self.skip(kind, depth + 1)
        elif kind == 12:
            for _, inner in self.fields():
                self.skip(inner, depth + 1)
        else:
            raise ValueError(f"a Thrift field of unknown type {kind}")

    def list_header(self) -> tuple[int, int]:
        """A list's (or set's) size and element type; _Short where it states more elements than
        bytes remain (each takes one at least): pyarrow makes room for them all before it reads one."""
        head = self.byte()
        size, element = head >> 4, head & 0x0F
        if size == 15:
            size = self.varint()
        if size > len(self.data) - self.at:
            raise _Short
        return size, element

    def struct_ints(self, wanted: set[int]) -> dict[int, int]:
        """The integer fields `wanted` of the struct that starts here; the others skipped."""
        found = {}
        for fid, kind in self.fields():
            if fid in wanted and kind in (3, 4, 5, 6):
                found[fid] = self.byte() if kind == 3 else self.integer({4: 16, 5: 32, 6: 64}[kind])
            else:
                self.skip(kind)
        return found


@dataclass(frozen=True)
class _Header:
    type: int
    uncompressed: int  # the most bytes the page takes once read: its stated size, or its stored one if larger
    compressed: int
    values: int  # a data page's values (with nulls); 0 for other pages
    encoding: int  # a data page's encoding of its values; -1 for other pages
    length: int  # the header's own bytes


def _header(data: bytes) -> _Header:
    t = _Thrift(data)
    top: dict[int, int] = {}
    found: dict[int, dict[int, int]] = {}  # data page header v1 (values: 1, encoding: 2), v2 (values: 1, encoding: 4)
    for fid, kind in t.fields():
        if fid in (1, 2, 3) and kind == 5:
            top[fid] = t.integer(32)
        elif fid in (5, 8) and kind == 12:
            found[fid] = t.struct_ints({1, 2 if fid == 5 else 4})
        else:
            t.skip(kind)
    if len(top) < 3:
        raise ValueError("a page header without its type or sizes")
    # pyarrow reads the header its page type names, and a page's bytes are at least what is stored
    # (an uncompressed page is held at its stored size, whatever the other size says).
    version = {DATA_PAGE: 5, DATA_PAGE_V2: 8}.get(top[1])
    fields = found.get(version, {})
    values, encoding = fields.get(1, 0), fields.get(2 if version == 5 else 4, -1)
    return _Header(top[1], max(top[2], top[3]), top[3], values, encoding, t.at)


def chunk_pages(f, file_bytes: int, meta, group: int, column: int) -> ChunkPages:
    """The page headers of column chunk `column` of row group `group` of a Parquet file open as `f`
    (seekable, `file_bytes` long) whose footer is `meta` (pyarrow FileMetaData); LimitError
    where they cannot be read as pyarrow would read them."""
    chunk = meta.row_group(group).column(column)
    start = chunk.data_page_offset
    if chunk.has_dictionary_page and 0 < chunk.dictionary_page_offset < start:
        start = chunk.dictionary_page_offset
    end = start + chunk.total_compressed_size
    if start < 0 or chunk.total_compressed_size < 0 or end > file_bytes:
        raise LimitError(f"row group {group}: a column chunk lies outside the file")
    if "parquet-mr" in (meta.created_by or ""):  # pyarrow pads versions before 1.2.9; reading more is harmless
        end = min(file_bytes, end + OLD_WRITER_PADDING)
    pos, seen, largest, packed, expanded, delta = start, 0, 0, 0, 0, 0
    dictionary: int | None = None  # the most bytes a dictionary page decompresses to
    first: bool | None = None  # whether the first data page comes after a dictionary page, in its indices
    data = []
    while seen < chunk.num_values and pos < end:
        header = _read_header(f, pos, end, group)
        if header.compressed < 0 or header.uncompressed < 0 or header.values < 0:
            raise LimitError(f"row group {group}: a page header with a negative size")
        if pos + header.length + header.compressed > end:
            raise LimitError(f"row group {group}: a page runs past its column chunk")
        expanded += header.length + header.uncompressed
        if header.type == DICTIONARY_PAGE:
            dictionary = max(dictionary or 0, header.uncompressed)
        if header.type in (DATA_PAGE, DATA_PAGE_V2):
            if first is None:
                first = dictionary is not None and header.encoding in DICTIONARY_ENCODINGS
            seen += header.values
            data.append((header.values, header.uncompressed))
            if header.encoding == DELTA_BYTE_ARRAY:  # a value takes its prefix from the one before: up to the page
                delta = max(delta, header.uncompressed)
        largest = max(largest, header.uncompressed)
        if header.uncompressed > PACKED * header.compressed:
            packed = max(packed, header.uncompressed)
        pos += header.length + header.compressed
    return ChunkPages(dictionary is not None, dictionary or 0, bool(first), tuple(data), largest, packed, delta,
                      pos - start, expanded)


def _read_header(f, pos: int, end: int, group: int) -> _Header:
    size = 64 << 10  # a read this size holds any real header whole, so it is walked once, not again at each size
    while True:
        f.seek(pos)
        data = f.read(min(size, end - pos))
        try:
            return _header(data)
        except _Short:
            if len(data) >= end - pos or size >= MAX_HEADER_BYTES:
                raise LimitError(f"row group {group}: a page header runs past its column chunk") from None
            size = min(size * 8, MAX_HEADER_BYTES)
        except (ValueError, IndexError) as e:
            raise LimitError(f"row group {group}: a page header mimi cannot read ({e})") from None


# pyarrow's parse of a footer takes about this much for each column chunk (a C++ structure with
# room for every optional field, however few the footer gives it), row group and schema element,
# besides what its strings take (its bytes, eight times over).
FOOTER_STRUCT_BYTES = 700
FOOTER_BYTE_COST = 8


def footer_parse_bytes(data: bytes, limit: int) -> int:
    """About the memory pyarrow takes to parse the Parquet footer `data` (Thrift FileMetaData),
    counted by walking it: FOOTER_STRUCT_BYTES for each column chunk, row group and schema
    element, and FOOTER_BYTE_COST for each of its bytes. LimitError as soon as that passes
    `limit`, and where a list states more elements than the bytes left could hold."""
    t, structs = _Thrift(data, max_values=None), 0

    def count(size: int) -> None:
        nonlocal structs
        structs += size
        if FOOTER_STRUCT_BYTES * structs + FOOTER_BYTE_COST * len(data) > limit:
            raise LimitError(f"its footer describes {structs} or more row groups, column chunks and schema elements, "
                             f"which take over the {limit >> 20} MiB mimi lets a footer take once parsed; rewrite it "
                             "with fewer, larger row groups")

    try:
        count(0)
        for field, kind in t.fields():
            if field not in (2, 4) or kind != 9:  # not the schema's elements nor the row groups
                t.skip(kind)
                continue
            size, element = t.list_header()
            count(size)
            for _ in range(size):
                if field == 2 or element != 12:
                    t.skip(element, 1)
                    continue
                for group_field, group_kind in t.fields():  # a row group: count its column chunks
                    if group_field == 1 and group_kind == 9:
                        chunks, chunk = t.list_header()
                        count(chunks)
                        for _ in range(chunks):
                            t.skip(chunk, 2)
                    else:
                        t.skip(group_kind, 1)
    except _Short:
        raise LimitError("its footer ends inside a value, or states more values than it holds") from None
    except LimitError:
        raise
    except (ValueError, IndexError) as e:
        raise LimitError(f"its footer cannot be read ({e})") from None
    return FOOTER_STRUCT_BYTES * structs + FOOTER_BYTE_COST * len(data)
