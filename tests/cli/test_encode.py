"""`mimi encode / decode / info` through the real CLI: flags, messages and exit codes (what the jobs
do is tested on the library in tests/jobs/)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from tests.helpers import CORPUS, write_corpus

K = 4


def _rows(path):
    return {(r["id"], r["channel"]): r for r in pq.read_table(path).to_pylist()}


def test_encode_corpus_to_parquet(run, corpus, tmp_path):
    out = tmp_path / "tokens.parquet"
    result = run("encode", corpus, out, "-q", K, "--weights", "synthetic")
    assert result.exit_code == 0, result.output
    assert f"encoded {len(CORPUS)} files" in result.output
    df = pd.read_parquet(out)
    assert list(df.columns)[:3] == ["id", "channel", "codes"] and len(df) == len(CORPUS)


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


def test_refuses_to_mix_codebook_counts(run, corpus, tmp_path):
    out = tmp_path / "t.parquet"
    assert run("encode", corpus / "a", out, "-q", K).exit_code == 0
    result = run("encode", corpus / "a", out, "-q", 2)
    assert result.exit_code == 2 and "num_codebooks=4" in result.output and "--overwrite" in result.output
    assert result.output.strip().splitlines()[-1].startswith("mimi: error: ")


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
