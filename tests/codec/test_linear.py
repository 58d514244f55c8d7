"""`linear` must equal F.linear on every path (few rows, many rows, column blocks, views, bias)."""
import math

import pytest
import torch
import torch.nn.functional as F

from mimi_cli.codec import linear as products
from mimi_cli.codec.errors import InvalidArgument
from mimi_cli.codec.linear import (
    BLOCK_COLUMNS,
    BLOCKED_ROWS,
    LAYOUT_ENV,
    LAYOUTS,
    SKINNY_ROWS,
    Linear,
    WeightBlocks,
    forget_product_layout,
    linear,
    product_layout,
)
from tests.helpers import full_codec


@pytest.mark.parametrize("rows", [0, 1, 2, 16, SKINNY_ROWS, SKINNY_ROWS + 1, 300])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_linear_equals_f_linear(rows: int, with_bias: bool, layout: str) -> None:
    g = torch.Generator().manual_seed(rows)
    x = torch.randn(1, rows, 96, generator=g)
    weight = torch.randn(40, 96, generator=g)
    bias = torch.randn(40, generator=g) if with_bias else None
    out = linear(x, weight, bias, layout=LAYOUTS[layout])
    assert out.shape == (1, rows, 40)
    torch.testing.assert_close(out, F.linear(x, weight, bias), rtol=1e-5, atol=1e-5)


def test_linear_accepts_views() -> None:
    """Transposed inputs (a conv's [B, C, T] seen as [B, T, C]) and a transposed weight view."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 96, 3, generator=g).transpose(1, 2)
    weight = torch.randn(96, 40, generator=g).t()
    out = linear(x, weight)
    assert out.is_contiguous()
    torch.testing.assert_close(out, F.linear(x, weight), rtol=1e-5, atol=1e-5)


def test_linear_module_keeps_nn_linear_parameters() -> None:
    layer = Linear(8, 4, bias=False)
    assert list(layer.state_dict()) == ["weight"]
    x = torch.randn(3, 8)
    torch.testing.assert_close(layer(x), x @ layer.weight.t())


def test_linear_bfloat16_equals_f_linear() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 64, generator=g).bfloat16()
    weight = torch.randn(32, 64, generator=g).bfloat16()
    torch.testing.assert_close(linear(x, weight), F.linear(x, weight))


@pytest.mark.parametrize("rows", [1, 2, BLOCKED_ROWS, BLOCKED_ROWS + 1])
@pytest.mark.parametrize("with_bias", [False, True])
def test_column_blocks_equal_f_linear(rows: int, with_bias: bool) -> None:
    g = torch.Generator().manual_seed(rows)
    x = torch.randn(rows, 3 * BLOCK_COLUMNS, generator=g)
    weight = torch.randn(48, 3 * BLOCK_COLUMNS, generator=g)
    bias = torch.randn(48, generator=g) if with_bias else None
    blocks = WeightBlocks()
    out = linear(x, weight, bias, blocks, layout=LAYOUTS["skinny"])
    torch.testing.assert_close(out, F.linear(x, weight, bias), rtol=1e-5, atol=1e-4)
    assert (blocks.blocks is not None) == (rows <= BLOCKED_ROWS)  # made only by a few-row product


def test_edited_weights_are_blocked_again_after_prepare_for_inference(monkeypatch) -> None:
    """The copy is of the weight as it was; prepare_for_inference (what a user calls after editing
    weights) clears every layer's copy, so the next few-row product reads the new weight."""
    monkeypatch.setenv(LAYOUT_ENV, "skinny")
    forget_product_layout()
    layer = Linear(2 * BLOCK_COLUMNS, 16, bias=False).requires_grad_(False)
    x = torch.randn(2, 2 * BLOCK_COLUMNS)
    layer(x)
    layer.weight.mul_(-1)
    layer.blocks.clear()
    torch.testing.assert_close(layer(x), F.linear(x, layer.weight), rtol=1e-5, atol=1e-4)
    codec = full_codec(0)
    codec.encode_step(codec.init_encoder_state(1), torch.zeros(1, 1, 1920))
    made = [m.blocks for m in codec.modules() if isinstance(getattr(m, "blocks", None), WeightBlocks)]
    assert any(b.blocks is not None for b in made)
    codec.prepare_for_inference()
    assert all(b.blocks is None and not b.made for b in made)


def test_no_column_blocks_for_narrow_or_offline_use() -> None:
    blocks = WeightBlocks()
    assert blocks.of(torch.randn(8, BLOCK_COLUMNS)) is None  # one block: nothing to gain
    assert blocks.of(torch.randn(8, BLOCK_COLUMNS + 3)) is None
    assert blocks.of(torch.randn(8, 2 * BLOCK_COLUMNS).bfloat16()) is None
    layer = Linear(2 * BLOCK_COLUMNS, 16)
    layer(torch.randn(1, SKINNY_ROWS + 1, 2 * BLOCK_COLUMNS))
    assert layer.blocks.blocks is None  # offline-sized products never copy the weight


def test_one_window_view_does_not_copy_the_weight() -> None:
    """A conv's single window (a [1, 1, k * C] strided view, as the bfloat16 12.5 Hz downsampling
    makes once a frame) is multiplied as one row, without a per-call copy of the weight."""
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1, 5, 64, generator=g).bfloat16()
    window = x.as_strided((1, 1, 4 * 64), (x.stride(0), 2 * 64, 1))
    weight = torch.randn(48, 4 * 64, generator=g).bfloat16()
    with torch.profiler.profile() as prof:
        out = linear(window, weight)
    copied = [e.input_shapes for e in prof.events() if e.name == "aten::copy_"]
    assert copied == []
    torch.testing.assert_close(out, F.linear(window.reshape(1, -1), weight).view(1, 1, 48))


@pytest.mark.parametrize("seconds,chosen", [
    ({"linear": 1.0, "skinny": 0.5}, "skinny"),
    ({"linear": 1.0, "skinny": 0.9}, "linear"),  # within the margin: the reference's form
    ({"linear": 0.5, "skinny": 1.0}, "linear"),
])
def test_the_measured_layout_is_the_faster_by_a_margin(monkeypatch, seconds, chosen) -> None:
    monkeypatch.delenv(LAYOUT_ENV, raising=False)
    monkeypatch.setattr(products, "measure_layouts", lambda: seconds)
    forget_product_layout()
    try:
        assert product_layout().name == chosen
    finally:
        forget_product_layout()


def test_the_layout_can_be_pinned_and_a_bad_one_is_one_error(monkeypatch) -> None:
    monkeypatch.setattr(products, "measure_layouts", lambda: pytest.fail("pinned: nothing to measure"))
    try:
        for name in LAYOUTS:
            monkeypatch.setenv(LAYOUT_ENV, name)
            forget_product_layout()
            assert product_layout() == LAYOUTS[name]
        monkeypatch.setenv(LAYOUT_ENV, "fastest")
        forget_product_layout()
        with pytest.raises(InvalidArgument, match="auto, linear or skinny"):
            product_layout()
    finally:
        forget_product_layout()


def test_measuring_the_layouts_times_both() -> None:
    seconds = products.measure_layouts(copies=1, rounds=1)
    assert set(seconds) == set(LAYOUTS) and all(math.isfinite(s) for s in seconds.values())
