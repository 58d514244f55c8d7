"""Rewrites a Parquet file's footer as an attacker would: the footer (Thrift compact protocol) is
decoded into nested fields, edited, and encoded again, the pages left as they are.

A struct is a dict {field id: (type, value)}; a list is (element type, [values]).
"""
from __future__ import annotations

import struct

STOP, TRUE, FALSE, BYTE, I16, I32, I64, DOUBLE, BINARY, LIST, SET, MAP, STRUCT = range(13)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def byte(self) -> int:
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

    def zigzag(self) -> int:
        n = self.varint()
        return (n >> 1) ^ -(n & 1)

    def value(self, kind: int):
        if kind in (TRUE, FALSE):
            return kind == TRUE
        if kind == BYTE:
            return self.byte()
        if kind in (I16, I32, I64):
            return self.zigzag()
        if kind == DOUBLE:
            self.at += 8
            return self.data[self.at - 8:self.at]
        if kind == BINARY:
            n = self.varint()
            self.at += n
            return self.data[self.at - n:self.at]
        if kind in (LIST, SET):
            head = self.byte()
            size, element = head >> 4, head & 0x0F
            if size == 15:
                size = self.varint()
            return element, [self.byte() == TRUE if element in (TRUE, FALSE) else self.value(element)
                             for _ in range(size)]
        if kind == STRUCT:
            fields, last = {}, 0
            while True:
                head = self.byte()
                if head & 0x0F == STOP:
                    return fields
                last = last + (head >> 4) if head >> 4 else self.zigzag()
                fields[last] = (head & 0x0F, self.value(head & 0x0F))
        raise ValueError(f"type {kind} is not handled")


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        if n < 0x80:
            return bytes(out + bytes([n]))
        out.append(n & 0x7F | 0x80)
        n >>= 7


def _zigzag(n: int) -> bytes:
    return _varint((n << 1) ^ (n >> 63))


def _encode(kind: int, value) -> bytes:
    if kind in (TRUE, FALSE):
        return b""
    if kind == BYTE:
        return bytes([value])
    if kind in (I16, I32, I64):
        return _zigzag(value)
    if kind == DOUBLE:
        return bytes(value)
    if kind == BINARY:
        return _varint(len(value)) + bytes(value)
    if kind in (LIST, SET):
        element, items = value
        head = bytes([len(items) << 4 | element]) if len(items) < 15 else bytes([0xF0 | element]) + _varint(len(items))
        body = b"".join(bytes([TRUE if v else FALSE]) if element in (TRUE, FALSE) else _encode(element, v)
                        for v in items)
        return head + body
    if kind == STRUCT:
        out, last = bytearray(), 0
        for fid in sorted(value):
            t, v = value[fid]
            if t in (TRUE, FALSE):
                t = TRUE if v else FALSE
            out += bytes([(fid - last) << 4 | t]) if 0 < fid - last <= 15 else bytes([t]) + _zigzag(fid)
            out += _encode(t, v)
            last = fid
        return bytes(out + b"\0")
    raise ValueError(f"type {kind} is not handled")


def read_footer(data: bytes) -> dict:
    length = struct.unpack("<I", data[-8:-4])[0]
    return _Reader(data[-8 - length:-8]).value(STRUCT)


def with_footer(data: bytes, footer: dict) -> bytes:
    length = struct.unpack("<I", data[-8:-4])[0]
    encoded = _encode(STRUCT, footer)
    return data[:-8 - length] + encoded + struct.pack("<I", len(encoded)) + b"PAR1"


def column_chunks(footer: dict):
    """The ColumnMetaData struct of every column chunk of every row group."""
    for group in footer[4][1][1]:
        for chunk in group[1][1][1]:
            yield chunk[3][1]


def hide_dictionaries(data: bytes) -> bytes:
    """The file with every dictionary page hidden from its footer: the chunk's data page offset
    moved to the dictionary page, which the footer then no longer names (nor its encodings stats)."""
    footer = read_footer(data)
    for meta in column_chunks(footer):
        if 11 in meta:
            meta[9] = (I64, meta.pop(11)[1])
            meta.pop(13, None)
    return with_footer(data, footer)


def understate_sizes(data: bytes) -> bytes:
    """The file with its footer stating every chunk's and row group's size as no more than what
    it takes in the file: what pages decompress to is then seen in their headers only."""
    footer = read_footer(data)
    for group in footer[4][1][1]:
        total = 0
        for chunk in group[1][1][1]:
            meta = chunk[3][1]
            meta[6] = (I64, meta[7][1])
            total += meta[7][1]
        group[2] = (I64, total)
    return with_footer(data, footer)
