"""Corpora that hold their audio inside other files, built with their own writers: Hugging Face
audio Parquet (`datasets`), WebDataset tars (`webdataset.TarWriter`) and lhotse cuts. Their codes
must equal those of the same audio encoded as loose files."""
from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from tests.helpers import write_corpus

K = 4
CLIPS = [("clips/s0.flac", 16000, 1, 0.7, "FLAC", "PCM_16"), ("clips/s1.wav", 24000, 2, 0.5, "WAV", "PCM_16"),
         ("clips/s2.mp3", 44100, 1, 0.9, "MP3", "MPEG_LAYER_III"), ("clips/s3.ogg", 48000, 1, 0.4, "OGG", "VORBIS"),
         ("clips/s4.flac", 22050, 1, 1.3, "FLAC", "PCM_16")]
TEXT = {"s0": "zero", "s1": "one", "s2": "two", "s3": "three", "s4": "four"}


def rows(path):
    return {r["id"]: r for r in pq.read_table(path).to_pylist()}


@pytest.fixture
def reference(run, tmp_path):
    """The clips as loose files, and their rows encoded that way, keyed by stem."""
    write_corpus(tmp_path, CLIPS)
    assert run("encode", "clips", "ref", "-q", K).exit_code == 0
    return {i.split(".")[0]: r for i, r in rows(tmp_path / "ref").items()}


def same_codes(got: dict, ref: dict, name=lambda i: i) -> None:
    assert {name(i) for i in got} <= set(ref) and got
    for i, r in got.items():
        want = ref[name(i)]
        assert r["codes"] == want["codes"] and r["num_samples"] == want["num_samples"], i
        assert r["source_sample_rate"] == want["source_sample_rate"]


def hf_parquet(tmp_path, target, files, **columns):
    """A Parquet file as `datasets` writes an Audio column, its bytes embedded (what push_to_hub uploads)."""
    from datasets import Audio, Dataset
    from datasets.table import embed_table_storage

    ds = Dataset.from_dict({"audio": [str(tmp_path / f) for f in files], **columns}).cast_column("audio", Audio())
    ds = ds.with_format("arrow").map(embed_table_storage, batched=True).with_format(None)
    target.parent.mkdir(parents=True, exist_ok=True)
    ds.to_parquet(str(target))
    return target


def test_hugging_face_parquet_directory_keeps_columns_and_resumes(run, tmp_path, reference):
    names = [c[0] for c in CLIPS]
    hf_parquet(tmp_path, tmp_path / "hf/data/train-00000-of-00002.parquet", names[:3],
               text=[TEXT[n[6:8]] for n in names[:3]], speaker=[1, 2, 1])
    hf_parquet(tmp_path, tmp_path / "hf/data/train-00001-of-00002.parquet", names[3:],
               text=[TEXT[n[6:8]] for n in names[3:]], speaker=[3, 3])
    result = run("encode", "hf", "tok", "-q", K, "--keep-columns", "text,speaker")
    assert result.exit_code == 0, result.output
    got = rows(tmp_path / "tok")
    same_codes(got, reference, lambda i: i.split(".")[0])
    assert {i: (r["text"], r["speaker"]) for i, r in got.items()}["s3.ogg"] == ("three", 3)
    assert pq.read_schema(next((tmp_path / "tok").glob("*.parquet"))).field("speaker").type == pa.int64()
    assert all(len(r["source_fingerprint"]) == 32 for r in got.values())
    again = run("encode", "hf", "tok", "-q", K, "--keep-columns", "text,speaker")
    assert again.exit_code == 0 and "5 already there" in again.output


