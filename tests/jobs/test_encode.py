"""`mimi_cli.encode` as a library: rows, resume, failures, channels, layouts and array jobs on the
tiny codec (the command's flags, messages and exit codes are in tests/cli/)."""
from __future__ import annotations

import concurrent.futures
import json
import math

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import torch

from mimi_cli import encode as encode_job
from mimi_cli.encode import EncodeOptions, encode_dataset
from mimi_cli.formats.audio import read_audio, resample
from mimi_cli.formats.info import dataset_info
from mimi_cli.formats.manifests import ManifestOptions
from mimi_cli.formats.shards import DatasetError
from tests.helpers import CORPUS, write_corpus

K = 4


def rows(path):
    return {(r["id"], r["channel"]): r for r in pq.read_table(path).to_pylist()}


def test_every_file_becomes_a_row_with_the_codes_it_gets_alone(tiny, corpus, tmp_path):
    out = tmp_path / "tokens.parquet"
    summary = encode_dataset(tiny, [str(corpus)], out, EncodeOptions(num_codebooks=K))
    assert summary.rows == summary.files == len(CORPUS) and not summary.failed
    got = rows(out)
    for rel, rate, channels, seconds, *_ in CORPUS:
        r = got[(rel, -1)]
        assert r["source_sample_rate"] == rate and r["source_channels"] == channels
        assert abs(r["num_samples"] - seconds * 24000) <= 24000 * 0.06  # mp3/opus add codec delay
        assert r["num_frames"] == math.ceil(r["num_samples"] / 1920)
        audio, sr = read_audio(corpus / rel)
        mono = resample(audio, sr, 24000).mean(axis=0)
        alone = tiny.encode(torch.from_numpy(mono)[None, None], K)[0].numpy()
        np.testing.assert_array_equal(np.asarray(r["codes"]), alone)
    meta = json.loads(pq.read_schema(out).metadata[b"mimi_cli"])
    assert meta["num_codebooks"] == K and meta["sample_rate"] == 24000 and meta["frame_rate"] == 12.5
    assert meta["model"]["source"] == "synthetic:3"
    assert pq.ParquetFile(out).metadata.row_group(0).column(2).compression == "ZSTD"


def test_resume_skips_done_inputs_and_adds_new_ones(tiny, corpus, tmp_path):
    out = tmp_path / "tokens.parquet"
    options = EncodeOptions(num_codebooks=K)
    assert encode_dataset(tiny, [str(corpus / "a")], out, options).files == 2
    again = encode_dataset(tiny, [str(corpus / "a")], out, options)
    assert (again.files, again.skipped) == (0, 2)
    write_corpus(corpus, [("a/three.wav", 24000, 1, 0.5, "WAV", "PCM_16")], seed=9)
    assert encode_dataset(tiny, [str(corpus / "a")], out, options).files == 1
    assert sorted(i for i, _ in rows(out)) == ["one.wav", "three.wav", "two.flac"]
    assert not list(tmp_path.glob(".*parts*"))


def _interrupt_at(monkeypatch, n: int):
    """Makes the n-th batch's encode raise KeyboardInterrupt (as Ctrl-C would); returns the real one."""
    real, calls = encode_job.encode_items, {"n": 0}

    def flaky(codec, items, k):
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt
        return real(codec, items, k)

    monkeypatch.setattr(encode_job, "encode_items", flaky)
    return real


