"""Bounds on what a crafted file can make a reader do, and the readers that hold to them.

Every byte of a corpus is untrusted (docs/security.md): a line-based reader caps each line, a
compressed file may expand only so far, and JSON is nested only so deep, so that a small file
costs at most a bounded amount of memory and time. Each limit is named once here.
"""
from __future__ import annotations

import gzip
import json
import os
import zlib
from collections.abc import Iterator
from pathlib import Path

MAX_LINE_BYTES = 8 << 20  # one manifest line (a lhotse MixedCut with many tracks is a few kB)
MAX_JSON_DEPTH = 64  # lhotse cuts nest about 8 deep; the JSON fields of a tar sample, less
MAX_JSON_BYTES = 1 << 20  # a JSON member of a tar sample
# A compressed manifest may expand to this many times its size, plus a little: lhotse and
# NeMo manifests gzip about 5-10x; a gzip bomb expands a thousandfold.
MAX_EXPANSION = 32
EXPANSION_SLACK_BYTES = 16 << 20
READ_BYTES = 1 << 20


class LimitError(ValueError):
    """Input that goes past one of the bounds above; the message says which and where."""


def parse_json(data: bytes | str, what: str = "JSON") -> object:
    """The value of a JSON document nested at most MAX_JSON_DEPTH deep; LimitError for deeper
    documents, ValueError for ones that are not JSON."""
    try:
        value = json.loads(data)
    except RecursionError:
        raise LimitError(f"{what} is nested over {MAX_JSON_DEPTH} deep") from None
    if json_depth(value) > MAX_JSON_DEPTH:
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


def check_row_groups(pf, file_bytes: int) -> None:
    """LimitError if a Parquet file of `file_bytes` would expand past what that size allows (a
    decompression bomb), judged from the row group sizes its footer states."""
    meta = pf.metadata
    expanded = sum(meta.row_group(g).total_byte_size for g in range(meta.num_row_groups))
    if expanded > expansion_limit(file_bytes):
        raise LimitError(f"its row groups expand to {expanded} bytes from {file_bytes}, over {MAX_EXPANSION} "
                         "times (a decompression bomb?)")
