"""Token streams between `mimi stream-encode` and `mimi stream-decode` (and other programs).

binary (docs/stream-format.md): a 20-byte header, then each frame as K little-endian uint16.
    offset size  field
    0      4     magic b"MIMI"
    4      2     version (1), uint16 LE
    6      2     K, codebooks per frame, uint16 LE
    8      4     sample rate of the audio (24000), uint32 LE
    12     4     frame rate in millihertz (12500), uint32 LE
    16     4     codebook size (2048), uint32 LE
jsonl: a header object {"format": "mimi-tokens", "version": 1, "num_codebooks": K, ...}, then one
    {"frame": i, "codes": [K ints]} object a line.
text: one line of K space-separated ints a frame (no header).
"""
from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

from ..spec import CODEBOOK_SIZE, FRAME_RATE, MAX_CODEBOOKS, SAMPLE_RATE
from .limits import parse_json
from .pcm import MAX_RATE, StreamFormatError, read_up_to

MAGIC = b"MIMI"
VERSION = 1
HEADER = struct.Struct("<4sHHIII")
MAX_LINE = 1 << 16  # bytes in one jsonl/text line


@dataclass(frozen=True)
class StreamHeader:
    num_codebooks: int
    sample_rate: int = SAMPLE_RATE
    frame_rate: float = FRAME_RATE
    codebook_size: int = CODEBOOK_SIZE


class TokenWriter:
    """Writes frames of codes in one of the three formats; `frames` takes [K, n] int arrays."""

    def __init__(self, out: BinaryIO, fmt: str, header: StreamHeader) -> None:
        self.out, self.fmt, self.header, self.index = out, fmt, header, 0
        if fmt == "binary":
            out.write(binary_header(header))
        elif fmt == "jsonl":
            out.write((json.dumps({"format": "mimi-tokens", "version": VERSION, "num_codebooks": header.num_codebooks,
                                   "sample_rate": header.sample_rate, "frame_rate": header.frame_rate,
                                   "codebook_size": header.codebook_size}) + "\n").encode())
        elif fmt != "text":
            raise ValueError(f"unknown token stream format {fmt!r}")
        out.flush()

    def frames(self, codes: np.ndarray) -> None:
        for frame in np.asarray(codes).T:
            if self.fmt == "binary":
                self.out.write(frame.astype("<u2").tobytes())
            elif self.fmt == "jsonl":
                self.out.write((json.dumps({"frame": self.index, "codes": frame.tolist()}) + "\n").encode())
            else:
                self.out.write((" ".join(map(str, frame.tolist())) + "\n").encode())
            self.index += 1
        self.out.flush()


def binary_header(header: StreamHeader) -> bytes:
    """The 20 bytes that start a binary token stream."""
    return HEADER.pack(MAGIC, VERSION, header.num_codebooks, header.sample_rate, round(header.frame_rate * 1000),
                       header.codebook_size)


def parse_binary_header(data: bytes) -> StreamHeader:
    """The header of a binary token stream from its first 20 bytes; StreamFormatError if it is none."""
    if len(data) < HEADER.size:
        raise StreamFormatError("token stream ended inside its header")
    magic, version, k, rate, milli, size = HEADER.unpack(data[:HEADER.size])
    if magic != MAGIC:
        raise StreamFormatError(f"not a mimi token stream (magic {magic!r}, expected {MAGIC!r})")
    return _header(version, k, rate, milli / 1000, size)


def binary_frame(data: bytes, header: StreamHeader, index: int) -> np.ndarray:
    """One frame's codes [K] from its 2K bytes, checked to be in range."""
    frame = np.frombuffer(data, "<u2").astype(np.int64)
    if frame.max() >= header.codebook_size:
        raise StreamFormatError(f"frame {index}: token out of range 0..{header.codebook_size - 1}")
    return frame


