"""Reading audio files into 24 kHz float32, and writing decoded audio back."""
from __future__ import annotations

import io
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from .storage import atomic_write, os_reason

AUDIO_EXTENSIONS = {".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".aifc",
                    ".caf", ".w64", ".rf64", ".au", ".snd"}


class AudioError(Exception):
    """An input that cannot be used as audio; the message says why."""


@dataclass
class AudioInfo:
    sample_rate: int
    channels: int
    num_frames: int  # samples per channel at the source rate

    @property
    def duration_s(self) -> float:
        return self.num_frames / self.sample_rate if self.sample_rate else 0.0


def check_readable(path: str | os.PathLike) -> os.stat_result:
    """The stat of a local audio file; AudioError, in the OS's words, if it is no regular file
    that can be opened (a FIFO or device would hang or mislead the decoder), or empty."""
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise AudioError(f"not a regular file: {path}")
        with open(path, "rb"):
            pass
    except OSError as e:
        raise AudioError(f"{os_reason(e)}: {path}") from None
    if st.st_size == 0:
        raise AudioError("empty file (0 bytes)")
    return st


def probe(path: str | os.PathLike) -> AudioInfo:
    """Rate, channels and length from the header alone (cheap: used to batch by length)."""
    check_readable(path)
    try:
        info = sf.info(os.fsencode(path))  # bytes: names that are not UTF-8 reach libsndfile as they are
    except (sf.LibsndfileError, RuntimeError, OSError) as e:
        raise AudioError(_reason(e)) from None
    return AudioInfo(info.samplerate, info.channels, info.frames)


def probe_bytes(data: bytes) -> AudioInfo:
    """`probe` for an audio file held in memory (a tar member, a Parquet cell)."""
    try:
        info = sf.info(io.BytesIO(data))
    except (sf.LibsndfileError, RuntimeError, OSError) as e:
        raise AudioError(_reason(e)) from None
    return AudioInfo(info.samplerate, info.channels, info.frames)


def _reason(e: Exception) -> str:
    """libsndfile's complaint in a user's words."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    text = re.sub(r"^Error opening .*?: ", "", text).strip()
    if "Format not recognised" in text or "unknown format" in text.lower():
        return "not an audio file mimi reads (WAV, FLAC, OGG/Vorbis/Opus, MP3, AIFF, CAF ...): format not recognised"
    if "possibly a pipe" in text or "pipe based" in text:
        return "not a regular audio file (a pipe or device cannot be decoded here)"
    if text.startswith("System error"):
        return "the file could not be read (system error)"
    return f"damaged or unsupported audio file: {text.rstrip('.')}"


def read_audio(path: str | os.PathLike | io.IOBase) -> tuple[np.ndarray, int]:
    """Samples [channels, frames] float32 and the sample rate, with a clear AudioError if unusable."""
    try:
        data, rate = sf.read(path if hasattr(path, "read") else os.fsencode(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as e:
        raise AudioError(_reason(e)) from None
    if data.shape[0] == 0:
        raise AudioError("no audio samples (zero-length file)")
    if not np.isfinite(data).all():
        raise AudioError("the file holds NaN or infinite samples")
    return np.ascontiguousarray(data.T), rate


def resample(audio: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """[channels, n] at from_rate -> [channels, m] at to_rate (soxr, high quality)."""
    if from_rate == to_rate:
        return audio
    out = soxr.resample(audio.T, from_rate, to_rate, quality="HQ")
    return np.ascontiguousarray(np.asarray(out, dtype=np.float32).reshape(-1, audio.shape[0]).T)


SUBTYPES = {"s16le": "PCM_16", "s24le": "PCM_24", "s32le": "PCM_32", "f32le": "FLOAT"}  # our names -> libsndfile's


def write_audio(path: Path, audio: np.ndarray, rate: int, fmt: str = "wav", sample_format: str = "s16le") -> None:
    """Writes mono audio atomically (temporary name, then rename): never half a file. Integer
    formats are clipped to [-1, 1]; float WAV keeps the decoder's values as they are."""
    subtype = SUBTYPES[sample_format]
    encoded = io.BytesIO()  # libsndfile's own writes hide a full disk's error; ours report it
    sf.write(encoded, audio if subtype == "FLOAT" else np.clip(audio, -1.0, 1.0), rate, format=fmt.upper(),
             subtype=subtype)
    with atomic_write(path) as f:
        f.write(encoded.getbuffer())
