"""The installed `mimi` program as a user runs it: full-size synthetic weights, real processes."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import write_corpus

MIMI = [sys.executable, "-m", "mimi_cli.cli"]


def mimi(*args, check_code=0, **env_vars):
    env = {**os.environ, "MIMI_WEIGHTS": "synthetic", **env_vars}
    p = subprocess.run([*MIMI, *map(str, args)], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == check_code, p.stderr
    assert "Traceback" not in p.stderr
    return p


def test_encode_decode_info_full_size(tmp_path: Path):
    corpus = write_corpus(tmp_path / "in", [("x.wav", 16000, 1, 1.3, "WAV", "PCM_16"),
                                            ("y.flac", 24000, 2, 0.7, "FLAC", "PCM_16")])
    p = mimi("encode", corpus, tmp_path / "t.parquet", "--quiet")
    assert "NOT Mimi's" in p.stderr and p.stdout == ""  # data only when it is the output
    mimi("decode", tmp_path / "t.parquet", tmp_path / "out", "--quiet")
    assert (tmp_path / "out" / "x.wav").exists() and (tmp_path / "out" / "y.wav").exists()
    info = mimi("info", tmp_path / "t.parquet")
    assert "rows         2 (2 inputs)" in info.stdout and "codebooks    8 of 2048" in info.stdout


def test_unreadable_weights_exit_2(tmp_path: Path):
    bad = tmp_path / "model.safetensors"
    bad.write_text("nope")
    p = mimi("encode", tmp_path, tmp_path / "t.parquet", "--weights", bad, check_code=2)
    assert p.stderr.strip().splitlines()[-1].startswith("mimi: error: cannot read")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_missing_device_exit_2(tmp_path: Path):
    p = mimi("encode", tmp_path, tmp_path / "t.parquet", "--device", "cuda", check_code=2)
    assert "no CUDA GPU" in p.stderr
    p = mimi("encode", tmp_path, tmp_path / "t.parquet", check_code=2, MIMI_DEVICE="cuda")
    assert "no CUDA GPU" in p.stderr


def test_help_explains():
    p = mimi("encode", "--help")
    assert "Resumes by default" in p.stdout and "--num-codebooks" in p.stdout and "MIMI_WEIGHTS" in p.stdout