def test_hugging_face_parquet_ids_bad_rows_and_paths(run, tmp_path, reference):
    good = open(tmp_path / "clips/s0.flac", "rb").read()
    struct = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    audio = pa.array([{"bytes": good, "path": "x.flac"}, {"bytes": b"not audio", "path": "x.flac"},
                      {"bytes": None, "path": "clips/s4.flac"}, None,
                      {"bytes": None, "path": "missing.wav"}], struct)
    pq.write_table(pa.table({"audio": audio, "utt": ["u0", "u1", "u2", "u3", "u4"]}), tmp_path / "t.parquet",
                   row_group_size=2)
    result = run("encode", "t.parquet", "out", "-q", K)  # paths repeat: ids are FILE:ROW
    assert result.exit_code == 1
    got = rows(tmp_path / "out")
    assert set(got) == {"t.parquet:0", "t.parquet:2"}
    assert got["t.parquet:0"]["codes"] == reference["s0"]["codes"]
    assert got["t.parquet:2"]["codes"] == reference["s4"]["codes"]  # null bytes: read from its path
    errors = {e["id"]: e["error"] for e in map(json.loads, (tmp_path / "out.errors.jsonl").read_text().splitlines())}
    assert set(errors) == {"t.parquet:1", "t.parquet:3", "t.parquet:4"}
    assert "format not recognised" in errors["t.parquet:1"] and "holds no audio" in errors["t.parquet:3"]
    by_column = run("encode", "t.parquet", "out2", "-q", K, "--id-column", "utt")
    assert by_column.exit_code == 1 and set(rows(tmp_path / "out2")) == {"u0", "u2"}
    missing = run("encode", "t.parquet", "out3", "-q", K, "--keep-columns", "speaker")
    assert missing.exit_code == 2 and "no column 'speaker'" in missing.output


def webdataset_shards(tmp_path, pattern, groups):
    import webdataset as wds

    for n, keys in enumerate(groups):
        with wds.TarWriter(str(tmp_path / (pattern % n))) as sink:
            for key in keys:
                src = next(c[0] for c in CLIPS if f"/{key}." in c[0])
                sink.write({"__key__": f"spk/{key}", src.rsplit(".", 1)[1]: (tmp_path / src).read_bytes(),
                            "json": {"text": TEXT[key], "score": len(key)}, "txt": TEXT[key].upper()})


def test_webdataset_brace_range_keys_and_json_fields(run, tmp_path, reference):
    (tmp_path / "shards").mkdir()
    webdataset_shards(tmp_path, "shards/train-%06d.tar", [["s0", "s1"], ["s2"], ["s3", "s4"]])
    result = run("encode", "shards/train-{000000..000002}.tar", "tok", "-q", K, "--keep-columns", "text,score,txt")
    assert result.exit_code == 0, result.output
    got = rows(tmp_path / "tok")
    assert set(got) == {f"spk/s{i}" for i in range(5)}
    same_codes(got, reference, lambda i: i.split("/")[1])
    assert (got["spk/s2"]["text"], got["spk/s2"]["score"], got["spk/s2"]["txt"]) == ("two", 2, "TWO")
    again = run("encode", "shards/*.tar", "tok", "-q", K, "--keep-columns", "text,score,txt")
    assert again.exit_code == 0 and "5 already there" in again.output
    with_split = run("encode", "shards/train-{000000..000002}.tar", "arr", "-q", K, "--shard-index", "1",
                     "--num-shards", "2")
    assert with_split.exit_code == 0
    assert 0 < len(rows(tmp_path / "arr")) < 5


def test_webdataset_bad_members_are_error_rows_and_a_changed_item_is_refused(run, tmp_path, reference):
    with tarfile.open(tmp_path / "t.tar", "w") as tar:
        for name, data in [("a.flac", (tmp_path / "clips/s0.flac").read_bytes()), ("b.wav", b"RIFF garbage"),
                           ("c.json", b"{}"), ("d.flac", (tmp_path / "clips/s4.flac").read_bytes())]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    result = run("encode", "t.tar", "tok", "-q", K)
    assert result.exit_code == 1
    got = rows(tmp_path / "tok")
    assert set(got) == {"a", "d"} and got["d"]["codes"] == reference["s4"]["codes"]
    errors = (tmp_path / "tok.errors.jsonl").read_text()
    assert '"b"' in errors and "format not recognised" in errors  # c has no audio member: no item
    with tarfile.open(tmp_path / "t.tar", "w") as tar:  # the same key, other audio
        data = (tmp_path / "clips/s3.ogg").read_bytes()
        info = tarfile.TarInfo("a.ogg")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    changed = run("encode", "t.tar", "tok", "-q", K)
    assert changed.exit_code == 2 and "changed since they were encoded" in changed.output
    (tmp_path / "junk.tar").write_bytes(b"\0" * 10 + b"x" * 1000)
    junk = run("encode", "junk.tar", "tok2", "-q", K)
    assert junk.exit_code == 1 and "junk.tar" in junk.output and "Traceback" not in junk.output


