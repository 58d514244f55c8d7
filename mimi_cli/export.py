"""`mimi export`: the streaming codec as ONNX graphs with explicit state, for apps outside Python.

Two graphs, each one whole 80 ms frame of B streams: `encoder.onnx` (pcm [B, 1920] float32 and
the encoder state -> codes [B, K] int64 and the next state) and `decoder.onnx` (codes [B, K] ->
audio [B, 1920] float32 and the next state). They are traced from codec/static.py, the same code
as the eager steps. `mimi.json` says what a runtime needs: names, shapes and dtypes of every
input and output, how to make the initial state, the rates, K and the weights' source and sha256,
and how far the graphs are from the float32 eager codec on audio made here.
"""
from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import __version__
from .codec import FRAME_SAMPLES, SAMPLE_RATE, MimiCodec
from .codec.linear import use_layout
from .codec.static import decode_frame, encode_frame, state_names, state_tensors
from .errors import MimiError
from .formats.storage import atomic_write, first_line

OPSET = 18  # pinned: ONNX Runtime 1.16 and later run it, as do most other runtimes
MANIFEST = "mimi.json"
CHECK_SECONDS = 10.0  # audio the export is checked on
FLOAT16_FP32_PARTS = ("decoder_transformer",)  # float16 loses this part's precision (phone GPUs, and here)


class ExportError(MimiError):
    """The export cannot run here (a missing package) or its graphs do not match the codec."""


@dataclass(frozen=True)
class ExportOptions:
    num_codebooks: int = 8
    batch_size: int = 1
    dtype: str = "float32"  # float32 or float16 (the decoder transformer stays float32)
    check_seconds: float = CHECK_SECONDS  # 0: no check against the eager codec


class _Step(nn.Module):
    """One graph: a static step with copies of the state it writes (no side effects)."""

    def __init__(self, codec: MimiCodec, side: str, num_codebooks: int) -> None:
        super().__init__()
        self.codec, self.side, self.k = codec, side, num_codebooks

    def forward(self, first: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.side == "encoder":
            codes, *rest = encode_frame(self.codec, self.k, first, *state, copy=True)
            return (codes, *rest)
        audio, *rest = decode_frame(self.codec, first, *state, copy=True)
        return (audio.float(), *rest)


def _initial_state(codec: MimiCodec, side: str, batch_size: int):
    if side == "encoder":
        state = codec.init_encoder_state(batch_size)
    else:
        state = codec.init_decoder_state(batch_size)
        # The transformer's caches in its own precision (float32 in a float16 export).
        dtype = codec.decoder_transformer.layers[0].scale_attn.dtype
        state.transformer = codec.decoder_transformer.init_state(batch_size, codec.device, dtype)
    return state, state_tensors(state)


def _describe(name: str, t: torch.Tensor, initial: str | None = None) -> dict:
    d = {"name": name, "shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch.")}
    if initial is not None:
        d["initial"] = initial
    return d


def _initial_value(name: str) -> str:
    return "fill:-1" if name == "positions" else "zeros"


