"""Containers read through FFmpeg, from the command line: every kind of source reads them, a
directory walk says what it leaves out, and stream-encode takes them on stdin."""
from __future__ import annotations

import io
import shutil
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mimi_cli.formats.audio import decode_24k
from mimi_cli.formats.pcm import StreamFormatError
from mimi_cli.streaming import encode_stream
from tests.media_helpers import containers, ffmpeg, needs_ffmpeg, reference_wav

pytestmark = needs_ffmpeg


def test_every_kind_of_source_reads_them(made, run, tmp_path):
    """A directory, a tar shard, HF audio Parquet, a manifest and a lhotse manifest, one encode each."""
    names = [p.name for p in containers(made)]
    expected = {}
    for path in containers(made):
        expected[path.name] = decode_24k(path, mix=True)[0][0]
    # tar: members named KEY.EXT
    with tarfile.open(tmp_path / "shard.tar", "w") as tar:
        for path in containers(made):
            tar.add(path, arcname=path.name.replace(".", "_", 1) + path.suffix)
    # HF audio Parquet: the bytes in the audio struct
    audio = pa.array([{"bytes": p.read_bytes(), "path": p.name} for p in containers(made)],
                     pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    pq.write_table(pa.table({"audio": audio}), tmp_path / "hf.parquet")
    (tmp_path / "list.tsv").write_text("path\n" + "".join(f"{made / 'in' / n}\n" for n in names))
    pytest.importorskip("lhotse")
    from lhotse import Recording, RecordingSet

    recordings = [Recording.from_file(p, recording_id=p.name) for p in containers(made)]
    RecordingSet.from_recordings(recordings).to_file(tmp_path / "rec.jsonl")

    for source in [made / "in", tmp_path / "shard.tar", tmp_path / "hf.parquet", tmp_path / "list.tsv",
                   tmp_path / "rec.jsonl"]:
        out = tmp_path / f"{source.name}.parquet"
        result = run("encode", source, out, "--quiet", "--audio-root", made)
        assert result.exit_code == 0, (source, result.output)
        table = pq.read_table(out)
        assert table.num_rows == len(names), source
        assert table.column("num_samples").to_pylist() == [expected[_name(i, names)].size
                                                          for i in table.column("id").to_pylist()], source


def _name(ident: str, names: list[str]) -> str:
    """The file a row's id names, in any source kind's naming."""
    for n in names:
        if ident in (n, n.replace(".", "_", 1), n.rsplit(".", 1)[0]) or ident.endswith("/" + n):
            return n
    raise AssertionError(ident)


def test_a_directory_walk_says_what_it_leaves_out(made, run, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    shutil.copy(made / "in" / "aac.m4a", folder / "x.m4a")
    (folder / "notes.txt").write_text("not audio")
    (folder / "x.xyz").write_bytes(b"\0" * 100)
    result = run("encode", folder, "out.parquet")
    assert result.exit_code == 0
    assert "skipped 2 files not named as audio (notes.txt, x.xyz)" in result.stderr
    empty = tmp_path / "no_audio"
    empty.mkdir()
    (empty / "readme.md").write_text("hi")
    result = run("encode", empty, "out2.parquet")
    assert result.exit_code == 1 and "holds no audio files: 1 file not named as audio (readme.md)" in result.output


def test_stream_encode_takes_containers_on_stdin(made, run, tmp_path):
    """Piped as they are: the codes of the same audio piped as ffmpeg's float WAV."""
    for name in ["opus.webm", "adts.aac", "flac.mka"]:
        path = made / "in" / name
        piped = run("stream-encode", "-", "-", "--output-format", "text", input=path.read_bytes())
        assert piped.exit_code == 0, (name, piped.output)
        wav = run("stream-encode", "-", "-", "--output-format", "text", input=reference_wav(path).read_bytes())
        assert piped.stdout == wav.stdout and piped.stdout.count("\n") > 30, name
    ffmpeg("-i", str(made / "source.wav"), "-c:a", "libopus", "-f", "ogg", str(tmp_path / "x.ogg"))
    ffmpeg("-i", str(made / "source.wav"), "-c:a", "libmp3lame", str(tmp_path / "x.mp3"))
    ffmpeg("-i", str(made / "source.wav"), "-c:a", "flac", str(tmp_path / "x.flac"))
    for path in [tmp_path / "x.ogg", tmp_path / "x.mp3", tmp_path / "x.flac"]:
        piped = run("stream-encode", "-", "-", "--output-format", "text", input=path.read_bytes())
        wav = run("stream-encode", "-", "-", "--output-format", "text", input=reference_wav(path).read_bytes())
        assert piped.exit_code == 0 and piped.stdout == wav.stdout, path.name


def test_an_ogg_cut_short_on_a_pipe_keeps_what_came(made, run, tmp_path):
    """A live stream that stops is a stream that ended: its frames are kept, exit 0."""
    ffmpeg("-i", str(made / "source.wav"), "-c:a", "libopus", "-f", "ogg", str(tmp_path / "x.ogg"))
    data = (tmp_path / "x.ogg").read_bytes()
    result = run("stream-encode", "-", "-", "--output-format", "text", input=data[:len(data) // 2])
    assert result.exit_code == 0 and result.stdout.count("\n") > 10


def test_a_shard_says_what_it_leaves_out(made, run, tmp_path):
    with tarfile.open(tmp_path / "some.tar", "w") as tar:
        tar.add(made / "in" / "aac.m4a", arcname="k1.m4a")
        tar.add(made / "in" / "aac.m4a", arcname="k2.caption")
    result = run("encode", tmp_path / "some.tar", "a.parquet")
    assert result.exit_code == 0 and "skipped 1 member not named as audio (k2.caption)" in result.stderr
    with tarfile.open(tmp_path / "none.tar", "w") as tar:
        tar.add(made / "in" / "aac.m4a", arcname="k1.bin")
    result = run("encode", tmp_path / "none.tar", "b.parquet")
    assert result.exit_code == 1 and "holds no audio members: 1 member not named as audio (k1.bin)" in result.output


def test_stream_encode_reads_an_mp4_by_name_but_not_from_a_pipe(made, run, tiny):
    path = made / "in" / "aac.m4a"
    named = run("stream-encode", path, "-", "--output-format", "text")
    wav = run("stream-encode", "-", "-", "--output-format", "text", input=reference_wav(path).read_bytes())
    assert named.exit_code == 0 and named.stdout == wav.stdout

    class Pipe(io.RawIOBase):  # what a pipe is to stream-encode: bytes, no going back
        def __init__(self, data: bytes) -> None:
            self.data = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def readinto(self, b) -> int:
            return self.data.readinto(b)

    with pytest.raises(StreamFormatError, match="MP4/M4A cannot be read from a pipe"):
        encode_stream(tiny, Pipe(path.read_bytes()), io.BytesIO())


def test_lhotse_reads_as_before_outside_mimis_loads(made, run, tmp_path):
    """mimi's lhotse backend wraps the one in place: lhotse's own calls, in this process, after an
    encode (one of whose items failed), go to the backend it wraps."""
    pytest.importorskip("lhotse")
    from lhotse import Recording, RecordingSet
    from lhotse.audio.backend import get_current_audio_backend

    recordings = [Recording.from_file(made / "in" / "aac.m4a", recording_id="good")]
    broken = tmp_path / "broken.m4a"
    broken.write_bytes((made / "in" / "aac.m4a").read_bytes()[:3000])
    recordings.append(Recording.from_file(made / "in" / "aac.m4a", recording_id="bad").with_path_prefix(""))
    RecordingSet.from_recordings(recordings).to_file(tmp_path / "rec.jsonl")
    lines = (tmp_path / "rec.jsonl").read_text().splitlines()
    lines[1] = lines[1].replace(str(made / "in" / "aac.m4a"), str(broken))
    (tmp_path / "rec.jsonl").write_text("\n".join(lines) + "\n")
    before = get_current_audio_backend()
    before = getattr(before, "previous", before)  # an earlier encode in this process wrapped it
    result = run("encode", tmp_path / "rec.jsonl", "out.parquet", "--audio-root", "/")
    assert result.exit_code == 1  # the broken one is an error row
    wrapper = get_current_audio_backend()
    assert type(wrapper).__name__ == "MimiAudioBackend" and wrapper.previous is before
    assert Recording.from_file(made / "in" / "alac.m4a").num_samples > 0  # lhotse's info, as before