def test_lhotse_cuts_encode_their_region_and_channel(run, tmp_path, reference):
    lhotse = pytest.importorskip("lhotse")
    rec = lhotse.Recording.from_file(str(tmp_path / "clips/s4.flac"), recording_id="r4")
    stereo = lhotse.Recording.from_file(str(tmp_path / "clips/s1.wav"), recording_id="r1")
    sup = lhotse.SupervisionSegment("sup", "r4", start=0.2, duration=0.6, text="hello there", speaker="spk9")
    cuts = lhotse.CutSet.from_cuts([
        lhotse.MonoCut("c-mid", start=0.2, duration=0.6, channel=0, recording=rec, supervisions=[sup]),
        lhotse.MonoCut("c-right", start=0.1, duration=0.3, channel=1, recording=stereo),
    ])
    cuts.to_file(str(tmp_path / "cuts.jsonl.gz"))
    result = run("encode", "cuts.jsonl.gz", "tok", "-q", K, "--keep-columns", "text,speaker")
    assert result.exit_code == 0, result.output
    got = rows(tmp_path / "tok")
    assert set(got) == {"c-mid", "c-right"} and got["c-mid"]["text"] == "hello there"
    assert got["c-mid"]["speaker"] == "spk9" and got["c-right"]["text"] is None
    # The same regions cut out by hand and encoded as files.
    audio, rate = sf.read(tmp_path / "clips/s4.flac", dtype="float32")
    sf.write(tmp_path / "mid.wav", audio[4410:4410 + 13230], rate, subtype="FLOAT")
    audio, rate = sf.read(tmp_path / "clips/s1.wav", dtype="float32")
    sf.write(tmp_path / "right.wav", audio[2400:9600, 1], rate, subtype="FLOAT")
    assert run("encode", "mid.wav", "right.wav", "cut_ref", "-q", K).exit_code == 0
    ref = rows(tmp_path / "cut_ref")
    assert got["c-mid"]["codes"] == ref["mid.wav"]["codes"] and got["c-mid"]["num_samples"] == ref["mid.wav"][
        "num_samples"]
    assert got["c-right"]["codes"] == ref["right.wav"]["codes"]
    again = run("encode", "cuts.jsonl.gz", "tok", "-q", K, "--keep-columns", "text,speaker")
    assert again.exit_code == 0 and "2 already there" in again.output
    lhotse.RecordingSet.from_recordings([rec, stereo]).to_file(str(tmp_path / "recs.jsonl"))
    whole = run("encode", "recs.jsonl", "recs", "-q", K)
    assert whole.exit_code == 0, whole.output
    recs = rows(tmp_path / "recs")
    assert recs["r4"]["codes"] == reference["s4"]["codes"] and recs["r1"]["codes"] == reference["s1"]["codes"]