def speech_like(seconds: float, seed: int = 0, rate: int = SAMPLE_RATE) -> np.ndarray:
    """A voiced-speech-like test signal: harmonics of a gliding pitch under a syllable envelope,
    with breath noise (the export's check audio; not a claim about real speech)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    pitch = 140 + 40 * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, 6)) + 20 * np.sin(2 * np.pi * 3.1 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    voiced = sum(np.sin(h * phase) / h for h in range(1, 12))
    syllables = np.clip(np.sin(2 * np.pi * 4.0 * t + rng.uniform(0, 6)), 0, None) ** 0.5
    signal = 0.15 * voiced * syllables + 0.01 * rng.standard_normal(t.size)
    return signal.astype(np.float32)


def export_onnx(codec: MimiCodec, out_dir: Path, options: ExportOptions | None = None,
                log=lambda message: None) -> dict:
    """Writes encoder.onnx, decoder.onnx and mimi.json into `out_dir`; returns the manifest."""
    o = options or ExportOptions()
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise ExportError(f"mimi export needs onnx and onnxscript ({e.name} is missing): "
                          "pip install 'mimi-cli[export]'") from None
    if codec.device.type != "cpu" or codec.dtype != torch.float32:
        raise ExportError("export starts from the float32 codec on the CPU (give --dtype to the export itself)")
    out_dir.mkdir(parents=True, exist_ok=True)
    # An earlier manifest goes first: graphs half replaced must not pass for the old export.
    (out_dir / MANIFEST).unlink(missing_ok=True)
    model = _prepared(codec, o.dtype, o.num_codebooks)
    graphs = {}
    for side in ("encoder", "decoder"):
        state, tensors = _initial_state(model, side, o.batch_size)
        names = state_names(state)
        if side == "encoder":
            first = torch.zeros(o.batch_size, FRAME_SAMPLES)
            ins, outs = ["pcm", *names], ["codes", *(f"next_{n}" for n in names)]
        else:
            first = torch.zeros(o.batch_size, o.num_codebooks, dtype=torch.long)
            ins, outs = ["codes", *names], ["audio", *(f"next_{n}" for n in names)]
        step = _Step(model, side, o.num_codebooks).eval()
        path = out_dir / f"{side}.onnx"
        log(f"exporting the {side} step to {path}")
        with torch.inference_mode(False), torch.no_grad(), use_layout("linear"), _quiet_exporter():
            tensors = [t.clone() for t in tensors]  # ordinary tensors: the exporter traces outside inference mode
            produced = step(first, *tensors)
            _export(step, (first, *tensors), path, ins, outs)
        graphs[side] = {
            "file": path.name,
            "inputs": [_describe(ins[0], first)] + [_describe(n, t, _initial_value(n)) for n, t in zip(names, tensors)],
            "outputs": [_describe(outs[0], produced[0])] + [_describe(n, t) for n, t in zip(outs[1:], produced[1:])],
        }
    manifest = {
        "format": "mimi-onnx", "tool": "mimi-cli", "tool_version": __version__, "opset": OPSET,
        "sample_rate": SAMPLE_RATE, "frame_samples": FRAME_SAMPLES, "frame_rate": SAMPLE_RATE / FRAME_SAMPLES,
        "num_codebooks": o.num_codebooks, "codebook_size": codec.config.codebook_size,
        "batch_size": o.batch_size, "dtype": o.dtype,
        "float32_parts": list(FLOAT16_FP32_PARTS) if o.dtype == "float16" else [],
        "model": {k: v for k, v in codec.weights_info.items() if k in ("source", "repo", "revision", "file", "sha256")},
        "state": "Every graph takes its state and returns the next as next_<name>: feed those back in for the "
                 "next frame of the same streams. A fresh stream starts from the 'initial' of each state input "
                 "(zeros, or -1 for positions). Row i of every input and state is stream i.",
        "encoder": graphs["encoder"], "decoder": graphs["decoder"],
    }
    if o.check_seconds > 0:
        log(f"checking the graphs against the float32 codec on {o.check_seconds:g} s of audio")
        try:
            manifest["check"] = check_export(codec, out_dir, manifest, o.check_seconds)
        except ExportError:
            raise
        except Exception as e:  # onnxruntime's errors: the graphs do not run there
            raise ExportError(f"onnxruntime could not run the exported graphs: {first_line(e)}") from e
    with atomic_write(out_dir / MANIFEST) as f:
        f.write((json.dumps(manifest, indent=2) + "\n").encode())
    return manifest


def _prepared(codec: MimiCodec, dtype: str, num_codebooks: int) -> MimiCodec:
    """The codec to trace: a copy holding only the K codebooks the graphs use, in float32, or in
    float16 with the decoder transformer and the codebooks kept float32."""
    if dtype not in ("float32", "float16"):
        raise ExportError(f"--dtype {dtype}: export takes float32 or float16")
    model = copy.deepcopy(codec, memo={id(codec.compiled): None})  # compiled steps are not copied
    if dtype == "float16":
        model.to(torch.float16)
        model.decoder_transformer.float()
        for part in FLOAT16_FP32_PARTS:
            getattr(model, part).register_forward_pre_hook(lambda module, args: (args[0].float(), *args[1:]))
            getattr(model, part).register_forward_hook(lambda module, args, out: out.half())
    q = model.quantizer
    for rvq, n in ((q.semantic, min(num_codebooks, q.num_semantic)), (q.acoustic, num_codebooks - q.num_semantic)):
        rvq.codebooks = rvq.codebooks[:max(n, 0)].float()  # the token decision stays float32, as load_codec keeps it
    return model.prepare_for_inference()


@contextlib.contextmanager
def _quiet_exporter():
    """The exporter's warnings and log lines (about packages it does not need) go unsaid."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _export(step: nn.Module, args: tuple, path: Path, input_names: list[str], output_names: list[str]) -> None:
    try:
        program = torch.onnx.export(step, args, dynamo=True, opset_version=OPSET, input_names=input_names,
                                    output_names=output_names, verbose=False, optimize=True)
    except Exception as e:  # the exporter's own errors carry long reports; one line, with its first
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ExportError(f"torch could not export the {path.stem} step to ONNX: {first}") from e
    with atomic_write(path) as f:  # whole or not at all, and never through a link planted at the name
        f.write(program.model_proto.SerializeToString())


