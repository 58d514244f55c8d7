"""Nothing lost, nothing overwritten: ids, confinement, malformed datasets, full disks, through the CLI."""
from __future__ import annotations

import contextlib
import errno
import json
import os
import subprocess

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from mimi_cli.formats import shards
from tests.helpers import write_corpus

K = 4


def ids_of(path):
    return sorted(r["id"] for r in pq.read_table(path, columns=["id"]).to_pylist())


def codes_by_id(path):
    return {r["id"]: r["codes"] for r in pq.read_table(path, columns=["id", "codes"]).to_pylist()}


def test_same_file_name_in_two_places(run, tmp_path):
    write_corpus(tmp_path, [("a/x.wav", 24000, 1, 0.5, "WAV", "PCM_16"), ("b/x.wav", 24000, 1, 0.9, "WAV", "PCM_16")])
    result = run("encode", "a", "b", "t.parquet", "-q", K)  # both would be "x.wav"
    assert result.exit_code == 2 and "a/x.wav" in result.output and "b/x.wav" in result.output
    assert not (tmp_path / "t.parquet").exists() and not list(tmp_path.glob(".t.parquet*"))
    listing = tmp_path / "list.txt"
    listing.write_text("a/x.wav\nb/x.wav\n")
    for inputs in (["a/x.wav", "b/x.wav"], ["*/x.wav"], [f"@{listing}"]):
        out = tmp_path / f"t{len(inputs)}{inputs[0][0]}.parquet"
        assert run("encode", *inputs, out, "-q", K).exit_code == 0
        assert ids_of(out) == ["a/x.wav", "b/x.wav"]
        again = run("encode", *inputs, out, "-q", K)
        assert again.exit_code == 0 and "2 already there" in again.output
    assert run("decode", out, tmp_path / "wav").exit_code == 0
    lengths = sorted(sf.info(tmp_path / "wav" / d / "x.wav").frames for d in "ab")
    assert lengths == [12000, 21600]


def test_npy_and_decoded_names_keep_inputs_apart(run, tmp_path):
    write_corpus(tmp_path, [("c/u.wav", 24000, 1, 0.5, "WAV", "PCM_16"), ("c/u.flac", 24000, 1, 0.9, "FLAC", "PCM_16")])
    assert run("encode", "c", "npy", "-q", K, "--format", "npy").exit_code == 0
    manifest = pq.read_table(tmp_path / "npy" / "manifest-00000.parquet").to_pylist()
    assert sorted(r["npy_path"] for r in manifest) == ["__codes__/u.flac.npy", "__codes__/u.wav.npy"]
    frames = {r["id"]: r["num_frames"] for r in manifest}
    assert np.load(tmp_path / "npy" / "__codes__" / "u.wav.npy").shape == (K, frames["u.wav"])
    assert np.load(tmp_path / "npy" / "__codes__" / "u.flac.npy").shape == (K, frames["u.flac"])
    assert run("decode", "npy", "wav").exit_code == 0
    assert sf.info(tmp_path / "wav" / "u.wav.wav").frames == 12000
    assert sf.info(tmp_path / "wav" / "u.flac.wav").frames == 21600


def _with_ids(src, dst, ids):
    table = pq.read_table(src)
    table = table.set_column(0, "id", pa.array(ids[:table.num_rows]))
    pq.write_table(table.replace_schema_metadata(pq.read_schema(src).metadata), dst)


@pytest.mark.parametrize("overwrite", [False, True])
def test_decode_writes_only_inside_outdir(run, tmp_path, overwrite):
    entries = [(f"in/{i}.wav", 24000, 1, 0.3, "WAV", "PCM_16") for i in range(6)]
    write_corpus(tmp_path, entries)
    assert run("encode", "in", "t.parquet", "-q", K).exit_code == 0
    outside = tmp_path / "victim"
    outside.mkdir()
    (outside / "keep.wav").write_bytes(b"precious")
    out = tmp_path / "out"
    out.mkdir()
    os.symlink(outside, out / "link")
    evil = [str(outside / "abs.wav"), "../victim/keep.wav", "", "link/through.wav", "sub/../../victim/x.wav", "ok.wav"]
    _with_ids(tmp_path / "t.parquet", tmp_path / "evil.parquet", evil)
    result = run("decode", "evil.parquet", out, *(["--overwrite"] if overwrite else []))
    assert result.exit_code == 1, result.output
    assert sorted(os.listdir(outside)) == ["keep.wav"] and (outside / "keep.wav").read_bytes() == b"precious"
    assert sorted(os.listdir(out)) == ["link", "ok.wav"]
    errors = [json.loads(line) for line in (tmp_path / "out.errors.jsonl").read_text().splitlines()]
    assert len(errors) == 5 and all("absolute" in e["error"] or "'..'" in e["error"] or "outside" in e["error"]
                                    or "no id" in e["error"] for e in errors)


