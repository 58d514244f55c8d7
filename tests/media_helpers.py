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




def _ebml_id(buf: bytes, at: int) -> tuple[int, int]:
    n = 1
    while not buf[at] & (0x80 >> (n - 1)):
        n += 1
    return int.from_bytes(buf[at:at + n], "big"), n


def _ebml_size(buf: bytes, at: int) -> tuple[int, int]:
    n = 1
    while not buf[at] & (0x80 >> (n - 1)):
        n += 1
    value = int.from_bytes(buf[at:at + n], "big") & ((1 << (7 * n)) - 1)
    return value, n


def _ebml_len(value: int) -> bytes:
    n = next(n for n in range(1, 9) if value < (1 << (7 * n)) - 1)
    return ((1 << (7 * n)) | value).to_bytes(n, "big")


def discard_every_block(webm: bytes, discard_ns: int) -> bytes:
    """A live WebM (clusters of unknown size, as `-live 1` writes) with each SimpleBlock made a
    BlockGroup whose DiscardPadding drops `discard_ns` of it: FFmpeg decodes every packet and
    keeps next to nothing, as an attacker's file would have it."""
    segment = webm.index(b"\x18\x53\x80\x67")
    out = bytearray(webm[:segment + 4] + b"\x01\xff\xff\xff\xff\xff\xff\xff")
    at = segment + 4 + _ebml_size(webm, segment + 4)[1]
    while at < len(webm):
        element, n = _ebml_id(webm, at)
        size, m = _ebml_size(webm, at + n)
        body = at + n + m
        if element != 0x1F43B675:  # not a cluster: as it is
            out += webm[at:body + size]
            at = body + size
            continue
        at, kept = body, bytearray()
        while at < len(webm):
            child, n = _ebml_id(webm, at)
            if child == 0x1F43B675:
                break
            size, m = _ebml_size(webm, at + n)
            data = webm[at + n + m:at + n + m + size]
            if child == 0xA3:  # SimpleBlock -> BlockGroup {Block, DiscardPadding}
                block = b"\xa1" + _ebml_len(len(data)) + data[:3] + b"\x00" + data[4:]
                group = block + b"\x75\xa2\x88" + discard_ns.to_bytes(8, "big")
                kept += b"\xa0" + _ebml_len(len(group)) + group
            else:
                kept += webm[at:at + n + m + size]
            at += n + m + size
        out += b"\x1f\x43\xb6\x75" + _ebml_len(len(kept)) + kept
    return bytes(out)