def test_a_cut_row_stores_the_channel_the_cut_reads(run, tmp_path, reference):
    lhotse = pytest.importorskip("lhotse")
    from lhotse.cut import MultiCut

    stereo = lhotse.Recording.from_file(str(tmp_path / "clips/s1.wav"), recording_id="r1")
    lhotse.CutSet.from_cuts([
        lhotse.MonoCut("left", start=0.0, duration=0.4, channel=0, recording=stereo),
        lhotse.MonoCut("right", start=0.0, duration=0.4, channel=1, recording=stereo),
        MultiCut("both", start=0.0, duration=0.4, channel=[1, 0], recording=stereo),
    ]).to_file(str(tmp_path / "cuts.jsonl"))
    assert run("encode", "cuts.jsonl", "mix", "-q", K).exit_code == 0
    assert {i: r["channel"] for i, r in rows(tmp_path / "mix").items()} == {"left": 0, "right": 1, "both": -1}
    assert run("encode", "cuts.jsonl", "each", "-q", K, "--channels", "each").exit_code == 0
    each = sorted((r["id"], r["channel"]) for r in pq.read_table(tmp_path / "each").to_pylist())
    assert each == [("both", 0), ("both", 1), ("left", 0), ("right", 1)]
    # The row named channel 1 holds channel 1's audio: the same codes as that channel cut out as a file.
    audio, rate = sf.read(tmp_path / "clips/s1.wav", dtype="float32")
    sf.write(tmp_path / "ch1.wav", audio[:9600, 1], rate, subtype="FLOAT")
    assert run("encode", "ch1.wav", "ch1", "-q", K).exit_code == 0
    by_channel = {(r["id"], r["channel"]): r["codes"] for r in pq.read_table(tmp_path / "each").to_pylist()}
    assert by_channel[("both", 1)] == by_channel[("right", 1)] == rows(tmp_path / "ch1")["ch1.wav"]["codes"]


def test_lhotse_missing_gives_an_install_hint(run, tmp_path, monkeypatch):
    import builtins

    (tmp_path / "cuts.jsonl").write_text(json.dumps({"id": "c", "type": "MonoCut", "start": 0, "duration": 1,
                                                     "channel": 0}) + "\n")
    real = builtins.__import__

    def no_lhotse(name, *args, **kwargs):
        if name.startswith("lhotse"):
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_lhotse)
    result = run("encode", "cuts.jsonl", "out", "-q", K)
    assert result.exit_code == 2 and "pip install 'mimi-cli[lhotse]'" in result.output


def test_a_cut_region_is_numpy_exact(tmp_path):
    """The region lhotse reads is the samples [start*rate, (start+duration)*rate) of the file."""
    lhotse = pytest.importorskip("lhotse")
    write_corpus(tmp_path, CLIPS[4:])
    from mimi_cli.formats.cuts import LhotseItem

    rec = lhotse.Recording.from_file(str(tmp_path / "clips/s4.flac"))
    cut = lhotse.MonoCut("c", start=0.5, duration=0.2, channel=0, recording=rec)
    audio, rate = LhotseItem(json.dumps(cut.to_dict())).load()
    whole, _ = sf.read(tmp_path / "clips/s4.flac", dtype="float32")
    assert rate == 22050 and np.array_equal(audio[0], whole[11025:11025 + 4410])


def test_containers_named_by_uri(run, tmp_path, reference):
    """A tar and a directory of audio Parquet on a pyarrow filesystem (file:// here, s3:// alike)."""
    (tmp_path / "shards").mkdir()
    webdataset_shards(tmp_path, "shards/%d.tar", [["s0", "s1"]])
    hf_parquet(tmp_path, tmp_path / "hf/data/train.parquet", ["clips/s3.ogg", "clips/s4.flac"])
    result = run("encode", f"file://{tmp_path}/shards/0.tar", f"file://{tmp_path}/hf", "tok", "-q", K)
    assert result.exit_code == 0, result.output
    got = rows(tmp_path / "tok")
    assert set(got) == {"spk/s0", "spk/s1", "s3.ogg", "s4.flac"}
    same_codes(got, reference, lambda i: i.split("/")[-1].split(".")[0])


def test_a_table_with_two_audio_columns_needs_audio_column(run, tmp_path, reference):
    struct = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    near = pa.array([{"bytes": (tmp_path / "clips/s0.flac").read_bytes(), "path": "a.flac"}], struct)
    far = pa.array([{"bytes": (tmp_path / "clips/s4.flac").read_bytes(), "path": "b.flac"}], struct)
    pq.write_table(pa.table({"near": near, "far": far}), tmp_path / "two.parquet")
    ambiguous = run("encode", "two.parquet", "out", "-q", K)
    assert ambiguous.exit_code == 2 and "--audio-column" in ambiguous.output
    chosen = run("encode", "two.parquet", "out", "-q", K, "--audio-column", "far")
    assert chosen.exit_code == 0, chosen.output
    assert rows(tmp_path / "out")["b.flac"]["codes"] == reference["s4"]["codes"]
