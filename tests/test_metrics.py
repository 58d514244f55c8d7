"""The quality metrics of `mimi eval`, checked against hand computation and the packages they wrap."""
from __future__ import annotations

import math

import numpy as np
import pytest

from mimi_cli.metrics import mel_distance, pesq_wb, si_sdr, stoi

RATE = 24000


def speech(seconds: float = 6.0, seed: int = 0) -> np.ndarray:
    from mimi_cli.export import speech_like

    return speech_like(seconds, seed).astype(np.float64)


def test_audio_against_itself_scores_perfect():
    x = speech()
    assert si_sdr(x, x) == math.inf and si_sdr(x, 0.5 * x) == math.inf  # scale-invariant
    assert mel_distance(x, x) == 0.0
    assert stoi(x, x) == pytest.approx(1.0, abs=1e-6)
    assert pesq_wb(x, x) == pytest.approx(4.64, abs=0.01)  # the top of the wideband scale


def test_si_sdr_is_what_the_formula_gives_by_hand():
    """An estimate 0.5 s + e with e orthogonal to s (both mean-free): SI-SDR = |0.5 s|^2 / |e|^2."""
    rng = np.random.default_rng(1)
    s = speech()
    s -= s.mean()
    e = rng.standard_normal(s.size)
    e -= e.mean()
    e -= (e @ s) / (s @ s) * s
    e *= math.sqrt(0.25 * (s @ s) / (e @ e) / 10 ** (7.5 / 10))  # 7.5 dB below the scaled target
    assert si_sdr(s, 0.5 * s + e) == pytest.approx(7.5, abs=1e-9)
    assert si_sdr(s, 3 * (0.5 * s + e)) == pytest.approx(7.5, abs=1e-9)
    assert si_sdr(s, np.zeros_like(s)) == -math.inf


def test_white_noise_at_10_db_snr_gives_10_db_si_sdr():
    rng = np.random.default_rng(2)
    s = speech(10.0)
    noise = rng.standard_normal(s.size)
    noise *= math.sqrt(np.mean((s - s.mean()) ** 2) / np.mean(noise ** 2) / 10)
    assert si_sdr(s, s + noise) == pytest.approx(10.0, abs=0.1)


def test_mel_distance_grows_with_the_noise_and_is_symmetric():
    rng = np.random.default_rng(3)
    s = speech()
    noise = rng.standard_normal(s.size)
    distances = [mel_distance(s, s + level * noise) for level in (0.001, 0.01, 0.1)]
    assert 0 < distances[0] < distances[1] < distances[2]
    assert mel_distance(s, s + 0.01 * noise) == pytest.approx(mel_distance(s + 0.01 * noise, s))


def test_stoi_and_pesq_are_the_packages_own_with_the_reference_first():
    pystoi = pytest.importorskip("pystoi")
    pesq = pytest.importorskip("pesq")
    import soxr

    rng = np.random.default_rng(4)
    s = speech()
    degraded = s + 0.05 * rng.standard_normal(s.size)
    assert stoi(s, degraded) == pytest.approx(pystoi.stoi(s, degraded, RATE))
    ref16, deg16 = soxr.resample(s, RATE, 16000), soxr.resample(degraded, RATE, 16000)
    ours = pesq_wb(s, degraded)
    assert ours == pytest.approx(pesq.pesq(16000, ref16, deg16, "wb"))
    assert ours != pytest.approx(pesq.pesq(16000, deg16, ref16, "wb"))  # PESQ is not symmetric
    assert 1.0 < ours < 4.0


def test_stoi_of_a_clip_too_short_to_frame_is_left_out():
    x = speech(0.02)  # under one STOI segment: pystoi has no frames
    assert stoi(x, x) is None
    assert si_sdr(x, x) == math.inf and mel_distance(x, x) == 0.0
