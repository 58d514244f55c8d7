"""Batches of token rows: padding to one length, and the delay pattern of multi-stream LMs."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..codec.batch import pad
from ..spec import CODEBOOK_SIZE

PAD_ID = CODEBOOK_SIZE  # 2048: outside every codebook, so padding is never a real token
HANDOVER_BYTES = 1 << 20  # a batch up to this size leaves a DataLoader worker by value (see Batch)


class Batch(dict):
    """What `collate` returns: a dict that a DataLoader worker hands to the training process by
    value. A tensor pickled by a worker normally travels as a shared-memory segment of its own,
    whose set-up costs more than copying a batch of tokens through the worker's pipe; and int64
    tensors whose values fit in int16 (codes, lengths) travel as int16, a quarter of the bytes,
    and come back as int64. Batches over HANDOVER_BYTES go the usual way."""

    def __reduce__(self):
        tensors, others, size = {}, {}, 0
        for key, value in self.items():
            if not isinstance(value, torch.Tensor):
                others[key] = value
                continue
            if value.device.type != "cpu" or value.requires_grad or value.is_sparse:
                return Batch, (dict(self),)
            try:
                array = value.numpy()
            except TypeError:  # a dtype numpy cannot hold (bfloat16 ...): the usual way
                return Batch, (dict(self),)
            if value.dtype == torch.int64 and value.numel():
                low, high = torch.aminmax(value)
                if -(1 << 15) <= low and high < 1 << 15:
                    array = array.astype(np.int16)
            tensors[key] = array, value.dtype
            size += array.nbytes
        if size > HANDOVER_BYTES:
            return Batch, (dict(self),)
        return _unpacked, (list(self), tensors, others)


def _unpacked(keys: list, tensors: dict, others: dict) -> Batch:
    def tensor(array: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
        # Widened by numpy: torch would spread this copy over its threads, which then spin on the
        # cores the DataLoader workers need.
        return torch.from_numpy(array.astype(np.int64) if dtype == torch.int64 else array)
    return Batch((k, tensor(*tensors[k]) if k in tensors else others[k]) for k in keys)


def collate(items: Sequence[dict], pad_id: int = PAD_ID) -> Batch:
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
    buffer = np.empty(len(items) * k * max(sizes) + len(items), dtype=np.int64)
    codes = pad([np.asarray(it["codes"]) for it in items], pad_id,
                out=buffer[:-len(items)].reshape(len(items), k, max(sizes)))
    buffer[-len(items):] = sizes
    shared = torch.from_numpy(buffer)
    batch = Batch(id=[it["id"] for it in items], codes=shared[:-len(items)].view(codes.shape),
                  lengths=shared[-len(items):])
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
