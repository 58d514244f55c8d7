"""`--dtype int8` through the commands: bench side by side with float32, verify, stream-encode."""
from __future__ import annotations

import json

import pytest

from mimi_cli import bench, cli
from tests.codec.test_int8 import tiny


@pytest.fixture
def with_dtypes(monkeypatch):
    monkeypatch.setattr(cli, "_load", lambda weights, device, dtype: tiny(dtype.value))
    monkeypatch.setattr(bench, "load_codec", lambda weights, device, dtype, config=None: tiny(dtype))


def test_bench_measures_dtypes_side_by_side(run, with_dtypes):
    result = run("bench", "--device", "cpu", "--seconds", "2", "--streams", "1", "--repeats", "1", "-q", "4",
                 "--dtype", "float32,int8", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert set(data["engines"]) == {"mimi-cli float32", "mimi-cli int8"} and data["dtype"] == "float32,int8"
    versus = data["vs_first_dtype"]["mimi-cli int8"]
    assert {"encode_x_realtime", "encode_step", "decode_step", "codes_equal_all",
            "codes_equal_codebook0"} <= set(versus)
    assert 0 <= versus["codes_equal_all"] <= versus["codes_equal_codebook0"] <= 1
    bad = run("bench", "--dtype", "float32,int9")
    assert bad.exit_code == 2 and "--dtype float32,int9" in bad.output


def test_verify_reports_int8_against_the_reference(run, with_dtypes, corpus):
    result = run("verify", corpus / "a", "-q", 8, "--dtype", "int8", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["way"]["dtype"] == "int8" and 0 < report["all_codebooks"] <= 1


def test_stream_encode_runs_on_int8(run, with_dtypes, corpus):
    result = run("stream-encode", corpus / "a" / "one.wav", "out.tok", "--dtype", "int8", "--quiet")
    assert result.exit_code == 0, result.output
