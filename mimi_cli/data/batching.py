"""Batches of token rows: padding to one length, and the delay pattern of multi-stream LMs."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..codec.config import CODEBOOK_SIZE

PAD_ID = CODEBOOK_SIZE  # 2048: outside every codebook, so padding is never a real token


def collate(items: Sequence[dict], pad_id: int = PAD_ID) -> dict:
    """TokenDataset items -> {"id": [...], "codes": LongTensor [B, K, T_max] padded with `pad_id`,
    "lengths": LongTensor [B], and each other field as a list}."""
    if not items:
        raise ValueError("collate needs at least one item")
    ks = {it["codes"].shape[0] for it in items}
    if len(ks) > 1:
        raise ValueError(f"items with different numbers of codebooks ({sorted(ks)}): give TokenDataset "
                         "num_codebooks= to read the same K from every row")
    k, sizes = ks.pop(), [it["codes"].shape[1] for it in items]
    # One buffer holds codes and lengths: a DataLoader worker hands a batch over in one shared-memory
    # segment instead of two, which halves the cost of the hand-over.
    buffer = np.full(len(items) * k * max(sizes) + len(items), pad_id, dtype=np.int64)
    codes = buffer[:-len(items)].reshape(len(items), k, max(sizes))
    for i, it in enumerate(items):
        codes[i, :, :sizes[i]] = np.asarray(it["codes"])
    buffer[-len(items):] = sizes
    shared = torch.from_numpy(buffer)
    batch = {"id": [it["id"] for it in items], "codes": shared[:-len(items)].view(codes.shape),
             "lengths": shared[-len(items):]}
    for key in items[0]:
        if key not in batch:
            batch[key] = [it.get(key) for it in items]
    return batch


def _checked(codes: torch.Tensor, delays: Sequence[int]) -> list[int]:
    delays = [int(d) for d in delays]
    if codes.dim() < 2 or codes.shape[-2] != len(delays):
        raise ValueError(f"{len(delays)} delays for codes of shape {tuple(codes.shape)}: give one delay per "
                         "codebook (codes are [..., K, T])")
    if any(d < 0 for d in delays):
        raise ValueError(f"delays must be >= 0, got {delays}")
    return delays


def delay(codes: torch.Tensor, delays: Sequence[int], pad_id: int = PAD_ID) -> torch.Tensor:
    """Shifts codebook k right by `delays[k]` steps: [..., K, T] -> [..., K, T + max(delays)], the
    steps before and after each codebook's tokens filled with `pad_id`. MusicGen's pattern is
    `range(K)`; an acoustic delay d after the semantic codebook is `[0] + [d] * (K - 1)`."""
    delays = _checked(codes, delays)
    length = codes.shape[-1]
    out = codes.new_full((*codes.shape[:-1], length + max(delays)), pad_id)
    for k, d in enumerate(delays):
        out[..., k, d:d + length] = codes[..., k, :]
    return out


def undelay(delayed: torch.Tensor, delays: Sequence[int]) -> torch.Tensor:
    """The inverse of `delay`: [..., K, T + max(delays)] -> [..., K, T], exactly."""
    delays = _checked(delayed, delays)
    length = delayed.shape[-1] - max(delays)
    if length < 0:
        raise ValueError(f"{delayed.shape[-1]} steps are fewer than the largest delay {max(delays)}")
    return torch.stack([delayed[..., k, d:d + length] for k, d in enumerate(delays)], dim=-2)
