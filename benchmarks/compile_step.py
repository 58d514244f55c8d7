"""The static step compiled, and exported, against the eager codec: speed and codes, in one run.

    python benchmarks/compile_step.py [--streams 1,16,24] [--frames 40] [--rounds 3] [--offline-seconds 20]
                                      [--onnx DIR] [--int8] [--out results.json]

For each batch size: the eager streaming step (`encode_frames` / `decode_frames`, one 80 ms frame)
and the same calls after `codec.compile_steps()` (torch.compile, inductor), in alternating rounds,
median ms a frame per round, and whether the compiled codes equal eager's on every frame. Offline:
`codec.encode` / `decode` (chunks of 64 frames) against a compiled chunk of the same size
(codec/static.py's `encode_frames`), at batch 1 and 16.

--onnx DIR (an export made by `mimi export DIR --batch-size 1`) adds onnxruntime's step on the
CPU at batch 1, and with --int8 the encoder quantized by `onnxruntime.quantization`'s dynamic int8
(weights int8, activations quantized per call), with the share of its codes equal to eager's.
Compile times are reported too (the first call of each graph). Synthetic weights: speed does not
depend on weight values.
"""
import argparse
import functools
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from mimi_cli.codec import load_codec  # noqa: E402
from mimi_cli.codec.static import encode_frames, state_tensors  # noqa: E402
from mimi_cli.export import initial_array, speech_like  # noqa: E402

FRAME = 1920
K = 8


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration):
        return platform.processor()


def steps(codec, audio: torch.Tensor, frames: int) -> tuple[torch.Tensor, list[float], list[float]]:
    """Codes of `frames` streamed frames, and each encode and decode step's seconds."""
    b = audio.shape[0]
    enc, dec = codec.init_encoder_state(b), codec.init_decoder_state(b)
    codes, te, td = [], [], []
    for i in range(frames):
        t = time.perf_counter()
        c = codec.encode_frames(enc, audio[..., i * FRAME:(i + 1) * FRAME], K)
        te.append(time.perf_counter() - t)
        t = time.perf_counter()
        codec.decode_frames(dec, c)
        td.append(time.perf_counter() - t)
        codes.append(c)
    return torch.cat(codes, -1), te, td


def median_ms(times: list[float]) -> float:
    return 1000 * statistics.median(times[3:])  # the first frames warm caches


def stepping(codec, b: int, frames: int, rounds: int) -> dict:
    audio = torch.from_numpy(np.stack([speech_like(frames * FRAME / 24000, seed=i) for i in range(b)]))[:, None]
    codec.compiled = None
    eager_codes, _, _ = steps(codec, audio, frames)
    codec.compile_steps()
    start = time.perf_counter()
    compiled_codes, te, td = steps(codec, audio, frames)
    out = {"streams": b, "compile_and_first_pass_s": round(time.perf_counter() - start, 1),
           "codes_equal": bool(torch.equal(compiled_codes, eager_codes)),
           "eager_encode_ms": [], "compiled_encode_ms": [], "eager_decode_ms": [], "compiled_decode_ms": []}
    compiled = codec.compiled
    for _ in range(rounds):
        for name, way in (("eager", None), ("compiled", compiled)):
            codec.compiled = way
            _, te, td = steps(codec, audio, frames)
            out[f"{name}_encode_ms"].append(round(median_ms(te), 2))
            out[f"{name}_decode_ms"].append(round(median_ms(td), 2))
    codec.compiled = None
    for side in ("encode", "decode"):
        out[f"{side}_speedup"] = round(statistics.median(out[f"eager_{side}_ms"])
                                       / statistics.median(out[f"compiled_{side}_ms"]), 3)
    return out


