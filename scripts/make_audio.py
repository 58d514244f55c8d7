"""Writes a small corpus of synthetic speech-like clips (for `make demo` and speed trials).

  python scripts/make_audio.py OUTDIR [--files 6] [--min-s 1] [--max-s 4] [--seed 0]
"""
import argparse
from pathlib import Path

import numpy as np
import soundfile as sf


def clip(seconds: float, rate: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    f0 = rng.uniform(90, 220) * (1 + 0.15 * np.sin(2 * np.pi * rng.uniform(0.3, 3) * t))
    phase = 2 * np.pi * np.cumsum(f0) / rate
    voiced = sum(np.sin(h * phase) / h for h in range(1, 10))
    envelope = np.clip(np.sin(2 * np.pi * rng.uniform(1.5, 4) * t), 0, None) ** 0.5
    return (0.2 * voiced * envelope + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("outdir", type=Path)
    ap.add_argument("--files", type=int, default=6)
    ap.add_argument("--min-s", type=float, default=1.0)
    ap.add_argument("--max-s", type=float, default=4.0)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    formats = [("wav", 24000, "PCM_16"), ("flac", 16000, "PCM_16"), ("wav", 44100, "FLOAT"), ("ogg", 48000, "VORBIS")]
    for i in range(a.files):
        ext, rate, subtype = formats[i % len(formats)]
        path = a.outdir / f"speaker{i % 2}" / f"clip{i:04d}.{ext}"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, clip(rng.uniform(a.min_s, a.max_s), rate, rng), rate, subtype=subtype)
    print(f"{a.files} clips in {a.outdir}")


if __name__ == "__main__":
    main()
