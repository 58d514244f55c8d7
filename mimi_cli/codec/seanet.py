"""SEANet encoder and decoder: the convolutional halves of Mimi (24 kHz <-> 25 Hz latents).

Activations are time-major, [B, T, C] (see conv.py)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import MimiConfig
from .conv import ConvSlots, StreamingConv1d, StreamingConvTranspose1d


def _run(layer, x: torch.Tensor, contexts: list[torch.Tensor]) -> torch.Tensor:
    """Applies a streaming conv with its slot of `contexts`, storing the next context there."""
    y, contexts[layer.slot] = layer(x, contexts[layer.slot])
    return y


class ResidualBlock(nn.Module):
    """x + conv1x1(elu(conv_k(elu(x)))), halving the channels in between."""

    def __init__(self, channels: int, config: MimiConfig, slots: ConvSlots) -> None:
        super().__init__()
        hidden = channels // config.compress
        self.conv1 = slots.register(StreamingConv1d(channels, hidden, config.residual_kernel_size))
        self.conv2 = slots.register(StreamingConv1d(hidden, channels, 1))

    def forward(self, x: torch.Tensor, contexts: list[torch.Tensor]) -> torch.Tensor:
        h = _run(self.conv1, F.elu(x), contexts)
        return x + _run(self.conv2, F.elu(h), contexts)


class EncoderStage(nn.Module):
    def __init__(self, channels: int, ratio: int, config: MimiConfig, slots: ConvSlots) -> None:
        super().__init__()
        self.residual = ResidualBlock(channels, config, slots)
        self.down = slots.register(StreamingConv1d(channels, channels * 2, 2 * ratio, stride=ratio))

    def forward(self, x: torch.Tensor, contexts: list[torch.Tensor]) -> torch.Tensor:
        return _run(self.down, F.elu(self.residual(x, contexts)), contexts)


class DecoderStage(nn.Module):
    def __init__(self, channels: int, ratio: int, config: MimiConfig, slots: ConvSlots) -> None:
        super().__init__()
        self.up = slots.register(StreamingConvTranspose1d(channels, channels // 2, 2 * ratio, ratio))
        self.residual = ResidualBlock(channels // 2, config, slots)

    def forward(self, x: torch.Tensor, contexts: list[torch.Tensor]) -> torch.Tensor:
        return self.residual(_run(self.up, F.elu(x), contexts), contexts)


class SeanetEncoder(nn.Module):
    """Audio [B, T, 1] -> latents [B, T / hop_length, dimension], as `front` then `back`."""

    def __init__(self, config: MimiConfig, slots: ConvSlots) -> None:
        super().__init__()
        ch = config.n_filters
        self.conv_in = slots.register(StreamingConv1d(1, ch, config.kernel_size))
        stages = []
        for ratio in reversed(config.ratios):
            stages.append(EncoderStage(ch, ratio, config, slots))
            ch *= 2
        self.stages = nn.ModuleList(stages)
        self.conv_out = slots.register(StreamingConv1d(ch, config.dimension, config.last_kernel_size))

    @property
    def front_hop(self) -> int:
        """Audio samples per output step of `front` (120 at full size: 200 Hz)."""
        return math.prod(stage.down.stride for stage in self.stages[:-1])

    @property
    def front_channels(self) -> int:
        return self.stages[-1].down.in_channels

    def front(self, x: torch.Tensor, contexts: list[torch.Tensor]) -> torch.Tensor:
        """Audio [B, n * front_hop, 1] -> [B, n, C]: every layer before the last downsampling.

        Streaming runs this on audio as it arrives (any whole number of steps), so that only
        `back` and what follows remain when a frame's last sample comes in."""
        x = _run(self.conv_in, x, contexts)
        for stage in self.stages[:-1]:
            x = stage(x, contexts)
        return self.stages[-1].residual(x, contexts)

    def back(self, x: torch.Tensor, contexts: list[torch.Tensor]) -> torch.Tensor:
        """`front`'s output [B, n * last ratio, C] -> latents [B, n, dimension]."""
        x = _run(self.stages[-1].down, F.elu(x), contexts)
        return _run(self.conv_out, F.elu(x), contexts)


class SeanetDecoder(nn.Module):
    """Latents [B, S, dimension] -> audio [B, S * hop_length, 1]."""

    def __init__(self, config: MimiConfig, slots: ConvSlots) -> None:
        super().__init__()
        ch = config.n_filters * 2 ** len(config.ratios)
        self.conv_in = slots.register(StreamingConv1d(config.dimension, ch, config.kernel_size))
        stages = []
        for ratio in config.ratios:
            stages.append(DecoderStage(ch, ratio, config, slots))
            ch //= 2
        self.stages = nn.ModuleList(stages)
        self.conv_out = slots.register(StreamingConv1d(ch, 1, config.last_kernel_size))

    def forward(self, x: torch.Tensor, contexts: list[torch.Tensor]) -> torch.Tensor:
        x = _run(self.conv_in, x, contexts)
        for stage in self.stages:
            x = stage(x, contexts)
        return _run(self.conv_out, F.elu(x), contexts)
