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

from .pcm import StreamFormatError, read_up_to

MAGIC = b"MIMI"
VERSION = 1
HEADER = struct.Struct("<4sHHIII")


@dataclass(frozen=True)
class StreamHeader:
    num_codebooks: int
    sample_rate: int = 24000
    frame_rate: float = 12.5
    codebook_size: int = 2048


class TokenWriter:
    """Writes frames of codes in one of the three formats; `frames` takes [K, n] int arrays."""

    def __init__(self, out: BinaryIO, fmt: str, header: StreamHeader) -> None:
        self.out, self.fmt, self.header, self.index = out, fmt, header, 0
        if fmt == "binary":
            out.write(HEADER.pack(MAGIC, VERSION, header.num_codebooks, header.sample_rate,
                                  round(header.frame_rate * 1000), header.codebook_size))
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


def read_tokens(stream: BinaryIO) -> tuple[StreamHeader, Iterator[np.ndarray]]:
    """Detects the format from the first bytes; returns the header and an iterator of [K] frames."""
    first = stream.read(1)
    if not first:
        raise StreamFormatError("empty token stream")
    if first == MAGIC[:1]:
        rest = first + read_up_to(stream, HEADER.size - 1)
        if len(rest) < HEADER.size:
            raise StreamFormatError("token stream ended inside its header")
        magic, version, k, rate, milli, size = HEADER.unpack(rest)
        if magic != MAGIC:
            raise StreamFormatError(f"not a mimi token stream (magic {magic!r}, expected {MAGIC!r})")
        if version != VERSION:
            raise StreamFormatError(f"token stream version {version}; this mimi reads version {VERSION}")
        header = StreamHeader(k, rate, milli / 1000, size)
        return header, _binary_frames(stream, header)
    if first in b"{0123456789":
        lines = _lines(stream, first)
        line = next(lines, None)
        if first == b"{":
            obj = json.loads(line)
            if obj.get("format") == "mimi-tokens":
                header = StreamHeader(obj["num_codebooks"], obj.get("sample_rate", 24000),
                                      obj.get("frame_rate", 12.5), obj.get("codebook_size", 2048))
                return header, _json_frames(lines, header)
            frame = np.asarray(obj["codes"])
        else:
            frame = np.asarray([int(v) for v in line.split()])
        header = StreamHeader(len(frame))
        return header, _prepend(frame, _json_frames(lines, header))
    raise StreamFormatError(f"not a mimi token stream (starts with {first!r}; expected binary, jsonl or text)")


def _check(frame: np.ndarray, header: StreamHeader, index: int) -> np.ndarray:
    if frame.shape != (header.num_codebooks,):
        raise StreamFormatError(f"frame {index} has {frame.size} codes, the stream has {header.num_codebooks}")
    if frame.size and (frame.min() < 0 or frame.max() >= header.codebook_size):
        raise StreamFormatError(f"frame {index}: token out of range 0..{header.codebook_size - 1}")
    return frame


def _binary_frames(stream: BinaryIO, header: StreamHeader) -> Iterator[np.ndarray]:
    size = 2 * header.num_codebooks
    index = 0
    while data := read_up_to(stream, size):
        if len(data) < size:
            raise StreamFormatError(f"token stream truncated inside frame {index}")
        yield _check(np.frombuffer(data, "<u2").astype(np.int64), header, index)
        index += 1


def _lines(stream: BinaryIO, first: bytes) -> Iterator[str]:
    buf = first
    while True:
        chunk = stream.readline()
        buf += chunk
        if not chunk or buf.endswith(b"\n"):
            text = buf.decode().strip()
            if text:
                yield text
            if not chunk:
                return
            buf = b""


def _json_frames(lines: Iterator[str], header: StreamHeader) -> Iterator[np.ndarray]:
    for index, line in enumerate(lines):
        try:
            values = json.loads(line)["codes"] if line.startswith("{") else [int(v) for v in line.split()]
        except (ValueError, KeyError, TypeError):
            raise StreamFormatError(f"frame {index}: not a frame of codes: {line[:60]!r}") from None
        yield _check(np.asarray(values, dtype=np.int64), header, index)


def _prepend(frame: np.ndarray, rest: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    yield frame
    yield from rest
