"""`mimi_cli.encode` as a library: rows, resume, failures, channels, layouts and array jobs on the
tiny codec (the command's flags, messages and exit codes are in tests/cli/)."""
from __future__ import annotations

import json
import math
import threading

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
from tests.media_helpers import ffmpeg, needs_ffmpeg

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


def _noise_wav(path, seconds, rate=16000, channels=1, seed=0):
    noise = np.random.default_rng(seed).standard_normal((int(seconds * rate), channels)) * 0.1
    sf.write(path, noise.astype(np.float32), rate, subtype="PCM_16")
    return path


def _run_engine(codec, todo, options):
    rows, failed = [], []
    for batch in encode_job.LocalEngine(codec)(todo, options):
        rows += batch.rows
        failed += batch.failed
    return rows, failed


def test_an_item_over_the_batch_length_is_read_at_its_turn_and_encoded_as_it_is_read(tiny, tmp_path, monkeypatch):
    """An item listed as longer than batch_seconds is not read ahead (no reader opens it, so none
    holds its bytes) nor held whole: it is opened at its turn and encoded block by block on the
    model's thread, to the codes it gets whole."""
    from mimi_cli.formats.sources import Source

    long = Source(_noise_wav(tmp_path / "long.wav", 9, channels=2), "long")
    short = [Source(_noise_wav(tmp_path / f"s{i}.wav", 1, seed=i), f"s{i}") for i in range(3)]
    read = []  # (id, on the model's thread) of every block read
    real_iter = encode_job.SourceAudio.__iter__

    def spy(self):
        for block in real_iter(self):
            read.append((self.id, threading.current_thread() is threading.main_thread()))
            yield block

    monkeypatch.setattr(encode_job.SourceAudio, "__iter__", spy)
    real_whole = encode_job.SourceAudio.whole
    monkeypatch.setattr(encode_job.SourceAudio, "whole",
                        lambda self, *a: read.append((self.id, "whole")) or real_whole(self, *a))
    real_open = encode_job.Source.open
    monkeypatch.setattr(encode_job.Source, "open", lambda self, *a: read.append(
        (self.id, "opened on the model's thread" if threading.current_thread() is threading.main_thread() else
         "opened by a reader")) or real_open(self, *a))
    streamed = []
    real_encode = encode_job.encode_audio
    monkeypatch.setattr(encode_job, "encode_audio",
                        lambda codec, audio, k: streamed.append(audio.id) or real_encode(codec, audio, k))
    options = EncodeOptions(num_codebooks=K, channels="each", batch_seconds=4.0, max_batch=2)
    rows, failed = _run_engine(tiny, [(s, 1.0) for s in short[:2]] + [(long, 9.0), (short[2], 1.0)], options)
    assert not failed and streamed == ["long"]
    assert {main for ident, main in read if ident == "long" and isinstance(main, bool)} == {True}
    assert {ident for ident, how in read if how == "whole"} == {"s0", "s1", "s2"}
    assert [how for ident, how in read if ident == "long" and isinstance(how, str)] == [
        "opened on the model's thread"]
    audio, rate = read_audio(long.path)
    for channel in (0, 1):
        row = next(r for r in rows if (r.id, r.channel) == ("long", channel))
        whole = resample(audio, rate, 24000)[channel]
        assert row.num_samples == len(whole) and row.source.channels == 2
        np.testing.assert_array_equal(row.codes, tiny.encode(torch.from_numpy(whole)[None, None], K)[0].numpy())
    assert sorted(r.id for r in rows) == ["long", "long", "s0", "s1", "s2"]


def test_an_item_longer_than_listed_is_held_no_further_than_its_share(tiny, tmp_path, monkeypatch):
    """A header may understate its length (a guess from the bit rate, a crafted file): an item is
    held as it is read ahead only to twice its listed length plus a share of a batch, then the
    rest is read at its turn, as it is encoded; it keeps every sample and the codes it gets whole."""
    from mimi_cli.formats.sources import Source

    lying = Source(_noise_wav(tmp_path / "lying.wav", 12), "lying")
    honest = Source(_noise_wav(tmp_path / "honest.wav", 1, seed=1), "honest")
    held = []
    real_whole = encode_job.SourceAudio.whole

    def spy(self, hold_seconds=None):
        items = real_whole(self, hold_seconds)
        held.append((self.id, hold_seconds, items is None, self.audio.held_samples))
        return items

    monkeypatch.setattr(encode_job.SourceAudio, "whole", spy)
    options = EncodeOptions(num_codebooks=K, batch_seconds=8.0, max_batch=4)  # a share: 2 s
    rows, failed = _run_engine(tiny, [(lying, 1.0), (honest, 1.0)], options)
    assert not failed
    ident, hold, stopped, samples = next(h for h in held if h[0] == "lying")
    assert hold == 2 * 1.0 + 2.0 and stopped
    assert samples <= 4.0 * 24000 + 2 ** 18 * 24000 // 16000  # its share, and the block that crossed it
    audio, rate = read_audio(lying.path)
    whole = resample(audio, rate, 24000)[0]
    row = next(r for r in rows if r.id == "lying")
    assert row.num_samples == len(whole)
    np.testing.assert_array_equal(row.codes, tiny.encode(torch.from_numpy(whole)[None, None], K)[0].numpy())


