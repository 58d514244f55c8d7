"""`mimi encode` on corpora an attacker made: each crafted input earns error rows or one line,
never code run, a file read outside the roots given, a write through a planted link, or a traceback."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zlib

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from tests.helpers import write_corpus

K = 2


def errors_of(path) -> dict:
    return {e["id"]: e["error"] for e in map(json.loads, path.read_text().splitlines())}


def test_a_planted_lock_link_is_refused_and_its_target_untouched(run, tmp_path):
    write_corpus(tmp_path, [("x.wav", 24000, 1, 0.3, "WAV", "PCM_16")])
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    (tmp_path / ".out.parquet.lock").symlink_to(victim)
    result = run("encode", "x.wav", "out.parquet", "-q", K)
    assert result.exit_code == 2 and "symbolic link" in result.output and "Traceback" not in result.output
    assert victim.read_bytes() == b"precious" and not (tmp_path / "out.parquet").exists()


def test_planted_staging_and_temporaries_are_replaced_not_followed(run, tmp_path, monkeypatch):
    from mimi_cli.formats import storage

    monkeypatch.setattr(storage.secrets, "token_hex", lambda n: "guessed")  # temporaries at names planted
    write_corpus(tmp_path, [("x.wav", 24000, 1, 0.3, "WAV", "PCM_16")])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    (tmp_path / ".out.parquet.parts").symlink_to(elsewhere)
    (tmp_path / ".out.parquet.guessed.tmp").symlink_to(victim)
    (tmp_path / ".out.mimi.json.guessed.tmp").symlink_to(victim)
    result = run("encode", "x.wav", "missing.wav", "out.parquet", "-q", K)  # missing.wav: an errors file too
    assert result.exit_code == 1, result.output
    (tmp_path / ".out.errors.jsonl.guessed.tmp").symlink_to(victim)
    assert run("encode", "x.wav", "missing.wav", "out.parquet", "-q", K).exit_code == 1
    assert victim.read_bytes() == b"precious" and list(elsewhere.iterdir()) == []
    assert pq.read_table(tmp_path / "out.parquet").num_rows == 1
    assert "missing.wav" in errors_of(tmp_path / "out.errors.jsonl")


def test_a_lhotse_command_source_is_an_error_row_and_runs_nothing(run, tmp_path):
    write_corpus(tmp_path, [("x.wav", 24000, 1, 0.3, "WAV", "PCM_16")])
    marker = tmp_path / "marker"
    rec = {"id": "r", "sources": [{"type": "command", "channels": [0], "source": f"touch {marker}; cat x.wav"}],
           "sampling_rate": 24000, "num_samples": 7200, "duration": 0.3}
    (tmp_path / "recs.jsonl").write_text(json.dumps(rec) + "\n")
    result = run("encode", "recs.jsonl", "out", "-q", K)
    assert result.exit_code == 1 and not marker.exists()
    assert "--allow-commands" in errors_of(tmp_path / "out.errors.jsonl")["r"]
    allowed = run("encode", "recs.jsonl", "out", "-q", K, "--allow-commands")
    assert allowed.exit_code == 0 and marker.exists()


def test_hf_parquet_paths_stay_in_the_dataset_folder(run, tmp_path):
    write_corpus(tmp_path, [("ds/in.wav", 24000, 1, 0.3, "WAV", "PCM_16"), ("far/out.wav", 24000, 1, 0.3, "WAV",
                                                                              "PCM_16")])
    struct = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    audio = pa.array([{"bytes": None, "path": p} for p in
                      ["in.wav", "../far/out.wav", str(tmp_path / "far/out.wav"), "/etc/passwd",
                       "../../../../etc/hostname"]], struct)
    pq.write_table(pa.table({"audio": audio}), tmp_path / "ds" / "t.parquet")
    result = run("encode", "ds/t.parquet", "out", "-q", K)
    assert result.exit_code == 1
    assert pq.read_table(tmp_path / "out").column("id").to_pylist() == ["in.wav"]
    errors = errors_of(tmp_path / "out.errors.jsonl")
    assert len(errors) == 4 and all("outside the audio root" in e for e in errors.values())
    wider = run("encode", "ds/t.parquet", "out2", "-q", K, "--audio-root", tmp_path)  # relative paths start there
    assert wider.exit_code == 1
    assert pq.read_table(tmp_path / "out2").column("id").to_pylist() == [str(tmp_path / "far/out.wav")]


def test_manifest_rows_stay_in_the_manifest_folder(run, tmp_path):
    write_corpus(tmp_path, [("cv/clips/a.wav", 24000, 1, 0.3, "WAV", "PCM_16"), ("far/b.wav", 24000, 1, 0.3, "WAV",
                                                                                   "PCM_16")])
    (tmp_path / "cv" / "train.tsv").write_text("path\tsentence\nclips/a.wav\thi\n../far/b.wav\tho\n/etc/passwd\tx\n")
    result = run("encode", "cv/train.tsv", "out", "-q", K)
    assert result.exit_code == 1
    assert pq.read_table(tmp_path / "out").column("id").to_pylist() == ["clips/a.wav"]
    assert all("outside the audio root" in e for e in errors_of(tmp_path / "out.errors.jsonl").values())


def test_common_voice_without_audio_root_says_where_the_clips_are(run, tmp_path):
    write_corpus(tmp_path, [("cv/clips/a.wav", 24000, 1, 0.3, "WAV", "PCM_16")])
    (tmp_path / "cv" / "train.tsv").write_text("path\tsentence\na.wav\thi\n")
    result = run("encode", "cv/train.tsv", "out", "-q", K)
    assert result.exit_code == 1 and "give --audio-root cv/clips" in result.output
    assert run("encode", "cv/train.tsv", "out", "-q", K, "--audio-root", "cv/clips").exit_code == 0


def test_hf_parquet_of_other_types_is_one_line(run, tmp_path):
    odd = pa.array([{"bytes": [1, 2, 3], "path": {"x": 1}}],
                   pa.struct([("bytes", pa.list_(pa.int64())), ("path", pa.struct([("x", pa.int64())]))]))
    pq.write_table(pa.table({"audio": odd}), tmp_path / "t.parquet")
    result = run("encode", "t.parquet", "out", "-q", K)
    assert result.exit_code in (1, 2) and "list<element: int64>, not binary" in result.output
    assert "Traceback" not in result.output


def test_a_short_wav_is_an_error_row(run, tmp_path):
    write_corpus(tmp_path, [("a.wav", 24000, 1, 1.0, "WAV", "PCM_16"), ("b.wav", 24000, 1, 1.0, "WAV", "PCM_16")])
    data = (tmp_path / "b.wav").read_bytes()
    (tmp_path / "b.wav").write_bytes(data[:len(data) // 2])
    result = run("encode", "a.wav", "b.wav", "out", "-q", K)
    assert result.exit_code == 1 and "ends early" in errors_of(tmp_path / "out.errors.jsonl")["b.wav"]


def peak_rss_mb(*args: str, cwd) -> tuple[int, str]:
    """Runs `mimi ARGS` in a process of its own; (its peak resident memory in MB, its stderr)."""
    # VmHWM, not ru_maxrss: Linux carries a parent's peak into ru_maxrss across fork and exec.
    code = ("import sys; from mimi_cli.cli import main\n"
            "def peak():\n    status = open('/proc/self/status').read().split('VmHWM:')[1]\n"
            "    return int(status.split()[0]) // 1024\n"
            "try:\n    main()\nexcept SystemExit as e:\n    code = e.code\n"
            "print('RSS', peak(), file=sys.stderr)\n"
            "sys.exit(code)")
    env = {**os.environ, "MIMI_WEIGHTS": "synthetic:0"}
    done = subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, capture_output=True, text=True, env=env,
                          timeout=300)
    return int(done.stderr.rsplit("RSS ", 1)[1]), done.stderr


@pytest.mark.parametrize("line", [b"x" * (1 << 30), b"\n" * (1 << 30)])
def test_a_gzip_bomb_costs_no_more_memory_than_a_normal_run(tmp_path, line):
    write_corpus(tmp_path, [("x.wav", 24000, 1, 0.5, "WAV", "PCM_16")])
    rec = {"id": "r", "sources": [{"type": "file", "channels": [0], "source": "x.wav"}], "sampling_rate": 24000,
           "num_samples": 12000, "duration": 0.5}
    (tmp_path / "ok.jsonl").write_text(json.dumps(rec) + "\n")
    z = zlib.compressobj(9, zlib.DEFLATED, 31)
    with open(tmp_path / "bomb.jsonl.gz", "wb") as f:
        f.write(z.compress((json.dumps(rec) + "\n").encode()))
        for _ in range(len(line) >> 20):
            f.write(z.compress(line[:1 << 20]))
        f.write(z.flush())
    assert (tmp_path / "bomb.jsonl.gz").stat().st_size < 2 << 20
    normal, _ = peak_rss_mb("encode", "ok.jsonl", "ok", "-q", str(K), cwd=tmp_path)
    bombed, stderr = peak_rss_mb("encode", "bomb.jsonl.gz", "out", "-q", str(K), cwd=tmp_path)
    assert "stopped reading bomb.jsonl.gz" in stderr or "stopped reading" in (tmp_path / "out.errors.jsonl").read_text()
    assert pq.read_table(tmp_path / "out").num_rows == 1  # the line before the bomb
    assert bombed < normal + 500, (normal, bombed)


def test_audio_bytes_whose_dictionary_page_the_footer_hides_cost_no_more_memory(tmp_path):
    """A blob stored once and repeated 6000 times (1.5 GB once copied out) in a small file whose
    footer hides the dictionary page: an error row, at the memory of a normal run."""
    from tests.parquet_footer import hide_dictionaries

    write_corpus(tmp_path, [("x.wav", 24000, 1, 0.5, "WAV", "PCM_16")])
    n = 6000
    blob = os.urandom(1 << 18)  # within pyarrow's dictionary page size
    repeated = pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)), pa.array([blob], pa.binary()))
    audio = pa.StructArray.from_arrays([repeated, pa.array(["x.wav"] * n)], names=["bytes", "path"])
    with pa.BufferOutputStream() as sink:
        pq.write_table(pa.table({"audio": audio}), sink, compression="zstd", store_schema=False)
    (tmp_path / "hidden.parquet").write_bytes(hide_dictionaries(sink.getvalue().to_pybytes()))
    assert (tmp_path / "hidden.parquet").stat().st_size < 2 << 20
    normal, _ = peak_rss_mb("encode", "x.wav", "ok", "-q", str(K), cwd=tmp_path)
    bombed, stderr = peak_rss_mb("encode", "hidden.parquet", "out", "-q", str(K), cwd=tmp_path)
    assert "decompression bomb" in (tmp_path / "out.errors.jsonl").read_text(), stderr
    assert bombed < normal + 500, (normal, bombed)


def test_encoded_audio_is_what_the_file_holds(run, tmp_path):
    """A long FLAC of silence (a compression bomb of audio) stops at --max-duration."""
    sf.write(tmp_path / "long.flac", np.zeros(24000 * 20, np.float32), 24000)
    result = run("encode", "long.flac", "out", "-q", K, "--max-duration", "5")
    assert result.exit_code == 1 and "over --max-duration 5 s" in errors_of(tmp_path / "out.errors.jsonl")[
        "long.flac"]


def test_a_path_column_of_lists_and_a_forged_column_name_earn_one_line(run, tmp_path):
    """A Parquet manifest whose path column holds lists is refused before anything is read, and a
    column name carrying a newline cannot print a second line of its own."""
    paths = pa.ListArray.from_arrays(pa.array([0, 3, 6], pa.int32()), pa.array(["ab"] * 6))
    pq.write_table(pa.table({"path": paths}), tmp_path / "lists.parquet")
    result = run("encode", "lists.parquet", "out.parquet", "-q", K)
    assert result.exit_code == 2 and "its column 'path' holds list<element: string>, not text" in result.output
    assert len(result.output.strip().splitlines()) == 1
    pq.write_table(pa.table({"path": ["a.wav"], "x\nmimi: encoded 99 files": [1]}), tmp_path / "named.parquet")
    result = run("encode", "named.parquet", "out.parquet", "-q", K, "--keep-columns", "nope")
    assert result.exit_code == 2 and "x\\x0amimi: encoded 99 files" in result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output


def test_kept_lists_of_more_values_than_a_slice_may_hold_are_an_error_row(run, tmp_path, monkeypatch):
    from mimi_cli.formats import limits

    monkeypatch.setattr(limits, "MAX_NESTED_VALUES", 1000)
    write_corpus(tmp_path, [("x.wav", 24000, 1, 0.3, "WAV", "PCM_16")])
    blob = (tmp_path / "x.wav").read_bytes()
    audio = pa.StructArray.from_arrays([pa.array([blob, blob], pa.binary()), pa.array(["a.wav", "b.wav"])],
                                       names=["bytes", "path"])
    tags = pa.ListArray.from_arrays(pa.array([0, 1, 2001], pa.int32()), pa.array(["t"] * 2001))
    pq.write_table(pa.table({"audio": audio, "tags": tags}), tmp_path / "a.parquet")
    result = run("encode", "a.parquet", "out.parquet", "-q", K, "--keep-columns", "tags")
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    errors = errors_of(tmp_path / "out.errors.jsonl")
    assert list(errors.values()) == ["cannot read it as Parquet (2 rows hold over 1000 values in lists or structs)"]


def test_a_kept_value_that_packs_past_the_read_bound_is_kept_and_read_back(run, tmp_path):
    """20 MB of one letter is within what a 0.3 MB input may expand to, but zstd packs it into a
    few kB of shard: the shard is written so that mimi reads it back (resume, decode, info)."""
    write_corpus(tmp_path, [("x.wav", 24000, 1, 0.3, "WAV", "PCM_16")])
    blob = (tmp_path / "x.wav").read_bytes()
    audio = pa.StructArray.from_arrays([pa.array([blob] * 3, pa.binary()), pa.array(["a.wav", "b.wav", "c.wav"])],
                                       names=["bytes", "path"])
    text = ["short", "a" * (20 << 20), "short"]
    pq.write_table(pa.table({"audio": audio, "text": text, "noise": [os.urandom(100_000) for _ in text]}),
                   tmp_path / "a.parquet", compression="zstd")
    for _ in range(2):  # the second run resumes: it reads what the first wrote
        result = run("encode", "a.parquet", "out.parquet", "-q", K, "--keep-columns", "text")
        assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    assert pq.read_table(tmp_path / "out.parquet").column("text").to_pylist() == text
    assert run("info", "out.parquet").exit_code == 0
