"""CLI fixtures: a small corpus in many formats, and the CLI run in-process on the tiny codec."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from mimi_cli import cli
from mimi_cli.codec import MimiConfig, load_codec

# (relative path, sample rate, channels, seconds, soundfile format, subtype)
CORPUS = [
    ("a/one.wav", 24000, 1, 2.3, "WAV", "PCM_16"),
    ("a/two.flac", 16000, 1, 1.1, "FLAC", "PCM_16"),
    ("b/stereo.wav", 44100, 2, 1.7, "WAV", "FLOAT"),
    ("b/ext.wav", 48000, 1, 0.9, "WAV", "PCM_24"),  # written as WAVE_FORMAT_EXTENSIBLE below
    ("c/vorbis.ogg", 48000, 1, 1.4, "OGG", "VORBIS"),
    ("c/opus.ogg", 48000, 1, 1.0, "OGG", "OPUS"),
    ("c/song.mp3", 44100, 2, 1.2, "MP3", "MPEG_LAYER_III"),
    ("d/old.aiff", 22050, 1, 0.6, "AIFF", "PCM_16"),
]


def write_corpus(root, entries=CORPUS, seed=0):
    rng = np.random.default_rng(seed)
    for rel, rate, channels, seconds, fmt, subtype in entries:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        n = int(rate * seconds)
        t = np.arange(n) / rate
        x = 0.2 * np.sin(2 * np.pi * rng.uniform(100, 300) * t)[:, None] + 0.02 * rng.standard_normal((n, channels))
        kwargs = {"format": "WAVEX"} if rel == "b/ext.wav" else {"format": fmt}
        sf.write(path, x.astype(np.float32), rate, subtype=subtype, **kwargs)
    return root


@pytest.fixture(autouse=True)
def _keep_thread_count():
    """Commands may set torch's thread count (stream commands default to 1); restore it."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def corpus(tmp_path):
    return write_corpus(tmp_path / "corpus")


@pytest.fixture(scope="session")
def tiny_codec():
    return load_codec("synthetic:3", device="cpu", config=MimiConfig.tiny())


@pytest.fixture
def run(monkeypatch, tiny_codec, tmp_path):
    """Runs `mimi ARGS...` in-process on the tiny codec, from tmp_path; returns the click Result."""
    monkeypatch.setattr(cli, "_load", lambda weights, device, dtype: tiny_codec)
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()

    def invoke(*args: str, input: bytes | None = None):
        return runner.invoke(cli.app, [str(a) for a in args], input=input, catch_exceptions=False)
    return invoke
