"""PCM byte streams: WAV headers (incl. streaming placeholders), raw sample formats, WAV writing.

Readers take bytes as they arrive and hold back the bytes of an incomplete sample frame, so a
pipe can deliver any number of bytes per read.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

from ..errors import MimiError

SAMPLE_FORMATS = {"u8": (1, "u"), "s16le": (2, "i"), "s24le": (3, "i"), "s32le": (4, "i"),
                  "f32le": (4, "f"), "f64le": (8, "f")}  # all read; the first four written too
WRITTEN_FORMATS = ("s16le", "s24le", "s32le", "f32le")
# Streaming writers that cannot seek back put 0 or a huge size in the header (arecord: 0x80000000,
# sox: 0x7FFFF000 and up, ffmpeg: 0xFFFFFFFF); such a data chunk runs to the end of the stream.
UNKNOWN_SIZE_FROM = 0x7FFF0000
MAX_RATE = 768000  # no audio interface records faster; a header above it is damaged or hostile
MAX_CHANNELS = 64
MAX_HEADER_CHUNK = 1 << 12  # fmt and ds64 chunks are 16 to 40 bytes; a larger claim is not a WAV header
MAX_SKIPPED_CHUNK = 1 << 24  # LIST, fact, PEAK ... before the data: skipped, read in pieces


_PCM_GUID_TAIL = bytes.fromhex("000000001000800000aa00389b71")


def _unknown(size: int) -> bool:
    return size == 0 or size >= UNKNOWN_SIZE_FROM


class StreamFormatError(MimiError):
    """Bytes that are not the stream they claim to be (bad header, wrong magic, truncation)."""

    exit_code = 1  # the input stream failed: what was complete before it is written


@dataclass(frozen=True)
class PcmFormat:
    rate: int
    channels: int
    sample_format: str  # a key of SAMPLE_FORMATS

    @property
    def frame_bytes(self) -> int:
        return SAMPLE_FORMATS[self.sample_format][0] * self.channels


def read_up_to(stream: BinaryIO, n: int) -> bytes:
    """`n` bytes, or fewer only where the stream ends (a pipe may return less per read)."""
    data = b""
    while len(data) < n:
        chunk = stream.read(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


class Prefixed:
    """A stream whose first bytes were read to tell its format, with them put back in front.
    `read(n)` returns what is at hand (never waits to fill `n`), and it has no `seek`: FFmpeg
    then treats it as the pipe it is."""

    def __init__(self, head: bytes, stream: BinaryIO) -> None:
        self.head, self.stream = head, stream
        self._read = getattr(stream, "read1", None) or stream.read

    def read(self, n: int = -1) -> bytes:
        if self.head:
            data, self.head = (self.head, b"") if n < 0 or n >= len(self.head) else (self.head[:n], self.head[n:])
            return data
        return self._read(n if n >= 0 else 1 << 16)

    def fileno(self) -> int:
        return self.stream.fileno()


def _read_exact(stream: BinaryIO, n: int, what: str) -> bytes:
    data = read_up_to(stream, n)
    if len(data) < n:
        raise StreamFormatError(f"the stream ended inside the {what} ({len(data)} of {n} bytes)")
    return data


def _skip(stream: BinaryIO, n: int, what: str) -> None:
    """Reads past `n` bytes a piece at a time (no buffer of the claimed size)."""
    while n > 0:
        got = len(_read_exact(stream, min(n, 1 << 16), what))
        n -= got


def _chunk_body(stream: BinaryIO, size: int, least: int, what: str) -> bytes:
    if not least <= size <= MAX_HEADER_CHUNK:
        raise StreamFormatError(f"bad WAV header: a {what} of {size} bytes (expected {least} to {MAX_HEADER_CHUNK})")
    return _read_exact(stream, size + (size & 1), what)


def read_wav_header(stream: BinaryIO) -> tuple[PcmFormat, int | None]:
    """Parses RIFF/RF64 WAVE headers up to the data chunk: (format, data bytes or None = to EOF)."""
    head = read_up_to(stream, 12)
    if len(head) < 12 or head[:4] not in (b"RIFF", b"RF64") or head[8:12] != b"WAVE":
        shown = head[:4].decode("latin-1") if head else "nothing"
        raise StreamFormatError(f"not a WAV stream, nor Ogg, WebM, AAC, MP3 or FLAC (starts with {shown!r}); for "
                                "raw PCM pass --raw --rate R --channels C --sample-format " + "|".join(SAMPLE_FORMATS))
    rf64_data_size = None
    fmt: PcmFormat | None = None
    while True:
        chunk_id, size = struct.unpack("<4sI", _read_exact(stream, 8, "WAV header"))
        if chunk_id == b"ds64":
            body = _chunk_body(stream, size, 16, "ds64 chunk")
            rf64_data_size = struct.unpack("<Q", body[8:16])[0]
        elif chunk_id == b"fmt ":
            body = _chunk_body(stream, size, 16, "fmt chunk")
            tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", body[:16])
            if tag == 0xFFFE and len(body) >= 40:  # WAVE_FORMAT_EXTENSIBLE: the real tag is in the GUID
                if body[26:40] != _PCM_GUID_TAIL:
                    raise StreamFormatError("unsupported WAVE_FORMAT_EXTENSIBLE sub-format")
                tag = struct.unpack("<H", body[24:26])[0]
            kinds = {(1, 8): "u8", (1, 16): "s16le", (1, 24): "s24le", (1, 32): "s32le", (3, 32): "f32le",
                     (3, 64): "f64le"}
            if (tag, bits) not in kinds:
                raise StreamFormatError(f"unsupported WAV encoding (format tag {tag}, {bits}-bit): "
                                        "PCM 8/16/24/32-bit or float 32/64-bit only")
            if not 1 <= channels <= MAX_CHANNELS or not 1 <= rate <= MAX_RATE:
                raise StreamFormatError(f"bad WAV header: {channels} channels at {rate} Hz (mimi reads 1 to "
                                        f"{MAX_CHANNELS} channels at up to {MAX_RATE} Hz)")
            fmt = PcmFormat(rate, channels, kinds[(tag, bits)])
        elif chunk_id == b"data":
            if fmt is None:
                raise StreamFormatError("bad WAV header: data before fmt")
            if head[:4] == b"RF64" and size == 0xFFFFFFFF and rf64_data_size not in (None, 0):
                return fmt, rf64_data_size
            return fmt, None if _unknown(size) else size
        else:  # LIST, fact, PEAK, ...: skip
            if size > MAX_SKIPPED_CHUNK:
                raise StreamFormatError(f"bad WAV header: a {chunk_id!r} chunk of {size} bytes")
            _skip(stream, size + (size & 1), f"{chunk_id.decode('latin-1')} chunk")


class PcmDecoder:
    """Bytes of interleaved PCM -> float32 mono in [-1, 1], any number of bytes per call."""

    def __init__(self, fmt: PcmFormat) -> None:
        self.fmt = fmt
        self.rest = b""

    def __call__(self, data: bytes) -> np.ndarray:
        data = self.rest + data
        whole = len(data) // self.fmt.frame_bytes * self.fmt.frame_bytes
        self.rest = data[whole:]
        width, kind = SAMPLE_FORMATS[self.fmt.sample_format]
        raw = np.frombuffer(data[:whole], dtype=np.uint8)
        if kind == "f":
            x = raw.view("<f4" if width == 4 else "<f8").astype(np.float32)
        elif kind == "u":
            x = (raw.astype(np.float32) - 128.0) / 128.0
        elif width == 3:
            b = raw.reshape(-1, 3).astype(np.int32)
            v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
            x = (np.where(v >= 1 << 23, v - (1 << 24), v) / float(1 << 23)).astype(np.float32)
        else:
            x = (raw.view(f"<i{width}").astype(np.float32) / float(1 << (8 * width - 1))).astype(np.float32)
        x = x.reshape(-1, self.fmt.channels)
        return x.mean(axis=1) if self.fmt.channels > 1 else x[:, 0]


def encode_pcm(audio: np.ndarray, sample_format: str) -> bytes:
    """float mono -> interleaved little-endian PCM bytes, clipped for integer formats."""
    width, kind = SAMPLE_FORMATS[sample_format]
    if kind == "f":
        return audio.astype("<f4" if width == 4 else "<f8").tobytes()
    x = np.clip(audio, -1.0, 1.0)
    if kind == "u":
        return np.round(x * 127.0 + 128.0).astype(np.uint8).tobytes()
    scale = float((1 << (8 * width - 1)) - 1)
    v = np.round(x * scale).astype(np.int32)
    if width == 3:
        return np.stack([v & 0xFF, (v >> 8) & 0xFF, (v >> 16) & 0xFF], axis=1).astype(np.uint8).tobytes()
    return v.astype(f"<i{width}").tobytes()


def streaming_wav_header(rate: int, sample_format: str, channels: int = 1) -> bytes:
    """A WAV header with 'unknown length' sizes (0xFFFFFFFF), as streaming writers use."""
    width, kind = SAMPLE_FORMATS[sample_format]
    tag = 3 if kind == "f" else 1
    fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * width * channels, width * channels, 8 * width)
    return (b"RIFF" + struct.pack("<I", 0xFFFFFFFF) + b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
            + b"data" + struct.pack("<I", 0xFFFFFFFF))


def finish_wav_header(stream: BinaryIO, start: int | None, data_bytes: int) -> bool:
    """Writes the real RIFF and data sizes into the streaming header written at `start` of `stream`,
    where it is a file that can be written in place (not a pipe, not opened for appending) and the
    sizes fit; whether it did. Players then see the true length instead of "unknown"."""
    if start is None or data_bytes + 36 > 0xFFFFFFFF:
        return False
    sizes = [(start + 4, struct.pack("<I", 36 + data_bytes)), (start + 40, struct.pack("<I", data_bytes))]
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):  # an in-memory stream
        if not stream.seekable():
            return False
        end = stream.tell()
        for offset, value in sizes:
            stream.seek(offset)
            stream.write(value)
        stream.seek(end)
        return True
    import fcntl
    import os
    import stat

    if not stat.S_ISREG(os.fstat(fd).st_mode) or fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_APPEND:
        return False
    stream.flush()
    for offset, value in sizes:
        os.pwrite(fd, value, offset)
    return True
