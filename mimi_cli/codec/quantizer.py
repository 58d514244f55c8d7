"""Split residual vector quantizer: one semantic codebook, then up to 31 acoustic ones.

Both halves read the same latent: the semantic RVQ quantizes it with its first codebook, the
acoustic RVQ quantizes it again, residually, with the rest. Decoding sums both projections.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import MimiConfig
from .linear import linear

# The search rows of a codebook are stored as this many contiguous column blocks: a batch of
# narrower products reads them faster, with bit-identical distances (docs/design.md).
SEARCH_BLOCKS = 2


class ResidualVQ(nn.Module):
    """Projection to codebook space, residual nearest-neighbour search, projection back."""

    def __init__(self, num_codebooks: int, config: MimiConfig) -> None:
        super().__init__()
        self.input_proj = nn.Parameter(torch.empty(config.codebook_dim, config.dimension))
        self.output_proj = nn.Parameter(torch.empty(config.dimension, config.codebook_dim))
        # embedding_sum / cluster_usage, computed once when weights are loaded. Kept in float32
        # whatever the model dtype: the nearest-neighbour search decides the tokens.
        self.register_buffer(
            "codebooks", torch.zeros(num_codebooks, config.codebook_size, config.codebook_dim))
        self.register_buffer("search", None, persistent=False)  # set by prepare_search()

    def prepare_search(self) -> None:
        """Precomputes, per codebook, the [c, 1, |c|^2] rows that torch.cdist builds on every call
        (the reference uses cdist), stored transposed in column blocks for a fast small-batch matmul."""
        cb = self.codebooks
        n, size, dim = cb.shape
        nb = SEARCH_BLOCKS if size % SEARCH_BLOCKS == 0 else 1
        rows = torch.cat([cb, torch.ones_like(cb[..., :1]), cb.pow(2).sum(-1, keepdim=True)], dim=-1)
        blocks = rows.transpose(1, 2).reshape(n, dim + 2, nb, size // nb)
        self.search = blocks.permute(0, 2, 1, 3).contiguous()  # [n, blocks, dim + 2, size / blocks]

    def encode(self, latent: torch.Tensor, num_codebooks: int) -> torch.Tensor:
        """latent [B, T, D] -> codes [B, num_codebooks, T] (int64)."""
        B, T, _ = latent.shape
        residual = linear(latent, self.input_proj).reshape(B * T, -1).float()
        search = self.search
        codes = []
        for q, codebook in enumerate(self.codebooks[:num_codebooks]):
            if search is None:
                distances = torch.cdist(residual[None], codebook[None])[0]
            else:  # the same arithmetic as torch.cdist's matmul path, so ties break the same way
                norm = residual.pow(2).sum(-1, keepdim=True)
                query = torch.cat([residual.mul(-2), norm, torch.ones_like(norm)], dim=-1)
                # [blocks, rows, size / blocks], then the blocks side by side: [rows, size]
                parts = torch.bmm(query.expand(search.shape[1], *query.shape), search[q])
                distances = parts.transpose(0, 1).reshape(query.shape[0], -1).clamp_min_(0)
            index = distances.argmin(dim=-1)
            residual = residual - codebook[index]
            codes.append(index)
        return torch.stack(codes, dim=1).view(B, T, -1).transpose(1, 2)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B, K, T] -> latent [B, T, D] in the model dtype."""
        summed = sum(F.embedding(c, cb) for c, cb in zip(codes.unbind(1), self.codebooks))
        return linear(summed.to(self.output_proj.dtype), self.output_proj)


class SplitResidualVQ(nn.Module):
    def __init__(self, config: MimiConfig) -> None:
        super().__init__()
        self.num_semantic = config.num_semantic
        self.semantic = ResidualVQ(config.num_semantic, config)
        self.acoustic = ResidualVQ(config.num_codebooks - config.num_semantic, config)

    def encode(self, latent: torch.Tensor, num_codebooks: int) -> torch.Tensor:
        """latent [B, T, D] -> codes [B, num_codebooks, T]."""
        codes = self.semantic.encode(latent, min(num_codebooks, self.num_semantic))
        if num_codebooks > self.num_semantic:
            codes = torch.cat([codes, self.acoustic.encode(latent, num_codebooks - self.num_semantic)], 1)
        return codes

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B, K, T] -> latent [B, T, D]; fewer codebooks than encoded is a coarser decode."""
        latent = self.semantic.decode(codes[:, :self.num_semantic])
        if codes.shape[1] > self.num_semantic:
            latent = latent + self.acoustic.decode(codes[:, self.num_semantic:])
        return latent
