"""The Mimi codec: offline and streaming encode/decode over one core step each.

Encoding is the SEANet front (`SeanetEncoder.front`) then `_encode_front_latents` (the rest);
decoding is `decode_frames`. Offline runs them chunk by chunk through the same state as
streaming, so a long file runs in bounded memory and offline equals streaming by construction;
streaming runs the front on audio as it arrives and the rest as frames complete.
"""
from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ..spec import DEFAULT_CODEBOOKS
from .config import MimiConfig
from .conv import ConvSlots, StreamingConv1d, StreamingConvTranspose1d
from .device import ieee_float32
from .errors import InvalidArgument, StreamError
from .linear import Linear, WeightBlocks
from .quantizer import SplitResidualVQ
from .seanet import SeanetDecoder, SeanetEncoder
from .state import DecoderState, EncoderState
from .transformer import Transformer

# Offline work is cut into chunks of about this many frames summed over the batch (~5 s of
# audio): large enough to keep the convolutions efficient, small enough to bound memory.
CHUNK_BUDGET_FRAMES = 64


def _entry_point(method):
    """Runs a way into the network in torch.inference_mode (no autograd bookkeeping on a step's
    thousands of small ops) and, on CUDA, in `ieee_float32`. The result is cloned outside
    inference mode, so callers get an ordinary tensor; states hold inference tensors (`reset`
    edits them in inference mode)."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with torch.inference_mode(), ieee_float32(self.device):
            out = method(self, *args, **kwargs)
        return out.clone()
    return wrapper


class MimiCodec(nn.Module):
    """Mimi: 24 kHz mono audio <-> up to 32 codebooks of tokens at 12.5 frames/s."""

    def __init__(self, config: MimiConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or MimiConfig()
        enc_slots, dec_slots = ConvSlots(), ConvSlots()
        self.encoder = SeanetEncoder(config, enc_slots)
        self.encoder_transformer = Transformer(config)
        s = config.downsample_stride
        self.downsample = enc_slots.register(
            StreamingConv1d(config.dimension, config.dimension, 2 * s, stride=s, bias=False))
        self.quantizer = SplitResidualVQ(config)
        # Depthwise (one filter per channel), as in the released model.
        self.upsample = dec_slots.register(StreamingConvTranspose1d(
            config.dimension, config.dimension, 2 * s, s, groups=config.dimension, bias=False))
        self.decoder_transformer = Transformer(config)
        self.decoder = SeanetDecoder(config, dec_slots)
        self._encoder_convs = enc_slots.layers
        self._decoder_convs = dec_slots.layers
        self.weights_info: dict[str, str] = {}  # where the weights came from (set by the loader)
        self.compiled = None  # static.CompiledSteps once compile_steps has run

    # -- properties -------------------------------------------------------------------------
    @property
    def frame_samples(self) -> int:
        return self.config.frame_samples

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def frame_rate(self) -> float:
        return self.config.frame_rate

    @property
    def device(self) -> torch.device:
        return self.quantizer.semantic.input_proj.device

    @property
    def dtype(self) -> torch.dtype:
        return self.quantizer.semantic.input_proj.dtype

    def _check_codebooks(self, num_codebooks: int) -> None:
        if not 1 <= num_codebooks <= self.config.num_codebooks:
            raise InvalidArgument(f"num_codebooks must be in 1..{self.config.num_codebooks}, got {num_codebooks}")

    def prepare_for_inference(self) -> MimiCodec:
        """Re-lays weights for fast steps; values (and state_dict) are unchanged. `load_codec`
        calls it; call it again after editing weights, since the layouts are copies.

        Streaming steps multiply a few rows by each weight and are bound by reading weights from
        memory; `linear` reads a weight fastest as a contiguous [out, in] matrix (see linear.py).
        Linear layers are born that way; a conv's weight is stored [out, kernel, in] (its matmul
        matrix, and a channels-last kernel for oneDNN), a transposed conv's as its [kernel * out,
        in] matrix; each parameter becomes a view of the same shape.
        """
        with torch.no_grad():
            for conv in self._encoder_convs + self._decoder_convs:
                if isinstance(conv, StreamingConvTranspose1d):
                    conv.store_matrix_contiguous()
                else:
                    conv.store_time_major()
            for rvq in (self.quantizer.semantic, self.quantizer.acoustic):
                rvq.prepare_search()
        for module in self.modules():  # few-row copies of the old layout would be stale
            if isinstance(getattr(module, "blocks", None), WeightBlocks):
                module.blocks.clear()
        return self

    def quantize_int8(self) -> MimiCodec:
        """Transformer weights as int8 with per-channel scales, run by fbgemm's dynamic int8
        linear on the CPU (`--dtype int8`); convolutions and the codebook search stay float32,
        since int8 there changes many more frames' codes for a small gain in speed (docs/design.md).
        Codes then differ from float32's on some frames (`mimi verify --dtype int8` says how many)."""
        for module in self.modules():
            if isinstance(module, Linear):
                module.quantize_int8()
        return self

    def compile_steps(self, backend="inductor", mode: str | None = None) -> MimiCodec:
        """Runs every one-frame `encode_frames` / `decode_frames` (and so the streaming commands'
        and the server's steps) through `torch.compile`d static steps (codec/static.py): the first
        call of each batch size and depth compiles (tens of seconds), later ones reuse the graph."""
        from .static import CompiledSteps
        self.compiled = CompiledSteps(self, backend, mode)
        return self

    # -- states -----------------------------------------------------------------------------
    @torch.inference_mode()  # as every state a step leaves: one kind of tensor for compiled steps
    def init_encoder_state(self, batch_size: int = 1) -> EncoderState:
        """A fresh state for `batch_size` streams of audio to encode."""
        dev, dt = self.device, self.dtype
        return EncoderState(
            contexts=[c.init_context(batch_size, dev, dt) for c in self._encoder_convs],
            transformer=self.encoder_transformer.init_state(batch_size, dev, dt),
            pending=torch.zeros(batch_size, 0, device=dev, dtype=dt),
            latents=torch.zeros(batch_size, 0, self.encoder.front_channels, device=dev, dtype=dt),
            front_hop=self.encoder.front_hop)

    @torch.inference_mode()
    def init_decoder_state(self, batch_size: int = 1) -> DecoderState:
        """A fresh state for `batch_size` streams of codes to decode."""
        dev, dt = self.device, self.dtype
        return DecoderState(
            contexts=[c.init_context(batch_size, dev, dt) for c in self._decoder_convs],
            transformer=self.decoder_transformer.init_state(batch_size, dev, dt))

    # -- the core steps ---------------------------------------------------------------------
    @_entry_point
    def encode_frames(self, state: EncoderState, pcm: torch.Tensor, num_codebooks: int) -> torch.Tensor:
        """Codes [B, K, n] of `n` whole frames of audio pcm [B, 1, n * 1920]; advances `state`.

        The core step that `encode`, `encode_step` and every job run through; public for callers
        that hold whole frames and their own state (no partial-frame bookkeeping). One frame goes
        through the compiled step once `compile_steps` has run."""
        if self.compiled is not None and pcm.shape[-1] == self.frame_samples:
            return self.compiled.encode(state, pcm, num_codebooks)
        return self.encode_whole_frames(state, pcm, num_codebooks)

    def encode_whole_frames(self, state: EncoderState, pcm: torch.Tensor, num_codebooks: int) -> torch.Tensor:
        """`encode_frames` as plain tensor code: what static.encode_frame traces."""
        x = self.encoder.front(pcm.to(self.dtype).transpose(1, 2), state.contexts)
        return self._encode_front_latents(state, x, num_codebooks)

    def _encode_front_latents(self, state: EncoderState, x: torch.Tensor, num_codebooks: int) -> torch.Tensor:
        """Codes [B, K, n] of the SEANet front's output for `n` whole frames; advances `state`."""
        at_start = state.transformer.offsets == 0  # streams whose first frame this is
        x = self.encoder.back(x, state.contexts)
        x = self.encoder_transformer(x, state.transformer)
        # The reference pads the downsampling conv by replicating a stream's first latent.
        slot = self.downsample.slot
        context = torch.where(at_start[:, None, None], x[:, :1], state.contexts[slot])
        x, state.contexts[slot] = self.downsample(x, context)
        return self.quantizer.encode(x, num_codebooks)

    @_entry_point
    def decode_frames(self, state: DecoderState, codes: torch.Tensor) -> torch.Tensor:
        """Audio [B, 1, n * 1920] of codes [B, K, n]; advances `state`. The core step that `decode`
        and `decode_step` run through (one frame compiled once `compile_steps` has run)."""
        if self.compiled is not None and codes.shape[-1] == 1:
            return self.compiled.decode(state, codes.to(self.device, torch.long))
        return self.decode_whole_frames(state, codes)

    def decode_whole_frames(self, state: DecoderState, codes: torch.Tensor) -> torch.Tensor:
        """`decode_frames` as plain tensor code: what static.decode_frame traces."""
        x = self.quantizer.decode(codes.to(self.device, torch.long))
        x, state.contexts[self.upsample.slot] = self.upsample(x, state.contexts[self.upsample.slot])
        x = self.decoder_transformer(x, state.transformer)
        return self.decoder(x, state.contexts).transpose(1, 2)

    # -- streaming --------------------------------------------------------------------------
    @_entry_point
    def encode_step(self, state: EncoderState, pcm: torch.Tensor,
                    num_codebooks: int = DEFAULT_CODEBOOKS) -> torch.Tensor:
        """Codes [B, K, n] of the frames that `pcm` [B, T] or [B, 1, T] completes (n may be 0).

        Any number of samples is accepted. The SEANet's front runs at once on every whole
        `front_hop` (5 ms) of them, so that when a frame's last sample arrives only the rest of
        the network is left to run; samples short of a hop and front outputs short of a frame
        wait in `state`.
        """
        self._check_codebooks(num_codebooks)
        pcm = _as_batch_of_mono(pcm, state.batch_size).to(self.device, self.dtype)
        if self.compiled is not None and pcm.shape[-1] == self.frame_samples and not state.samples_in_frame:
            return self.compiled.encode(state, pcm[:, None], num_codebooks)
        hop = self.encoder.front_hop
        buffered = torch.cat([state.pending, pcm], dim=-1) if state.pending.shape[-1] else pcm
        ready = buffered.shape[-1] // hop * hop
        state.pending = buffered[:, ready:].clone()
        if ready:
            x = self.encoder.front(buffered[:, :ready, None], state.contexts)
            state.latents = torch.cat([state.latents, x], dim=1) if state.latents.shape[1] else x
        steps_per_frame = self.frame_samples // hop
        whole = state.latents.shape[1] // steps_per_frame * steps_per_frame
        if whole == 0:
            return self._no_codes(state.batch_size, num_codebooks)
        x, state.latents = state.latents[:, :whole], state.latents[:, whole:].clone()
        return self._encode_front_latents(state, x, num_codebooks)

    def encode_flush(self, state: EncoderState, num_codebooks: int = DEFAULT_CODEBOOKS) -> torch.Tensor:
        """Codes of the last, partial frame (padded with silence), or none if no samples wait."""
        self._check_codebooks(num_codebooks)
        n = state.samples_in_frame
        if n == 0:
            return self._no_codes(state.batch_size, num_codebooks)
        return self.encode_step(state, state.pending.new_zeros(state.batch_size, self.frame_samples - n),
                                num_codebooks)

    def _no_codes(self, batch_size: int, num_codebooks: int) -> torch.Tensor:
        """Codes [B, K, 0]: what a call that completes no frame returns."""
        return torch.zeros(batch_size, num_codebooks, 0, dtype=torch.long, device=self.device)

    def decode_step(self, state: DecoderState, codes: torch.Tensor) -> torch.Tensor:
        """Audio [B, 1, n * 1920] for codes [B, K, n]: every frame's audio as soon as it arrives."""
        self._check_codes(codes)
        if codes.shape[0] != state.batch_size:
            raise StreamError(f"codes for {codes.shape[0]} streams, state for {state.batch_size}")
        return self.decode_frames(state, codes)

    def _check_codes(self, codes: torch.Tensor) -> None:
        if codes.dim() != 3:
            raise InvalidArgument(f"codes must be [batch, codebooks, frames], got shape {tuple(codes.shape)}")
        self._check_codebooks(codes.shape[1])
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.config.codebook_size):
            raise InvalidArgument(f"codes must be in 0..{self.config.codebook_size - 1}")

    # -- offline ----------------------------------------------------------------------------
    def encode(self, audio: torch.Tensor, num_codebooks: int = DEFAULT_CODEBOOKS,
               chunk_frames: int | None = None) -> torch.Tensor:
        """Codes [B, K, ceil(T / 1920)] of audio [B, 1, T] (or [B, T]); the tail is zero-padded.

        Items of a right-padded batch get exactly the codes they get alone (the model is
        causal); trim each to ceil(length / 1920) frames.
        """
        audio = _as_batch_of_mono(audio, audio.shape[0])
        B, T = audio.shape
        step = (chunk_frames or max(1, CHUNK_BUDGET_FRAMES // B)) * self.frame_samples
        out = list(self.encode_pieces((audio[:, at:at + step] for at in range(0, T, step)), B, num_codebooks,
                                      chunk_frames))
        if not out:
            return self._no_codes(B, num_codebooks)
        return torch.cat(out, dim=-1)

    def encode_pieces(self, pieces: Iterable[torch.Tensor], batch_size: int, num_codebooks: int = DEFAULT_CODEBOOKS,
                      chunk_frames: int | None = None) -> Iterator[torch.Tensor]:
        """Codes [B, K, n] of audio that arrives in pieces [B, T_i] of any length, a chunk at a time
        as the pieces complete one: `encode` of the pieces joined, the same chunks, so the same
        codes, while only a chunk is held (an hour-long item need never be whole)."""
        self._check_codebooks(num_codebooks)
        step = (chunk_frames or max(1, CHUNK_BUDGET_FRAMES // batch_size)) * self.frame_samples
        state = self.init_encoder_state(batch_size)
        waiting: list[torch.Tensor] = []
        held = 0
        for piece in pieces:
            piece = _as_batch_of_mono(piece, batch_size)
            while held + piece.shape[-1] >= step:
                take = step - held
                chunk = torch.cat([*waiting, piece[:, :take]], dim=-1) if waiting else piece[:, :take]
                waiting, held, piece = [], 0, piece[:, take:]
                yield self.encode_frames(state, chunk.to(self.device, self.dtype)[:, None], num_codebooks)
            if piece.shape[-1]:
                waiting.append(piece)
                held += piece.shape[-1]
        if held:
            chunk = (torch.cat(waiting, dim=-1) if len(waiting) > 1 else waiting[0]).to(self.device, self.dtype)
            chunk = F.pad(chunk, (0, -held % self.frame_samples))
            yield self.encode_frames(state, chunk[:, None], num_codebooks)

    def decode(self, codes: torch.Tensor, chunk_frames: int | None = None) -> torch.Tensor:
        """Audio [B, 1, frames * 1920] of codes [B, K, frames], decoded in bounded memory."""
        self._check_codes(codes)
        B, _, n_frames = codes.shape
        chunk = chunk_frames or max(1, CHUNK_BUDGET_FRAMES // B)
        state = self.init_decoder_state(B)
        out = [self.decode_frames(state, codes[..., i:i + chunk]) for i in range(0, n_frames, chunk)]
        if not out:
            return torch.zeros(B, 1, 0, dtype=self.dtype, device=self.device)
        return torch.cat(out, dim=-1)


def _as_batch_of_mono(pcm: torch.Tensor, batch_size: int) -> torch.Tensor:
    """[B, T] from [B, T] or [B, 1, T], with a clear error for anything else."""
    if pcm.dim() == 3 and pcm.shape[1] == 1:
        pcm = pcm[:, 0]
    if pcm.dim() != 2 or pcm.shape[0] != batch_size:
        raise StreamError(f"expected audio of shape [{batch_size}, samples] or [{batch_size}, 1, samples],"
                          f" got {tuple(pcm.shape)}")
    return pcm
