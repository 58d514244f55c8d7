"""Where a batch-1 streaming encode step goes, with idle gaps as in a live pipe.

  python benchmarks/bench_step_parts.py [--gap-ms 65] [--frames 150] [--tiny] [--moshi]

Times the SEANet front, the back (last downsampling), the transformer, the 12.5 Hz downsampling
and the RVQ of whole-frame steps, each after `--gap-ms` of idling. `--tiny` runs the tiny test
config widened to 8 layers: next to no arithmetic, so what it takes is the per-op overhead of
the eager step. `--moshi` also times Kyutai's reference step with the same gaps (run with the
reference venv's python and PYTHONPATH=.), for ratios taken in the same minute.
"""
import argparse
import dataclasses
import statistics
import time

import torch

from mimi_cli.codec import MimiConfig, load_codec

ap = argparse.ArgumentParser()
ap.add_argument("--gap-ms", type=float, default=65)
ap.add_argument("--frames", type=int, default=150)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--tiny", action="store_true")
ap.add_argument("--moshi", action="store_true")
a = ap.parse_args()
torch.set_num_threads(a.threads)
config = dataclasses.replace(MimiConfig.tiny(), num_layers=8) if a.tiny else MimiConfig()
codec = load_codec("synthetic:3" if a.tiny else "synthetic:0", device="cpu", config=config)
spent: dict[str, float] = {}


def timed(obj, name: str, label: str) -> None:
    """Wraps obj.name so that each call's time adds to spent[label]."""
    fn = getattr(obj, name)

    def wrapper(*args, **kwargs):
        t = time.perf_counter()
        out = fn(*args, **kwargs)
        spent[label] = spent.get(label, 0.0) + time.perf_counter() - t
        return out
    setattr(obj, name, wrapper)


timed(codec.encoder, "front", "front")
timed(codec.encoder, "back", "back")
timed(codec.encoder_transformer, "forward", "transformer")
timed(codec.downsample, "forward", "downsample")
timed(codec.quantizer, "encode", "rvq")
state = codec.init_encoder_state(1)
frame = 0.1 * torch.randn(1, codec.frame_samples)
rows = []
for _ in range(a.frames):
    spent.clear()
    time.sleep(a.gap_ms / 1000)
    t = time.perf_counter()
    codec.encode_step(state, frame)
    rows.append({**spent, "step": time.perf_counter() - t})
rows = rows[10:]
print(f"{'tiny (8 layers)' if a.tiny else 'full'} codec, {a.threads} threads, {a.gap_ms:.0f} ms gaps, p50 ms:")
for key in rows[0]:
    print(f"  {key:12s} {statistics.median(r[key] for r in rows) * 1000:6.2f}")

if a.moshi:
    from mimi_cli.bench import MoshiEngine

    step = MoshiEngine(load_codec("synthetic:0", device="cpu"), 8).stream_encoder(1)
    x = 0.1 * torch.randn(1, 1, 1920)
    times = []
    for _ in range(a.frames):
        time.sleep(a.gap_ms / 1000)
        t = time.perf_counter()
        step(x)
        times.append(time.perf_counter() - t)
    print(f"  moshi step   {statistics.median(times[10:]) * 1000:6.2f}")