def test_malformed_datasets_are_one_line(run, tmp_path):
    write_corpus(tmp_path, [("in/a.wav", 24000, 1, 0.3, "WAV", "PCM_16"), ("in/b.wav", 24000, 1, 0.4, "WAV", "PCM_16")])
    assert run("encode", "in", "t.parquet", "-q", K).exit_code == 0
    table = pq.read_table(tmp_path / "t.parquet")
    meta = pq.read_schema(tmp_path / "t.parquet").metadata
    pq.write_table(table.drop_columns(["num_samples"]).replace_schema_metadata(meta), tmp_path / "nocol.parquet")
    pq.write_table(table.replace_schema_metadata({b"mimi_cli": b"{oops"}), tmp_path / "meta.parquet")
    for bad in ("nocol.parquet", "meta.parquet"):
        for command in (["decode", bad, "o"], ["info", bad]):
            result = run(*command)
            assert result.exit_code == 2 and "Traceback" not in result.output, result.output
            assert result.output.strip().splitlines()[-1].startswith("mimi: error: ")
    ragged = table.set_column(2, "codes", pa.array([[[1, 2], [3]], table.column("codes")[1].as_py()],
                                                     table.schema.field("codes").type))
    pq.write_table(ragged.replace_schema_metadata(meta), tmp_path / "ragged.parquet")
    result = run("decode", "ragged.parquet", "o")
    assert result.exit_code == 1 and "ragged" in result.output and os.listdir(tmp_path / "o") == ["b.wav"]


def test_a_crash_after_assembling_a_single_file_output_duplicates_nothing(run, tmp_path):
    write_corpus(tmp_path, [(f"in/{i}.wav", 24000, 1, 0.3, "WAV", "PCM_16") for i in range(3)])
    assert run("encode", "in", "t.parquet", "-q", K).exit_code == 0
    # The state a crash between writing t.parquet and removing its staging leaves behind:
    staging = tmp_path / ".t.parquet.parts"
    staging.mkdir()
    (staging / "part-00000.parquet").write_bytes((tmp_path / "t.parquet").read_bytes())
    write_corpus(tmp_path, [("in/new.wav", 24000, 1, 0.3, "WAV", "PCM_16")])
    result = run("encode", "in", "t.parquet", "-q", K)
    assert result.exit_code == 0 and "3 already there" in result.output
    assert ids_of(tmp_path / "t.parquet") == ["0.wav", "1.wav", "2.wav", "new.wav"]
    assert not staging.exists()


def test_names_that_are_not_utf8_are_encoded(run, tmp_path):
    (tmp_path / "in").mkdir()
    with open(os.fsencode(tmp_path / "in") + b"/caf\xe9.wav", "wb") as f:
        sf.write(f, np.zeros(4800, np.float32), 24000, format="WAV")
    write_corpus(tmp_path, [("in/ok.wav", 24000, 1, 0.3, "WAV", "PCM_16")])
    result = run("encode", "in", "t.parquet", "-q", K)
    assert result.exit_code == 0, result.output
    assert ids_of(tmp_path / "t.parquet") == ["caf\\xe9.wav", "ok.wav"]
    assert run("decode", "t.parquet", "o").exit_code == 0
    assert (tmp_path / "o" / "caf\\xe9.wav").exists()


def test_list_on_stdin(run, tmp_path):
    write_corpus(tmp_path, [("in/a.wav", 24000, 1, 0.3, "WAV", "PCM_16"), ("in/b.wav", 24000, 1, 0.3, "WAV", "PCM_16")])
    result = run("encode", "@-", "t.parquet", "-q", K, input=b"in/a.wav\n# no\nin/b.wav\n")
    assert result.exit_code == 0, result.output
    assert ids_of(tmp_path / "t.parquet") == ["in/a.wav", "in/b.wav"]


