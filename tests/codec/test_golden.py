"""Exactness against Kyutai's reference (moshi 0.2.13), on fixtures made by make_golden.sh."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

from mimi_cli.codec import weights
from mimi_cli.codec.config import MimiConfig
from tests.helpers import GOLDEN, full_codec, golden_input

CASES = [(0, "short"), (0, "long"), (1, "short"), (1, "long")]


@pytest.mark.parametrize("seed", [0, 1])
def test_synthetic_weights_are_the_reference_weights(seed):
    """synthetic:S draws the same tensors, bit for bit, as the reference generator."""
    expected = json.loads((GOLDEN / f"seed{seed}.weights-sha256.json").read_text())["moshi"]
    ours = weights.synthetic_tensors(MimiConfig(), seed)
    assert sorted(ours) == sorted(expected)
    bad = [k for k, t in ours.items() if hashlib.sha256(t.numpy().tobytes()).hexdigest()[:16] != expected[k]]
    assert not bad, f"{len(bad)} tensors differ, first {bad[:3]}"


@pytest.mark.parametrize("seed,clip", CASES)
def test_codes_equal_reference_on_every_frame(seed, clip):
    expected = np.load(GOLDEN / f"seed{seed}-{clip}.codes.npy").astype(np.int64)
    codes = full_codec(seed).encode(golden_input(clip), num_codebooks=32)[0].numpy()
    assert codes.shape == expected.shape
    mismatched = np.flatnonzero((codes != expected).any(axis=0))
    assert mismatched.size == 0, f"frames differing from moshi: {mismatched[:10]}"


def test_fewer_codebooks_are_a_prefix():
    codes8 = full_codec(0).encode(golden_input("short"), num_codebooks=8)[0].numpy()
    expected = np.load(GOLDEN / "seed0-short.codes.npy")[:8]
    np.testing.assert_array_equal(codes8, expected)


@pytest.mark.parametrize("seed,clip", [c for c in CASES if c[1] == "short" or c[0] == 0])
def test_decoded_audio_matches_reference(seed, clip):
    codes = torch.from_numpy(np.load(GOLDEN / f"seed{seed}-{clip}.codes.npy").astype(np.int64))[None]
    expected = np.load(GOLDEN / f"seed{seed}-{clip}.decoded.npy")
    audio = full_codec(seed).decode(codes)[0, 0].numpy()
    assert audio.shape == expected.shape
    rel = np.linalg.norm(audio - expected) / np.linalg.norm(expected)
    assert rel < 1e-5, rel


def test_streaming_full_size_equals_reference(each_product_layout):
    """Frame-by-frame encode and decode of the 12.5 s clip (past the 10 s attention window), in
    each layout of the few-row products a streaming step runs."""
    codec = full_codec(0)
    audio = golden_input("long")
    expected = np.load(GOLDEN / "seed0-long.codes.npy").astype(np.int64)
    state = codec.init_encoder_state(1)
    parts = [codec.encode_step(state, audio[..., i:i + 1920], 32) for i in range(0, audio.shape[-1], 1920)]
    parts.append(codec.encode_flush(state, 32))
    np.testing.assert_array_equal(torch.cat(parts, -1)[0].numpy(), expected)

    dstate = codec.init_decoder_state(1)
    codes = torch.from_numpy(expected)[None]
    out = torch.cat([codec.decode_step(dstate, codes[..., f:f + 1]) for f in range(codes.shape[-1])], -1)
    ref = np.load(GOLDEN / "seed0-long.decoded.npy")
    assert np.linalg.norm(out[0, 0].numpy() - ref) / np.linalg.norm(ref) < 1e-5
