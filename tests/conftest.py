"""Shared fixtures: the tiny codec for logic (full-size codecs and inputs are in tests/helpers.py)."""
from __future__ import annotations

import pytest
import torch

from mimi_cli.codec import MimiConfig, load_codec

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def tiny():
    """Mimi's architecture at toy width, on synthetic weights: fast enough for every logic test."""
    return load_codec("synthetic:3", device="cpu", config=MimiConfig.tiny())