def test_inputs_that_are_not_regular_files_are_error_rows(run, tmp_path):
    os.mkfifo(tmp_path / "pipe.wav")
    (tmp_path / "notes.wav").write_text("not audio at all\n" * 20)
    write_corpus(tmp_path, [("ok.wav", 24000, 1, 0.3, "WAV", "PCM_16")])
    result = run("encode", "pipe.wav", "notes.wav", "ok.wav", "t.parquet", "-q", K)  # would hang on the FIFO
    assert result.exit_code == 1 and ids_of(tmp_path / "t.parquet") == ["ok.wav"]
    errors = {e["id"]: e["error"] for e in map(json.loads, (tmp_path / "t.errors.jsonl").read_text().splitlines())}
    assert errors["pipe.wav"].startswith("not a regular file")
    assert errors["notes.wav"].startswith("not an audio file mimi reads (WAV, FLAC")


@pytest.mark.parametrize("args,message", [
    (["bench", "--streams", "0"], "--streams 0"),
    (["bench", "--streams", "4,x"], "--streams 4,x"),
    (["decode", "t.parquet", "o", "--sample-rate", str(10 ** 9)], "--sample-rate"),
    (["stream-decode", "--rate", str(10 ** 9)], "--rate"),
    (["encode", "in", "t.parquet", "--num-shards", "2"], "give a directory as OUTPUT"),
])
def test_out_of_range_options_are_usage_errors(run, tmp_path, args, message):
    write_corpus(tmp_path, [("in/a.wav", 24000, 1, 0.3, "WAV", "PCM_16")])
    result = run(*args)
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output


# -- a full disk ----------------------------------------------------------------------------------
def _refuse_after(monkeypatch, calls: int):
    """Writing a shard fails like a full disk from the `calls`-th shard on, after writing part of it."""
    real = shards.atomic_write
    count = {"n": 0}

    class Full:
        def __init__(self, f):
            self.f = f

        def write(self, data):
            self.f.write(b"PAR1 half a shard")
            raise OSError(errno.ENOSPC, "No space left on device")

    @contextlib.contextmanager
    def atomic_write(path):
        with real(path) as f:
            count["n"] += 1
            yield Full(f) if count["n"] >= calls else f

    monkeypatch.setattr(shards, "atomic_write", atomic_write)
    return real


def test_disk_full_while_encoding(run, tmp_path, monkeypatch):
    write_corpus(tmp_path, [(f"in/{i}.wav", 24000, 1, 0.3 + 0.1 * i, "WAV", "PCM_16") for i in range(5)])
    assert run("encode", "in", "ref", "-q", K).exit_code == 0
    real = _refuse_after(monkeypatch, 3)
    result = run("encode", "in", "out", "-q", K, "--batch-size", 1, "--commit-seconds", 0)
    assert result.exit_code == 2 and "Traceback" not in result.output
    line = result.output.strip().splitlines()[-1]
    assert line.startswith("mimi: error: cannot write ") and "out/part-00002.parquet: no space left on device" in line
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
    assert len(ids_of(tmp_path / "out")) == 2  # the finished shards are kept
    monkeypatch.setattr(shards, "atomic_write", real)
    assert run("encode", "in", "out", "-q", K).exit_code == 0
    assert ids_of(tmp_path / "out") == [f"{i}.wav" for i in range(5)]
    assert codes_by_id(tmp_path / "out") == codes_by_id(tmp_path / "ref")


