"""Items of different lengths through the codec as one batch: padded on the right to the longest,
run once, each trimmed back to its own length.

Exact, not approximate: the codec is causal, so what follows an item (padding) never changes its
codes or its audio, and an item gets the same result in a batch as alone. `mimi encode`,
`mimi decode`, `mimi verify` and the Ray workers all batch through these functions.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, TypeVar

import numpy as np
import torch

from ..spec import FRAME_SAMPLES

if TYPE_CHECKING:
    from .model import MimiCodec

T = TypeVar("T")


def pad(arrays: Sequence[np.ndarray], fill: float = 0, dtype: np.dtype | type | None = None,
        out: np.ndarray | None = None) -> np.ndarray:
    """[B, ..., longest] of arrays [..., n_i] (same leading shape), each right-padded with `fill`;
    written into `out` when given (its shape must be that)."""
    if not arrays:
        raise ValueError("pad needs at least one array")
    longest = max(a.shape[-1] for a in arrays)
    shape = (len(arrays), *arrays[0].shape[:-1], longest)
    if out is None:
        out = np.full(shape, fill, dtype=dtype or arrays[0].dtype)
    elif out.shape != shape:
        raise ValueError(f"pad: out has shape {out.shape}, the batch {shape}")
    else:
        out.fill(fill)
    for i, a in enumerate(arrays):
        out[i, ..., :a.shape[-1]] = a
    return out


def encode_batch(codec: MimiCodec, pcms: Sequence[np.ndarray], num_codebooks: int) -> list[np.ndarray]:
    """Codes [K, ceil(n_i / 1920)] (int16) of each mono 24 kHz float32 audio [n_i], run as one batch."""
    if not pcms:
        return []
    one = len(pcms) == 1 and pcms[0].dtype == np.float32 and pcms[0].flags.c_contiguous
    batch = torch.from_numpy(pcms[0][None] if one else pad(pcms, 0, np.float32))[:, None]  # one: no copy (an hour)
    codes = codec.encode(batch, num_codebooks).cpu().numpy().astype(np.int16)
    return [codes[i, :, :math.ceil(len(p) / FRAME_SAMPLES)] for i, p in enumerate(pcms)]


def encode_blocks(codec: MimiCodec, blocks: Iterable[np.ndarray], rows: int, num_codebooks: int
                  ) -> tuple[list[np.ndarray], int]:
    """Codes [K, frames] (int16) of each row of 24 kHz float32 audio that arrives in blocks
    [rows, n], encoded as the blocks come (`MimiCodec.encode_pieces`), and how many samples a row
    had: `encode_batch` of the rows whole, without ever holding them whole."""
    samples = 0

    def pieces() -> Iterator[torch.Tensor]:
        nonlocal samples
        for block in blocks:
            samples += block.shape[1]
            yield torch.from_numpy(block)

    codes = [c.cpu().numpy().astype(np.int16) for c in codec.encode_pieces(pieces(), rows, num_codebooks)]
    joined = np.concatenate(codes, axis=-1) if codes else np.zeros((rows, num_codebooks, 0), np.int16)
    return list(joined), samples


def decode_batch(codec: MimiCodec, codes: Sequence[np.ndarray],
                 num_samples: Sequence[int] | None = None) -> list[np.ndarray]:
    """Audio [n_i] (float32, 24 kHz) of each codes [K, frames_i] (one K for all), run as one batch;
    each trimmed to `num_samples[i]` (default: all its frames, frames_i * 1920)."""
    if not codes:
        return []
    audio = codec.decode(torch.from_numpy(pad(codes, 0, np.int64))).float().cpu().numpy()[:, 0]
    lengths = num_samples if num_samples is not None else [c.shape[1] * FRAME_SAMPLES for c in codes]
    return [audio[i, :n] for i, n in enumerate(lengths)]


def plan_batches(items: Sequence[tuple[T, float]], budget: float, max_batch: int,
                 group: Callable[[T], str] = lambda _: "") -> list[list[T]]:
    """Groups (item, length) pairs by similar length, so that padding a batch to its longest wastes
    little: at most `max_batch` items, and at most `budget` of length once padded. Items of one
    `group` (read together: one Parquet row group) are batched among themselves."""
    batches: list[list[T]] = []
    current: list[T] = []
    longest = 0.0
    for item, length in sorted(items, key=lambda il: (group(il[0]), il[1])):
        if current and (len(current) + 1 > max_batch or (len(current) + 1) * max(longest, length) > budget
                        or group(item) != group(current[0])):
            batches.append(current)
            current, longest = [], 0.0
        current.append(item)
        longest = max(longest, length)
    if current:
        batches.append(current)
    return batches
