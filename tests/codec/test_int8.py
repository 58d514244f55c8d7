"""`--dtype int8`: transformer weights in int8 through fbgemm, on every path that loads a codec."""
from __future__ import annotations

import torch

from mimi_cli.codec import MimiConfig, load_codec
from mimi_cli.codec.linear import Linear


def tiny(dtype: str):
    return load_codec("synthetic:3", device="cpu", dtype=dtype, config=MimiConfig.tiny())


def test_int8_packs_every_transformer_linear_and_stays_close_to_float32():
    f32, i8 = tiny("float32"), tiny("int8")
    linears = [m for m in i8.modules() if isinstance(m, Linear)]
    assert linears and all(m.int8 is not None for m in linears)
    assert all(m.int8 is None for m in f32.modules() if isinstance(m, Linear))
    x = torch.randn(3, 7, linears[0].in_features)
    exact = torch.nn.functional.linear(x, linears[0].weight)
    assert (linears[0](x) - exact).abs().max() <= 0.05 * exact.abs().max()  # int8 rounding, not another product
    audio = 0.1 * torch.randn(2, 1, 24000)
    a, b = f32.encode(audio, 8), i8.encode(audio, 8)
    assert a.shape == b.shape and int(b.max()) < 64
    assert (a[:, 0] == b[:, 0]).float().mean() > 0.5  # mostly the same semantic tokens
