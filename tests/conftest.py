"""Shared fixtures: the tiny codec for logic (full-size codecs and inputs are in tests/helpers.py)."""
from __future__ import annotations

import pytest
import torch

from mimi_cli.codec import MimiConfig, load_codec
from mimi_cli.codec.linear import LAYOUT_ENV, forget_product_layout

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def tiny():
    """Mimi's architecture at toy width, on synthetic weights: fast enough for every logic test."""
    return load_codec("synthetic:3", device="cpu", config=MimiConfig.tiny())


@pytest.fixture(params=["linear", "skinny"])
def each_product_layout(request, monkeypatch):
    """Runs a test once in each layout of few-row products (the machine picks one; both must hold)."""
    monkeypatch.setenv(LAYOUT_ENV, request.param)
    forget_product_layout()
    yield request.param
    forget_product_layout()


@pytest.fixture(scope="session")
def made(tmp_path_factory):
    """Audio in the containers FFmpeg reads, made by the real `ffmpeg` (tests/media_helpers.py)."""
    from tests.media_helpers import FFMPEG, make_containers

    if FFMPEG is None:
        pytest.skip("Debian's ffmpeg is installed by .ci/run")
    return make_containers(tmp_path_factory.mktemp("made"))
