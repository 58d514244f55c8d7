"""The streaming step with fixed shapes and a state of tensors only: what compilers, CUDA graphs
and ONNX take.

One whole frame of B streams at a time: `encode_frame(codec, K, pcm [B, 1920], *state)` gives
(codes [B, K], *next state), `decode_frame(codec, codes [B, K], *state)` gives (audio [B, 1920],
*next state). The state is a flat list (`state_tensors`): every conv's context, the transformer's
ring positions, stream offsets, write index (a 0-d tensor here, not a Python int) and per-layer
keys and values. They run the same code as `MimiCodec.encode_frames` / `decode_frames`, so every
frame's codes are eager's. `CompiledSteps` puts `torch.compile` around them behind the codec's own
calls: the `EncoderState` / `DecoderState` you hold stays the public face (partial frames, joins,
leaves and resets work as before, and go eager where a call is not one whole frame).
"""
from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import torch

from .linear import product_layout
from .state import DecoderState, EncoderState, StreamState
from .transformer import KVCache, TransformerState


def state_tensors(state: StreamState) -> list[torch.Tensor]:
    """The state as a flat list: contexts, positions, offsets, write index, then per layer keys, values."""
    t = state.transformer
    index = torch.tensor(t.write_index, dtype=torch.long, device=t.offsets.device)
    return _flatten(state.contexts, dataclasses.replace(t, write_index=index))


def state_names(state: StreamState) -> list[str]:
    """Names of `state_tensors(state)`, in order (the ONNX graphs' state inputs)."""
    layers = len(state.transformer.caches)
    return ([f"context_{i}" for i in range(len(state.contexts))] + ["positions", "offsets", "write_index"]
            + [f"{kind}_{i}" for i in range(layers) for kind in ("keys", "values")])


def _unflatten(tensors: tuple[torch.Tensor, ...], convs: int, copy: bool) -> tuple[list, TransformerState]:
    """(contexts, transformer state) from a flat list; with `copy` the tensors a step writes into are
    copies, so the caller's stay as they were (exporters want steps without side effects)."""
    contexts = list(tensors[:convs])
    positions, offsets, index, *kv = tensors[convs:]
    if copy:
        positions, offsets, kv = positions.clone(), offsets.clone(), [x.clone() for x in kv]
    caches = [KVCache(kv[i], kv[i + 1]) for i in range(0, len(kv), 2)]
    return contexts, TransformerState(caches=caches, positions=positions, offsets=offsets, write_index=index)


def _flatten(contexts: list, t: TransformerState) -> list[torch.Tensor]:
    return [*contexts, t.positions, t.offsets, t.write_index, *(x for c in t.caches for x in (c.keys, c.values))]


def encode_frame(codec, num_codebooks: int, pcm: torch.Tensor, *state: torch.Tensor,
                 copy: bool = False) -> tuple[torch.Tensor, ...]:
    """(codes [B, K], *next state) of one frame of audio pcm [B, 1920] after `state`. Without
    `copy` the caches, positions and offsets are updated in place, as eager steps do."""
    codes, *rest = encode_frames(codec, num_codebooks, pcm, *state, copy=copy)
    return (codes[..., 0], *rest)


def encode_frames(codec, num_codebooks: int, pcm: torch.Tensor, *state: torch.Tensor,
                  copy: bool = False) -> tuple[torch.Tensor, ...]:
    """(codes [B, K, n], *next state) of n whole frames pcm [B, n * 1920]: `encode_frame` for a
    chunk of frames (offline work through a compiled graph per chunk size)."""
    contexts, t = _unflatten(state, len(codec._encoder_convs), copy)
    s = EncoderState(contexts=contexts, transformer=t)
    codes = codec.encode_whole_frames(s, pcm[:, None], num_codebooks)
    return (codes, *_flatten(s.contexts, s.transformer))


def decode_frame(codec, codes: torch.Tensor, *state: torch.Tensor, copy: bool = False) -> tuple[torch.Tensor, ...]:
    """(audio [B, 1920], *next state) of one frame's codes [B, K] after `state`."""
    contexts, t = _unflatten(state, len(codec._decoder_convs), copy)
    s = DecoderState(contexts=contexts, transformer=t)
    audio = codec.decode_whole_frames(s, codes[..., None])
    return (audio[:, 0], *_flatten(s.contexts, s.transformer))


class CompiledSteps:
    """`torch.compile`d whole-frame steps for a codec (`MimiCodec.compile_steps`), one graph per
    batch size and depth. Each call takes and updates the state you hold."""

    def __init__(self, codec, backend: str | Callable = "inductor", mode: str | None = None,
                 options: dict | None = None) -> None:
        self.codec = codec
        product_layout()  # chosen before tracing, which reads the choice and cannot measure
        with torch.inference_mode():  # one eager frame each way makes the layers' weight blocks (linear.py),
            frame = torch.zeros(1, 1, codec.frame_samples, device=codec.device)  # so no trace makes them
            codec.encode_whole_frames(codec.init_encoder_state(1), frame, 1)
            codec.decode_whole_frames(codec.init_decoder_state(1), torch.zeros(1, 1, 1, dtype=torch.long,
                                                                                device=codec.device))
        compile_ = functools.partial(torch.compile, fullgraph=True, dynamic=False, backend=backend, mode=mode,
                                     options=options)
        self._encode = compile_(encode_frame)
        self._decode = compile_(decode_frame)

    def encode(self, state: EncoderState, pcm: torch.Tensor, num_codebooks: int) -> torch.Tensor:
        """Codes [B, K, 1] of one frame pcm [B, 1, 1920]; advances `state`."""
        out = self._encode(self.codec, num_codebooks, pcm[:, 0], *state_tensors(state))
        _store(state, out[1:], self.codec.config.downsample_stride)
        return out[0][..., None]

    def decode(self, state: DecoderState, codes: torch.Tensor) -> torch.Tensor:
        """Audio [B, 1, 1920] of one frame's codes [B, K, 1]; advances `state`."""
        out = self._decode(self.codec, codes[..., 0], *state_tensors(state))
        _store(state, out[1:], self.codec.config.downsample_stride)
        return out[0][:, None]


def _store(state: StreamState, tensors: tuple[torch.Tensor, ...], steps: int) -> None:
    """Puts a step's next state into the state object. The write index stays a Python int, moved
    by the transformer's `steps` a frame here (reading the graph's would wait for a GPU)."""
    contexts, t = _unflatten(tensors, len(state.contexts), copy=False)
    old = state.transformer
    state.contexts = contexts
    state.transformer = TransformerState(caches=t.caches, positions=t.positions, offsets=t.offsets,
                                         write_index=(old.write_index + steps) % old.positions.shape[1])