def offline(codec, b: int, seconds: float, rounds: int) -> dict:
    """codec.encode against a compiled chunk of the same frames, chunk for chunk."""
    chunk = max(1, 64 // b)
    frames = int(seconds * 24000) // FRAME // chunk * chunk
    audio = torch.from_numpy(np.stack([speech_like(frames * FRAME / 24000, seed=i) for i in range(b)]))[:, None]
    step = torch.compile(functools.partial(encode_frames, codec, K), fullgraph=True, dynamic=False)

    def compiled_encode():
        state = codec.init_encoder_state(b)
        tensors = state_tensors(state)
        out = []
        with torch.inference_mode():
            for i in range(0, frames, chunk):
                codes, *tensors = step(audio[:, 0, i * FRAME:(i + chunk) * FRAME], *tensors)
                out.append(codes)
        return torch.cat(out, -1)

    eager = codec.encode(audio, K, chunk_frames=chunk)
    start = time.perf_counter()
    same = torch.equal(compiled_encode(), eager)
    result = {"streams": b, "seconds_of_audio": frames * FRAME / 24000, "chunk_frames": chunk,
              "compile_and_first_pass_s": round(time.perf_counter() - start, 1), "codes_equal": bool(same),
              "eager_s": [], "compiled_s": []}
    for _ in range(rounds):
        for name, fn in (("eager", lambda: codec.encode(audio, K, chunk_frames=chunk)), ("compiled", compiled_encode)):
            t = time.perf_counter()
            fn()
            result[f"{name}_s"].append(round(time.perf_counter() - t, 3))
    result["speedup"] = round(statistics.median(result["eager_s"]) / statistics.median(result["compiled_s"]), 3)
    return result


def onnx_steps(codec, model_dir: Path, frames: int, rounds: int, int8: bool) -> dict:
    import onnxruntime as ort

    manifest = json.loads((model_dir / "mimi.json").read_text())
    assert manifest["batch_size"] == 1 and manifest["num_codebooks"] == K, "export with --batch-size 1 -q 8"
    audio = speech_like(frames * FRAME / 24000, seed=0)
    pieces = [audio[None, i * FRAME:(i + 1) * FRAME] for i in range(frames)]
    eager_codes = codec.encode(torch.from_numpy(audio)[None, None], K)[0].numpy()
    graphs = {"float32": model_dir / "encoder.onnx"}
    if int8:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        graphs["int8"] = model_dir / "encoder.int8.onnx"
        if not graphs["int8"].exists():
            # Products only, as `--dtype int8` quantizes the transformers: ORT cannot quantize these convs.
            quantize_dynamic(str(model_dir / "encoder.onnx"), str(graphs["int8"]), weight_type=QuantType.QInt8,
                             op_types_to_quantize=["MatMul", "Gemm"])
    inputs = manifest["encoder"]["inputs"]

    def run(session) -> tuple[np.ndarray, list[float]]:
        state = {d["name"]: initial_array(d) for d in inputs[1:]}
        codes, times = [], []
        for x in pieces:
            t = time.perf_counter()
            out = session.run(None, {"pcm": x, **state})
            times.append(time.perf_counter() - t)
            state = {d["name"]: o for d, o in zip(inputs[1:], out[1:])}
            codes.append(out[0][0])
        return np.stack(codes, -1), times

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    sessions = {n: ort.InferenceSession(str(p), options, providers=["CPUExecutionProvider"]) for n, p in graphs.items()}
    result = {"onnxruntime": ort.__version__, "threads": torch.get_num_threads(), "eager_encode_ms": []}
    for name, session in sessions.items():
        codes, _ = run(session)
        result[f"{name}_codes_equal"] = float(np.mean(codes == eager_codes))
        result[f"{name}_frames_all_equal"] = float(np.mean(np.all(codes == eager_codes, axis=0)))
        result[f"onnx_{name}_encode_ms"] = []
    decoder = ort.InferenceSession(str(model_dir / "decoder.onnx"), options, providers=["CPUExecutionProvider"])
    dec_inputs = manifest["decoder"]["inputs"]

    def run_decoder() -> list[float]:
        state = {d["name"]: initial_array(d) for d in dec_inputs[1:]}
        times = []
        for i in range(frames):
            t = time.perf_counter()
            out = decoder.run(None, {"codes": eager_codes[None, :, i], **state})
            times.append(time.perf_counter() - t)
            state = {d["name"]: o for d, o in zip(dec_inputs[1:], out[1:])}
        return times

    result["eager_decode_ms"], result["onnx_float32_decode_ms"] = [], []
    codec.compiled = None
    audio_t = torch.from_numpy(audio)[None, None]
    for _ in range(rounds):
        _, te, td = steps(codec, audio_t, frames)
        result["eager_encode_ms"].append(round(median_ms(te), 2))
        result["eager_decode_ms"].append(round(median_ms(td), 2))
        for name, session in sessions.items():
            _, times = run(session)
            result[f"onnx_{name}_encode_ms"].append(round(median_ms(times), 2))
        result["onnx_float32_decode_ms"].append(round(median_ms(run_decoder()), 2))
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--streams", default="1,16,24")
    p.add_argument("--frames", type=int, default=40)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--offline-seconds", type=float, default=20.0)
    p.add_argument("--offline-streams", default="1,16")
    p.add_argument("--onnx", type=Path)
    p.add_argument("--int8", action="store_true")
    p.add_argument("--weights", default="synthetic")
    p.add_argument("--out", type=Path)
    a = p.parse_args()
    codec = load_codec(a.weights, device="cpu")
    report = {"cpu": cpu_name(), "cores": torch.get_num_threads(), "torch": torch.__version__, "K": K,
              "command": " ".join(["python", "benchmarks/compile_step.py", *sys.argv[1:]]),
              "steps": [], "offline": []}
    if a.onnx:
        report["onnx"] = onnx_steps(codec, a.onnx, a.frames, a.rounds, a.int8)
        print(json.dumps(report["onnx"]), file=sys.stderr, flush=True)
    for b in (int(x) for x in a.streams.split(",") if x):
        report["steps"].append(stepping(codec, b, a.frames, a.rounds))
        print(json.dumps(report["steps"][-1]), file=sys.stderr, flush=True)
    for b in (int(x) for x in a.offline_streams.split(",") if x):
        report["offline"].append(offline(codec, b, a.offline_seconds, a.rounds))
        print(json.dumps(report["offline"][-1]), file=sys.stderr, flush=True)
    text = json.dumps(report, indent=2)
    if a.out:
        a.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
