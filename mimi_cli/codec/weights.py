"""Weights: one loader for Hub repos, local files and directories, and synthetic weights.

Two on-disk layouts of the same released model exist: Kyutai's moshi checkpoint
(`tokenizer-e351c8d8-checkpoint125.safetensors`) and the transformers layout on the Hub
(`kyutai/mimi`, `model.safetensors`). Each maps onto our parameter names through one table
built from the config (`key_table`); nothing else renames keys.
"""
from __future__ import annotations

import hashlib
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..spec import DEFAULT_WEIGHTS
from .config import MimiConfig
from .errors import WeightsError

HF_FILENAME = "model.safetensors"
MOSHI_FILENAME = "tokenizer-e351c8d8-checkpoint125.safetensors"
SYNTHETIC_WARNING = ("synthetic weights (seed {seed}): the tokens are NOT Mimi's; use them only for "
                     "trials, tests and benchmarks")


@dataclass(frozen=True)
class Entry:
    """Where one tensor of a checkpoint goes: our parameter, and which part of it, if any."""

    target: str | None  # our state_dict key; None for tensors we do not need
    shape: tuple[int, ...]  # the tensor's shape in the checkpoint
    part: str = ""  # "q"/"k"/"v" of a fused projection, "sum"/"usage" of codebook `index`
    index: int = 0


