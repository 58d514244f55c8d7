"""`mimi bench` through the CLI: every field of the table and the JSON is there, flags and errors
(the figures themselves are tested on the library in tests/test_bench.py)."""
from __future__ import annotations

import json

import pytest
import torch

from mimi_cli import bench


@pytest.fixture
def tiny_bench(monkeypatch, tiny):
    monkeypatch.setattr(bench, "load_codec", lambda *a, **k: tiny)


ARGS = ["bench", "--device", "cpu", "--seconds", "2", "--streams", "1,2", "--repeats", "1", "-q", "4"]


def test_bench_table_has_every_field(run, tiny_bench):
    result = run(*ARGS)
    assert result.exit_code == 0, result.output
    for field in ["device   cpu", "threads, torch", "weights  synthetic:3", "loaded in", "offline encode (x real time",
                  "offline decode", "streaming encode step, ms p50", "streaming encode step, ms p99",
                  "streaming decode step, ms p50", "N=1", "N=2", "live streams in real time", "peak RSS"]:
        assert field in result.stdout, field


def test_bench_json_has_every_key(run, tiny_bench):
    result = run(*ARGS, "--json")
    data = json.loads(result.stdout)
    for key in ["device", "hardware", "dtype", "threads", "torch", "weights", "synthetic_weights", "load_seconds",
                "state_bytes_per_stream", "peak_rss_mb", "num_codebooks"]:
        assert key in data, key
    figures = data["engines"]["mimi-cli"]
    for key in ["encode_x_realtime", "decode_x_realtime", "encode_step_ms_p50", "encode_step_ms_p99",
                "decode_step_ms_p50", "decode_step_ms_p99", "concurrency", "max_realtime_streams"]:
        assert key in figures, key
    assert [c["streams"] for c in figures["concurrency"]] == [1, 2]
    assert set(figures["max_realtime_streams"]) == {"encode", "decode", "encode+decode"}


@pytest.mark.parametrize("device", ["cuda", "mps"])
def test_unavailable_device_is_a_clear_error(run, device):
    result = run("bench", "--device", device)
    assert result.exit_code == 2 and f"--device {device}" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_compare_needs_moshi(run, tiny_bench, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_moshi(name, *args, **kwargs):
        if name.startswith("moshi"):
            raise ImportError("No module named 'moshi'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_moshi)
    result = run(*ARGS, "--compare", "moshi")
    assert result.exit_code == 2 and "needs Kyutai's `moshi` package" in result.stderr


def test_bench_without_the_real_weights_is_an_error_that_names_the_synthetic_run(run, monkeypatch, tmp_path):
    """Like every command, bench never falls back to synthetic weights on its own."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # the Hub cannot be reached,
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))  # nothing is cached
    monkeypatch.delenv("MIMI_WEIGHTS", raising=False)
    result = run(*ARGS)
    assert result.exit_code == 2 and result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1
    assert "could not get kyutai/mimi" in result.stderr and "mimi bench --weights synthetic" in result.stderr


def test_bench_takes_weights_from_the_environment(run, monkeypatch, tiny):
    seen = {}

    def fake_load(weights, **kwargs):
        seen["weights"] = weights
        return tiny

    monkeypatch.setattr(bench, "load_codec", fake_load)
    monkeypatch.setenv("MIMI_WEIGHTS", "synthetic:7")
    result = run(*ARGS)
    assert result.exit_code == 0 and seen["weights"] == "synthetic:7"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_bench_takes_the_device_from_the_environment(run, monkeypatch, tiny_bench):
    monkeypatch.setenv("MIMI_DEVICE", "cuda")  # as the other commands do: a device this machine lacks is refused
    result = run(*[a for a in ARGS if a not in ("--device", "cpu")])
    assert result.exit_code == 2 and "--device cuda" in result.stderr
