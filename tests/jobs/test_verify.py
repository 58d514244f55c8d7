"""`mimi_cli.verify` as a library: the reference against itself is exact, a changed way is measured."""
from __future__ import annotations

import math

import pytest

from mimi_cli.codec import MimiConfig, load_codec
from mimi_cli.verify import Way, load_audio, verify

K = 8


@pytest.fixture
def audios(corpus):
    found, failed = load_audio([str(corpus)])
    assert len(found) == 8 and failed == []
    return found


@pytest.mark.parametrize("way", [Way(), Way(chunk_samples=777), Way(batch_size=3)])
def test_streamed_and_batched_float32_are_the_reference(tiny, audios, way):
    report = verify(tiny, tiny, audios, K, way)
    assert report.files == 8 and report.num_codebooks == K
    assert report.frames == sum(math.ceil(len(a) / 1920) for a in audios)
    assert report.per_codebook == [1.0] * K and report.all_codebooks == 1.0
    assert math.isinf(report.snr_db) or report.snr_db > 100


def test_another_model_is_measured_not_passed(tiny, audios):
    other = load_codec("synthetic:1", device="cpu", config=MimiConfig.tiny())
    report = verify(tiny, other, audios, K)
    assert report.all_codebooks < 0.5 and report.snr_db < 20
    assert 0.0 <= report.all_codebooks <= min(report.per_codebook) <= 1.0
    assert report.worst_file_snr_db <= report.snr_db + 10


def test_inputs_without_audio_are_reported(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.wav").write_text("not audio")
    found, failed = load_audio(["bad.wav", "missing.wav"])
    assert found == [] and {p.id for p in failed} == {"bad.wav", "missing.wav"}