def key_table(config: MimiConfig, layout: str) -> dict[str, Entry]:
    """Every tensor of a `layout` ("moshi" or "hf") checkpoint, mapped onto our names."""
    if layout not in ("moshi", "hf"):
        raise ValueError(layout)
    moshi = layout == "moshi"
    c = config
    table: dict[str, Entry] = {}

    def conv(src: str, dst: str, cout: int, cin: int, k: int, transposed: bool = False, bias: bool = True):
        inner = ("convtr.convtr" if transposed else "conv.conv") if moshi else "conv"
        shape = (cin, cout, k) if transposed else (cout, cin, k)
        table[f"{src}.{inner}.weight"] = Entry(f"{dst}.weight", shape)
        if bias:
            table[f"{src}.{inner}.bias"] = Entry(f"{dst}.bias", (cout,))

    seq = "model" if moshi else "layers"
    n, hidden = len(c.ratios), lambda ch: ch // c.compress
    ch = c.n_filters
    conv(f"encoder.{seq}.0", "encoder.conv_in", ch, 1, c.kernel_size)
    for s, ratio in enumerate(reversed(c.ratios)):
        conv(f"encoder.{seq}.{1 + 3 * s}.block.1", f"encoder.stages.{s}.residual.conv1", hidden(ch), ch,
             c.residual_kernel_size)
        conv(f"encoder.{seq}.{1 + 3 * s}.block.3", f"encoder.stages.{s}.residual.conv2", ch, hidden(ch), 1)
        conv(f"encoder.{seq}.{3 + 3 * s}", f"encoder.stages.{s}.down", 2 * ch, ch, 2 * ratio)
        ch *= 2
    conv(f"encoder.{seq}.{2 + 3 * n}", "encoder.conv_out", c.dimension, ch, c.last_kernel_size)
    conv(f"decoder.{seq}.0", "decoder.conv_in", ch, c.dimension, c.kernel_size)
    for s, ratio in enumerate(c.ratios):
        conv(f"decoder.{seq}.{2 + 3 * s}", f"decoder.stages.{s}.up", ch // 2, ch, 2 * ratio, transposed=True)
        ch //= 2
        conv(f"decoder.{seq}.{3 + 3 * s}.block.1", f"decoder.stages.{s}.residual.conv1", hidden(ch), ch,
             c.residual_kernel_size)
        conv(f"decoder.{seq}.{3 + 3 * s}.block.3", f"decoder.stages.{s}.residual.conv2", ch, hidden(ch), 1)
    conv(f"decoder.{seq}.{2 + 3 * n}", "decoder.conv_out", 1, ch, c.last_kernel_size)
    d, k = c.dimension, 2 * c.downsample_stride
    table["downsample.conv.conv.conv.weight" if moshi else "downsample.conv.weight"] = Entry(
        "downsample.weight", (d, d, k))
    table["upsample.convtr.convtr.convtr.weight" if moshi else "upsample.conv.weight"] = Entry(
        "upsample.weight", (d, 1, k))

    for part in ("encoder_transformer", "decoder_transformer"):
        for layer in range(c.num_layers):
            src = f"{part}.transformer.layers.{layer}" if moshi else f"{part}.layers.{layer}"
            dst = f"{part}.layers.{layer}"
            names = {  # ours: (moshi, hf)
                "attn_out.weight": ("self_attn.out_proj.weight", "self_attn.o_proj.weight"),
                "ff_in.weight": ("linear1.weight", "mlp.fc1.weight"),
                "ff_out.weight": ("linear2.weight", "mlp.fc2.weight"),
                "norm_attn.weight": ("norm1.weight", "input_layernorm.weight"),
                "norm_attn.bias": ("norm1.bias", "input_layernorm.bias"),
                "norm_ff.weight": ("norm2.weight", "post_attention_layernorm.weight"),
                "norm_ff.bias": ("norm2.bias", "post_attention_layernorm.bias"),
                "scale_attn": ("layer_scale_1.scale", "self_attn_layer_scale.scale"),
                "scale_ff": ("layer_scale_2.scale", "mlp_layer_scale.scale"),
            }
            shapes = {"attn_out.weight": (d, d), "ff_in.weight": (c.dim_feedforward, d),
                      "ff_out.weight": (d, c.dim_feedforward)}
            for ours, (m, h) in names.items():
                table[f"{src}.{m if moshi else h}"] = Entry(f"{dst}.{ours}", shapes.get(ours, (d,)))
            if moshi:
                table[f"{src}.self_attn.in_proj_weight"] = Entry(f"{dst}.attn_in.weight", (3 * d, d))
            else:
                for p in "qkv":
                    table[f"{src}.self_attn.{p}_proj.weight"] = Entry(f"{dst}.attn_in.weight", (d, d), p)

    for ours, n_q, m, h in (("semantic", c.num_semantic, "rvq_first", "semantic_residual_vector_quantizer"),
                            ("acoustic", c.num_codebooks - c.num_semantic, "rvq_rest",
                             "acoustic_residual_vector_quantizer")):
        src, dst = f"quantizer.{m if moshi else h}", f"quantizer.{ours}"
        table[f"{src}.input_proj.weight"] = Entry(f"{dst}.input_proj", (c.codebook_dim, d, 1))
        table[f"{src}.output_proj.weight"] = Entry(f"{dst}.output_proj", (d, c.codebook_dim, 1))
        for q in range(n_q):
            cb = f"{src}.vq.layers.{q}._codebook" if moshi else f"{src}.layers.{q}.codebook"
            table[f"{cb}.{'embedding_sum' if moshi else 'embed_sum'}"] = Entry(
                f"{dst}.codebooks", (c.codebook_size, c.codebook_dim), "sum", q)
            table[f"{cb}.cluster_usage"] = Entry(f"{dst}.codebooks", (c.codebook_size,), "usage", q)
            table[f"{cb}.{'_initialized' if moshi else 'initialized'}"] = Entry(None, (1,))
    return table


def detect_layout(keys: list[str] | set[str]) -> str:
    """ "moshi" or "hf", from the keys of a checkpoint; WeightsError if it is neither."""
    if "encoder.model.0.conv.conv.weight" in keys:
        return "moshi"
    if "encoder.layers.0.conv.weight" in keys:
        return "hf"
    sample = ", ".join(sorted(keys)[:3]) or "no tensors"
    raise WeightsError(f"not Mimi weights (neither the moshi nor the kyutai/mimi layout); first keys: {sample}")


def _unpermute_rotary(w: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Undoes transformers' q/k row permutation (split-half rotary -> interleaved pairs)."""
    rows, cols = w.shape
    return w.view(num_heads, 2, rows // num_heads // 2, cols).transpose(1, 2).reshape(rows, cols)


def convert_state_dict(tensors: dict[str, torch.Tensor], config: MimiConfig,
                       layout: str | None = None) -> dict[str, torch.Tensor]:
    """Our state_dict from a checkpoint's tensors (either layout), with clear errors on mismatch."""
    layout = layout or detect_layout(set(tensors))
    table = key_table(config, layout)
    unexpected = sorted(set(tensors) - set(table))
    missing = sorted(set(table) - set(tensors))
    if unexpected or missing:
        raise WeightsError(
            f"{layout}-layout weights do not match the Mimi architecture: "
            + "; ".join(f"{what} {len(keys)} keys (first: {', '.join(keys[:3])})"
                        for what, keys in (("unexpected", unexpected), ("missing", missing)) if keys))
    bad = [f"{k} {tuple(tensors[k].shape)} (expected {e.shape})" for k, e in table.items()
           if tuple(tensors[k].shape) != e.shape]
    if bad:
        raise WeightsError(f"{len(bad)} tensors have the wrong shape (first: {'; '.join(bad[:3])})")

    out: dict[str, torch.Tensor] = {}
    parts: dict[str, dict] = {}
    for key, e in table.items():
        if e.target is None:
            continue
        t = tensors[key].float()
        if e.part:
            parts.setdefault(e.target, {})[(e.part, e.index)] = t
        else:
            out[e.target] = t.reshape(t.shape[:2]) if e.target.endswith("_proj") else t
    for target, got in parts.items():
        if target.endswith("attn_in.weight"):
            q, k = (_unpermute_rotary(got[(p, 0)], config.num_heads) for p in "qk")
            out[target] = torch.cat([q, k, got[("v", 0)]])
        else:  # codebook = embedding_sum / cluster_usage, clamped as the reference does
            n = len(got) // 2
            out[target] = torch.stack([got[("sum", i)] / got[("usage", i)].clamp(min=1e-5)[:, None]
                                       for i in range(n)])
    return out


# -- synthetic weights ------------------------------------------------------------------------
def _draw(key: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """A realistic-magnitude value for one moshi-layout tensor (so activations stay in range)."""
    if key.endswith("_initialized"):
        return np.ones(shape, np.float32)
    if key.endswith("cluster_usage"):  # EMA counts
        return rng.uniform(0.5, 4.0, shape).astype(np.float32)
    if key.endswith("embedding_sum"):
        return rng.normal(0.0, 1.0, shape).astype(np.float32)
    if ".scale" in key:  # layer scale
        return rng.uniform(0.005, 0.05, shape).astype(np.float32)
    if ".norm" in key:
        return ((1.0 if key.endswith("weight") else 0.0) + rng.normal(0.0, 0.05, shape)).astype(np.float32)
    if key.endswith("bias"):
        return rng.normal(0.0, 0.02, shape).astype(np.float32)
    # Each output of a transposed conv sees cin * k / stride inputs; of a conv, all but dim 0.
    fan_in = shape[0] * max(1, shape[2] // 2) if "convtr" in key else math.prod(shape[1:])
    return rng.normal(0.0, 1.0 / math.sqrt(fan_in), shape).astype(np.float32)


def synthetic_tensors(config: MimiConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """Deterministic moshi-layout weights: numpy PCG64(seed), drawn in sorted key order.

    The same recipe as the reference generator in shared/reference, so `synthetic:S` is
    bit-identical to the weights the golden fixtures were made with.
    """
    rng = np.random.Generator(np.random.PCG64(seed))
    return {k: torch.from_numpy(_draw(k, e.shape, rng)) for k, e in sorted(key_table(config, "moshi").items())}


# -- sources ----------------------------------------------------------------------------------
def parse_synthetic(spec: str) -> int | None:
    """The seed of a `synthetic[:SEED]` spec, or None if `spec` is something else."""
    m = re.fullmatch(r"synthetic(?::(-?\d+))?", spec.strip())
    if not m:
        if spec.strip().startswith("synthetic"):
            raise WeightsError(f"bad weights spec {spec!r}: use 'synthetic' or 'synthetic:SEED' (SEED an integer)")
        return None
    return int(m.group(1) or 0)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise WeightsError(f"cannot read {path} as safetensors: {e}") from None


def _find_in_directory(directory: Path) -> Path:
    for name in (HF_FILENAME, MOSHI_FILENAME):
        if (directory / name).is_file():
            return directory / name
    found = sorted(directory.glob("*.safetensors"))
    if len(found) == 1:
        return found[0]
    raise WeightsError(f"{directory}: expected {HF_FILENAME} or {MOSHI_FILENAME} in this directory, "
                       f"found {len(found)} .safetensors files")


def _download(spec: str) -> tuple[Path, dict[str, str]]:
    """Local path of a Hub checkpoint `org/name[@revision][/file.safetensors]`, via the HF cache."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    m = re.fullmatch(r"([\w.-]+/[\w.-]+)(?:@([\w./-]+?))?(?:/([\w.-]+\.safetensors))?", spec)
    if not m:
        raise WeightsError(f"--weights {spec!r} is neither a local file or directory, nor a Hub repo id "
                           "like kyutai/mimi, nor synthetic[:SEED]")
    repo, revision, filename = m.groups()
    hint = (f"pass a local copy instead: --weights /path/to/{HF_FILENAME} (or {MOSHI_FILENAME}, or a "
            "directory holding one); set HF_HUB_OFFLINE=1 to use only the local Hub cache")
    last: Exception | None = None
    for name in [filename] if filename else [HF_FILENAME, MOSHI_FILENAME]:
        try:
            path = Path(hf_hub_download(repo, name, revision=revision))
        except LocalEntryNotFoundError:
            raise WeightsError(f"could not get {repo} from the Hugging Face Hub (not in the local cache, and "
                               f"the Hub cannot be reached or HF_HUB_OFFLINE is set); {hint}") from None
        except EntryNotFoundError as e:
            last = e
            continue
        except (RepositoryNotFoundError, RevisionNotFoundError) as e:
            raise WeightsError(f"no Hub repo {repo}{'@' + revision if revision else ''}: "
                               f"{str(e).splitlines()[0]}; {hint}") from None
        except Exception as e:  # network down, offline cache miss, HTTP errors: all one message
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise WeightsError(f"could not get {repo} from the Hugging Face Hub ({first}); {hint}") from None
        # The cache path holds the commit: .../snapshots/<commit>/<file>
        return path, {"repo": repo, "revision": path.parent.name, "file": name}
    raise WeightsError(f"{repo} has neither {HF_FILENAME} nor {MOSHI_FILENAME} ({last}); {hint}")


def resolve_weights(spec: str | os.PathLike | None) -> tuple[dict[str, torch.Tensor] | int, dict[str, str]]:
    """Checkpoint tensors (or a synthetic seed) and a description of where they came from."""
    spec = str(spec or os.environ.get("MIMI_WEIGHTS") or DEFAULT_WEIGHTS)
    seed = parse_synthetic(spec)
    if seed is not None:
        return seed, {"source": f"synthetic:{seed}", "synthetic": "true"}
    path = Path(spec).expanduser()
    if path.is_dir():
        path = _find_in_directory(path)
    if path.is_file():
        return _read_safetensors(path), {"source": str(path.resolve()), "sha256": _sha256(path)}
    if spec.startswith((".", "/", "~")) or spec.endswith(".safetensors") and spec.count("/") != 2:
        raise WeightsError(f"weights file not found: {spec}")
    path, info = _download(spec)
    return _read_safetensors(path), {"source": spec, **info, "sha256": _sha256(path)}
