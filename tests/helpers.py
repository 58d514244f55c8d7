"""What tests build their inputs from: a small corpus in many formats, golden clips, noise, full-size codecs."""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from mimi_cli.codec import load_codec

GOLDEN = Path(__file__).parent / "fixtures" / "golden"

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
    """Writes each (path, rate, channels, seconds, format, subtype) entry under root as a tone plus noise."""
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


@functools.cache
def full_codec(seed: int):
    """Full-size Mimi on synthetic weights `seed` (the weights the golden fixtures used)."""
    return load_codec(f"synthetic:{seed}", device="cpu")


def golden_input(clip: str) -> torch.Tensor:
    """A golden fixture's input audio ("short" or "long") as [1, 1, T] at 24 kHz."""
    audio, sr = sf.read(GOLDEN / f"{clip}.wav", dtype="float32")
    assert sr == 24000
    return torch.from_numpy(audio)[None, None]


def noise(batch: int, samples: int, seed: int = 0) -> torch.Tensor:
    """Deterministic speech-level noise [batch, 1, samples]."""
    rng = np.random.default_rng(seed)
    return torch.from_numpy((0.1 * rng.standard_normal((batch, 1, samples))).astype(np.float32))
