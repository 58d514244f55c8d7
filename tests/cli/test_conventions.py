"""What every command shares: -h, choices, JSON summaries, plain progress off a terminal, decoded WAVs players read."""
from __future__ import annotations

import json
import wave

import pytest
import soundfile as sf

from tests.helpers import write_corpus

K = 4


@pytest.fixture
def tokens(run, tmp_path):
    write_corpus(tmp_path, [("in/a.wav", 24000, 1, 0.5, "WAV", "PCM_16"),
                            ("in/b.flac", 16000, 1, 0.4, "FLAC", "PCM_16")])
    assert run("encode", "in", "t.parquet", "-q", K).exit_code == 0
    return tmp_path / "t.parquet"


@pytest.mark.parametrize("args", [["-h"], ["encode", "-h"], ["decode", "-h"], ["stream-encode", "-h"]])
def test_short_help(run, args):
    result = run(*args)
    assert result.exit_code == 0 and "Usage:" in result.output and "--help" in result.output


def test_decoded_wav_is_16_bit_pcm_by_default_and_float_on_request(run, tokens, tmp_path):
    assert run("decode", tokens, "pcm").exit_code == 0
    assert sf.info(tmp_path / "pcm" / "a.wav").subtype == "PCM_16"
    with wave.open(str(tmp_path / "pcm" / "b.wav")) as w:  # the standard library reads it
        assert w.getsampwidth() == 2 and w.getframerate() == 24000
    assert run("decode", tokens, "float", "--sample-format", "f32le").exit_code == 0
    assert sf.info(tmp_path / "float" / "a.wav").subtype == "FLOAT"
    result = run("decode", tokens, "flac", "--audio-format", "flac", "--sample-format", "f32le")
    assert result.exit_code == 2 and "FLAC holds 16- or 24-bit" in result.output


def test_json_summaries(run, tmp_path):
    write_corpus(tmp_path, [("in/a.wav", 24000, 1, 0.5, "WAV", "PCM_16")])
    (tmp_path / "in" / "bad.wav").write_text("no")
    result = run("encode", "in", "t.parquet", "-q", K, "--json", "--quiet")
    assert result.exit_code == 1
    summary = json.loads(result.stdout)
    assert summary["rows"] == 1 and summary["failed"] == 1 and summary["errors_path"].endswith("t.errors.jsonl")
    result = run("decode", "t.parquet", "wav", "--json", "--quiet")
    assert result.exit_code == 0 and json.loads(result.stdout)["rows"] == 1 and json.loads(result.stdout)["failed"] == 0


def test_progress_off_a_terminal_has_no_carriage_returns(run, tokens):
    result = run("decode", tokens, "wav")
    assert result.exit_code == 0 and "\r" not in result.stderr and "decoded 2 rows" in result.stderr


def test_serving_other_machines_needs_a_token_or_says_it_means_it(run):
    result = run("serve", "--host", "0.0.0.0", "--port", "0")
    assert result.exit_code == 2 and "--token" in result.output and "--no-token" in result.output
