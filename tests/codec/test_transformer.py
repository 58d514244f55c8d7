"""Rotary positions: bit for bit the reference's arithmetic (the tokens depend on it)."""
import math

import pytest
import torch

from mimi_cli.codec.transformer import apply_rope, rope_angles


def _reference_rope(x: torch.Tensor, positions: torch.Tensor, max_period: float) -> torch.Tensor:
    """moshi's formulation: pairs (r, i) -> (r cos - i sin, r sin + i cos), in float32."""
    head_dim = x.shape[-1]
    ds = torch.arange(head_dim // 2, dtype=torch.float32)
    angles = torch.exp(ds * (-math.log(max_period) * 2 / head_dim)) * positions.float()[:, None, :, None]
    r, i = x.float()[..., 0::2], x.float()[..., 1::2]
    cos, sin = torch.cos(angles), torch.sin(angles)
    return torch.stack([r * cos - i * sin, r * sin + i * cos], dim=-1).flatten(-2).to(x.dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rope_is_bitwise_the_reference(dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(0)
    positions = torch.tensor([[0, 1, 2], [250, 251, 9999]])
    x = torch.randn(2, 4, 3, 16, generator=g).to(dtype)  # [B, heads, T, head_dim]
    got = apply_rope(x, *rope_angles(positions, 16, 10000.0))
    assert got.dtype == dtype
    assert torch.equal(got, _reference_rope(x, positions, 10000.0))


def test_rope_of_queries_and_keys_in_one_pass() -> None:
    positions = torch.tensor([[7, 8]])
    qk = torch.randn(2, 1, 4, 2, 16)  # stacked [q, k], as the attention layer passes them
    rope = rope_angles(positions, 16, 10000.0)
    both = apply_rope(qk, *rope)
    assert torch.equal(both[0], apply_rope(qk[0], *rope)) and torch.equal(both[1], apply_rope(qk[1], *rope))
