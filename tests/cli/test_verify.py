"""`mimi verify` through the CLI: its report, its flags and its errors (the comparison itself is
tested on the library in tests/jobs/test_verify.py)."""
from __future__ import annotations

import json

import pytest
import torch

K = 8


def test_json_report_names_the_way(run, corpus):
    result = run("verify", corpus / "a", "-q", K, "--json", "--chunk-samples", "777")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["way"] == {"device": "cpu", "dtype": "float32", "chunk_samples": 777, "batch_size": 1}
    assert report["files"] == 2 and report["per_codebook"] == [1.0] * K


def test_bfloat16_is_measured_against_the_reference(run, corpus):
    result = run("verify", corpus / "a", "-q", 4, "--dtype", "bfloat16")
    assert result.exit_code == 0, result.output
    assert "codebook" in result.output and "SNR" in result.output and "bfloat16" in result.output
    report = json.loads(run("verify", corpus / "a", "-q", 4, "--dtype", "bfloat16", "--json").stdout)
    assert 0.0 <= report["all_codebooks"] <= min(report["per_codebook"]) <= 1.0
    assert report["way"]["dtype"] == "bfloat16"


def test_usage_errors(run, corpus, tmp_path):
    both = run("verify", corpus, "--chunk-samples", "100", "--batch-size", "2")
    assert both.exit_code == 2 and "not both" in both.output
    (tmp_path / "bad.wav").write_text("not audio")
    bad = run("verify", tmp_path / "bad.wav")
    assert bad.exit_code == 1 and "no audio to verify" in bad.output


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_the_way_under_test_takes_its_device_as_the_other_commands_do(run, corpus, monkeypatch):
    monkeypatch.setenv("MIMI_DEVICE", "cuda")  # read like encode's --device: a device this machine lacks is refused
    refused = run("verify", corpus / "a", "-q", 4)
    assert refused.exit_code == 2 and "--device cuda" in refused.stderr and len(refused.stderr.splitlines()) == 1
    assert run("verify", corpus / "a", "-q", 4, "--device", "cpu").exit_code == 0  # a flag outranks it
    monkeypatch.delenv("MIMI_DEVICE")
    report = json.loads(run("verify", corpus / "a", "-q", 4, "--json").stdout)
    assert report["way"]["device"] == "cpu"  # auto, on a machine without a GPU
