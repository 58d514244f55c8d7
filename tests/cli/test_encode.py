"""`mimi encode / decode / info` end to end through the real CLI."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from mimi_cli import dataset
from mimi_cli.formats.audio import read_audio, resample
from tests.helpers import CORPUS, write_corpus

K = 4


def _rows(path):
    return {(r["id"], r["channel"]): r for r in pq.read_table(path).to_pylist()}


def test_encode_corpus_to_parquet(run, corpus, tmp_path, tiny):
    out = tmp_path / "tokens.parquet"
    result = run("encode", corpus, out, "-q", K, "--weights", "synthetic")
    assert result.exit_code == 0, result.output
    table = pq.read_table(out)
    assert table.num_rows == len(CORPUS)
    rows = _rows(out)
    for rel, rate, channels, seconds, *_ in CORPUS:
        r = rows[(rel, -1)]
        assert r["source_sample_rate"] == rate and r["source_channels"] == channels
        assert abs(r["num_samples"] - seconds * 24000) <= 24000 * 0.06  # mp3/opus add codec delay
        assert r["num_frames"] == math.ceil(r["num_samples"] / 1920)
        assert len(r["codes"]) == K and all(len(c) == r["num_frames"] for c in r["codes"])
        # The batched pipeline gives the codes the library gives this file alone.
        audio, sr = read_audio(corpus / rel)
        mono = resample(audio, sr, 24000).mean(axis=0)
        import torch

        alone = tiny.encode(torch.from_numpy(mono)[None, None], K)[0].numpy()
        np.testing.assert_array_equal(np.asarray(r["codes"]), alone)
    meta = json.loads(pq.read_schema(out).metadata[b"mimi_cli"])
    assert meta["num_codebooks"] == K and meta["sample_rate"] == 24000 and meta["frame_rate"] == 12.5
    assert meta["codebook_size"] == 2048 or meta["codebook_size"] == tiny.config.codebook_size
    assert meta["model"]["source"] == "synthetic:3"
    df = pd.read_parquet(out)
    assert list(df.columns)[:3] == ["id", "channel", "codes"] and len(df) == len(CORPUS)
    assert pq.ParquetFile(out).metadata.row_group(0).column(2).compression == "ZSTD"


def test_round_trip_decode(run, corpus, tmp_path):
    tokens = tmp_path / "tok"
    assert run("encode", corpus / "a", tokens, "-q", K).exit_code == 0
    assert (tokens / "part-00000.parquet").exists()
    out = tmp_path / "wav"
    result = run("decode", tokens, out)
    assert result.exit_code == 0, result.output
    rows = {r["id"]: r for r in pq.read_table(tokens).to_pylist()}
    for rid, r in rows.items():
        audio, rate = sf.read(out / rid.replace(".flac", ".wav"))
        assert rate == 24000 and len(audio) == r["num_samples"]
    out16 = tmp_path / "wav16"
    assert run("decode", tokens, out16, "--sample-rate", 16000, "-q", 2, "--audio-format", "flac",
               "--id", "one.wav").exit_code == 0
    audio, rate = sf.read(out16 / "one.flac")
    assert rate == 16000 and abs(len(audio) - rows["one.wav"]["num_samples"] * 2 / 3) <= 2
    assert not (out16 / "two.flac").exists()


def test_decode_unknown_id_and_too_many_codebooks(run, corpus, tmp_path):
    tokens = tmp_path / "t.parquet"
    run("encode", corpus / "a", tokens, "-q", K)
    result = run("decode", tokens, tmp_path / "o", "--id", "nope.wav")
    assert result.exit_code == 1 and "nope.wav: no row with this id" in result.output
    result = run("decode", tokens, tmp_path / "o", "-q", 8)
    assert result.exit_code == 2 and "stores only 4 codebooks" in result.output


def test_resume_skips_done_inputs_and_adds_new_ones(run, corpus, tmp_path):
    out = tmp_path / "tokens.parquet"
    assert run("encode", corpus / "a", out, "-q", K).exit_code == 0
    again = run("encode", corpus / "a", out, "-q", K)
    assert again.exit_code == 0 and "encoded 0 files" in again.output and "2 already there" in again.output
    write_corpus(corpus, [("a/three.wav", 24000, 1, 0.5, "WAV", "PCM_16")], seed=9)
    more = run("encode", corpus / "a", out, "-q", K)
    assert "encoded 1 files" in more.output
    ids = sorted(r["id"] for r in pq.read_table(out).to_pylist())
    assert ids == ["one.wav", "three.wav", "two.flac"]
    assert not list(tmp_path.glob(".*parts*"))


def test_interrupted_run_keeps_complete_shards_and_resumes(run, corpus, tmp_path, monkeypatch):
    out = tmp_path / "shards"
    real = dataset.encode_items
    calls = {"n": 0}

    def flaky(codec, items, k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(codec, items, k)

    monkeypatch.setattr(dataset, "encode_items", flaky)
    result = run("encode", corpus, out, "-q", K, "--batch-size", 2)
    assert result.exit_code == 130
    kept = pq.read_table(out).num_rows
    assert kept == 4  # two whole batches of two
    assert not list(out.glob(".*.tmp"))
    monkeypatch.setattr(dataset, "encode_items", real)
    result = run("encode", corpus, out, "-q", K)
    assert result.exit_code == 0, result.output
    ids = [r["id"] for r in pq.read_table(out).to_pylist()]
    assert sorted(ids) == sorted(rel for rel, *_ in CORPUS) and len(ids) == len(set(ids))


def test_bad_inputs_are_recorded_and_the_run_goes_on(run, corpus, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "empty.wav").write_bytes(b"")
    (bad / "text.wav").write_text("this is not audio\n" * 10)
    good = (corpus / "a" / "one.wav").read_bytes()
    (bad / "truncated.wav").write_bytes(good[:30])
    sf.write(bad / "zero.wav", np.zeros(0, np.float32), 24000)
    (tmp_path / "no_audio").mkdir()
    (tmp_path / "no_audio" / "readme.txt").write_text("hi")
    out = tmp_path / "t.parquet"
    result = run("encode", corpus / "a", bad, tmp_path / "no_audio", tmp_path / "missing", out, "-q", K)
    assert result.exit_code == 1
    assert "Traceback" not in result.output and "6 inputs failed" in result.output
    errors = [json.loads(line) for line in (tmp_path / "t.errors.jsonl").read_text().splitlines()]
    by_id = {e["id"]: e["error"] for e in errors}
    assert set(by_id) == {"empty.wav", "text.wav", "truncated.wav", "zero.wav",
                          str(tmp_path / "no_audio"), str(tmp_path / "missing")}
    assert "empty" in by_id["empty.wav"] and "no audio files" in by_id[str(tmp_path / "no_audio")]
    assert "not recognised" in by_id["text.wav"] or "format" in by_id["text.wav"].lower()
    assert pq.read_table(out).num_rows == 2
    info = run("info", out)
    assert "2 inputs failed" not in info.output and "6 inputs failed" in info.output


def test_refuses_to_mix_codebook_counts_or_models(run, corpus, tmp_path, monkeypatch, tiny):
    out = tmp_path / "t.parquet"
    assert run("encode", corpus / "a", out, "-q", K).exit_code == 0
    result = run("encode", corpus / "a", out, "-q", 2)
    assert result.exit_code == 2 and "num_codebooks=4" in result.output and "--overwrite" in result.output
    monkeypatch.setitem(tiny.weights_info, "source", "synthetic:99")
    result = run("encode", corpus / "a", out, "-q", K)
    assert result.exit_code == 2 and "another model" in result.output
    assert run("encode", corpus / "a", out, "-q", K, "--overwrite").exit_code == 0


def test_each_channel_becomes_a_row(run, corpus, tmp_path):
    out = tmp_path / "t.parquet"
    assert run("encode", corpus / "b" / "stereo.wav", out, "-q", K, "--channels", "each").exit_code == 0
    rows = _rows(out)
    assert set(rows) == {("corpus/b/stereo.wav", 0), ("corpus/b/stereo.wav", 1)}
    assert rows[("corpus/b/stereo.wav", 0)]["codes"] != rows[("corpus/b/stereo.wav", 1)]["codes"]


def test_npy_output_mirrors_the_input_tree(run, corpus, tmp_path):
    out = tmp_path / "npy"
    assert run("encode", corpus, out, "-q", K, "--format", "npy").exit_code == 0
    codes = np.load(out / "__codes__" / "a" / "one.wav.npy")
    assert codes.dtype == np.int16 and codes.shape[0] == K
    manifest = [r for f in out.glob("manifest-*.parquet") for r in pq.read_table(f).to_pylist()]
    assert {r["npy_path"] for r in manifest} >= {"__codes__/a/one.wav.npy", "__codes__/b/stereo.wav.npy"}
    # Parquet readers pointed at the dataset read the manifest and skip the .npy files and the sidecar.
    import pandas as pd
    import pyarrow.dataset as pads
    from datasets import load_dataset

    assert len(pd.read_parquet(out)) == len(manifest) == pads.dataset(out, format="parquet").count_rows()
    assert len(load_dataset("parquet", data_dir=str(out), split="train")) == len(manifest)
    assert run("decode", out, tmp_path / "wav", "--id", "a/one.wav").exit_code == 0
    assert (tmp_path / "wav" / "a" / "one.wav").exists()
    assert run("encode", corpus, tmp_path / "x.parquet", "--format", "npy").exit_code == 2


def test_array_jobs_write_disjoint_shards_of_one_dataset(run, corpus, tmp_path):
    out = tmp_path / "ds"
    for i in range(3):
        assert run("encode", corpus, out, "-q", K, "--shard-index", i, "--num-shards", 3).exit_code == 0
    ids = [r["id"] for r in pq.read_table(out).to_pylist()]
    assert sorted(ids) == sorted(rel for rel, *_ in CORPUS)
    assert len(list(out.glob("part-0000?-*.parquet"))) >= 2


def test_list_file_and_glob_inputs(run, corpus, tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text(f"{corpus / 'a' / 'one.wav'}\n# comment\n\n{corpus / 'd' / 'old.aiff'}\n")
    out = tmp_path / "t.parquet"
    assert run("encode", f"@{listing}", str(corpus / "c" / "*.ogg"), out, "-q", K).exit_code == 0
    assert sorted(r["id"] for r in pq.read_table(out).to_pylist()) == [
        "corpus/a/one.wav", "corpus/c/opus.ogg", "corpus/c/vorbis.ogg", "corpus/d/old.aiff"]


def test_info(run, corpus, tmp_path):
    out = tmp_path / "t.parquet"
    run("encode", corpus, out, "-q", K)
    result = run("info", out)
    assert result.exit_code == 0
    assert f"{len(CORPUS)} ({len(CORPUS)} inputs)" in result.output and "codebooks    4 of" in result.output
    data = json.loads(run("info", out, "--json").output)
    assert data["rows"] == len(CORPUS) and data["metadata"]["num_codebooks"] == K


@pytest.mark.parametrize("args,message", [
    (["encode", "only_one_arg"], "at least one INPUT and the OUTPUT"),
    (["encode", "x", "y.parquet", "--channels", "left"], "'left' is not one of 'mix', 'each'"),
    (["encode", "x", "y", "--shard-index", "3", "--num-shards", "2"], "below --num-shards"),
    (["info", "/nonexistent/tokens.parquet"], "no such token file"),
    (["decode", "/nonexistent", "out"], "no such token file"),
])
def test_usage_errors_are_one_line_exit_2(run, args, message):
    result = run(*args)
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output


def test_info_on_a_foreign_parquet(run, tmp_path):
    pd.DataFrame({"a": [1]}).to_parquet(tmp_path / "x.parquet")
    result = run("info", tmp_path / "x.parquet")
    assert result.exit_code == 2 and "not written by mimi" in result.output


def test_uri_inputs_and_outputs(run, corpus, tmp_path):
    """pyarrow-filesystem URIs (file:// here; s3:// and gs:// go through the same code)."""
    local = tmp_path / "local"
    assert run("encode", corpus, local, "-q", K).exit_code == 0
    uri_out = f"file://{tmp_path}/remote"
    result = run("encode", f"file://{corpus}", uri_out, "-q", K)
    assert result.exit_code == 0, result.output
    a = {(r["id"], r["channel"]): r for r in pq.read_table(local).to_pylist()}
    b = {(r["id"], r["channel"]): r for r in pq.read_table(tmp_path / "remote").to_pylist()}
    assert a.keys() == b.keys() and all(a[k]["codes"] == b[k]["codes"] for k in a)
    assert all(a[k]["source_bytes"] == b[k]["source_bytes"] for k in a)
    again = run("encode", f"file://{corpus}", uri_out, "-q", K)
    assert "encoded 0 files" in again.output and f"{len(CORPUS)} already there" in again.output
    info = run("info", uri_out)
    assert info.exit_code == 0 and f"rows         {len(CORPUS)}" in info.output
    assert run("decode", uri_out, tmp_path / "wav", "--id", "a/one.wav").exit_code == 0
    assert (tmp_path / "wav" / "a" / "one.wav").exists()
    single = f"file://{tmp_path}/single.parquet"
    assert run("encode", f"file://{corpus}/a/one.wav", single, "-q", K).exit_code == 0
    assert pq.read_table(tmp_path / "single.parquet").num_rows == 1


def test_missing_uri_input_is_recorded(run, tmp_path):
    result = run("encode", f"file://{tmp_path}/nope", tmp_path / "t.parquet", "-q", K)
    assert result.exit_code == 1 and "no such file or directory" in result.output


def test_unwritable_outputs_are_one_line(run, corpus, tmp_path):
    (tmp_path / "afile").write_text("x")
    result = run("encode", corpus / "a", tmp_path / "afile" / "out", "-q", K)
    assert result.exit_code == 2 and "Not a directory" in result.output and "Traceback" not in result.output
    assert run("encode", corpus / "a", tmp_path / "t.parquet", "-q", K).exit_code == 0
    result = run("decode", tmp_path / "t.parquet", tmp_path / "afile" / "wav")
    assert result.exit_code == 2 and "not a directory" in result.output.lower()
