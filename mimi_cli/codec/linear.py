"""Linear layers laid out for the few-row products of streaming steps.

A streaming step multiplies 1-32 rows by each weight, so it is bound by reading weights from
memory: on CPU, MKL reads them fastest as `weight @ x.T`, and a wide weight faster still as
contiguous 512-column blocks (docs/design.md). Many rows (offline chunks), bfloat16 and other
devices take the usual path.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Up to this many rows a CPU product runs as weight @ x.T (it wins or ties up to 128 rows on 2 threads).
SKINNY_ROWS = 64
# Column blocks of a wide weight: this many columns each, used for products of up to BLOCKED_ROWS rows
# (at 8 rows and more the plain weight reads as fast or faster).
BLOCK_COLUMNS = 512
BLOCKED_ROWS = 4


def column_blocks(weight: torch.Tensor) -> torch.Tensor | None:
    """A [in / 512, out, 512] contiguous copy of a wide fp32 CPU weight [out, in], else None."""
    out_features, in_features = weight.shape
    if (weight.device.type != "cpu" or weight.dtype != torch.float32
            or in_features <= BLOCK_COLUMNS or in_features % BLOCK_COLUMNS):
        return None
    blocks = weight.detach().reshape(out_features, in_features // BLOCK_COLUMNS, BLOCK_COLUMNS)
    return blocks.permute(1, 0, 2).contiguous()


class WeightBlocks:
    """A layer's `column_blocks` of its weight, made on its first few-row product, so offline-only
    use keeps no copy. Weights are frozen once loaded: after editing one, call the codec's
    `prepare_for_inference`, which clears every layer's copy."""

    def __init__(self) -> None:
        self.blocks: torch.Tensor | None = None
        self.made = False

    def of(self, weight: torch.Tensor) -> torch.Tensor | None:
        if not self.made:
            self.blocks, self.made = column_blocks(weight), True
        return self.blocks

    def clear(self) -> None:
        self.blocks, self.made = None, False


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
           blocks: WeightBlocks | None = None) -> torch.Tensor:
    """F.linear(x, weight, bias) for weight [out, in], as weight @ x.T for a few fp32 rows on CPU;
    with `blocks` (the layer's cache), a wide weight's 1-4 row products read its column blocks."""
    rows = x.numel() // max(x.shape[-1], 1)
    # As rows on every path: F.linear copies the weight on every call for a 3-D x it cannot fold
    # into one matrix, such as a conv's one-window view (the bfloat16 12.5 Hz downsampling).
    flat = x.reshape(rows, x.shape[-1]).contiguous()
    if rows > SKINNY_ROWS or rows == 0 or x.device.type != "cpu" or x.dtype != torch.float32:
        return F.linear(flat, weight, bias).view(*x.shape[:-1], weight.shape[0])
    columns = blocks.of(weight) if blocks is not None and rows <= BLOCKED_ROWS else None
    if columns is not None:
        # Each block's x.T is a transposed view of row-major rows, as MKL reads it fastest.
        parts = torch.bmm(columns, flat.view(rows, columns.shape[0], BLOCK_COLUMNS).permute(1, 2, 0))
        out = parts.sum(0) if bias is None else parts.sum(0).add_(bias[:, None])
    else:
        # x.T must be a transposed view of row-major rows: MKL is ~4x slower on a [in, rows] copy.
        out = weight @ flat.t() if bias is None else torch.addmm(bias[:, None], weight, flat.t())
    return out.t().contiguous().view(*x.shape[:-1], weight.shape[0])


def pack_int8(weight: torch.Tensor, bias: torch.Tensor | None):
    """fbgemm's packed int8 form of an fp32 CPU weight [out, in], one scale per output channel."""
    import warnings

    scales = (weight.abs().amax(dim=1).clamp_min(1e-12) / 127).double()
    with warnings.catch_warnings():  # fbgemm's kernels take torch's quantized tensors as input
        warnings.simplefilter("ignore")
        q = torch.quantize_per_channel(weight.detach().float(), scales, torch.zeros_like(scales, dtype=torch.long),
                                       0, torch.qint8)
    return torch.ops.quantized.linear_prepack(q, None if bias is None else bias.detach().float())


def linear_int8(x: torch.Tensor, packed, out_features: int) -> torch.Tensor:
    """x @ W.T with W int8 (per-channel scales) and x quantized per call (fbgemm's dynamic linear)."""
    rows = x.numel() // max(x.shape[-1], 1)
    flat = x.reshape(rows, x.shape[-1]).float().contiguous()
    return torch.ops.quantized.linear_dynamic(flat, packed, True).view(*x.shape[:-1], out_features)


class Linear(nn.Linear):
    """nn.Linear (same parameters and state_dict) through `linear`; through `linear_int8` once
    `quantize_int8` has packed its weight (the fp32 weight stays, for the state_dict)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.blocks = WeightBlocks()
        self.int8 = None

    def quantize_int8(self) -> None:
        self.int8 = pack_int8(self.weight, self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.int8 is not None and x.device.type == "cpu":
            return linear_int8(x, self.int8, self.out_features)
        return linear(x, self.weight, self.bias, self.blocks)
