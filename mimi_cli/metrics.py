"""Objective quality of decoded audio against the original, as codec papers report it.

Every metric takes the reference (the input as the codec saw it: 24 kHz mono float32) and the
decoded audio, trimmed to one length. SI-SDR and the mel distance are computed here; STOI comes
from `pystoi` and wideband PESQ from `pesq` (optional: None when the package is missing).
"""
from __future__ import annotations

import functools
import math
import warnings

import numpy as np

RATE = 24000
MEL_FFTS = (512, 1024, 2048)  # the mel distance's resolutions: 21, 43 and 85 ms windows
MEL_BANDS = 80
PESQ_RATE = 16000  # wideband PESQ is defined at 16 kHz
STOI_MIN_SECONDS = 0.4  # STOI compares 384 ms segments: shorter audio has none


def si_sdr(reference: np.ndarray, estimate: np.ndarray) -> float:
    """Scale-invariant SDR in dB (Le Roux et al. 2019), both signals mean-removed: inf when the
    estimate is the reference scaled, -inf when it is silent or orthogonal to it."""
    s = reference.astype(np.float64) - reference.mean()
    e = estimate.astype(np.float64) - estimate.mean()
    energy = float(s @ s)
    if energy == 0.0:
        return math.nan  # silence has no SDR
    target = (float(e @ s) / energy) * s
    noise = e - target
    t, n = float(target @ target), float(noise @ noise)
    if t == 0.0:
        return -math.inf
    if n <= t * 1e-20:  # identical up to float rounding
        return math.inf
    return 10 * math.log10(t / n)


@functools.cache
def _mel_filters(n_fft: int, bands: int = MEL_BANDS, rate: int = RATE) -> np.ndarray:
    """Triangular mel filters [bands, n_fft // 2 + 1] (HTK mel scale, 0 Hz to Nyquist, unit peak)."""
    mel = lambda f: 2595 * np.log10(1 + f / 700)  # noqa: E731
    hz = lambda m: 700 * (10 ** (m / 2595) - 1)  # noqa: E731
    edges = hz(np.linspace(mel(0), mel(rate / 2), bands + 2))
    freqs = np.linspace(0, rate / 2, n_fft // 2 + 1)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    return np.maximum(0, np.minimum((freqs - lower) / (centre - lower), (upper - freqs) / (upper - centre)))


def _log_mel(x: np.ndarray, n_fft: int) -> np.ndarray:
    hop = n_fft // 4
    if len(x) < n_fft:
        x = np.pad(x, (0, n_fft - len(x)))
    frames = np.lib.stride_tricks.sliding_window_view(x.astype(np.float64), n_fft)[::hop]
    spectrum = np.abs(np.fft.rfft(frames * np.hanning(n_fft), axis=-1)) ** 2
    return np.log10(spectrum @ _mel_filters(n_fft).T + 1e-5)


def mel_distance(reference: np.ndarray, estimate: np.ndarray) -> float:
    """Multi-resolution log-mel distance: the mean absolute difference of log10 mel power spectra
    (80 bands, windows of 512, 1024 and 2048 samples, hop a quarter window), averaged over the
    resolutions. 0 for identical audio; lower is better."""
    return float(np.mean([np.mean(np.abs(_log_mel(reference, n) - _log_mel(estimate, n))) for n in MEL_FFTS]))


def stoi(reference: np.ndarray, estimate: np.ndarray) -> float | None:
    """Short-time objective intelligibility (pystoi, classic STOI), 0..1; None without pystoi or
    for audio shorter than 0.4 s."""
    try:
        from pystoi import stoi as _stoi
    except ImportError:
        return None
    if len(reference) < STOI_MIN_SECONDS * RATE:
        return None  # under 30 of STOI's 384 ms segments' worth: pystoi has no frames to compare
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pystoi warns of short or silent audio itself
            return float(_stoi(reference.astype(np.float64), estimate.astype(np.float64), RATE, extended=False))
    except Exception:  # pystoi's own errors for audio it cannot frame
        return None


def pesq_wb(reference: np.ndarray, estimate: np.ndarray) -> float | None:
    """Wideband PESQ (ITU-T P.862.2 through the `pesq` package) at 16 kHz, -0.5..4.64; None
    without the package or when PESQ finds no speech in the reference."""
    try:
        from pesq import pesq
    except ImportError:
        return None
    import soxr

    ref = soxr.resample(reference.astype(np.float64), RATE, PESQ_RATE)
    est = soxr.resample(estimate.astype(np.float64), RATE, PESQ_RATE)
    try:
        return float(pesq(PESQ_RATE, ref, est, "wb"))
    except Exception:  # the package raises its own errors for silence or too-short audio
        return None


def has_pesq() -> bool:
    try:
        import pesq  # noqa: F401
    except ImportError:
        return False
    return True


def has_stoi() -> bool:
    try:
        import pystoi  # noqa: F401
    except ImportError:
        return False
    return True


METRICS = {"si_sdr_db": si_sdr, "mel_distance": mel_distance, "stoi": stoi, "pesq_wb": pesq_wb}
HIGHER_IS_BETTER = {"si_sdr_db": True, "mel_distance": False, "stoi": True, "pesq_wb": True}


def measure(reference: np.ndarray, estimate: np.ndarray, skip: frozenset[str] = frozenset()) -> dict[str, float | None]:
    """Every metric of `estimate` against `reference` (trimmed to the shorter)."""
    n = min(len(reference), len(estimate))
    return {name: (None if name in skip else fn(reference[:n], estimate[:n])) for name, fn in METRICS.items()}
