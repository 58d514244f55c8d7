"""The members of a tar archive, read header by header with every size checked.

Python's `tarfile` keeps every header it has read, reads an extended (pax) header whole whatever
size it claims, and before Python 3.11.10 / 3.12.6 parses it with a regular expression that a
crafted archive makes run for hours (CVE-2024-6232). A WebDataset shard is untrusted input, so
its headers are read here instead: ustar, pax and GNU long names, each header's checksum
checked, each size checked against the bytes the archive holds. Nothing is extracted.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

from ..errors import MimiError

BLOCK = 512
MAX_EXTENDED_BYTES = 1 << 20  # a pax header or GNU long name; real ones are under a few kB
KINDS = {b"0": "file", b"\0": "file", b"7": "file", b"1": "hard link", b"2": "symbolic link",
         b"3": "character device", b"4": "block device", b"5": "directory", b"6": "FIFO"}


class TarDamage(MimiError, ValueError):
    """The archive cannot be read past `offset` (a bad header, or a member cut short)."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.offset = offset


@dataclass(frozen=True)
class TarEntry:
    """One member: its name, what it is ("file", "directory", "symbolic link" ...), and where its
    data lies in the archive."""

    name: str
    kind: str
    offset: int
    size: int


def tar_entries(f) -> Iterator[TarEntry]:
    """The members of the tar archive open in `f` (seekable, binary), in order; TarDamage where
    a header is damaged or the archive ends before a member's data does."""
    end = f.seek(0, os.SEEK_END)
    offset = 0
    extended: dict[str, str] = {}  # pax records for the next member
    global_records: dict[str, str] = {}
    long_name: str | None = None
    while True:
        f.seek(offset)
        header = f.read(BLOCK)
        if len(header) == 0 or header == bytes(BLOCK):  # the end (two zero blocks, or none)
            return
        if len(header) < BLOCK:
            raise TarDamage(f"the archive ends inside a header at byte {offset}", offset)
        size = _header_fields(header, offset)
        kind_flag = header[156:157]
        data = offset + BLOCK
        if data + size > end:
            raise TarDamage(f"a member at byte {offset} claims {size} bytes, but the archive ends {end - data} "
                            "bytes after its header (cut short, as by an interrupted download?)", offset)
        if kind_flag in (b"x", b"g", b"L"):
            if size > MAX_EXTENDED_BYTES:
                raise TarDamage(f"an extended header at byte {offset} of {size} bytes", offset)
            f.seek(data)
            body = f.read(size)
            if kind_flag == b"L":
                long_name = _text(body.split(b"\0", 1)[0])
            else:
                (global_records if kind_flag == b"g" else extended).update(_pax_records(body, offset))
        elif kind_flag != b"K":  # K: a GNU long link name, of no use here
            records = {**global_records, **extended}
            if "size" in records:
                try:
                    size = int(records["size"])
                except ValueError:
                    raise TarDamage(f"a pax size of {records['size'][:40]!r} at byte {offset}", offset) from None
                if not 0 <= size <= end - data:
                    raise TarDamage(f"a member at byte {offset} claims {size} bytes, but the archive ends "
                                    f"{end - data} bytes after its header", offset)
            name = records.get("path") or long_name or _ustar_name(header)
            yield TarEntry(name, KINDS.get(kind_flag, "special member"), data, size)
            extended, long_name = {}, None
        offset = data + (size + BLOCK - 1) // BLOCK * BLOCK


def _header_fields(header: bytes, offset: int) -> int:
    """The member size a header gives, once its checksum holds; TarDamage otherwise."""
    try:
        stored = _number(header[148:156])
    except ValueError:
        raise TarDamage(f"not a tar header at byte {offset}", offset) from None
    unsigned = sum(header[:148]) + 8 * 32 + sum(header[156:])
    signed = unsigned - 2 * sum(b for b in header if b >= 128)  # some old writers summed signed bytes
    if stored not in (unsigned, signed):
        raise TarDamage(f"not a tar header at byte {offset} (its checksum does not match)", offset)
    try:
        size = _number(header[124:136])
    except ValueError:
        raise TarDamage(f"a header at byte {offset} with an unreadable size", offset) from None
    if size < 0:
        raise TarDamage(f"a header at byte {offset} with a negative size", offset)
    return size


def _number(field: bytes) -> int:
    """A numeric header field: octal text, or GNU's base-256 (first byte 0x80 or 0xff)."""
    if field[:1] in (b"\x80", b"\xff"):
        value = int.from_bytes(field[1:], "big")
        return value - (1 << (8 * (len(field) - 1))) if field[:1] == b"\xff" else value
    text = field.split(b"\0", 1)[0].strip()
    return int(text, 8) if text else 0


def _ustar_name(header: bytes) -> str:
    name = header[:100].split(b"\0", 1)[0]
    if header[257:262] == b"ustar":
        prefix = header[345:500].split(b"\0", 1)[0]
        if prefix:
            name = prefix + b"/" + name
    return _text(name)


def _pax_records(body: bytes, offset: int) -> dict[str, str]:
    """`LENGTH KEY=VALUE\\n` records, parsed in one pass."""
    records: dict[str, str] = {}
    at = 0
    while at < len(body) and body[at:at + 1] not in (b"\0", b""):
        space = body.find(b" ", at, at + 20)
        try:
            length = int(body[at:space]) if space > at else 0
        except ValueError:
            length = 0
        record = body[space + 1:at + length]
        if length <= 0 or at + length > len(body) or not record.endswith(b"\n") or b"=" not in record:
            raise TarDamage(f"a damaged pax header at byte {offset}", offset)
        key, value = record[:-1].split(b"=", 1)
        records[_text(key)] = _text(value)
        at += length
    return records


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")