def check_export(codec: MimiCodec, out_dir: Path, manifest: dict, seconds: float, seed: int = 0) -> dict:
    """Runs the graphs in onnxruntime over `seconds` of `speech_like` audio per stream, against the
    float32 eager codec's streaming steps: the share of frames with equal codes, and the SNR of the
    decoded audio (the graphs' decode of the eager codes against the eager decode)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return {"skipped": "onnxruntime is not installed: pip install 'mimi-cli[onnxruntime]'"}
    b, k = manifest["batch_size"], manifest["num_codebooks"]
    frames = max(1, math.ceil(seconds * SAMPLE_RATE / FRAME_SAMPLES))
    audio = np.stack([speech_like(frames * FRAME_SAMPLES / SAMPLE_RATE, seed + i) for i in range(b)])
    eager_codes = codec.encode(torch.from_numpy(audio)[:, None], k).numpy()
    eager_audio = codec.decode(torch.from_numpy(eager_codes))[:, 0].numpy()
    start = time.perf_counter()
    onnx_codes = run_steps(ort, out_dir, manifest, "encoder",
                           [audio[:, i * FRAME_SAMPLES:(i + 1) * FRAME_SAMPLES] for i in range(frames)])
    onnx_audio = run_steps(ort, out_dir, manifest, "decoder", [eager_codes[..., i] for i in range(frames)])
    wall = time.perf_counter() - start
    codes = np.stack(onnx_codes, -1)
    decoded = np.concatenate(onnx_audio, -1)
    if not np.all(np.isfinite(decoded)):
        raise ExportError("the decoder graph gives NaN or infinite audio on the test signal; "
                          "export in float32 (--dtype float32)")
    noise, energy = float(np.sum((decoded - eager_audio) ** 2)), float(np.sum(eager_audio ** 2))
    snr = math.inf if noise == 0 else (10 * math.log10(energy / noise) if energy > 0 else -math.inf)
    return {"seconds": frames * FRAME_SAMPLES / SAMPLE_RATE, "streams": b, "signal": "speech_like",
            "codes_equal": float(np.mean(codes == eager_codes)),
            "frames_all_codes_equal": float(np.mean(np.all(codes == eager_codes, axis=1))),
            "decode_snr_db": "identical" if snr == math.inf else snr if math.isfinite(snr) else None,
            "onnxruntime": ort.__version__, "onnxruntime_seconds": round(wall, 2)}


def describe_check(check: dict | None) -> str:
    """The check in one phrase, for the command's last line."""
    if not check:
        return "not checked against the codec (--check-seconds 0)"
    if "skipped" in check:
        return f"not checked: {check['skipped']}"
    snr = check["decode_snr_db"]
    snr = snr if isinstance(snr, str) else f"SNR {snr:.1f} dB"
    return (f"against the float32 codec on {check['seconds']:g} s of test audio: codes equal on "
            f"{check['codes_equal']:.2%} of frames and codebooks, decoded audio {snr}")


def run_steps(ort, out_dir: Path, manifest: dict, side: str, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """Steps one graph over a list of frames, from the initial state; its first outputs, in order."""
    graph = manifest[side]
    session = ort.InferenceSession(str(out_dir / graph["file"]), providers=["CPUExecutionProvider"])
    state = {d["name"]: initial_array(d) for d in graph["inputs"][1:]}
    first = graph["inputs"][0]["name"]
    out = []
    for x in inputs:
        result = session.run(None, {first: x, **state})
        out.append(result[0])
        state = {d["name"]: r for d, r in zip(graph["inputs"][1:], result[1:])}
    return out


def initial_array(d: dict) -> np.ndarray:
    """A state input's initial value, as `mimi.json` describes it."""
    value = -1 if d["initial"] == "fill:-1" else 0
    return np.full(d["shape"], value, dtype=d["dtype"])
