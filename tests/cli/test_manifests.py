"""Corpora listed in manifests (Common Voice TSV, CSV, NeMo JSONL) encoded as they ship."""
from __future__ import annotations

import csv
import json

import pyarrow as pa
import pyarrow.parquet as pq

from tests.helpers import write_corpus

K = 4
CLIPS = [("cv/clips/a.mp3", 48000, 1, 0.6, "MP3", "MPEG_LAYER_III"), ("cv/clips/b.mp3", 48000, 1, 0.9, "MP3",
                                                                       "MPEG_LAYER_III"),
         ("cv/clips/c.wav", 16000, 1, 0.4, "WAV", "PCM_16")]


def rows(path):
    return {r["id"]: r for r in pq.read_table(path).to_pylist()}


def test_common_voice_tsv_with_kept_columns(run, tmp_path):
    write_corpus(tmp_path, CLIPS)
    (tmp_path / "cv" / "train.tsv").write_text(
        "client_id\tpath\tsentence\tup_votes\n"
        'spk1\ta.mp3\tHe said "hello" twice.\t2\n'
        "spk2\tb.mp3\tNo quotes here\t0\n"
        "spk1\tc.wav\tA third, with a comma\t5\n")
    result = run("encode", "cv/train.tsv", "tok", "-q", K, "--audio-root", "cv/clips",
                 "--keep-columns", "sentence,client_id,up_votes")
    assert result.exit_code == 0, result.output
    assert run("encode", "cv/clips", "ref", "-q", K).exit_code == 0  # the same audio as loose files
    got, ref = rows(tmp_path / "tok"), rows(tmp_path / "ref")
    assert set(got) == set(ref) == {"a.mp3", "b.mp3", "c.wav"}
    for i in got:
        assert got[i]["codes"] == ref[i]["codes"] and got[i]["num_samples"] == ref[i]["num_samples"]
    assert got["a.mp3"]["sentence"] == 'He said "hello" twice.' and got["a.mp3"]["client_id"] == "spk1"
    assert got["c.wav"]["up_votes"] == 5
    schema = pq.read_schema(next((tmp_path / "tok").glob("*.parquet")))
    assert schema.field("up_votes").type == pa.int64() and schema.field("sentence").type == pa.string()
    again = run("encode", "cv/train.tsv", "tok", "-q", K, "--audio-root", "cv/clips", "--keep-columns", "sentence")
    assert again.exit_code == 0 and "3 already there" in again.output


def test_csv_with_an_id_column_and_bad_rows(run, tmp_path):
    write_corpus(tmp_path, CLIPS)
    with open(tmp_path / "list.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerows([["utt", "audio", "speaker"], ["u1", "cv/clips/a.mp3", "x"], ["u2", "cv/clips/missing.wav", "y"],
                     ["u3", "", "z"], ["u4", "cv/clips/c.wav", "w"]])
    result = run("encode", "list.csv", "t.parquet", "-q", K, "--id-column", "utt", "--keep-columns", "speaker")
    assert result.exit_code == 1
    got = rows(tmp_path / "t.parquet")
    assert set(got) == {"u1", "u4"} and got["u4"]["speaker"] == "w"
    errors = {e["id"]: e["error"] for e in map(json.loads, (tmp_path / "t.errors.jsonl").read_text().splitlines())}
    assert errors["u2"].startswith("no such file") and "names no audio file" in errors["list.csv:2"]


def test_nemo_jsonl_with_absolute_paths(run, tmp_path):
    write_corpus(tmp_path, CLIPS)
    lines = [{"audio_filepath": str(tmp_path / "cv" / "clips" / n), "text": t, "duration": d}
             for n, t, d in [("a.mp3", "one", 0.6), ("c.wav", "three", 0.4)]]
    (tmp_path / "cv" / "manifest.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    result = run("encode", "cv/manifest.jsonl", "t.parquet", "-q", K, "--keep-columns", "text,duration")
    assert result.exit_code == 0, result.output
    got = rows(tmp_path / "t.parquet")
    assert set(got) == {"clips/a.mp3", "clips/c.wav"}  # below the manifest's directory
    assert got["clips/c.wav"]["text"] == "three" and got["clips/c.wav"]["duration"] == 0.4


def test_columns_that_are_not_there_are_usage_errors_before_any_work(run, tmp_path):
    write_corpus(tmp_path, CLIPS)
    (tmp_path / "cv" / "train.tsv").write_text("path\tsentence\na.mp3\thi\n")
    for args, message in [(["--keep-columns", "speaker"], "no column 'speaker'"),
                          (["--path-column", "file"], "no --path-column file"),
                          (["--keep-columns", "codes"], "has its own column")]:
        result = run("encode", "cv/train.tsv", "out", "-q", K, "--audio-root", "cv/clips", *args)
        assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output
        assert not (tmp_path / "out").exists()  # refused before any OUTPUT is made
    result = run("encode", "cv/clips", "out", "-q", K, "--keep-columns", "sentence")
    assert result.exit_code == 2 and "holds audio files" in result.output and not (tmp_path / "out").exists()
    (tmp_path / "bad.csv").write_text("x,y\n1\n1,2,3\n")
    result = run("encode", "bad.csv", "out", "-q", K)
    assert result.exit_code == 2 and "bad.csv" in result.output and "Traceback" not in result.output


def test_a_row_whose_file_is_gone_since_it_was_encoded_is_kept(run, tmp_path):
    write_corpus(tmp_path, CLIPS)
    (tmp_path / "cv" / "train.tsv").write_text("path\na.mp3\nc.wav\n")
    args = ("encode", "cv/train.tsv", "t.parquet", "-q", K, "--audio-root", "cv/clips")
    assert run(*args).exit_code == 0
    (tmp_path / "cv" / "clips" / "a.mp3").unlink()
    again = run(*args)
    assert again.exit_code == 0 and "2 already there" in again.output
    assert set(rows(tmp_path / "t.parquet")) == {"a.mp3", "c.wav"}


def test_parquet_manifest_and_a_parquet_that_holds_its_audio(run, tmp_path):
    write_corpus(tmp_path, CLIPS)
    table = pa.table({"path": ["cv/clips/a.mp3", "cv/clips/c.wav"], "speaker_id": pa.array([7, 9], pa.int32())})
    pq.write_table(table, tmp_path / "list.parquet")
    result = run("encode", "list.parquet", "out", "-q", K, "--keep-columns", "speaker_id")
    assert result.exit_code == 0, result.output
    got = rows(tmp_path / "out")
    assert {i: r["speaker_id"] for i, r in got.items()} == {"cv/clips/a.mp3": 7, "cv/clips/c.wav": 9}
    assert pq.read_schema(next((tmp_path / "out").glob("*.parquet"))).field("speaker_id").type == pa.int32()
    audio = pa.array([{"bytes": b"RIFF", "path": "a.wav"}], pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    pq.write_table(pa.table({"audio": audio, "text": ["hi"]}), tmp_path / "hf.parquet")
    result = run("encode", "hf.parquet", "out2", "-q", K)  # audio in the table: each row is an item
    assert result.exit_code == 1 and "hf.parquet" in (tmp_path / "out2.errors.jsonl").read_text()