def read_tokens(stream: BinaryIO) -> tuple[StreamHeader, Iterator[np.ndarray]]:
    """Detects the format from the first bytes; returns the header and an iterator of [K] frames.

    Anything that is not a well-formed stream (a bad header, a frame of another length, a token
    out of range or not an integer, an over-long line) raises StreamFormatError.
    """
    first = stream.read(1)
    if not first:
        raise StreamFormatError("empty token stream")
    if first == MAGIC[:1]:
        header = parse_binary_header(first + read_up_to(stream, HEADER.size - 1))
        return header, _binary_frames(stream, header)
    if first in b"{0123456789":
        lines = _lines(stream, first)
        line = next(lines, None)
        if line is None:
            raise StreamFormatError("empty token stream")
        if first == b"{":
            obj = _json(line, 0)
            if obj.get("format") == "mimi-tokens":
                header = _header(obj.get("version"), obj.get("num_codebooks"), obj.get("sample_rate", SAMPLE_RATE),
                                 obj.get("frame_rate", FRAME_RATE), obj.get("codebook_size", CODEBOOK_SIZE))
                return header, _json_frames(lines, header, 0)
            values = obj.get("codes")
        else:
            values = _text_values(line, 0)
        if not isinstance(values, list) or not 1 <= len(values) <= MAX_CODEBOOKS:
            raise StreamFormatError(f"frame 0: not a frame of 1 to {MAX_CODEBOOKS} codes: {line[:60]!r}")
        header = StreamHeader(len(values))
        return header, _prepend(_check(values, header, 0), _json_frames(lines, header, 1))
    raise StreamFormatError(f"not a mimi token stream (starts with {first!r}; expected binary, jsonl or text)")


def _header(version: object, k: object, rate: object, frame_rate: object, size: object) -> StreamHeader:
    """The stream's header, once each field is of a kind and size mimi can decode."""
    if version != VERSION:
        raise StreamFormatError(f"token stream version {version!r}; this mimi reads version {VERSION}")
    if not _is_int(k) or not 1 <= k <= MAX_CODEBOOKS:
        raise StreamFormatError(f"token stream header: {k!r} codebooks per frame, not 1..{MAX_CODEBOOKS}")
    if not _is_int(size) or not 1 <= size <= 1 << 16:
        raise StreamFormatError(f"token stream header: codebook size {size!r}, not 1..65536")
    if not _is_int(rate) or not 1 <= rate <= MAX_RATE:
        raise StreamFormatError(f"token stream header: sample rate {rate!r}, not 1..{MAX_RATE}")
    if isinstance(frame_rate, bool) or not isinstance(frame_rate, int | float) or not 0 < frame_rate < 1e6:
        raise StreamFormatError(f"token stream header: frame rate {frame_rate!r} is not a positive number")
    return StreamHeader(k, rate, float(frame_rate), size)


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check(values: list, header: StreamHeader, index: int) -> np.ndarray:
    if len(values) != header.num_codebooks:
        raise StreamFormatError(f"frame {index} has {len(values)} codes, the stream has {header.num_codebooks}")
    if not all(_is_int(v) and 0 <= v < header.codebook_size for v in values):
        raise StreamFormatError(f"frame {index}: a token that is not an integer in 0..{header.codebook_size - 1}")
    return np.asarray(values, dtype=np.int64)


def _binary_frames(stream: BinaryIO, header: StreamHeader) -> Iterator[np.ndarray]:
    size = 2 * header.num_codebooks
    index = 0
    while data := read_up_to(stream, size):
        if len(data) < size:
            raise StreamFormatError(f"token stream truncated inside frame {index}")
        yield binary_frame(data, header, index)
        index += 1


def _lines(stream: BinaryIO, first: bytes) -> Iterator[str]:
    """Non-empty lines, each at most MAX_LINE bytes (a frame of 32 codes needs a few hundred)."""
    buf = first
    while True:
        chunk = stream.readline(MAX_LINE + 1 - len(buf))
        buf += chunk
        if len(buf) > MAX_LINE:
            raise StreamFormatError(f"a line of over {MAX_LINE} bytes: not a token stream")
        if not chunk or buf.endswith(b"\n"):
            try:
                text = buf.decode().strip()
            except UnicodeDecodeError:
                raise StreamFormatError("a line that is not UTF-8 text: not a token stream") from None
            if text:
                yield text
            if not chunk:
                return
            buf = b""


def _json(line: str, index: int) -> dict:
    try:
        obj = parse_json(line)
    except ValueError:  # LimitError too: nested deeper than a frame ever is
        obj = None
    if not isinstance(obj, dict):
        raise StreamFormatError(f"frame {index}: not a JSON object: {line[:60]!r}")
    return obj


def _text_values(line: str, index: int) -> list[int]:
    try:
        return [int(v) for v in line.split()]
    except ValueError:
        raise StreamFormatError(f"frame {index}: not a line of integer codes: {line[:60]!r}") from None


def _json_frames(lines: Iterator[str], header: StreamHeader, start: int) -> Iterator[np.ndarray]:
    for index, line in enumerate(lines, start=start):
        values = _json(line, index).get("codes") if line.startswith("{") else _text_values(line, index)
        if not isinstance(values, list):
            raise StreamFormatError(f"frame {index}: no list of codes: {line[:60]!r}")
        yield _check(values, header, index)


def _prepend(frame: np.ndarray, rest: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    yield frame
    yield from rest
