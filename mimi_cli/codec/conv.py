"""Causal 1-D convolutions on time-major activations that carry their own left context.

Activations are [B, T, C] (time-major, "channels last") everywhere in the codec: oneDNN's
convolutions are faster on it, a window's k steps are k * C contiguous values (so the matmul path
reads windows without unfolding), and the transformers take it as it is (docs/design.md).

A call takes the new input and the context left by the previous call, and returns the output
and the next context. Offline use is the same call with a zero context, so offline and
streaming share every line. Inputs are always a whole number of strides long, because the
model is only ever fed whole hops.
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
        # [out, in, kernel], born laid out as `store_time_major` leaves it.
        self.weight = nn.Parameter(torch.empty(out_channels, kernel_size, in_channels // groups).transpose(1, 2))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.context_size = (kernel_size - 1) * dilation + 1 - stride
        self.blocks = WeightBlocks()  # of `matrix`, for few-step products
        self.slot = -1  # this layer's index in a state's `contexts`, given by ConvSlots.register

    def init_context(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        return torch.zeros(batch_size, self.context_size, self.in_channels, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (output [B, T', C_out], next context) for input `x` [B, T, C_in] after `context`."""
        if self.context_size:
            x = torch.cat([context, x], dim=1)
            # Canonical strides: a compiled step's guards then see the same state every frame.
            context = x[:, x.shape[1] - self.context_size:].clone(memory_format=torch.contiguous_format)
        return self._conv(x), context

    @property
    def matrix(self) -> torch.Tensor:
        """The weight as the [out, kernel * in] matrix of the matmul path, columns in (kernel step,
        input channel) order: a view of the weight once `store_time_major` has run."""
        return self.weight.transpose(1, 2).reshape(self.weight.shape[0], -1)

    def store_time_major(self) -> None:
        """Re-lays the weight as [out, kernel, in] in memory (the parameter keeps its shape and
        values, as a view): `matrix` is then free, and oneDNN gets a channels-last kernel. New
        layers are born so; weights assigned from a file (`load_state_dict(assign=True)`) are not."""
        self.weight = nn.Parameter(self.weight.transpose(1, 2).contiguous().transpose(1, 2), requires_grad=False)

    def _conv(self, x: torch.Tensor) -> torch.Tensor:
        """conv1d without padding on [B, T, C]. Short outputs (streaming steps, the 25 Hz stages),
        the 1-channel input conv of streaming frames and 1x1 convs go through one matmul over the
        windows: oneDNN's direct convolution is slower on those shapes (docs/design.md)."""
        B, T, c_in = x.shape
        kernel = self.weight.shape[-1]
        out_len = (T - self.dilation * (kernel - 1) - 1) // self.stride + 1
        limit = MATMUL_MAX_STEPS_ONE_CHANNEL if self.in_channels == 1 else MATMUL_MAX_STEPS
        if self.groups != 1 or self.dilation != 1 or (out_len > limit and kernel > 1):
            # [B, C, 1, T] views of time-major data are channels-last to oneDNN; so is the output.
            y = F.conv2d(x.transpose(1, 2).unsqueeze(2), self.weight.unsqueeze(2), self.bias,
                         (1, self.stride), 0, (1, self.dilation), self.groups)
            return y.squeeze(2).transpose(1, 2)
        x = x.contiguous()
        # Window t is the kernel * C values from step t * stride on: a strided view, no unfold.
        windows = x.as_strided((B, out_len, kernel * c_in), (x.stride(0), self.stride * c_in, 1))
        return linear(windows, self.matrix, self.bias, self.blocks)


class StreamingConvTranspose1d(nn.Module):
    """ConvTranspose1d, causal: the `kernel - stride` overlapping tail is carried to the next call."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int,
                 groups: int = 1, bias: bool = True) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.stride = stride
        self.groups = groups
        # [in, out, kernel], born laid out as `store_matrix_contiguous` leaves it.
        self.weight = nn.Parameter(torch.empty(kernel_size, out_channels // groups, in_channels).permute(2, 1, 0))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.context_size = kernel_size - stride
        self.blocks = WeightBlocks()  # of `matrix`, for few-step products
        self.slot = -1  # this layer's index in a state's `contexts`, given by ConvSlots.register

    def init_context(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        return torch.zeros(batch_size, self.context_size, self.out_channels, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor, partial: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, T, C_in] -> (the `T * stride` finished outputs [B, T * stride, C_out], the
        unfinished tail without bias)."""
        y = self._transposed(x)
        n_out = x.shape[1] * self.stride
        if self.context_size:
            y[:, :self.context_size] += partial
            partial = y[:, n_out:].clone(memory_format=torch.contiguous_format)
            y = y[:, :n_out]
        if self.bias is not None:
            y = y + self.bias
        return y, partial

    @property
    def uses_matmul(self) -> bool:
        """Whether this conv runs as one matmul plus overlap-add (kernel a multiple of stride)."""
        return self.groups == 1 and self.weight.shape[-1] % self.stride == 0

    @property
    def matrix(self) -> torch.Tensor:
        """The weight as the [kernel * out, in] matrix of that matmul, rows in (kernel step,
        output channel) order: an input step's outputs come out time-major."""
        return self.weight.permute(2, 1, 0).reshape(-1, self.weight.shape[0])

    def store_matrix_contiguous(self) -> None:
        """Re-lays the weight so that `matrix` is contiguous (fastest for `linear`'s few rows);
        the parameter keeps its shape and values, as a view of that matrix."""
        if self.uses_matmul:
            c_in, c_out, kernel = self.weight.shape
            matrix = self.matrix.contiguous()
            self.weight = nn.Parameter(matrix.view(kernel, c_out, c_in).permute(2, 1, 0), requires_grad=False)

    def _transposed(self, x: torch.Tensor) -> torch.Tensor:
        """conv_transpose1d without bias, [B, T, C_in] -> [B, (T - 1) * stride + kernel, C_out]."""
        c_in, _, kernel = self.weight.shape
        B, T, _ = x.shape
        m, s = kernel // self.stride, self.stride
        if self.uses_matmul:
            # With kernel = m * stride, each input step writes m whole blocks of `stride` outputs:
            # one matmul makes them all, then m shifted adds overlap them. PyTorch's CPU
            # transposed conv is several times slower than this for Mimi's decoder.
            pieces = linear(x, self.matrix, blocks=self.blocks).view(B, T, m, s, self.out_channels)
        elif self.groups == c_in == self.out_channels and kernel % s == 0:
            # Depthwise (Mimi's upsampling): each output is one input times one weight, summed.
            pieces = x[:, :, None, None, :] * self.weight[:, 0].t().reshape(m, s, c_in)
        else:
            return F.conv_transpose1d(x.transpose(1, 2), self.weight, None, s, 0, 0, self.groups).transpose(1, 2)
        y = pieces.new_zeros(B, T + m - 1, s, self.out_channels)
        for i in range(m):
            y[:, i:i + T] += pieces[:, :, i]
        return y.view(B, (T + m - 1) * s, self.out_channels)


class ConvSlots:
    """Hands out state slots to conv layers in construction order, so a state is a flat list."""

    def __init__(self) -> None:
        self.layers: list[StreamingConv1d | StreamingConvTranspose1d] = []

    def register(self, layer: StreamingConv1d | StreamingConvTranspose1d):
        layer.slot = len(self.layers)
        self.layers.append(layer)
        return layer
