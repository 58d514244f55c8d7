"""Audio in containers made by the real `ffmpeg` command line, for the tests of formats/media.py."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

FFMPEG = shutil.which("ffmpeg")
needs_ffmpeg = pytest.mark.skipif(FFMPEG is None, reason="Debian's ffmpeg is installed by .ci/run")

# name: ffmpeg's output options (the input is a 44.1 kHz stereo WAV)
MADE = {
    "aac.m4a": ["-c:a", "aac", "-b:a", "96k"],
    "alac.m4a": ["-c:a", "alac"],
    "aac.mp4": ["-c:a", "aac", "-b:a", "64k", "-ac", "1"],
    "opus.webm": ["-c:a", "libopus", "-b:a", "32k"],
    "vorbis.webm": ["-c:a", "libvorbis"],
    "flac.mka": ["-c:a", "flac"],
    "adts.aac": ["-c:a", "aac", "-f", "adts"],
    "wmav2.wma": ["-c:a", "wmav2"],
    "phone.3gp": ["-ar", "16000", "-ac", "1", "-c:a", "aac"],
}


def ffmpeg(*args: str) -> None:
    subprocess.run([FFMPEG, "-v", "error", "-y", *args], check=True)


def reference_wav(path: Path) -> Path:
    """What the reference decoder writes, `ffmpeg -i X -c:a pcm_f32le X.wav`, beside X's folder."""
    out = path.parent.parent / f"{path.parent.name}-reference" / f"{path.name}.wav"
    if not out.exists():
        out.parent.mkdir(exist_ok=True)
        ffmpeg("-i", str(path), "-c:a", "pcm_f32le", str(out))
    return out


def write_amr(path: Path) -> None:
    """AMR-NB through PyAV's encoder (Debian's ffmpeg decodes AMR but has no encoder for it)."""
    import av

    t = np.arange(8000 * 2) / 8000
    x = (0.3 * np.sin(2 * np.pi * 210 * t) * (1 + np.sin(2 * np.pi * 3 * t)) / 2 * 32767).astype(np.int16)
    with av.open(str(path), "w", format="amr") as out:
        stream = out.add_stream("libopencore_amrnb", rate=8000)
        stream.layout, stream.bit_rate = "mono", 12200
        for i in range(0, x.size, 160):
            frame = av.AudioFrame.from_ndarray(x[None, i:i + 160], format="s16", layout="mono")
            frame.sample_rate = 8000
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


def make_containers(root: Path) -> Path:
    """Each container of MADE, and an AMR file, made from one speech-like stereo clip, in root/in."""
    rng = np.random.default_rng(0)
    t = np.arange(int(44100 * 2.7)) / 44100
    x = 0.3 * np.sin(2 * np.pi * 170 * t) * (1 + np.sin(2 * np.pi * 2.5 * t)) / 2 + 0.02 * rng.standard_normal(t.size)
    sf.write(root / "source.wav", np.stack([x, 0.6 * x], 1).astype(np.float32), 44100, subtype="PCM_16")
    (root / "in").mkdir()
    for name, options in MADE.items():
        ffmpeg("-i", str(root / "source.wav"), *options, str(root / "in" / name))
    write_amr(root / "in" / "nb.amr")
    return root


def containers(made: Path) -> list[Path]:
    return sorted((made / "in").glob("*"))


