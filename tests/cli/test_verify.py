"""`mimi verify`: streamed and batched float32 match the reference on every frame; bfloat16 is
measured, not assumed."""
from __future__ import annotations

import json

K = 8


def test_streaming_and_batching_in_float32_are_the_reference(run, corpus):
    for args in (["--chunk-samples", "777"], ["--batch-size", "3"], []):
        result = run("verify", corpus, "-q", K, "--json", *args)
        assert result.exit_code == 0, result.output
        report = json.loads(result.stdout)
        assert report["files"] == 8 and report["frames"] > 0 and report["num_codebooks"] == K
        assert report["per_codebook"] == [1.0] * K and report["all_codebooks"] == 1.0, args
        assert report["snr_db"] is None or report["snr_db"] > 100, args


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
