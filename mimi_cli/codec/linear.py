"""Linear layers laid out for the few-row products of streaming steps.

A streaming step multiplies 1-32 rows by each weight, so it is bound by reading the weight from
memory. On CPU, MKL reads a [out, in] weight 1.5-3x faster as `weight @ x.T` than as
`x @ weight.T`, and only the first form uses more than one thread for so few rows (measured in
docs/performance.md). Many rows (offline chunks), bfloat16 (oneDNN's path is faster there) and
other devices take the usual path.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Up to this many rows a CPU product runs as weight @ x.T (it wins or ties up to 128 rows on 2 threads).
SKINNY_ROWS = 64


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear(x, weight, bias) for weight [out, in], as weight @ x.T for a few fp32 rows on CPU."""
    rows = x.numel() // max(x.shape[-1], 1)
    if rows > SKINNY_ROWS or rows == 0 or x.device.type != "cpu" or x.dtype != torch.float32:
        return F.linear(x, weight, bias)
    # x.T must be a transposed view of row-major rows: MKL is ~4x slower on a [in, rows] copy.
    flat = x.reshape(rows, x.shape[-1]).contiguous().t()
    out = weight @ flat if bias is None else torch.addmm(bias[:, None], weight, flat)
    return out.t().contiguous().view(*x.shape[:-1], weight.shape[0])


class Linear(nn.Linear):
    """nn.Linear (same parameters and state_dict) through `linear`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)
