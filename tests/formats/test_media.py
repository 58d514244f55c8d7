"""Containers read through FFmpeg (formats/media.py), held to the `ffmpeg` command line: files
made by the real `ffmpeg` decode to the samples `ffmpeg -i X -c:a pcm_f32le` writes and encode
to the same codes on every frame, in every kind of source; what is not on the lists is refused."""
from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf
import torch

from mimi_cli.formats import media
from mimi_cli.formats.audio import AudioError, decode_24k, probe, probe_bytes
from tests.helpers import full_codec
from tests.media_helpers import containers, ffmpeg, needs_ffmpeg, reference_wav

pytestmark = needs_ffmpeg


def test_each_container_decodes_to_the_samples_ffmpeg_writes(made):
    for path in containers(made):
        with pytest.raises(sf.LibsndfileError):  # libsndfile reads none of these: FFmpeg is what reads them
            sf.info(str(path))
        ours, info = decode_24k(path, mix=False)
        theirs, their_info = decode_24k(reference_wav(path), mix=False)
        assert (info.sample_rate, info.channels, info.num_frames) == \
            (their_info.sample_rate, their_info.channels, their_info.num_frames), path.name
        # Equal up to float rounding: FFmpeg inside PyAV and Debian's ffmpeg are different releases.
        assert np.abs(ours - theirs).max() <= 2e-6, path.name
        head = probe(path)
        assert head.sample_rate == info.sample_rate and abs(head.duration_s - info.duration_s) < 0.1, path.name
        assert probe_bytes(path.read_bytes()).sample_rate == info.sample_rate


def test_codes_equal_those_of_ffmpegs_float_wav_on_every_frame(made):
    """Mimi's full-size architecture, on the encoder delay that AAC adds and FFmpeg trims too."""
    codec = full_codec(0)
    for path in containers(made):
        ours = torch.from_numpy(decode_24k(path, mix=True)[0])[None]
        theirs = torch.from_numpy(decode_24k(reference_wav(path), mix=True)[0])[None]
        assert torch.equal(codec.encode(ours, 8), codec.encode(theirs, 8)), path.name


# --- what is not on the lists -------------------------------------------------------------------

def test_ffmpeg_sees_only_the_containers_on_the_list(tmp_path):
    """Playlists, concat scripts and other formats FFmpeg would probe are never handed to it."""
    for name, data in [("list.m4a", b"#EXTM3U\n#EXTINF:1,\nhttp://127.0.0.1:9/x.aac\n"),
                       ("concat.mp4", b"ffconcat version 1.0\nfile /etc/passwd\n"),
                       ("x.webm", b"<html>not audio</html>" * 10)]:
        (tmp_path / name).write_bytes(data)
        with pytest.raises(AudioError, match="format not recognised"):
            decode_24k(tmp_path / name, mix=True)
    assert media.demuxer_for(b"#EXTM3U\n") is None and media.stream_demuxer_for(b"#EXTM3U\n") is None


def test_an_mp4_that_points_at_other_files_reads_none_of_them(made, tmp_path):
    """An MP4 data reference (dref) naming another file: FFmpeg may open nothing beyond the file."""
    data = (made / "in" / "aac.mp4").read_bytes()
    # Point the track's data reference at /etc/hostname instead of "self-contained".
    at = data.find(b"url \x00\x00\x00\x01")
    assert at > 0
    alias = b"alis\x00\x00\x00\x00/etc/hostname\x00"
    crafted = data[:at - 4] + (len(alias) + 4).to_bytes(4, "big") + alias + data[at + 8:]
    (tmp_path / "dref.mp4").write_bytes(crafted)
    try:
        pcm, _ = decode_24k(tmp_path / "dref.mp4", mix=True)
    except AudioError:
        return  # refused: as good as reading the file itself
    assert pcm.size > 0  # read from the file itself, not from the file it names


def test_a_codec_not_on_the_list_is_refused(tmp_path):
    ffmpeg("-f", "lavfi", "-i", "sine=f=300:d=1", "-c:a", "pcm_s16le", "-f", "matroska", str(tmp_path / "ok.mka"))
    assert decode_24k(tmp_path / "ok.mka", mix=True)[0].size == 24000
    ffmpeg("-f", "lavfi", "-i", "sine=f=300:d=1", "-c:a", "adpcm_ima_wav", "-f", "matroska", str(tmp_path / "no.mka"))
    with pytest.raises(AudioError, match="adpcm_ima_wav, which mimi does not decode"):
        decode_24k(tmp_path / "no.mka", mix=True)


def test_a_video_file_gives_its_audio_and_never_decodes_the_video(tmp_path):
    ffmpeg("-f", "lavfi", "-i", "testsrc=d=1:s=64x48:r=10", "-f", "lavfi", "-i", "sine=f=300:d=1",
           "-c:v", "mpeg4", "-c:a", "aac", "-shortest", str(tmp_path / "clip.mp4"))
    pcm, info = decode_24k(tmp_path / "clip.mp4", mix=True)
    assert info.sample_rate == 44100 and abs(pcm.size - 24000) < 2048


@pytest.mark.parametrize("name", ["aac.m4a", "opus.webm", "wmav2.wma", "flac.mka"])
def test_a_file_cut_short_is_an_error_not_short_audio(made, tmp_path, name):
    """An interrupted download: the container states a length the data does not reach."""
    data = (made / "in" / name).read_bytes()
    cut = tmp_path / name
    cut.write_bytes(data[:len(data) * 2 // 3])
    with pytest.raises(AudioError, match="ends early|damaged|truncated"):
        decode_24k(cut, mix=True)


def test_max_duration_holds_whatever_the_header_says(made):
    with pytest.raises(AudioError, match="over --max-duration"):
        decode_24k(made / "in" / "aac.m4a", mix=True, max_seconds=1.0)
    with pytest.raises(AudioError, match="over --max-duration"):  # ADTS states no length: counted as read
        decode_24k(io.BytesIO((made / "in" / "adts.aac").read_bytes()), mix=True, max_seconds=1.0)
