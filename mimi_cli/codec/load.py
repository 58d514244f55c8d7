"""`load_codec`: the one entry point from a weights spec to a ready model."""
from __future__ import annotations

import logging
import os

import torch

from .config import MimiConfig
from .device import DeviceError, resolve_device, resolve_dtype
from .linear import product_layout
from .model import MimiCodec
from .weights import SYNTHETIC_WARNING, convert_state_dict, detect_layout, resolve_weights, synthetic_tensors

log = logging.getLogger("mimi_cli")


def load_codec(weights: str | os.PathLike | None = None, device: str | torch.device = "auto",
               dtype: str | torch.dtype = "float32", config: MimiConfig | None = None) -> MimiCodec:
    """A MimiCodec in eval mode with weights from a Hub repo id, a local file or directory,
    or `synthetic[:SEED]` (default: $MIMI_WEIGHTS, else kyutai/mimi)."""
    config = config or MimiConfig()
    int8 = dtype == "int8"  # float32 activations, int8 transformer weights (CPU: fbgemm's kernels)
    dev, dt = resolve_device(device), resolve_dtype("float32" if int8 else dtype)
    if int8 and dev.type != "cpu":
        raise DeviceError(f"--dtype int8 runs on the CPU (fbgemm's int8 kernels); on {dev.type} use bfloat16 or "
                          "float16")
    tensors, info = resolve_weights(weights)
    if isinstance(tensors, int):
        log.warning(SYNTHETIC_WARNING.format(seed=tensors))
        tensors = synthetic_tensors(config, tensors)
    info = {**info, "layout": detect_layout(set(tensors))}
    state_dict = convert_state_dict(tensors, config, info["layout"])
    with torch.device("meta"):
        model = MimiCodec(config)
    model.load_state_dict(state_dict, strict=True, assign=True)
    del tensors, state_dict  # the model holds the weights now; re-laying them must not keep two copies
    model = model.to(device=dev, dtype=dt).eval().requires_grad_(False)
    for rvq in (model.quantizer.semantic, model.quantizer.acoustic):
        rvq.codebooks = rvq.codebooks.float()  # the token decision stays in float32
    model.prepare_for_inference()
    if int8:
        model.quantize_int8()
    if dev.type == "cpu" and dt == torch.float32:
        product_layout()  # measured now, not in the first streaming step
    model.weights_info = dict(info)
    return model