def test_an_interrupted_run_keeps_whole_batches_and_resumes_exactly(tiny, corpus, tmp_path, monkeypatch):
    out = tmp_path / "shards"
    real = _interrupt_at(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        encode_dataset(tiny, [str(corpus)], out, EncodeOptions(num_codebooks=K, max_batch=2))
    assert pq.read_table(out).num_rows == 4  # two whole batches of two
    assert not list(out.glob(".*.tmp"))
    monkeypatch.setattr(encode_job, "encode_items", real)
    encode_dataset(tiny, [str(corpus)], out, EncodeOptions(num_codebooks=K))
    ids = [r["id"] for r in pq.read_table(out).to_pylist()]
    assert sorted(ids) == sorted(rel for rel, *_ in CORPUS)


def test_bad_inputs_are_recorded_and_the_run_goes_on(tiny, corpus, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "empty.wav").write_bytes(b"")
    (bad / "text.wav").write_text("this is not audio\n" * 10)
    (bad / "truncated.wav").write_bytes((corpus / "a" / "one.wav").read_bytes()[:30])
    sf.write(bad / "zero.wav", np.zeros(0, np.float32), 24000)
    (tmp_path / "no_audio").mkdir()
    (tmp_path / "no_audio" / "readme.txt").write_text("hi")
    out = tmp_path / "t.parquet"
    summary = encode_dataset(tiny, [str(corpus / "a"), str(bad), str(tmp_path / "no_audio"), str(tmp_path / "missing")],
                             out, EncodeOptions(num_codebooks=K))
    failed = {p.id: p.error for p in summary.failed}
    assert set(failed) == {"empty.wav", "text.wav", "truncated.wav", "zero.wav",
                           str(tmp_path / "no_audio"), str(tmp_path / "missing")}
    assert "empty" in failed["empty.wav"] and "no audio files" in failed[str(tmp_path / "no_audio")]
    recorded = [json.loads(line) for line in summary.errors_path.read_text().splitlines()]
    assert {e["id"]: e["error"] for e in recorded} == failed
    assert pq.read_table(out).num_rows == 2


def test_one_dataset_holds_one_depth_and_one_model(tiny, corpus, tmp_path, monkeypatch):
    out = tmp_path / "t.parquet"
    encode_dataset(tiny, [str(corpus / "a")], out, EncodeOptions(num_codebooks=K))
    with pytest.raises(DatasetError, match="num_codebooks=4"):
        encode_dataset(tiny, [str(corpus / "a")], out, EncodeOptions(num_codebooks=2))
    monkeypatch.setitem(tiny.weights_info, "source", "synthetic:99")
    with pytest.raises(DatasetError, match="another model"):
        encode_dataset(tiny, [str(corpus / "a")], out, EncodeOptions(num_codebooks=K))
    assert encode_dataset(tiny, [str(corpus / "a")], out, EncodeOptions(num_codebooks=K, overwrite=True)).files == 2


def test_each_channel_becomes_a_row_of_its_own(tiny, corpus, tmp_path):
    out = tmp_path / "t.parquet"
    encode_dataset(tiny, [str(corpus / "b" / "stereo.wav")], out, EncodeOptions(num_codebooks=K, channels="each"))
    got = rows(out)
    ident = next(iter(got))[0]
    assert set(got) == {(ident, 0), (ident, 1)}
    audio, sr = read_audio(corpus / "b" / "stereo.wav")
    right = resample(audio, sr, 24000)[1]
    np.testing.assert_array_equal(np.asarray(got[(ident, 1)]["codes"]),
                                  tiny.encode(torch.from_numpy(right)[None, None], K)[0].numpy())


def test_options_refuse_choices_that_do_not_exist():
    with pytest.raises(ValueError, match="channels"):
        EncodeOptions(channels="left")
    with pytest.raises(ValueError, match="format"):
        EncodeOptions(format="csv")


def test_npy_output_mirrors_the_input_tree(tiny, corpus, tmp_path):
    out = tmp_path / "npy"
    encode_dataset(tiny, [str(corpus)], out, EncodeOptions(num_codebooks=K, format="npy"))
    codes = np.load(out / "__codes__" / "a" / "one.wav.npy")
    assert codes.dtype == np.int16 and codes.shape[0] == K
    manifest = [r for f in out.glob("manifest-*.parquet") for r in pq.read_table(f).to_pylist()]
    assert {r["npy_path"] for r in manifest} >= {"__codes__/a/one.wav.npy", "__codes__/b/stereo.wav.npy"}


def test_an_input_that_names_nothing_is_reported_by_one_array_job(tiny, corpus, tmp_path):
    (tmp_path / "empty").mkdir()
    inputs = [str(corpus), str(tmp_path / "missing.wav"), str(tmp_path / "empty"), str(tmp_path / "none-*.flac")]
    out = tmp_path / "ds"
    failed = [[p.path for p in encode_dataset(tiny, inputs, out, EncodeOptions(
        num_codebooks=K, shard_index=i, num_shards=3)).failed] for i in range(3)]
    assert sorted(p for job in failed for p in job) == sorted(inputs[1:])  # each once, by one of the jobs
    assert dataset_info(out).errors == 3  # as `mimi info` counts them over every job's errors file
    again = [p.path for p in encode_dataset(tiny, inputs, out, EncodeOptions(
        num_codebooks=K, shard_index=1, num_shards=3)).failed]
    assert again == failed[1]  # the same job each time


def test_array_jobs_write_disjoint_shares_of_one_dataset(tiny, corpus, tmp_path):
    out = tmp_path / "ds"
    done = [encode_dataset(tiny, [str(corpus)], out, EncodeOptions(num_codebooks=K, shard_index=i, num_shards=3)).files
            for i in range(3)]
    ids = [r["id"] for r in pq.read_table(out).to_pylist()]
    assert sum(done) == len(CORPUS) and sorted(ids) == sorted(rel for rel, *_ in CORPUS)


def test_a_listing_encoded_a_window_at_a_time_gives_the_dataset_of_one_window(tiny, corpus, tmp_path):
    manifest = tmp_path / "m.tsv"
    manifest.write_text("path\tspeaker\n" + "".join(f"{rel}\t{i}\n" for i, (rel, *_) in enumerate(CORPUS)))
    whole, windowed = tmp_path / "whole.parquet", tmp_path / "windowed.parquet"
    kept = ManifestOptions(audio_root=corpus, keep_columns=("speaker",))
    base = dict(num_codebooks=K, channels="each", manifest=kept)
    encode_dataset(tiny, [str(manifest)], whole, EncodeOptions(**base))
    summary = encode_dataset(tiny, [str(manifest)], windowed, EncodeOptions(**base, window=2))
    assert summary.files == len(CORPUS) and not summary.failed
    a, b = rows(whole), rows(windowed)
    assert a.keys() == b.keys() and len(a) == len(CORPUS) + 2  # two stereo files: a row a channel
    for key in a:
        np.testing.assert_array_equal(np.asarray(a[key]["codes"]), np.asarray(b[key]["codes"]))
        assert a[key]["speaker"] == b[key]["speaker"]
    again = encode_dataset(tiny, [str(manifest)], windowed, EncodeOptions(**base, window=2))
    assert (again.files, again.skipped) == (0, len(CORPUS))


def test_an_interrupted_windowed_run_keeps_the_earlier_windows_and_resumes(tiny, corpus, tmp_path, monkeypatch):
    out = tmp_path / "shards"
    real = _interrupt_at(monkeypatch, 4)
    with pytest.raises(KeyboardInterrupt):
        encode_dataset(tiny, [str(corpus)], out, EncodeOptions(num_codebooks=K, window=2, max_batch=1))
    assert pq.read_table(out).num_rows == 3
    monkeypatch.setattr(encode_job, "encode_items", real)
    summary = encode_dataset(tiny, [str(corpus)], out, EncodeOptions(num_codebooks=K, window=2))
    assert summary.skipped == 3 and summary.files == len(CORPUS) - 3
    assert sorted(r["id"] for r in pq.read_table(out).to_pylist()) == sorted(rel for rel, *_ in CORPUS)


def test_every_failure_reaches_the_errors_file_and_the_summary_holds_the_first(tiny, tmp_path):
    from mimi_cli.summary import FIRST_FAILURES

    n = FIRST_FAILURES + 300
    manifest = tmp_path / "m.tsv"
    manifest.write_text("path\n" + "".join(f"missing-{i}.wav\n" for i in range(n)))
    summary = encode_dataset(tiny, [str(manifest)], tmp_path / "t.parquet", EncodeOptions(num_codebooks=K, window=500))
    assert summary.failures == n and len(summary.failed) == FIRST_FAILURES
    recorded = [json.loads(line)["id"] for line in summary.errors_path.read_text().splitlines()]
    assert recorded == [f"missing-{i}.wav" for i in range(n)]


def test_progress_has_no_total_until_the_last_window_is_listed(tiny, corpus, tmp_path, capsys):
    from functools import partial

    from mimi_cli.cli import _PlainProgress

    progress = partial(_PlainProgress, unit="file", every_s=0)
    (tmp_path / "gone").mkdir()
    inputs = [str(corpus), *(str(tmp_path / "gone" / f"{i}.wav") for i in range(5))]
    encode_dataset(tiny, inputs, tmp_path / "t.parquet", EncodeOptions(num_codebooks=K, window=3, max_batch=1),
                   progress=progress)
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("mimi: ")]
    assert lines[0].startswith("mimi: 1 files, ")  # the first window is not the last: no total
    assert lines[-1].startswith(f"mimi: {len(CORPUS)}/{len(CORPUS)} files, ") and lines[-1].endswith("5 failed")


