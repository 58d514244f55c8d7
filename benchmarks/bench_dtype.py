"""bfloat16 against float32 on this CPU: speed (same process, interleaved) and token agreement.

  python benchmarks/bench_dtype.py [--seconds 20]
"""
import argparse
import statistics
import time

import numpy as np
import soundfile as sf
import torch

from mimi_cli.codec import load_codec


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=20)
    a = ap.parse_args()
    fp32 = load_codec("synthetic", device="cpu", dtype="float32")
    bf16 = load_codec("synthetic", device="cpu", dtype="bfloat16")
    clip = 0.1 * torch.randn(1, 1, int(a.seconds * 24000))
    times = {"float32": [], "bfloat16": []}
    step = {"float32": [], "bfloat16": []}
    for codec in (fp32, bf16):
        codec.encode(clip, 8)
    for _ in range(3):
        for name, codec in (("float32", fp32), ("bfloat16", bf16)):
            t = time.perf_counter()
            codec.encode(clip, 8)
            times[name].append(time.perf_counter() - t)
    for name, codec in (("float32", fp32), ("bfloat16", bf16)):
        state = codec.init_encoder_state(1)
        frame = 0.1 * torch.randn(1, 1920)
        for i in range(40):
            t = time.perf_counter()
            codec.encode_step(state, frame, 8)
            if i >= 5:
                step[name].append(time.perf_counter() - t)
    for name in times:
        print(f"{name}: offline encode {a.seconds / statistics.median(times[name]):.1f}x real time, "
              f"streaming step {1000 * statistics.median(step[name]):.1f} ms")
    med = {k: statistics.median(v) for k, v in times.items()}
    smed = {k: statistics.median(v) for k, v in step.items()}
    print(f"bfloat16 / float32 speed: offline {med['float32'] / med['bfloat16']:.2f}x, "
          f"streaming {smed['float32'] / smed['bfloat16']:.2f}x")
    audio, _ = sf.read("tests/fixtures/golden/long.wav", dtype="float32")
    x = torch.from_numpy(audio)[None, None]
    c32, c16 = fp32.encode(x, 32)[0].numpy(), bf16.encode(x, 32)[0].numpy()
    print(f"token agreement bf16 vs fp32 (12.5 s speech-like clip): first codebook {np.mean(c32[0] == c16[0]):.1%}, "
          f"first 8 {np.mean(c32[:8] == c16[:8]):.1%}, all 32 {np.mean(c32 == c16):.1%}")


if __name__ == "__main__":
    main()
