"""Linear layers laid out for the few-row products of streaming steps.

A streaming step multiplies 1-32 rows by each weight, so it is bound by reading weights from
memory. Which form MKL reads fastest, `weight @ x.T` (wide weights as contiguous 512-column
blocks) or `F.linear`, depends on the CPU, so `product_layout` measures both once per process
and keeps the faster (docs/design.md). Many rows (offline chunks), bfloat16 and other devices
take `F.linear`.
"""
from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .errors import InvalidArgument

# In the skinny layout CPU products of up to this many rows run as weight @ x.T, short of where F.linear catches up.
SKINNY_ROWS = 64
# Column blocks of a wide weight: this many columns each, used for products of up to BLOCKED_ROWS rows
# (at 8 rows and more the plain weight reads as fast or faster).
BLOCK_COLUMNS = 512
BLOCKED_ROWS = 4
LAYOUT_ENV = "MIMI_PRODUCT_LAYOUT"  # auto (measure), linear or skinny


@dataclass(frozen=True)
class ProductLayout:
    """How `linear` runs fp32 CPU products of few rows."""

    name: str
    skinny_rows: int  # products of up to this many rows run as weight @ x.T (0: F.linear, as moshi)
    blocked_rows: int  # and wide weights' products of up to this many read column blocks


LAYOUTS = {"linear": ProductLayout("linear", 0, 0), "skinny": ProductLayout("skinny", SKINNY_ROWS, BLOCKED_ROWS)}
# skinny must read this much faster to be chosen: a choice near a tie would follow the noise of
# one measurement, and F.linear is what the reference runs.
SKINNY_MARGIN = 1.2


_chosen: dict[str, ProductLayout] = {}  # the layout once chosen: a compiled step's trace reads it as it is


def product_layout() -> ProductLayout:
    """This process's layout: $MIMI_PRODUCT_LAYOUT if set to linear or skinny, else the faster of
    the two on this CPU, measured once (about a tenth of a second)."""
    if "layout" not in _chosen:
        _chosen["layout"] = _choose_layout()
    return _chosen["layout"]


@contextlib.contextmanager
def use_layout(name: str):
    """Runs the block with the named layout (`mimi export` traces plain F.linear for other runtimes)."""
    before = dict(_chosen)
    _chosen["layout"] = LAYOUTS[name]
    try:
        yield
    finally:
        _chosen.clear()
        _chosen.update(before)


def forget_product_layout() -> None:
    """Makes the next `product_layout()` choose again (after changing $MIMI_PRODUCT_LAYOUT)."""
    _chosen.clear()


def _choose_layout() -> ProductLayout:
    choice = os.environ.get(LAYOUT_ENV, "auto").strip().lower() or "auto"
    if choice in LAYOUTS:
        return LAYOUTS[choice]
    if choice != "auto":
        raise InvalidArgument(f"{LAYOUT_ENV}={choice!r}: use auto, linear or skinny")
    seconds = measure_layouts()
    faster = seconds["linear"] > SKINNY_MARGIN * seconds["skinny"]
    return LAYOUTS["skinny" if faster else "linear"]


def measure_layouts(copies: int = 8, rounds: int = 2) -> dict[str, float]:
    """Seconds each layout takes for products of 1, 2, 4 and 8 rows by a transformer's
    feed-forward weights ([2048, 512] and the wide [512, 2048]), `copies` of each so that they
    come from memory as a step's weights do; rounds interleaved, the best kept."""
    weights = [torch.ones(o, i) for _ in range(copies) for o, i in ((2048, 512), (512, 2048))]
    caches = [WeightBlocks() for _ in weights]
    best = dict.fromkeys(LAYOUTS, float("inf"))
    for _ in range(rounds):
        for name, layout in LAYOUTS.items():
            start = time.perf_counter()
            for rows in (1, 2, 4, 8):
                inputs = {n: torch.ones(rows, n) for n in (512, 2048)}
                for w, cache in zip(weights, caches):
                    linear(inputs[w.shape[1]], w, blocks=cache, layout=layout)
            best[name] = min(best[name], time.perf_counter() - start)
    return best


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
           blocks: WeightBlocks | None = None, layout: ProductLayout | None = None) -> torch.Tensor:
    """F.linear(x, weight, bias) for weight [out, in]. In the skinny layout (`product_layout()`
    unless given), a few fp32 rows on CPU run as weight @ x.T, and with `blocks` (the layer's
    cache) a wide weight's products of up to `blocked_rows` rows read its column blocks."""
    rows = x.numel() // max(x.shape[-1], 1)
    # As rows on every path: F.linear copies the weight on every call for a 3-D x it cannot fold
    # into one matrix, such as a conv's one-window view (the bfloat16 12.5 Hz downsampling).
    flat = x.reshape(rows, x.shape[-1]).contiguous()
    few = 0 < rows <= SKINNY_ROWS and x.device.type == "cpu" and x.dtype == torch.float32
    layout = (layout or product_layout()) if few else None
    if layout is None or rows > layout.skinny_rows:
        return F.linear(flat, weight, bias).view(*x.shape[:-1], weight.shape[0])
    columns = blocks.of(weight) if blocks is not None and rows <= layout.blocked_rows else None
    if columns is not None:
        # Each block's x.T is a transposed view of row-major rows, as MKL reads it fastest.
        parts = torch.bmm(columns, flat.view(rows, columns.shape[0], BLOCK_COLUMNS).permute(1, 2, 0))
        out = parts.sum(0) if bias is None else parts.sum(0).add_(bias[:, None])
    else:
        # x.T must stay a transposed view of row-major rows: MKL reads a contiguous [in, rows] copy far slower.
        out = weight @ flat.t() if bias is None else torch.addmm(bias[:, None], weight, flat.t())
    return out.t().contiguous().view(*x.shape[:-1], weight.shape[0])


def pack_int8(weight: torch.Tensor, bias: torch.Tensor | None):
    """fbgemm's packed int8 form of an fp32 CPU weight [out, in], one scale per output channel."""
    scales = (weight.abs().amax(dim=1).clamp_min(1e-12) / 127).double()
    # fbgemm's kernels take torch's quantized tensors, which torch deprecates: its warning (once a
    # process) is let through, as the notice that `--dtype int8` needs another path before they go.
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
