"""The streaming convolutions against PyTorch's own, offline and chunked, on time-major [B, T, C]."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mimi_cli.codec.conv import StreamingConv1d, StreamingConvTranspose1d


def _init(layer):
    torch.manual_seed(0)
    for p in layer.parameters():
        p.data.normal_()
    return layer


def _as_assigned(layer):
    """The weight contiguous in its own shape, as load_state_dict(assign=True) leaves it."""
    layer.weight = nn.Parameter(layer.weight.detach().contiguous())
    return layer


def _stream(conv, x, chunk):
    """Feeds time-major x [B, T, C] in chunks of `chunk` steps; the outputs joined."""
    with torch.no_grad():
        ctx = conv.init_context(x.shape[0], x.device, x.dtype)
        chunks = []
        for part in x.split(chunk, dim=1):
            y, ctx = conv(part, ctx)
            chunks.append(y)
    return torch.cat(chunks, 1)


@pytest.mark.parametrize("relaid", [False, True])  # as loaded from a file, and after prepare_for_inference
@pytest.mark.parametrize("chunk_steps", [3, 12, 40])  # matmul path, and oneDNN's for longer outputs
@pytest.mark.parametrize("kernel,stride,dilation", [(7, 1, 1), (3, 1, 2), (8, 4, 1), (4, 2, 1), (1, 1, 1)])
def test_conv_equals_causally_padded_conv1d(kernel, stride, dilation, chunk_steps, relaid):
    conv = _as_assigned(_init(StreamingConv1d(3, 5, kernel, stride, dilation)))
    x = torch.randn(2, 3, stride * 120)
    pad = (kernel - 1) * dilation + 1 - stride
    expected = F.conv1d(F.pad(x, (pad, 0)), conv.weight, conv.bias, stride, 0, dilation)
    if relaid:
        conv.store_time_major()
    got = _stream(conv, x.transpose(1, 2).contiguous(), stride * chunk_steps)
    torch.testing.assert_close(got, expected.transpose(1, 2))


def test_one_channel_input_conv_on_both_paths():
    conv = _init(StreamingConv1d(1, 4, 7))
    conv.store_time_major()
    x = torch.randn(2, 1, 9000)
    expected = F.conv1d(F.pad(x, (6, 0)), conv.weight, conv.bias).transpose(1, 2)
    for chunk in (1920, 9000):  # <= 8192 output steps: matmul; more: oneDNN
        torch.testing.assert_close(_stream(conv, x.transpose(1, 2), chunk), expected)


def test_new_convs_are_born_with_their_matrices_as_views():
    conv = StreamingConv1d(3, 5, 4, 2)
    assert conv.matrix.data_ptr() == conv.weight.data_ptr() and conv.matrix.is_contiguous()
    tconv = StreamingConvTranspose1d(3, 5, 4, 2)
    assert tconv.matrix.data_ptr() == tconv.weight.data_ptr() and tconv.matrix.is_contiguous()


def test_time_major_weights_keep_values_and_make_the_matrix_a_view():
    conv = _as_assigned(_init(StreamingConv1d(3, 5, 4, 2)))
    assert conv.matrix.data_ptr() != conv.weight.data_ptr()  # a copy, until re-laid
    before = conv.weight.detach().clone()
    conv.store_time_major()
    assert conv.weight.shape == (5, 3, 4) and torch.equal(conv.weight, before)
    assert conv.matrix.data_ptr() == conv.weight.data_ptr() and conv.matrix.is_contiguous()
    # column j * 3 + c of the matrix is kernel step j of input channel c
    assert torch.equal(conv.matrix.view(5, 4, 3), before.transpose(1, 2))


@pytest.mark.parametrize("relaid", [False, True])  # as loaded from a file, and after prepare_for_inference
@pytest.mark.parametrize("kernel,stride,groups", [(16, 8, 1), (12, 6, 1), (4, 2, 4), (5, 2, 1), (6, 2, 1)])
def test_transposed_conv_equals_trimmed_conv_transpose1d(kernel, stride, groups, relaid):
    conv = _as_assigned(_init(StreamingConvTranspose1d(4, 4, kernel, stride, groups=groups)))
    x = torch.randn(2, 4, 10)
    full = F.conv_transpose1d(x, conv.weight, conv.bias, stride, groups=groups)
    expected = full[..., :10 * stride]  # causal: the tail waits for the next input
    if relaid:
        conv.store_matrix_contiguous()
        assert not conv.uses_matmul or conv.matrix.is_contiguous()
    torch.testing.assert_close(_stream(conv, x.transpose(1, 2), 3), expected.transpose(1, 2))
