"""WAV stream headers as real writers make them, and PCM decoding in any chunking."""
from __future__ import annotations

import io
import struct

import numpy as np
import pytest

from mimi_cli.formats.pcm import (
    PcmDecoder,
    PcmFormat,
    StreamFormatError,
    encode_pcm,
    read_wav_header,
    streaming_wav_header,
)


def wav_bytes(samples: bytes, rate=16000, channels=1, bits=16, tag=1, riff_size=None, data_size=None,
              extensible=False, extra_chunk=b"", rf64=False):
    """A WAV file built field by field (independently of the code under test)."""
    block = channels * bits // 8
    fmt = struct.pack("<HHIIHH", 0xFFFE if extensible else tag, channels, rate, rate * block, block, bits)
    if extensible:
        guid = struct.pack("<H", tag) + bytes.fromhex("000000001000800000aa00389b71")
        fmt += struct.pack("<HHI", 22, bits, 0) + guid
    body = b"WAVE"
    if rf64:
        body += b"ds64" + struct.pack("<IQQQI", 28, 0, len(samples), 0, 0)
    body += b"fmt " + struct.pack("<I", len(fmt)) + fmt + extra_chunk
    body += b"data" + struct.pack("<I", len(samples) if data_size is None else data_size) + samples
    size = len(body) if riff_size is None else riff_size
    return (b"RF64" if rf64 else b"RIFF") + struct.pack("<I", 0xFFFFFFFF if rf64 else size) + body


def read_all(data: bytes, chunk: int):
    stream = io.BytesIO(data)
    fmt, size = read_wav_header(stream)
    decoder = PcmDecoder(fmt)
    rest = stream.read() if size is None else stream.read(size)
    out = [decoder(rest[i:i + chunk]) for i in range(0, len(rest), chunk)]
    return fmt, size, np.concatenate(out) if out else np.zeros(0)


SIGNAL = (np.sin(np.arange(1000) / 7) * 0.5).astype(np.float32)
PCM16 = (SIGNAL * 32767).round().astype("<i2").tobytes()


@pytest.mark.parametrize("placeholder", [0x7FFFFFFF, 0xFFFFFFFF, 0])
def test_streaming_placeholder_sizes_read_to_end(placeholder):
    fmt, size, x = read_all(wav_bytes(PCM16, riff_size=placeholder, data_size=placeholder), 333)
    assert size is None and fmt == PcmFormat(16000, 1, "s16le")
    np.testing.assert_allclose(x, SIGNAL, atol=1 / 32767)


def test_declared_size_is_respected():
    fmt, size, x = read_all(wav_bytes(PCM16) + b"junk chunk after data", 100)
    assert size == len(PCM16) and x.size == SIGNAL.size


@pytest.mark.parametrize("bits,tag,fmtname,encode", [
    (8, 1, "u8", lambda s: (s * 127 + 128).round().astype(np.uint8).tobytes()),
    (24, 1, "s24le", lambda s: b"".join(int(v).to_bytes(3, "little", signed=True) for v in (s * 8388607).round())),
    (32, 1, "s32le", lambda s: (s * 2147483647.0).round().astype("<i4").tobytes()),
    (32, 3, "f32le", lambda s: s.astype("<f4").tobytes()),
])
@pytest.mark.parametrize("extensible", [False, True])
def test_sample_formats_and_extensible(bits, tag, fmtname, encode, extensible):
    fmt, _, x = read_all(wav_bytes(encode(SIGNAL), bits=bits, tag=tag, extensible=extensible), 7)
    assert fmt.sample_format == fmtname
    np.testing.assert_allclose(x, SIGNAL, atol=1 / 100 if bits == 8 else 1e-4)


def test_rf64_and_extra_chunks_and_stereo_mixdown():
    stereo = np.stack([SIGNAL, -SIGNAL * 0.5], axis=1)
    data = (stereo * 32767).round().astype("<i2").tobytes()
    list_chunk = b"LIST" + struct.pack("<I", 5) + b"INFO!" + b"\0"  # odd size: padded
    fmt, size, x = read_all(wav_bytes(data, channels=2, rf64=True, extra_chunk=list_chunk, data_size=0xFFFFFFFF), 5)
    assert fmt.channels == 2 and size == len(data)
    np.testing.assert_allclose(x, stereo.mean(axis=1), atol=1 / 32767)


