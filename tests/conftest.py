"""Shared fixtures: the tiny codec for logic, full-size synthetic codecs for exactness."""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from mimi_cli.codec import MimiConfig, load_codec

GOLDEN = Path(__file__).parent / "fixtures" / "golden"

torch.set_num_threads(min(2, torch.get_num_threads()))


@functools.cache
def full_codec(seed: int):
    """Full-size Mimi on synthetic weights `seed` (the weights the golden fixtures used)."""
    return load_codec(f"synthetic:{seed}", device="cpu")


def golden_input(clip: str) -> torch.Tensor:
    """A golden fixture's input audio ("short" or "long") as [1, 1, T] at 24 kHz."""
    audio, sr = sf.read(GOLDEN / f"{clip}.wav", dtype="float32")
    assert sr == 24000
    return torch.from_numpy(audio)[None, None]


@pytest.fixture(scope="session")
def tiny():
    return load_codec("synthetic:3", device="cpu", config=MimiConfig.tiny())


def noise(batch: int, samples: int, seed: int = 0) -> torch.Tensor:
    """Deterministic speech-level noise [batch, 1, samples]."""
    rng = np.random.default_rng(seed)
    return torch.from_numpy((0.1 * rng.standard_normal((batch, 1, samples))).astype(np.float32))
