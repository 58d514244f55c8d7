"""`mimi verify`: how far a way of running the codec (another dtype or device, streaming in
pieces, files batched) is from the reference way (float32, offline, one file at a time, on the
CPU), measured on the user's own audio.

Codes are compared frame by frame, per codebook and in all K at once; audio as the SNR of the
way's decode of its own codes against the reference decode of the reference codes.
"""
from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from .codec import MimiCodec
from .codec.batch import decode_batch, encode_batch
from .formats.audio import AudioError
from .formats.sources import Problem, collect_sources

log = logging.getLogger("mimi_cli.verify")


@dataclass(frozen=True)
class Way:
    """How the codec is run: `chunk_samples` (stream the audio in pieces of that many samples
    through encode_step / decode_step) or `batch_size` (files right-padded into batches)."""

    chunk_samples: int | None = None
    batch_size: int = 1


@dataclass(frozen=True)
class Report:
    """How far a way of running the codec is from the reference, over all files given."""

    files: int = 0
    frames: int = 0
    num_codebooks: int = 0
    per_codebook: list[float] = field(default_factory=list)  # share of frames whose code equals the reference
    all_codebooks: float = 0.0  # share of frames equal in all K
    snr_db: float = math.inf  # decoded audio against the reference decode (inf: identical)
    worst_file_snr_db: float = math.inf

    def as_dict(self) -> dict:
        d = asdict(self)
        for key in ("snr_db", "worst_file_snr_db"):  # JSON has no infinity
            d[key] = None if math.isinf(d[key]) else round(d[key], 2)
        return d


def _encode(codec: MimiCodec, audios: list[np.ndarray], k: int, way: Way) -> list[np.ndarray]:
    if way.chunk_samples:
        out = []
        for audio in audios:
            state = codec.init_encoder_state(1)
            x = torch.from_numpy(audio)[None]
            pieces = [codec.encode_step(state, x[:, i:i + way.chunk_samples], k)
                      for i in range(0, x.shape[1], way.chunk_samples)]
            pieces.append(codec.encode_flush(state, k))
            out.append(torch.cat(pieces, dim=-1)[0].cpu().numpy())
        return out
    # Batched (and trimmed) as `mimi encode` batches files: through the same function.
    return [c for first in range(0, len(audios), way.batch_size)
            for c in encode_batch(codec, audios[first:first + way.batch_size], k)]


def _decode(codec: MimiCodec, codes: list[np.ndarray], way: Way) -> list[np.ndarray]:
    if way.chunk_samples:
        out = []
        for c in codes:
            state = codec.init_decoder_state(1)
            x = torch.from_numpy(c)[None]
            out.append(torch.cat([codec.decode_step(state, x[..., i:i + 1]) for i in range(x.shape[-1])],
                                 dim=-1)[0, 0].float().cpu().numpy())
        return out
    return [a for first in range(0, len(codes), way.batch_size)
            for a in decode_batch(codec, codes[first:first + way.batch_size])]


def load_audio(inputs: list[str]) -> tuple[list[np.ndarray], list[Problem]]:
    """The audio of `inputs` (as `mimi encode` takes them: files, directories, globs, @lists,
    containers), mono at 24 kHz, and the inputs that gave none (each logged)."""
    sources, failed = collect_sources(inputs)
    audios = []
    for source in sources:
        try:
            audios.extend(item.pcm for item in source.read("mix"))
        except AudioError as e:
            failed.append(Problem(source.id, str(source.path), str(e)))
            log.warning("%s: %s", source.id, e)
    return audios, failed


def _snr_db(reference: np.ndarray, other: np.ndarray) -> float:
    noise = float(np.sum((reference.astype(np.float64) - other) ** 2))
    if noise == 0.0:
        return math.inf
    return 10 * math.log10(max(float(np.sum(reference.astype(np.float64) ** 2)), 1e-20) / noise)


def verify(reference: MimiCodec, codec: MimiCodec, audios: list[np.ndarray], num_codebooks: int,
           way: Way = Way()) -> Report:
    """Compares `codec` run `way` with `reference` run offline one file at a time, on `audios`
    (24 kHz mono float32 arrays)."""
    ref_codes = _encode(reference, audios, num_codebooks, Way())
    got_codes = _encode(codec, audios, num_codebooks, way)
    ref_audio = _decode(reference, ref_codes, Way())
    got_audio = _decode(codec, got_codes, way)
    equal = np.concatenate([r == g for r, g in zip(ref_codes, got_codes)], axis=1)  # [K, all frames]
    snrs = [_snr_db(r, g) for r, g in zip(ref_audio, got_audio)]
    return Report(files=len(audios), frames=equal.shape[1], num_codebooks=num_codebooks,
                  per_codebook=[float(x) for x in equal.mean(axis=1)], all_codebooks=float(equal.all(axis=0).mean()),
                  snr_db=_snr_db(np.concatenate(ref_audio), np.concatenate(got_audio)),
                  worst_file_snr_db=min(snrs))
