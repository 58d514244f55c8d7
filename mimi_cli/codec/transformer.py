"""Causal transformer with rotary positions and a bounded, per-stream KV cache.

Each stream has its own position counter, so one stream can restart at position 0 while its
neighbours go on. Keys live in a ring of `context` slots shared by the batch (all streams step
together); each slot remembers its position per stream, and attention masks by position:
a query at position p sees keys at p - context + 1 .. p, exactly the offline window.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import MimiConfig
from .linear import Linear

# Offline chunks attend in query blocks of this many steps, so memory stays linear in length.
QUERY_BLOCK = 256
# The ring holds this many slots beyond the attention window, so a call of up to this many steps
# (a streaming frame is 2 steps) writes its keys into the ring first and attends over the ring
# alone, without copying the cache. Longer calls attend over [ring | new keys] instead.
RING_SLACK = 2


@dataclass
class KVCache:
    """One layer's keys and values for the last `context` steps of every stream."""

    keys: torch.Tensor  # [B, H, context + RING_SLACK, head_dim], rotary already applied
    values: torch.Tensor  # [B, H, context + RING_SLACK, head_dim]


@dataclass
class TransformerState:
    """Positions and caches of one transformer for a batch of streams."""

    caches: list[KVCache]
    positions: torch.Tensor  # [B, ring slots] position held by each slot, -1 when empty
    offsets: torch.Tensor  # [B] position of the next step of each stream
    write_index: int = 0  # next ring slot to write (the same for all streams)


