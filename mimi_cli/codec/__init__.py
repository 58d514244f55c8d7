"""Mimi's streaming codec core: tensors in, tensors out (no files, no flags).

The constants and errors import without torch (so `mimi --help` starts quickly); the model,
its states and the loader load torch on first use.
"""
from importlib import import_module

from ..spec import (
    CODEBOOK_SIZE,
    DEFAULT_CODEBOOKS,
    DEFAULT_WEIGHTS,
    FRAME_RATE,
    FRAME_SAMPLES,
    MAX_CODEBOOKS,
    SAMPLE_RATE,
)
from .config import MimiConfig
from .errors import DeviceError, InvalidArgument, MimiError, StreamError, WeightsError

_LAZY = {"load_codec": ".load", "MimiCodec": ".model", "EncoderState": ".state", "DecoderState": ".state",
         "concat_states": ".state"}

__all__ = [
    "CODEBOOK_SIZE", "DEFAULT_CODEBOOKS", "DEFAULT_WEIGHTS", "FRAME_RATE", "FRAME_SAMPLES", "MAX_CODEBOOKS",
    "SAMPLE_RATE",
    "MimiConfig", "MimiCodec", "load_codec", "EncoderState", "DecoderState", "concat_states",
    "MimiError", "WeightsError", "DeviceError", "StreamError", "InvalidArgument",
]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
