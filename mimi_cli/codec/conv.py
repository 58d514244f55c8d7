"""Causal 1-D convolutions that carry their own left context between calls.

A call takes the new input and the context left by the previous call, and returns the output
and the next context. Offline use is the same call with a zero context, so offline and
streaming share every line. Inputs are always a whole number of strides long, because the
model is only ever fed whole frames.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .linear import WeightBlocks, linear

# Convolutions with at most this many output steps run as a matmul (see StreamingConv1d._conv);
# for the 1-channel input conv the bound is higher: streaming frames yes, offline chunks no.
MATMUL_MAX_STEPS = 32
MATMUL_MAX_STEPS_ONE_CHANNEL = 8192


class StreamingConv1d(nn.Module):
    """Conv1d, causal with zero left padding; the context is the last `k_eff - stride` inputs."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 dilation: int = 1, groups: int = 1, bias: bool = True) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.stride = stride
        self.dilation = dilation
        self.groups = groups
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.context_size = (kernel_size - 1) * dilation + 1 - stride
        self.blocks = WeightBlocks()  # of the [out, in * kernel] matrix, for few-step products

    def init_context(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        return torch.zeros(batch_size, self.in_channels, self.context_size, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (output, next context) for input `x` [B, C, T] after `context`."""
        if self.context_size:
            x = torch.cat([context, x], dim=-1)
            context = x[..., x.shape[-1] - self.context_size:].clone()
        return self._conv(x), context

    def _conv(self, x: torch.Tensor) -> torch.Tensor:
        """conv1d without padding. Short outputs (streaming steps, the 25 Hz stages) and the
        1-channel input conv of streaming frames go through one matmul over unfolded windows:
        oneDNN's direct convolution is 2-9x slower on those shapes (docs/performance.md)."""
        out_len = (x.shape[-1] - self.dilation * (self.weight.shape[-1] - 1) - 1) // self.stride + 1
        limit = MATMUL_MAX_STEPS_ONE_CHANNEL if self.in_channels == 1 else MATMUL_MAX_STEPS
        if self.groups != 1 or self.dilation != 1 or out_len > limit:
            return F.conv1d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)
        B, c_in, _ = x.shape
        kernel = self.weight.shape[-1]
        windows = x.unfold(-1, kernel, self.stride).transpose(1, 2).reshape(B, out_len, c_in * kernel)
        matrix = self.weight.reshape(self.weight.shape[0], -1)
        return linear(windows, matrix, self.bias, self.blocks).transpose(1, 2)


class StreamingConvTranspose1d(nn.Module):
    """ConvTranspose1d, causal: the `kernel - stride` overlapping tail is carried to the next call."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int,
                 groups: int = 1, bias: bool = True) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.stride = stride
        self.groups = groups
        self.weight = nn.Parameter(torch.empty(in_channels, out_channels // groups, kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.context_size = kernel_size - stride
        self.blocks = WeightBlocks()  # of `matrix`, for few-step products

    def init_context(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        return torch.zeros(batch_size, self.out_channels, self.context_size, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor, partial: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (the `T * stride` finished outputs, the unfinished tail without bias)."""
        y = self._transposed(x)
        n_out = x.shape[-1] * self.stride
        if self.context_size:
            y[..., :self.context_size] += partial
            partial = y[..., n_out:].clone()
            y = y[..., :n_out]
        if self.bias is not None:
            y = y + self.bias[:, None]
        return y, partial

    @property
    def uses_matmul(self) -> bool:
        """Whether this conv runs as one matmul plus overlap-add (kernel a multiple of stride)."""
        return self.groups == 1 and self.weight.shape[-1] % self.stride == 0

    @property
    def matrix(self) -> torch.Tensor:
        """The weight as the [out * kernel, in] matrix of that matmul (a view of the weight)."""
        return self.weight.reshape(self.weight.shape[0], -1).t()

    def store_matrix_contiguous(self) -> None:
        """Re-lays the weight so that `matrix` is contiguous (fastest for `linear`'s few rows);
        the parameter keeps its shape and values, as a view of that matrix."""
        if self.uses_matmul:
            shape = self.weight.shape
            self.weight = nn.Parameter(self.matrix.contiguous().t().view(shape), requires_grad=False)

    def _transposed(self, x: torch.Tensor) -> torch.Tensor:
        """conv_transpose1d without bias, [B, C_in, T] -> [B, C_out, (T - 1) * stride + kernel]."""
        c_in, c_out, kernel = self.weight.shape
        if not self.uses_matmul:
            return F.conv_transpose1d(x, self.weight, None, self.stride, 0, 0, self.groups)
        # With kernel = m * stride, each input step writes m whole blocks of `stride` outputs: one
        # matmul makes them all, then m shifted adds overlap them. PyTorch's CPU transposed conv
        # is several times slower than this for Mimi's decoder.
        B, _, T = x.shape
        m, s = kernel // self.stride, self.stride
        pieces = linear(x.transpose(1, 2), self.matrix, blocks=self.blocks).view(B, T, c_out, m, s)
        y = pieces.new_zeros(B, T + m - 1, c_out, s)
        for i in range(m):
            y[:, i:i + T] += pieces[:, :, :, i]
        return y.permute(0, 2, 1, 3).reshape(B, c_out, (T + m - 1) * s)


class ConvSlots:
    """Hands out state slots to conv layers in construction order, so a state is a flat list."""

    def __init__(self) -> None:
        self.layers: list[StreamingConv1d | StreamingConvTranspose1d] = []

    def register(self, layer: StreamingConv1d | StreamingConvTranspose1d):
        layer.slot = len(self.layers)
        self.layers.append(layer)
        return layer
