"""Device and dtype names from the command line, checked against what this machine has."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from .errors import DeviceError

DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
          "fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """torch.device for auto|cpu|cuda[:N]|mps; DeviceError when it is not available here."""
    name = str(name)
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if _mps_available() else "cpu")
    kind = name.split(":")[0]
    if kind not in DEVICES:
        raise DeviceError(f"unknown device {name!r}: use one of {', '.join(DEVICES)}")
    if kind == "cuda" and not torch.cuda.is_available():
        raise DeviceError("--device cuda: no CUDA GPU is available to this torch build; use --device cpu")
    if kind == "mps" and not _mps_available():
        raise DeviceError("--device mps: Apple's Metal backend is not available here; use --device cpu")
    return torch.device(name)


def resolve_dtype(name: str | torch.dtype = "float32") -> torch.dtype:
    if isinstance(name, torch.dtype):
        return name
    if name not in DTYPES:
        raise DeviceError(f"unknown dtype {name!r}: use float32, bfloat16 or float16 (or int8 on the CPU)")
    return DTYPES[name]


@contextlib.contextmanager
def ieee_float32(device: torch.device) -> Iterator[None]:
    """TF32 off in cuDNN and cuBLAS while the codec runs on CUDA (cuDNN's default is on), restored after.

    TF32 flips codes against CPU float32 for no reliable speed (docs/design.md): float32 here
    means float32, as on the CPU.
    """
    if device.type != "cuda":
        yield
        return
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