@pytest.fixture
def small_disk(tmp_path):
    """A real 1 MiB filesystem (tmpfs), where this machine lets us mount one."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_disk_full_on_a_real_filesystem(run, tmp_path, small_disk):
    write_corpus(tmp_path, [(f"in/{i}.wav", 24000, 1, 0.5 + 0.05 * i, "WAV", "PCM_16") for i in range(8)])
    assert run("encode", "in", "t.parquet", "-q", K).exit_code == 0
    # Decoding: 8 float WAVs of 47 to 80 KiB do not fit beside an 850 KiB file, but fit alone.
    (small_disk / "filler").write_bytes(b"\0" * (850 << 10))
    result = run("decode", "t.parquet", small_disk / "wav")
    assert result.exit_code == 2 and "no space left on device" in result.output.strip().splitlines()[-1]
    assert not [p for p in small_disk.rglob("*") if p.name.endswith(".tmp")]
    kept = sorted(os.listdir(small_disk / "wav"))
    assert kept and all(sf.info(small_disk / "wav" / k).frames > 0 for k in kept)
    (small_disk / "filler").unlink()
    assert run("decode", "t.parquet", small_disk / "wav").exit_code == 0
    assert len(os.listdir(small_disk / "wav")) == 8


def test_disk_full_while_encoding_on_a_real_filesystem(run, tmp_path, small_disk):
    write_corpus(tmp_path, [(f"in/{i}.wav", 24000, 1, 2.0 + 0.1 * i, "WAV", "PCM_16") for i in range(8)])
    assert run("encode", "in", "ref", "-q", K).exit_code == 0
    (small_disk / "filler").write_bytes(b"\0" * ((1 << 20) - (24 << 10)))
    result = run("encode", "in", small_disk / "tok", "-q", K, "--batch-size", 1, "--commit-seconds", 0)
    assert result.exit_code == 2 and "no space left on device" in result.output.strip().splitlines()[-1]
    assert not [p for p in small_disk.rglob("*") if p.name.endswith(".tmp")]
    kept = ids_of(small_disk / "tok")
    assert 0 < len(kept) < 8
    (small_disk / "filler").unlink()
    assert run("encode", "in", small_disk / "tok", "-q", K).exit_code == 0
    assert codes_by_id(small_disk / "tok") == codes_by_id(tmp_path / "ref")
    assert len(ids_of(small_disk / "tok")) == 8


def test_decode_uses_the_recorded_model_and_refuses_other_weights(run, tmp_path, monkeypatch):
    from mimi_cli import cli
    from mimi_cli.codec import MimiConfig, load_codec

    loaded = []

    def load(weights, device, dtype):  # tiny codecs, seeded as asked
        loaded.append(weights)
        return load_codec(weights, device="cpu", config=MimiConfig.tiny())

    write_corpus(tmp_path, [("x.wav", 24000, 1, 0.5, "WAV", "PCM_16")])
    monkeypatch.setattr(cli, "_load", load)
    monkeypatch.delenv("MIMI_WEIGHTS", raising=False)
    assert run("encode", "x.wav", "t.parquet", "-q", K, "--weights", "synthetic:0").exit_code == 0
    assert run("decode", "t.parquet", "wav").exit_code == 0 and loaded[-1] == "synthetic:0"  # as recorded
    other = run("decode", "t.parquet", "wav2", "--weights", "synthetic:1")
    assert other.exit_code == 2 and "synthetic:0" in other.output and "synthetic:1" in other.output
    assert not (tmp_path / "wav2").exists()
    forced = run("decode", "t.parquet", "wav2", "--weights", "synthetic:1", "--force-weights")
    assert forced.exit_code == 0 and (tmp_path / "wav2" / "x.wav").exists()
    meta = json.loads(pq.read_schema(tmp_path / "t.parquet").metadata[b"mimi_cli"])
    meta["model"] = {"source": "/home/someone/evil.safetensors", "sha256": "ab" * 32}
    table = pq.read_table(tmp_path / "t.parquet")
    pq.write_table(table.replace_schema_metadata({b"mimi_cli": json.dumps(meta)}), tmp_path / "u.parquet")
    named = run("decode", "u.parquet", "wav3")
    assert named.exit_code == 2 and "/home/someone/evil.safetensors" in named.output and "--weights" in named.output
    assert loaded[-1] == "synthetic:1"  # nothing loaded for it


def test_info_counts_inputs_and_only_lengths_that_add_up(run, tmp_path):
    write_corpus(tmp_path, [("a.wav", 24000, 1, 0.5, "WAV", "PCM_16"), ("b.wav", 24000, 1, 0.5, "WAV", "PCM_16")])
    assert run("encode", "a.wav", "b.wav", "t.parquet", "-q", K, "--channels", "each").exit_code == 0
    table = pq.read_table(tmp_path / "t.parquet")
    samples = table.column("num_samples").to_pylist()
    samples[0] = 10 ** 15  # 11,574,074 hours in one crafted row
    crafted = table.set_column(table.schema.get_field_index("num_samples"), "num_samples",
                               pa.array(samples, pa.int64()))
    pq.write_table(crafted.replace_schema_metadata(table.schema.metadata), tmp_path / "u.parquet")
    info = run("info", "u.parquet")
    assert info.exit_code == 0 and "rows         2 (2 inputs), 0.000 h" in info.output
    assert "1 rows whose lengths do not add up are not counted" in info.output
