"""`mimi verify`: how far a way of running the codec (another dtype or device, streaming in
pieces, files batched) is from the reference way (float32, offline, one file at a time, on the
CPU), measured on the user's own audio.

Codes are compared frame by frame, per codebook and in all K at once; audio as the SNR of the
way's decode of its own codes against the reference decode of the reference codes.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from .codec import FRAME_SAMPLES, MimiCodec
from .dataset import AudioItem, encode_items
from .formats.shards import SourceInfo


@dataclass(frozen=True)
class Way:
    """How the codec is run: `chunk_samples` (stream the audio in pieces of that many samples
    through encode_step / decode_step) or `batch_size` (files right-padded into batches)."""

    chunk_samples: int | None = None
    batch_size: int = 1


@dataclass
class Report:
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
    items = [AudioItem(str(i), -1, a, SourceInfo()) for i, a in enumerate(audios)]
    # Batched (and trimmed) as `mimi encode` batches files: through the same function.
    return [row.codes for first in range(0, len(items), way.batch_size)
            for row in encode_items(codec, items[first:first + way.batch_size], k)]


def _decode(codec: MimiCodec, codes: list[np.ndarray], way: Way) -> list[np.ndarray]:
    if way.chunk_samples:
        out = []
        for c in codes:
            state = codec.init_decoder_state(1)
            x = torch.from_numpy(c)[None]
            out.append(torch.cat([codec.decode_step(state, x[..., i:i + 1]) for i in range(x.shape[-1])],
                                 dim=-1)[0, 0].float().cpu().numpy())
        return out
    out = []
    for first in range(0, len(codes), way.batch_size):
        group = codes[first:first + way.batch_size]
        batch = np.zeros((len(group), group[0].shape[0], max(c.shape[1] for c in group)), np.int64)
        for i, c in enumerate(group):
            batch[i, :, :c.shape[1]] = c
        audio = codec.decode(torch.from_numpy(batch)).float().cpu().numpy()
        out.extend(audio[i, 0, :c.shape[1] * FRAME_SAMPLES] for i, c in enumerate(group))
    return out


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
