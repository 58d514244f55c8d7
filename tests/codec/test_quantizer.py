"""The prepared nearest-codeword search must pick exactly the codes torch.cdist picks (moshi's way)."""
import dataclasses

import pytest
import torch

from mimi_cli.codec.config import MimiConfig
from mimi_cli.codec.quantizer import ResidualVQ


def _rvq(codebook_size: int) -> ResidualVQ:
    config = dataclasses.replace(MimiConfig.tiny(), codebook_size=codebook_size, codebook_dim=16)
    g = torch.Generator().manual_seed(codebook_size)
    rvq = ResidualVQ(4, config)
    with torch.no_grad():
        rvq.input_proj.copy_(torch.randn(rvq.input_proj.shape, generator=g))
        rvq.codebooks.copy_(torch.randn(rvq.codebooks.shape, generator=g))
        # Two zero codewords: a zero latent ties between them, and the first index must win.
        rvq.codebooks[:, 3] = 0
        rvq.codebooks[:, 5] = 0
    return rvq


@pytest.mark.parametrize("codebook_size", [64, 2048, 63])  # 63: no even split into blocks
@pytest.mark.parametrize("frames", [1, 3, 130])
def test_prepared_search_equals_cdist(codebook_size: int, frames: int) -> None:
    rvq = _rvq(codebook_size)
    latent = torch.randn(2, frames, rvq.input_proj.shape[1], generator=torch.Generator().manual_seed(frames))
    latent[0, 0] = 0
    with torch.no_grad():
        expected = rvq.encode(latent, 4)  # search is None: torch.cdist
        rvq.prepare_search()
        got = rvq.encode(latent, 4)
    assert torch.equal(got, expected)
    assert got[0, :, 0].tolist() == [3] * 4
