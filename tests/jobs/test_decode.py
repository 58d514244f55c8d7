"""`mimi_cli.decode` as a library: audio per row, trimmed and resampled, batched by length, with the
model the dataset records (the command's flags and messages are in tests/cli/)."""
from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from mimi_cli.codec import MimiConfig, load_codec
from mimi_cli.codec.batch import decode_batch
from mimi_cli.decode import DecodeOptions, check_model, decode_dataset, recorded_weights
from mimi_cli.encode import EncodeOptions, encode_dataset
from mimi_cli.formats import shards
from mimi_cli.formats.shards import DatasetError

K = 4


@pytest.fixture
def tokens(tiny, corpus, tmp_path):
    out = tmp_path / "tok"
    encode_dataset(tiny, [str(corpus / "a")], out, EncodeOptions(num_codebooks=K))
    return out


def test_each_row_decodes_to_its_own_length_and_audio(tiny, tokens, tmp_path):
    summary = decode_dataset(tiny, tokens, tmp_path / "wav")
    assert summary.rows == 2 and not summary.failed
    for r in pq.read_table(tokens).to_pylist():
        audio, rate = sf.read(tmp_path / "wav" / r["id"].replace(".flac", ".wav"), dtype="float32")
        alone = decode_batch(tiny, [np.asarray(r["codes"])], [r["num_samples"]])[0]
        assert rate == 24000 and len(audio) == r["num_samples"]
        np.testing.assert_allclose(audio, alone, atol=1 / 32767)  # written as 16-bit PCM


def test_fewer_codebooks_another_rate_and_format_for_chosen_ids(tiny, tokens, tmp_path):
    options = DecodeOptions(num_codebooks=2, sample_rate=16000, audio_format="flac", ids=("one.wav", "nope.wav"))
    summary = decode_dataset(tiny, tokens, tmp_path / "o", options)
    assert summary.rows == 1 and [(p.id, p.error) for p in summary.failed] == [("nope.wav", "no row with this id")]
    audio, rate = sf.read(tmp_path / "o" / "one.flac")
    row = next(r for r in pq.read_table(tokens).to_pylist() if r["id"] == "one.wav")
    assert rate == 16000 and abs(len(audio) - row["num_samples"] * 2 / 3) <= 2
    assert not (tmp_path / "o" / "two.flac").exists()
    with pytest.raises(DatasetError, match="stores only 4 codebooks"):
        decode_dataset(tiny, tokens, tmp_path / "p", DecodeOptions(num_codebooks=8))


def test_rows_are_decoded_in_batches_of_similar_length(tiny, tmp_path, monkeypatch):
    """One long row among short ones is decoded in a batch of its own, not padding the others."""
    rng = np.random.default_rng(0)
    lengths = [1, 1, 1, 800, 1, 1, 1, 1]
    shards.write_parquet_atomic(tmp_path / "t.parquet", shards._table(
        [shards.Row(f"r{i}", -1, rng.integers(0, 64, (K, n)).astype(np.int16), n * 1920, shards.SourceInfo()).as_dict()
         for i, n in enumerate(lengths)], shards.COLUMNS,
        {"num_codebooks": K, "codebook_size": 64, "model": tiny.weights_info}))
    shapes = []
    real = tiny.decode
    monkeypatch.setattr(tiny, "decode", lambda codes: shapes.append(tuple(codes.shape)) or real(codes))
    summary = decode_dataset(tiny, tmp_path / "t.parquet", tmp_path / "wav")
    assert summary.rows == 8 and sorted(shapes) == [(1, K, 800), (7, K, 1)]


def test_only_the_model_the_dataset_records_decodes_it(tiny, tokens, tmp_path):
    other = load_codec("synthetic:1", device="cpu", config=MimiConfig.tiny())
    with pytest.raises(DatasetError, match="synthetic:3.*synthetic:1"):
        decode_dataset(other, tokens, tmp_path / "wav")
    assert not (tmp_path / "wav").exists()
    assert decode_dataset(other, tokens, tmp_path / "wav", DecodeOptions(force_weights=True)).rows == 2
    check_model(tiny, tiny.weights_info, tokens)  # the same model passes


def test_recorded_weights_names_only_what_mimi_loads_on_its_own():
    assert recorded_weights({"source": "synthetic:7"}) == "synthetic:7"
    assert recorded_weights({"source": "kyutai/mimi", "revision": "abc"}) == "kyutai/mimi@abc"
    assert recorded_weights({"source": "kyutai/mimi"}) == "kyutai/mimi"
    assert recorded_weights({"source": "/home/someone/evil.safetensors"}) is None
    assert recorded_weights({"source": "someone/else"}) is None
