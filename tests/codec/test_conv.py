"""The streaming convolutions against PyTorch's own, offline and chunked."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mimi_cli.codec.conv import StreamingConv1d, StreamingConvTranspose1d


def _init(layer):
    torch.manual_seed(0)
    for p in layer.parameters():
        p.data.normal_()
    return layer


@pytest.mark.parametrize("chunk_steps", [3, 12, 40])  # matmul path, and oneDNN's for longer outputs
@pytest.mark.parametrize("kernel,stride,dilation", [(7, 1, 1), (3, 1, 2), (8, 4, 1), (4, 2, 1), (1, 1, 1)])
def test_conv_equals_causally_padded_conv1d(kernel, stride, dilation, chunk_steps):
    conv = _init(StreamingConv1d(3, 5, kernel, stride, dilation))
    x = torch.randn(2, 3, stride * 120)
    pad = (kernel - 1) * dilation + 1 - stride
    expected = F.conv1d(F.pad(x, (pad, 0)), conv.weight, conv.bias, stride, 0, dilation)
    with torch.no_grad():
        ctx = conv.init_context(2, x.device, x.dtype)
        chunks = []
        for part in x.split(stride * chunk_steps, dim=-1):
            y, ctx = conv(part, ctx)
            chunks.append(y)
    torch.testing.assert_close(torch.cat(chunks, -1), expected)


@pytest.mark.parametrize("kernel,stride,groups", [(16, 8, 1), (12, 6, 1), (4, 2, 4), (5, 2, 1), (6, 2, 1)])
def test_transposed_conv_equals_trimmed_conv_transpose1d(kernel, stride, groups):
    conv = _init(StreamingConvTranspose1d(4, 4, kernel, stride, groups=groups))
    x = torch.randn(2, 4, 10)
    full = F.conv_transpose1d(x, conv.weight, conv.bias, stride, groups=groups)
    expected = full[..., :10 * stride]  # causal: the tail waits for the next input
    with torch.no_grad():
        ctx = conv.init_context(2, x.device, x.dtype)
        chunks = []
        for part in x.split(3, dim=-1):
            y, ctx = conv(part, ctx)
            chunks.append(y)
    torch.testing.assert_close(torch.cat(chunks, -1), expected)