def test_kept_columns_of_other_types_in_two_inputs_are_refused_not_a_crash(tiny, corpus, tmp_path):
    from mimi_cli.formats.sources import InputError

    (tmp_path / "a.tsv").write_text("path\tspk\na/one.wav\talice\n")
    (tmp_path / "b.tsv").write_text("path\tspk\na/two.flac\t7\n")
    options = EncodeOptions(num_codebooks=K, manifest=ManifestOptions(audio_root=corpus, keep_columns=("spk",)))
    with pytest.raises(InputError, match="'spk' is int64 for 'a/two.flac' but string for the inputs before it"):
        encode_dataset(tiny, [str(tmp_path / "a.tsv"), str(tmp_path / "b.tsv")], tmp_path / "t.parquet", options)


def test_a_batch_longer_than_the_read_ahead_is_read_at_its_turn():
    """Batches are read two ahead of the model while they hold at most the read-ahead's audio; an
    hour-long item is read only once the batch before it is done, so two are never held at once."""
    events = []

    class Source:
        def __init__(self, n: int) -> None:
            self.n = n

        def read(self, channels, max_seconds):
            events.append(("read", self.n))
            return []

    class Pool:  # reads at once when asked, so the order of reads is the order of asking
        def submit(self, fn, source):
            future = concurrent.futures.Future()
            future.set_result(fn(source))
            return future

    seconds = [10.0, 3600.0, 10.0, 10.0, 10.0]
    batches = [[Source(i)] for i in range(len(seconds))]
    for i, _ in enumerate(encode_job._prefetch(Pool(), batches, "mix", 3600, seconds, 1800)):
        events.append(("done", i))
    assert events.index(("read", 1)) > events.index(("done", 0))  # not read while batch 0 is held
    assert events.index(("read", 2)) < events.index(("done", 1))  # short ones are read ahead as before
    assert events.index(("read", 4)) > events.index(("done", 1))  # two ahead at most
    assert [e for e in events if e[0] == "read"] == [("read", i) for i in range(5)]
