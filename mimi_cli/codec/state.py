"""Streaming state you can hold: every conv's context and each transformer's KV cache.

One state serves a batch of streams that step together. Streams are rows: `reset` restarts
some rows, `select` keeps a subset (to drop finished streams), `concat` joins states (to add
new ones); the other rows are untouched. Memory is constant in stream length.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch

from .errors import StreamError
from .transformer import KVCache, TransformerState


def _rows(index: int | list[int] | torch.Tensor, batch_size: int) -> torch.Tensor:
    rows = torch.as_tensor([index] if isinstance(index, int) else index, dtype=torch.long)
    if rows.numel() and (rows.min() < 0 or rows.max() >= batch_size):
        raise StreamError(f"stream index out of range for a batch of {batch_size}: {rows.tolist()}")
    return rows


@dataclass
class StreamState:
    """Shared machinery of the encoder and decoder states (conv contexts + one transformer)."""

    contexts: list[torch.Tensor]
    transformer: TransformerState

    @property
    def batch_size(self) -> int:
        return self.transformer.offsets.shape[0]

    def tensors(self) -> list[torch.Tensor]:
        t = self.transformer
        return [*self.contexts, t.positions, t.offsets, *(x for c in t.caches for x in (c.keys, c.values))]

    def nbytes(self) -> int:
        """Bytes of memory held by this state (for all its streams)."""
        return sum(x.numel() * x.element_size() for x in self.tensors())

    @torch.inference_mode()
    def reset(self, index: int | list[int] | torch.Tensor) -> None:
        """Restarts the given streams as if new; the other streams are not touched."""
        rows = _rows(index, self.batch_size).to(self.transformer.offsets.device)
        for ctx in self.contexts:
            ctx[rows] = 0
        t = self.transformer
        t.positions[rows] = -1
        t.offsets[rows] = 0
        for cache in t.caches:  # masked by position already; zeroed so no stale data lingers
            cache.keys[rows] = 0
            cache.values[rows] = 0

    @torch.inference_mode()  # states hold inference tensors, as the steps leave them
    def select(self, index: int | list[int] | torch.Tensor):
        """A new state holding only the given streams, in that order (drops the others)."""
        rows = _rows(index, self.batch_size).to(self.transformer.offsets.device)
        out = copy.copy(self)
        out.contexts = [c[rows] for c in self.contexts]
        t = self.transformer
        out.transformer = TransformerState(
            caches=[KVCache(c.keys[rows], c.values[rows]) for c in t.caches],
            positions=t.positions[rows], offsets=t.offsets[rows], write_index=t.write_index)
        return out

    def clone(self):
        """A deep copy: stepping the copy leaves this state as it is."""
        return self.select(torch.arange(self.batch_size))


@torch.inference_mode()
def concat_states(states: list):
    """One state holding the streams of all `states`, in order (they must be of one kind)."""
    first = states[0]
    if len({type(s) for s in states}) != 1:
        raise StreamError("cannot join an encoder state with a decoder state")
    if len({s.transformer.write_index for s in states}) != 1:
        # Ring slots are shared by the batch; realign by rotating each ring to slot 0 first.
        states = [_rotate_to_zero(s) for s in states]
    out = copy.copy(first)
    out.contexts = [torch.cat(cs) for cs in zip(*(s.contexts for s in states))]
    ts = [s.transformer for s in states]
    out.transformer = TransformerState(
        caches=[KVCache(torch.cat([c.keys for c in cs]), torch.cat([c.values for c in cs]))
                for cs in zip(*(t.caches for t in ts))],
        positions=torch.cat([t.positions for t in ts]), offsets=torch.cat([t.offsets for t in ts]),
        write_index=ts[0].write_index)
    if isinstance(out, EncoderState):
        if len({(s.pending.shape[-1], s.latents.shape[1]) for s in states}) != 1:
            raise StreamError("cannot join streams that are at different points of a frame; "
                              "join them at a frame boundary")
        out.pending = torch.cat([s.pending for s in states])
        out.latents = torch.cat([s.latents for s in states])
    return out


def _rotate_to_zero(state):
    """The same state with its ring rotated so that the next write goes to slot 0."""
    state = state.clone()
    t = state.transformer
    shift = -t.write_index
    t.positions = torch.roll(t.positions, shift, dims=1)
    for c in t.caches:
        c.keys = torch.roll(c.keys, shift, dims=2)
        c.values = torch.roll(c.values, shift, dims=2)
    t.write_index = 0
    return state


@dataclass
class EncoderState(StreamState):
    """Encoder side: also the current frame so far, as the SEANet front's output for its whole
    5 ms hops ([B, n, C], n < 16) and the samples short of a hop ([B, m], m < 120)."""

    pending: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 0))
    latents: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 0, 0))
    front_hop: int = 1  # audio samples per step of `latents`

    @property
    def samples_in_frame(self) -> int:
        """How many samples of the current, incomplete frame this state holds."""
        return self.latents.shape[1] * self.front_hop + self.pending.shape[-1]

    def tensors(self) -> list[torch.Tensor]:
        return [*super().tensors(), self.pending, self.latents]

    def reset(self, index: int | list[int] | torch.Tensor) -> None:
        if self.samples_in_frame:
            raise StreamError(
                f"streams can be reset only at a frame boundary ({self.samples_in_frame} samples of the "
                "current frame are pending); step the batch in whole frames of 1920 samples")
        super().reset(index)

    def select(self, index: int | list[int] | torch.Tensor):
        out = super().select(index)
        rows = _rows(index, self.batch_size).to(self.pending.device)
        out.pending, out.latents = self.pending[rows], self.latents[rows]
        return out


@dataclass
class DecoderState(StreamState):
    """Decoder side: conv contexts include each transposed conv's unfinished tail."""
