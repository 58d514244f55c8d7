"""Token streams: each writer's output reads back, and no malformed stream gets past the reader."""
from __future__ import annotations

import io
import json
import random
import struct

import numpy as np
import pytest

from mimi_cli.formats.pcm import StreamFormatError
from mimi_cli.formats.tokenstream import HEADER, MAGIC, StreamHeader, TokenWriter, read_tokens

CODES = np.array([[1, 2, 3], [2047, 0, 5]])  # [K=2, 3 frames]


def written(fmt: str) -> bytes:
    out = io.BytesIO()
    TokenWriter(out, fmt, StreamHeader(2)).frames(CODES)
    return out.getvalue()


def read_all(data: bytes):
    header, frames = read_tokens(io.BytesIO(data))
    return header, np.stack(list(frames), axis=1) if data else None


@pytest.mark.parametrize("fmt", ["binary", "jsonl", "text"])
def test_each_format_reads_back(fmt):
    header, codes = read_all(written(fmt))
    assert header.num_codebooks == 2
    np.testing.assert_array_equal(codes, CODES)


def jsonl(header: dict | None, *frames: str) -> bytes:
    head = {"format": "mimi-tokens", "version": 1, "num_codebooks": 2} if header is None else header
    return (json.dumps(head) + "\n" + "".join(f + "\n" for f in frames)).encode()


def binary(k=2, version=1, size=2048, rate=24000, milli=12500, body=b"") -> bytes:
    return HEADER.pack(MAGIC, version, k, rate, milli, size) + body


@pytest.mark.parametrize("data,message", [
    (jsonl({"format": "mimi-tokens", "version": 1}), "None codebooks"),
    (jsonl({"format": "mimi-tokens", "version": 2, "num_codebooks": 2}), "version 2"),
    (jsonl({"format": "mimi-tokens", "version": 1, "num_codebooks": "2"}), "'2' codebooks"),
    (jsonl(None, '{"frame": 0}'), "no list of codes"),
    (b'{"frame": 0}\n', "not a frame"),
    (jsonl(None, '{"codes": [1, 1e30]}'), "not an integer"),
    (jsonl(None, '{"codes": [1, 2.5]}'), "not an integer"),
    (jsonl(None, '{"codes": [1, true]}'), "not an integer"),
    (jsonl(None, '{"codes": [1, 2048]}'), "not an integer in 0..2047"),
    (jsonl(None, '{"codes": [1]}'), "has 1 codes"),
    (jsonl(None, "[1, 2]"), "not a line of integer codes"),
    (jsonl(None, "{1, 2}"), "not a JSON object"),
    (b"1 2\n3 x\n", "not a line of integer codes"),
    (b"1 2\n3\n", "has 1 codes"),
    (b"{" + b" " * (1 << 17), "a line of over"),
    (b"1" * (1 << 20), "a line of over"),
    (binary(k=0), "0 codebooks"),
    (binary(k=1000), "1000 codebooks"),
    (binary(version=7), "version 7"),
    (binary(size=0), "codebook size 0"),
    (binary(rate=0), "sample rate 0"),
    (binary(milli=0), "frame rate 0.0"),
    (binary(size=16, body=struct.pack("<HH", 1, 300)), "out of range"),
    (binary(body=b"\x01"), "truncated"),
    (b"MIMI\x01", "inside its header"),
    (b"\xff\xfe", "not a mimi token stream"),
])
def test_malformed_streams_are_one_error(data, message):
    with pytest.raises(StreamFormatError, match=message.replace("(", r"\(")):
        header, frames = read_tokens(io.BytesIO(data))
        list(frames)


def test_fuzzed_streams_raise_only_stream_format_errors():
    rng = random.Random(99)
    seeds = [written(f) for f in ("binary", "jsonl", "text")]
    errors = 0
    for _ in range(3000):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 5)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        if rng.random() < 0.2:
            data = data[:rng.randrange(len(data))]
        try:
            header, frames = read_tokens(io.BytesIO(bytes(data)))
            for frame in frames:
                assert frame.shape == (header.num_codebooks,)
                assert 0 <= frame.min() and frame.max() < header.codebook_size
        except StreamFormatError:
            errors += 1
    assert errors > 500


def test_a_deeply_nested_line_is_a_format_error_not_a_crash():
    stream = io.BytesIO(b'{"codes": ' + b"[" * 30000 + b"]" * 30000 + b"}\n")
    with pytest.raises(StreamFormatError, match="not a JSON object"):
        header, frames = read_tokens(stream)
        list(frames)
