"""Mimi on a GPU: speed, and how far its codes stay from the CPU's (which equal moshi's).

  python benchmarks/bench_accelerator.py [--device cuda] [--seconds 60]

Offline x real time, batch-1 and batch-64 streaming steps, and the share of frames of the golden
clip whose codes equal the CPU's, in float32 and bfloat16. (The codec runs float32 with TF32 off;
docs/design.md says why.)
"""
import argparse
import statistics
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from mimi_cli.bench import timed
from mimi_cli.codec import load_codec

GOLDEN = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "golden"


def median_seconds(fn, device, repeats=5):
    """Median seconds of `repeats` calls, each synchronised with the device (mimi bench's timer)."""
    return statistics.median(timed(fn, device) for _ in range(repeats))


def measure(dtype: str, device: str, clip, expected, long, seconds: float) -> str:
    codec = load_codec("synthetic:0", device=device, dtype=dtype)
    dev = codec.device
    codes = codec.encode(clip, 32)[0].cpu().numpy()
    first = (codes[0] == expected[0]).mean()
    eight = (codes[:8] == expected[:8]).all(0).mean()
    every = (codes == expected).all(0).mean()
    enc = median_seconds(lambda: codec.encode(long, 8), dev)
    c8 = codec.encode(long, 8)
    dec = median_seconds(lambda: codec.decode(c8), dev)
    steps = {}
    for batch in (1, 64):
        state, dstate = codec.init_encoder_state(batch), codec.init_decoder_state(batch)
        frame = long[..., :1920].expand(batch, 1, 1920).contiguous()
        fc = c8[..., :1].expand(batch, 8, 1).contiguous()
        for _ in range(5):
            codec.encode_step(state, frame, 8)
            codec.decode_step(dstate, fc)
        e = median_seconds(lambda: codec.encode_step(state, frame, 8), dev, 30)  # noqa: B023
        d = median_seconds(lambda: codec.decode_step(dstate, fc), dev, 30)  # noqa: B023
        steps[batch] = (e * 1000, d * 1000)
    return (f"{dtype:9s} codes vs CPU/moshi: first {first:.4f}, 8 codebooks {eight:.4f}, 32 {every:.4f} | "
            f"offline encode {seconds / enc:5.0f}x RT, decode {seconds / dec:5.0f}x RT | step ms enc/dec: "
            f"batch 1 {steps[1][0]:.1f}/{steps[1][1]:.1f}, batch 64 {steps[64][0]:.1f}/{steps[64][1]:.1f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--seconds", type=float, default=60)
    a = ap.parse_args()
    audio, _ = sf.read(GOLDEN / "long.wav", dtype="float32")
    clip = torch.from_numpy(audio)[None, None]
    expected = np.load(GOLDEN / "seed0-long.codes.npy")
    long = torch.from_numpy(np.resize(audio, int(a.seconds * 24000)))[None, None]
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name() if a.device == 'cuda' else a.device}")
    for dtype in ("float32", "bfloat16"):
        print(measure(dtype, a.device, clip, expected, long, a.seconds), flush=True)


if __name__ == "__main__":
    main()
