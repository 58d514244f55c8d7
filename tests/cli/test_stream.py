"""`mimi stream-encode | mimi stream-decode`: real writers' streams, chunked pipes, faults."""
from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from mimi_cli.formats.pcm import PcmDecoder, read_wav_header
from mimi_cli.formats.tokenstream import HEADER, MAGIC

# Files the commands open (IN, OUT) are closed when they finish: a leak fails the test.
pytestmark = pytest.mark.filterwarnings("error::ResourceWarning", "error::pytest.PytestUnraisableExceptionWarning")

STREAMS = Path(__file__).parents[1] / "fixtures" / "streams"
WRITERS = sorted(p.name for p in STREAMS.glob("*.wav"))
K = 4


def _codes_of_binary(data: bytes, k: int) -> np.ndarray:
    magic, version, kk, rate, milli, size = HEADER.unpack(data[:HEADER.size])
    assert (magic, version, kk, rate, milli, size)[:3] == (MAGIC, 1, k) and rate == 24000 and milli == 12500
    return np.frombuffer(data[HEADER.size:], "<u2").reshape(-1, k).T.astype(np.int64)


@pytest.mark.parametrize("name", WRITERS)
def test_real_writers_streams_through_a_real_process(name):
    """arecord, sox and ffmpeg byte streams into the stdin of the real program (full-size model)."""
    from tests.helpers import full_codec

    data = (STREAMS / name).read_bytes()
    env = {**os.environ, "MIMI_WEIGHTS": "synthetic"}
    p = subprocess.run([sys.executable, "-m", "mimi_cli.cli", "stream-encode", "-q", "8", "--quiet"],
                       input=data, capture_output=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr.decode()
    codes = _codes_of_binary(p.stdout, 8)
    fmt, size = read_wav_header(io.BytesIO(data))
    body = data[data.index(b"data") + 8:]
    audio = PcmDecoder(fmt)(body if size is None else body[:size])
    expected_frames = int(np.ceil(round(audio.size * 24000 / fmt.rate) / 1920))
    assert abs(codes.shape[1] - expected_frames) <= 1  # the streaming resampler's tail
    if fmt.rate == 24000:  # no resampling: exactly the offline codes of the same samples
        expected = full_codec(0).encode(torch.from_numpy(audio)[None, None], 8)[0].numpy()
        np.testing.assert_array_equal(codes, expected)


def test_stream_codes_equal_mimi_encode(run, tiny, tmp_path):
    audio = (0.2 * np.random.default_rng(1).standard_normal(24000 * 2 + 77)).astype(np.float32)
    sf.write(tmp_path / "x.wav", audio, 24000, subtype="FLOAT")
    assert run("encode", tmp_path / "x.wav", tmp_path / "t.parquet", "-q", K).exit_code == 0
    import pyarrow.parquet as pq

    expected = np.asarray(pq.read_table(tmp_path / "t.parquet").to_pylist()[0]["codes"])
    result = run("stream-encode", tmp_path / "x.wav", "-", "-q", K, "--output-format", "text")
    lines = result.stdout.strip().splitlines()
    np.testing.assert_array_equal(np.array([[int(v) for v in ln.split()] for ln in lines]).T, expected)


def test_stream_decode_equals_core_decode(run, tiny):
    codes = torch.randint(0, 64, (1, K, 9))
    payload = HEADER.pack(MAGIC, 1, K, 24000, 12500, 64) + codes[0].T.numpy().astype("<u2").tobytes()
    result = run("stream-decode", "--raw", "--sample-format", "f32le", input=payload)
    assert result.exit_code == 0, result.stderr
    got = np.frombuffer(result.stdout_bytes, "<f4")
    expected = tiny.decode(codes)[0, 0].numpy()
    np.testing.assert_allclose(got, expected, atol=1e-6)
    wav = run("stream-decode", "--rate", 16000, input=payload).stdout_bytes  # stdout here is in memory, seekable
    fmt, size = read_wav_header(io.BytesIO(wav))
    assert fmt.rate == 16000 and fmt.sample_format == "s16le" and size == len(wav) - 44
    assert struct.unpack("<I", wav[4:8])[0] == len(wav) - 8
    assert abs((len(wav) - 44) // 2 - 9 * 1920 * 2 // 3) <= 2


def test_stream_decode_into_a_file_ends_with_true_sizes_and_a_pipe_keeps_the_streaming_header(run, tmp_path):
    codes = np.random.default_rng(3).integers(0, 64, (K, 90))  # 7.2 s
    payload = HEADER.pack(MAGIC, 1, K, 24000, 12500, 64) + codes.T.astype("<u2").tobytes()
    (tmp_path / "codes.bin").write_bytes(payload)
    assert run("stream-decode", tmp_path / "codes.bin", tmp_path / "out.wav").exit_code == 0
    import wave

    with wave.open(str(tmp_path / "out.wav")) as w:
        assert w.getnframes() == 90 * 1920 and w.getframerate() == 24000
    assert sf.info(tmp_path / "out.wav").duration == pytest.approx(7.2)
    env = {**os.environ, "MIMI_WEIGHTS": "synthetic"}
    piped = subprocess.run(f"{sys.executable} -m mimi_cli.cli stream-decode {tmp_path / 'codes.bin'} --quiet | cat",
                           shell=True, capture_output=True, env=env, timeout=300)
    assert piped.returncode == 0, piped.stderr.decode()
    assert piped.stdout[4:8] == piped.stdout[40:44] == b"\xff\xff\xff\xff"
    assert len(piped.stdout) == 44 + 90 * 1920 * 2


def test_jsonl_tokens_round_trip(run):
    audio = (0.1 * np.sin(np.arange(24000) / 5)).astype(np.float32)
    wav = io.BytesIO()
    sf.write(wav, audio, 24000, format="WAV", subtype="FLOAT")
    tokens = run("stream-encode", "-q", K, "--output-format", "jsonl", input=wav.getvalue()).stdout_bytes
    assert tokens.startswith(b'{"format": "mimi-tokens"')
    binary = run("stream-encode", "-q", K, "--output-format", "binary", input=wav.getvalue()).stdout_bytes
    a = run("stream-decode", "--raw", input=tokens).stdout_bytes
    b = run("stream-decode", "--raw", input=binary).stdout_bytes
    assert a == b and len(a) == 13 * 1920 * 2


def test_raw_pcm_input(run):
    pcm = (0.3 * np.sin(np.arange(8000 * 2) / 3) * 32767).astype("<i2")
    stereo = np.stack([pcm, pcm], axis=1).tobytes()
    result = run("stream-encode", "--raw", "--rate", 8000, "--channels", 2, "-q", K, "--output-format", "binary",
                 input=stereo)
    assert result.exit_code == 0
    assert abs(_codes_of_binary(result.stdout_bytes, K).shape[1] - 25) <= 1


@pytest.mark.parametrize("sample_format,dtype,scale,offset", [("u8", "u1", 127, 128), ("f64le", "<f8", 1, 0)])
def test_raw_input_in_the_other_read_formats(run, sample_format, dtype, scale, offset):
    """u8 and f64le are read too (the formats stream-decode does not write)."""
    pcm = (0.3 * np.sin(np.arange(24000) / 3) * scale + offset).astype(dtype).tobytes()
    result = run("stream-encode", "--raw", "--rate", 24000, "--sample-format", sample_format, "-q", K,
                 "--output-format", "binary", input=pcm)
    assert result.exit_code == 0, result.stderr
    assert _codes_of_binary(result.stdout_bytes, K).shape[1] == 13


@pytest.mark.parametrize("args,data,code,message", [
    (["stream-encode"], b"this is not audio at all", 1, "not a WAV stream"),
    (["stream-encode", "--raw"], b"\0" * 100, 2, "--raw needs --rate"),
    (["stream-encode", "--raw", "--rate", "8000", "--sample-format", "s8"], b"\0" * 100, 2,
     "is not one of 'u8', 's16le', 's24le', 's32le', 'f32le', 'f64le'"),
    (["stream-decode", "--raw", "--sample-format", "u8"], b"", 2, "is not one of 's16le', 's24le', 's32le', 'f32le'"),
    (["stream-decode"], b"MIMX" + b"\0" * 30, 1, "not a mimi token stream"),
    (["stream-decode"], b"garbage", 1, "not a mimi token stream"),
    (["stream-decode"], HEADER.pack(MAGIC, 1, 2, 24000, 12500, 2048) + struct.pack("<HH", 5, 4000), 1,
     "out of range"),
    (["stream-decode"], HEADER.pack(MAGIC, 7, 2, 24000, 12500, 2048), 1, "version 7"),
])
def test_faults_are_one_line(run, args, data, code, message):
    result = run(*args, input=data)
    assert result.exit_code == code and message in result.stderr
    assert "Traceback" not in result.stderr


def test_truncated_token_stream_writes_complete_frames_first(run):
    payload = HEADER.pack(MAGIC, 1, 2, 24000, 12500, 2048) + struct.pack("<HHHH", 1, 2, 3, 4) + b"\x01"
    result = run("stream-decode", "--raw", input=payload)
    assert result.exit_code == 1 and "truncated inside frame 2" in result.stderr
    assert len(result.stdout_bytes) == 2 * 1920 * 2


# -- real processes ----------------------------------------------------------------------------------
def _mimi(*args):
    env = {**os.environ, "MIMI_WEIGHTS": "synthetic", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "mimi_cli.cli", *map(str, args)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)


def test_pipe_with_odd_chunked_writes_emits_frames_as_they_complete():
    """A real process fed in odd-sized writes: a frame's codes come out before the input ends."""
    proc = _mimi("stream-encode", "-q", 8, "--output-format", "jsonl", "--quiet")
    audio = (0.2 * np.sin(np.arange(24000) / 9) * 32767).astype("<i2").tobytes()
    header = b"RIFF" + struct.pack("<I", 0xFFFFFFFF) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 1, 24000,
                                                                                    48000, 2, 16)
    proc.stdin.write(header + b"data" + struct.pack("<I", 0xFFFFFFFF))
    first = 1920 * 2 + 1  # one whole frame (and one stray byte)
    for i in range(0, first, 777):
        proc.stdin.write(audio[i:min(i + 777, first)])
        proc.stdin.flush()
    lines = [proc.stdout.readline(), proc.stdout.readline()]  # header, then frame 0: while input is open
    assert b'"frame": 0' in lines[1]
    rest, _ = proc.communicate(audio[first:], timeout=60)  # then end of input
    assert proc.returncode == 0
    assert len(rest.decode().strip().splitlines()) == 12  # 24000 samples = 12.5 frames: 12 more, the last one padded


def test_closed_downstream_pipe_ends_quietly():
    proc = _mimi("stream-decode", "--quiet")
    payload = HEADER.pack(MAGIC, 1, 1, 24000, 12500, 2048) + b"\x05\x00" * 50
    proc.stdout.close()  # the reader went away
    _, err = proc.communicate(payload, timeout=120)
    assert b"Traceback" not in err and b"Broken pipe" not in err
    assert proc.returncode == 0


def test_interrupt_flushes_and_exits_130():
    proc = _mimi("stream-encode", "-q", 8, "--output-format", "jsonl", "--quiet")
    header = b"RIFF" + struct.pack("<I", 0) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 1, 24000, 48000, 2, 16)
    proc.stdin.write(header + b"data" + struct.pack("<I", 0) + b"\0\1" * 1920 * 2)
    proc.stdin.flush()
    assert b"mimi-tokens" in proc.stdout.readline()
    assert b'"frame": 1' in proc.stdout.readline() + proc.stdout.readline()
    proc.send_signal(2)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and b"Traceback" not in err


@pytest.mark.parametrize("command,runner", [("stream-encode", "encode_stream"), ("stream-decode", "decode_stream")])
@pytest.mark.parametrize("args,adapt", [((), True), (("--threads", "2"), False)])
def test_threads_adapt_to_backlog_unless_given(run, monkeypatch, command, runner, args, adapt):
    from mimi_cli import streaming, threads

    seen = {}
    monkeypatch.setattr(threads, "backlog_threads_useful", lambda n: True)
    monkeypatch.setattr(streaming, runner, lambda *a, **kw: seen.update(kw) or streaming.StreamStats())
    result = run(command, *args, input=b"")
    assert result.exit_code == 0, result.stderr
    assert seen["threads"].follow_backlog is adapt and seen["threads"].threads == 2