@pytest.mark.parametrize("data,message", [
    (b"hello world, this is text", "not a WAV stream"),
    (b"", "not a WAV stream"),
    (wav_bytes(PCM16)[:30], "ended inside"),
    (wav_bytes(PCM16, bits=12), "unsupported WAV encoding"),
])
def test_bad_headers(data, message):
    with pytest.raises(StreamFormatError, match=message):
        read_wav_header(io.BytesIO(data))


@pytest.mark.parametrize("sample_format", ["s16le", "s24le", "s32le", "f32le"])
def test_encode_pcm_round_trip(sample_format):
    fmt = PcmFormat(24000, 1, sample_format)
    back = PcmDecoder(fmt)(encode_pcm(SIGNAL, sample_format))
    np.testing.assert_allclose(back, SIGNAL, atol=1e-4)
    header = streaming_wav_header(24000, sample_format)
    parsed, size = read_wav_header(io.BytesIO(header))
    assert parsed == fmt and size is None


def _chunk(chunk_id: bytes, body: bytes, claimed: int | None = None) -> bytes:
    return chunk_id + struct.pack("<I", len(body) if claimed is None else claimed) + body


@pytest.mark.parametrize("data,message", [
    (b"RIFF\0\0\0\0WAVE" + _chunk(b"fmt ", b"\x01\x00\x01\x00"), "a fmt chunk of 4 bytes"),
    (b"RF64\xff\xff\xff\xffWAVE" + _chunk(b"ds64", b"\0" * 8), "a ds64 chunk of 8 bytes"),
    (b"RIFF\0\0\0\0WAVE" + _chunk(b"fmt ", b"", claimed=2 << 30), "a fmt chunk of 2147483648 bytes"),
    (b"RIFF\0\0\0\0WAVE" + _chunk(b"LIST", b"", claimed=1 << 30), "chunk of 1073741824 bytes"),
    (wav_bytes(PCM16, rate=10 ** 9), "at up to 768000 Hz"),
    (wav_bytes(PCM16, channels=0), "0 channels"),
])
def test_header_fields_that_do_not_fit_are_refused_without_reading_them(data, message):
    with pytest.raises(StreamFormatError, match=message):
        read_wav_header(io.BytesIO(data))


def test_a_claimed_huge_fmt_chunk_on_an_endless_stream_is_refused_at_once():
    class Endless(io.RawIOBase):
        def __init__(self, head):
            self.head, self.given = head, 0

        def readinto(self, b):
            n = len(b)
            chunk = (self.head[self.given:self.given + n] or b"\0" * n)[:n]
            b[:len(chunk)] = chunk
            self.given += len(chunk)
            return len(chunk)

    stream = Endless(b"RIFF\0\0\0\0WAVE" + _chunk(b"fmt ", b"", claimed=0x7FFFFFF0))
    with pytest.raises(StreamFormatError):
        read_wav_header(stream)
    assert stream.given < 1 << 16  # refused from the size alone, nothing of it read


def test_fuzzed_headers_raise_only_stream_format_errors():
    """Seeded byte flips over real writers' headers (arecord, ffmpeg, sox) and ours."""
    import random
    from pathlib import Path

    fixtures = Path(__file__).parents[1] / "fixtures" / "streams"
    heads = [p.read_bytes()[:200] for p in sorted(fixtures.glob("*.wav"))]
    heads += [wav_bytes(PCM16[:100], rf64=True, extensible=True, bits=16), streaming_wav_header(24000, "f32le")]
    rng = random.Random(7)
    errors = 0
    for _ in range(2000):
        data = bytearray(rng.choice(heads))
        for _ in range(rng.randint(1, 6)):
            data[rng.randrange(min(len(data), 80))] = rng.randrange(256)
        if rng.random() < 0.2:
            data = data[:rng.randrange(len(data))]
        try:
            fmt, _ = read_wav_header(io.BytesIO(bytes(data)))
            PcmDecoder(fmt)(bytes(data[-50:]))
        except StreamFormatError:
            errors += 1
    assert errors > 200