def test_items_read_longer_than_listed_are_batched_again_by_their_lengths(tiny, tmp_path, monkeypatch):
    """A batch is planned from listed lengths; once read, items are batched again by the lengths
    they have, so that padding to the longest never makes a batch over batch_seconds."""
    from mimi_cli.formats.sources import Source

    sources = [Source(_noise_wav(tmp_path / f"{i}.wav", seconds, seed=i), str(i))
               for i, seconds in enumerate([0.5, 0.5, 2.5, 2.5])]
    padded = []
    real_batch = encode_job.encode_batch

    def spy(codec, pcms, k):
        padded.append(len(pcms) * max(len(p) for p in pcms) / 24000)
        return real_batch(codec, pcms, k)

    monkeypatch.setattr(encode_job, "encode_batch", spy)
    options = EncodeOptions(num_codebooks=K, batch_seconds=8.0, max_batch=4)  # listed: one batch of 2 s
    rows, failed = _run_engine(tiny, [(s, 0.5) for s in sources], options)
    assert not failed and sorted(r.id for r in rows) == ["0", "1", "2", "3"]
    assert len(padded) == 2 and max(padded) <= 8.0  # as listed, one batch of 4 x 2.5 s = 10 s


def test_an_hour_long_item_is_never_held_whole(tmp_path):
    """An hour of 24 kHz audio is 345 MB. Listed at its length or as a second (a header that
    understates it), an hour-long item is encoded as it is read: memory grows by blocks, not by
    the hour (measured in a process of its own, with a codec that does no work)."""
    import subprocess
    import sys

    sf.write(tmp_path / "hour.flac", np.zeros(8000 * 3600, np.int16), 8000)  # silence: a small file
    sf.write(tmp_path / "short.wav", np.zeros(800, np.int16), 8000)
    script = """
import sys
from pathlib import Path
import torch
from mimi_cli.encode import EncodeOptions, LocalEngine
from mimi_cli.formats.sources import Source

class NoModel:
    def encode(self, batch, k):
        return torch.zeros(batch.shape[0], k, -(-batch.shape[-1] // 1920), dtype=torch.long)
    def encode_pieces(self, pieces, rows, k):
        for piece in pieces:
            yield torch.zeros(rows, k, piece.shape[-1] // 1920, dtype=torch.long)

def kb(key): return next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith(key))
def run(path, listed):
    engine = LocalEngine(NoModel())([(Source(Path(path), 'x'), listed)], EncodeOptions(num_codebooks=2))
    return [row.num_samples for batch in engine for row in batch.rows][0]
run(sys.argv[2], 0.1)  # libraries loaded first
before = kb('VmRSS')
print(run(sys.argv[1], 3600.0), run(sys.argv[1], 1.0), (kb('VmHWM') - before) * 1024)
"""
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "hour.flac"), str(tmp_path / "short.wav")],
                          capture_output=True, text=True, check=True)
    listed_long, listed_short, grew = map(int, done.stdout.split())
    assert listed_long == listed_short == 3600 * 24000
    assert grew < 100e6  # held whole: 345 MB


@needs_ffmpeg
@pytest.mark.parametrize("listed", [1.0, 600.0])
def test_an_item_whose_length_no_header_states_is_read_out_before_it_is_encoded(tiny, tmp_path, monkeypatch,
                                                                                  listed):
    """ADTS AAC states no length (FFmpeg guesses one from the bit rate). Such an item over
    `max_duration_s`, listed short (read ahead) or long (opened at its turn), is read to its end
    before the model sees it, so it is an error row at a decode's cost, not after its audio is
    encoded."""
    from mimi_cli.formats.sources import Source

    wav = _noise_wav(tmp_path / "a.wav", 20)
    ffmpeg("-i", str(wav), "-c:a", "aac", "-f", "adts", str(tmp_path / "a.aac"))
    ffmpeg("-i", str(wav), "-t", "3", "-c:a", "aac", "-f", "adts", str(tmp_path / "b.aac"))
    encoded = []
    real_blocks = encode_job.encode_blocks
    monkeypatch.setattr(encode_job, "encode_blocks",
                        lambda codec, audio, *a: encoded.append(audio.id) or real_blocks(codec, audio, *a))
    options = EncodeOptions(num_codebooks=K, batch_seconds=4.0, max_batch=2, max_duration_s=10.0)
    rows, failed = _run_engine(tiny, [(Source(tmp_path / "a.aac", "a"), listed),
                                      (Source(tmp_path / "b.aac", "b"), 10.0)], options)
    assert [p.id for p in failed] == ["a"] and "over --max-duration 10 s" in failed[0].error
    assert encoded == ["b"] and [r.id for r in rows] == ["b"]  # b: listed long, read out, then encoded


def test_each_channel_of_an_item_may_hold_its_listed_length(tiny, tmp_path, monkeypatch):
    """A listed length is a channel's; with --channels each, every row of a 4-channel item may
    hold it (and its share), so the item is read ahead whole and batched like a mono one."""
    from mimi_cli.formats.sources import Source

    four = Source(_noise_wav(tmp_path / "four.wav", 3, channels=4), "four")
    streamed = []
    real_encode = encode_job.encode_audio
    monkeypatch.setattr(encode_job, "encode_audio",
                        lambda codec, audio, k: streamed.append(audio.id) or real_encode(codec, audio, k))
    options = EncodeOptions(num_codebooks=K, channels="each", batch_seconds=8.0, max_batch=4)  # a share: 2 s
    rows, failed = _run_engine(tiny, [(four, 3.0)], options)
    assert not failed and not streamed and sorted(r.channel for r in rows) == [0, 1, 2, 3]