def rope_angles(positions: torch.Tensor, head_dim: int, max_period: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotations for integer positions [B, T], as [B, 1, T, head_dim] factors for `apply_rope`:
    cos(a_i) twice, and (-sin(a_i), sin(a_i)), per pair i; angles computed as moshi does (fp32)."""
    ds = torch.arange(head_dim // 2, device=positions.device, dtype=torch.float32)
    freqs = torch.exp(ds * (-math.log(max_period) * 2 / head_dim))
    angles = freqs * positions.float()[:, None, :, None]
    cos, sin = torch.cos(angles), torch.sin(angles)
    return cos.repeat_interleave(2, dim=-1), torch.stack([-sin, sin], dim=-1).flatten(-2)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotates interleaved (real, imaginary) pairs of `x` [..., T, head_dim] by `rope_angles`.

    (r, i) -> (r cos - i sin, i cos + r sin): bit for bit the reference's products and sums,
    in 4 tensor ops instead of 10 (negating a product, or swapping the terms of a sum, is exact).
    """
    xf = x.float()
    swapped = xf.unflatten(-1, (-1, 2)).flip(-1).flatten(-2)  # (i, r) per pair
    return (xf * cos + swapped * sin).to(x.dtype)


class TransformerLayer(nn.Module):
    """Pre-norm self-attention and GELU feed-forward, each behind a learnt layer scale."""

    def __init__(self, config: MimiConfig) -> None:
        super().__init__()
        d = config.dimension
        self.num_heads = config.num_heads
        self.norm_attn = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.attn_in = Linear(d, 3 * d, bias=False)  # fused q, k, v
        self.attn_out = Linear(d, d, bias=False)
        self.scale_attn = nn.Parameter(torch.ones(d))
        self.norm_ff = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.ff_in = Linear(d, config.dim_feedforward, bias=False)
        self.ff_out = Linear(config.dim_feedforward, d, bias=False)
        self.scale_ff = nn.Parameter(torch.ones(d))

    def forward(self, x: torch.Tensor, cache: KVCache, rope: tuple[torch.Tensor, torch.Tensor],
                mask: torch.Tensor, slots: torch.Tensor, in_place: bool) -> torch.Tensor:
        """x [B, T, D] -> [B, T, D]; writes this call's keys into `cache` at ring `slots`."""
        B, T, D = x.shape
        qkv = self.attn_in(self.norm_attn(x)).view(B, T, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k = apply_rope(qkv[:2], *rope).unbind(0)  # queries and keys in one pass
        v = qkv[2]
        if in_place:  # the ring has room for these steps beside the window: no copy of the cache
            cache.keys.index_copy_(2, slots, k)
            cache.values.index_copy_(2, slots, v)
            attn = F.scaled_dot_product_attention(q, cache.keys, cache.values, mask)
        else:
            keys = torch.cat([cache.keys, k], dim=2)
            values = torch.cat([cache.values, v], dim=2)
            attn = _windowed_attention(q, keys, values, mask)
            cache.keys.index_copy_(2, slots, k[:, :, T - slots.numel():])
            cache.values.index_copy_(2, slots, v[:, :, T - slots.numel():])
        x = x + self.scale_attn * self.attn_out(attn.transpose(1, 2).reshape(B, T, D))
        return x + self.scale_ff * self.ff_out(F.gelu(self.ff_in(self.norm_ff(x))))


def _windowed_attention(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                        mask: torch.Tensor) -> torch.Tensor:
    """Attention of q [B, H, T, d] over [cache slots | T new keys], in query blocks for long T."""
    T = q.shape[2]
    if T <= QUERY_BLOCK:
        return F.scaled_dot_product_attention(q, keys, values, mask)
    ring = keys.shape[2] - T
    outs = []
    for start in range(0, T, QUERY_BLOCK):
        stop = min(start + QUERY_BLOCK, T)
        # The ring slots plus the new keys this block can reach; the mask removes the rest.
        first_new = max(0, start - ring)
        idx = torch.cat([torch.arange(ring), torch.arange(ring + first_new, ring + stop)])
        idx = idx.to(q.device)
        outs.append(F.scaled_dot_product_attention(
            q[:, :, start:stop], keys[:, :, idx], values[:, :, idx], mask[:, :, start:stop][..., idx]))
    return torch.cat(outs, dim=2)


class Transformer(nn.Module):
    """A stack of layers over time-major [B, T, D] latents."""

    def __init__(self, config: MimiConfig) -> None:
        super().__init__()
        self.config = config
        self.layers = nn.ModuleList(TransformerLayer(config) for _ in range(config.num_layers))

    def init_state(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> TransformerState:
        c = self.config
        shape = (batch_size, c.num_heads, c.context + RING_SLACK, c.dimension // c.num_heads)
        caches = [KVCache(torch.zeros(shape, device=device, dtype=dtype),
                          torch.zeros(shape, device=device, dtype=dtype)) for _ in self.layers]
        return TransformerState(
            caches=caches,
            positions=torch.full((batch_size, c.context + RING_SLACK), -1, device=device, dtype=torch.long),
            offsets=torch.zeros(batch_size, device=device, dtype=torch.long),
        )

    def forward(self, x: torch.Tensor, state: TransformerState) -> torch.Tensor:
        """Runs T new steps of every stream; x [B, T, D] -> [B, T, D]."""
        c = self.config
        B, T, _ = x.shape
        steps = torch.arange(T, device=x.device)
        new_positions = state.offsets[:, None] + steps  # [B, T]
        ring = state.positions.shape[1]
        kept = min(T, ring)  # only the last `ring` new steps outlive this call
        slots = (state.write_index + steps[T - kept:]) % ring
        in_place = T <= ring - c.context
        if in_place:  # written first; then the ring alone holds every key these steps attend to
            state.positions.index_copy_(1, slots, new_positions)
            key_positions = state.positions
        else:
            key_positions = torch.cat([state.positions, new_positions], dim=1)  # [B, ring + T]
        delta = new_positions[:, :, None] - key_positions[:, None, :]
        mask = ((key_positions[:, None, :] >= 0) & (delta >= 0) & (delta < c.context))[:, None]
        rope = rope_angles(new_positions, c.dimension // c.num_heads, c.max_period)
        for layer, cache in zip(self.layers, state.caches):
            x = layer(x, cache, rope, mask, slots, in_place)
        if not in_place:
            state.positions.index_copy_(1, slots, new_positions[:, T - kept:])
        state.offsets += T
        state.write_index = (state.write_index + T) % ring
        return x
