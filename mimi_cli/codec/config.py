"""Mimi's architecture as a frozen dataclass; the format's rates and sizes come from mimi_cli.spec."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from ..spec import CODEBOOK_SIZE, MAX_CODEBOOKS, SAMPLE_RATE


@dataclass(frozen=True)
class MimiConfig:
    """Shape of a Mimi model; the defaults are the released full-size model (96.2 M values)."""

    n_filters: int = 64
    ratios: tuple[int, ...] = (8, 6, 5, 4)  # decoder order; the encoder applies them reversed
    dimension: int = 512
    kernel_size: int = 7
    residual_kernel_size: int = 3
    last_kernel_size: int = 3
    compress: int = 2
    num_layers: int = 8
    num_heads: int = 8
    dim_feedforward: int = 2048
    context: int = 250  # attention window, in 25 Hz transformer steps (10 s)
    max_period: float = 10_000.0
    layer_norm_eps: float = 1e-5
    codebook_dim: int = 256
    codebook_size: int = CODEBOOK_SIZE
    num_codebooks: int = MAX_CODEBOOKS  # semantic + acoustic
    num_semantic: int = 1
    downsample_stride: int = 2  # 25 Hz encoder rate -> 12.5 Hz frames
    sample_rate: int = SAMPLE_RATE

    @property
    def hop_length(self) -> int:
        """Audio samples per step of the transformers (25 Hz)."""
        return math.prod(self.ratios)

    @property
    def frame_samples(self) -> int:
        """Audio samples per token frame (1920 at full size)."""
        return self.hop_length * self.downsample_stride

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.frame_samples

    @classmethod
    def tiny(cls) -> MimiConfig:
        """Same shape family and frame size, few channels: for fast unit tests."""
        return cls(n_filters=4, dimension=16, num_layers=2, num_heads=2, dim_feedforward=32,
                   context=6, codebook_dim=8, codebook_size=64, num_codebooks=8)

    def to_dict(self) -> dict:
        return asdict(self)
