"""Mimi's streaming codec core: tensors in, tensors out (no files, no flags)."""
from .config import CODEBOOK_SIZE, DEFAULT_CODEBOOKS, FRAME_RATE, FRAME_SAMPLES, MAX_CODEBOOKS, SAMPLE_RATE, MimiConfig
from .errors import DeviceError, MimiError, StreamError, WeightsError
from .load import load_codec
from .model import MimiCodec
from .state import DecoderState, EncoderState, concat_states

__all__ = [
    "CODEBOOK_SIZE", "DEFAULT_CODEBOOKS", "FRAME_RATE", "FRAME_SAMPLES", "MAX_CODEBOOKS", "SAMPLE_RATE",
    "MimiConfig", "MimiCodec", "load_codec", "EncoderState", "DecoderState", "concat_states",
    "MimiError", "WeightsError", "DeviceError", "StreamError",
]
