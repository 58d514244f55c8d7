"""Containers read through FFmpeg (formats/media.py), held to the `ffmpeg` command line: files
made by the real `ffmpeg` decode to the samples `ffmpeg -i X -c:a pcm_f32le` writes and encode
to the same codes on every frame, in every kind of source; what is not on the lists is refused."""
from __future__ import annotations

import io
import struct

import numpy as np
import pytest
import soundfile as sf
import torch

from mimi_cli.formats import media
from mimi_cli.formats.audio import AudioError, decode_24k, probe, probe_bytes
from tests.helpers import full_codec
from tests.media_helpers import containers, ffmpeg, needs_ffmpeg, reference_wav


@needs_ffmpeg
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


@needs_ffmpeg
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


@needs_ffmpeg
def test_an_mp4_that_points_at_another_file_reads_only_itself(made, tmp_path, monkeypatch):
    """An MP4 whose data reference names another file: FFmpeg opens nothing beyond the file
    (every nested open would reach mimi's refusal), and the audio is the file's own."""
    data = (made / "in" / "aac.mp4").read_bytes()
    at = data.find(b"url \x00\x00\x00\x01")  # the track's "self-contained" data reference
    assert at > 0
    target = tmp_path / "secret.wav"
    sf.write(target, np.ones(44100, np.float32) * 0.5, 44100)
    entry = b"url \x00\x00\x00\x00" + str(target).encode() + b"\x00"
    box = (len(entry) + 4).to_bytes(4, "big") + entry
    crafted = _grown(data, at, len(box) - 12)
    (tmp_path / "dref.mp4").write_bytes(crafted[:at - 4] + box + crafted[at + 8:])
    asked = []
    monkeypatch.setattr(media, "_refuse_open", lambda url, flags, options: asked.append(url))
    ours, _ = decode_24k(tmp_path / "dref.mp4", mix=True)
    assert not asked and np.array_equal(ours, decode_24k(made / "in" / "aac.mp4", mix=True)[0])
    monkeypatch.undo()
    with pytest.raises(AudioError, match="asks to open another file"):  # what a nested open would get
        media._refuse_open("file:/etc/passwd", 1, {})


def _grown(data: bytes, at: int, delta: int) -> bytes:
    """`data` with every MP4 box that encloses byte `at` (moov ... dref) `delta` bytes longer."""
    out = bytearray(data)
    header = {b"moov": 0, b"trak": 0, b"mdia": 0, b"minf": 0, b"dinf": 0, b"dref": 8}

    def walk(start: int, end: int) -> None:
        i = start
        while i + 8 <= end:
            size, kind = int.from_bytes(data[i:i + 4], "big"), data[i + 4:i + 8]
            if size < 8:
                return
            if i < at < i + size and kind in header:
                out[i:i + 4] = (size + delta).to_bytes(4, "big")
                walk(i + 8 + header[kind], i + size)
            i += size

    walk(0, len(data))
    return bytes(out)


@needs_ffmpeg
def test_a_codec_not_on_the_list_is_refused(tmp_path):
    ffmpeg("-f", "lavfi", "-i", "sine=f=300:d=1", "-c:a", "pcm_s16le", "-f", "matroska", str(tmp_path / "ok.mka"))
    assert decode_24k(tmp_path / "ok.mka", mix=True)[0].size == 24000
    ffmpeg("-f", "lavfi", "-i", "sine=f=300:d=1", "-c:a", "adpcm_ima_wav", "-f", "matroska", str(tmp_path / "no.mka"))
    with pytest.raises(AudioError, match="adpcm_ima_wav, which mimi does not decode"):
        decode_24k(tmp_path / "no.mka", mix=True)


@needs_ffmpeg
def test_a_video_file_gives_its_audio(tmp_path):
    ffmpeg("-f", "lavfi", "-i", "testsrc=d=1:s=64x48:r=10", "-f", "lavfi", "-i", "sine=f=300:d=1",
           "-c:v", "mpeg4", "-c:a", "aac", "-shortest", str(tmp_path / "clip.mp4"))
    pcm, info = decode_24k(tmp_path / "clip.mp4", mix=True)
    assert info.sample_rate == 44100 and abs(pcm.size - 24000) < 2048


@needs_ffmpeg
@pytest.mark.parametrize("name", ["aac.m4a", "opus.webm", "wmav2.wma", "flac.mka"])
def test_a_file_cut_short_is_an_error_not_short_audio(made, tmp_path, name):
    """An interrupted download: the container states a length the data does not reach."""
    data = (made / "in" / name).read_bytes()
    cut = tmp_path / name
    cut.write_bytes(data[:len(data) * 2 // 3])
    with pytest.raises(AudioError, match="ends early|damaged|truncated"):
        decode_24k(cut, mix=True)


@needs_ffmpeg
@needs_ffmpeg
def test_an_adts_file_that_starts_quiet_is_not_short(tmp_path):
    """ADTS states no length; FFmpeg's guess from the first frames' bit rate is no reason to
    call a file truncated (nor too long)."""
    ffmpeg("-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono:d=20", "-f", "lavfi", "-i",
           "anoisesrc=r=16000:d=5:a=0.3", "-filter_complex", "[0][1]concat=n=2:v=0:a=1", "-c:a", "aac",
           "-f", "adts", str(tmp_path / "quiet.aac"))
    pcm, info = decode_24k(tmp_path / "quiet.aac", mix=True, max_seconds=30)
    assert abs(pcm.size / 24000 - 25) < 0.2


@needs_ffmpeg
def test_eight_channels_and_more_decode_to_every_channel(tmp_path):
    ffmpeg("-f", "lavfi", "-i", "sine=f=300:d=1", "-filter_complex",
           "[0]asplit=8[a][b][c][d][e][f][g][h];[a][b][c][d][e][f][g][h]join=inputs=8:channel_layout=7.1[o]",
           "-map", "[o]", "-c:a", "aac", str(tmp_path / "71.m4a"))
    pcm, info = decode_24k(tmp_path / "71.m4a", mix=False)
    theirs, _ = decode_24k(reference_wav_in(tmp_path / "71.m4a"), mix=False)
    assert info.channels == 8 and pcm.shape == theirs.shape and np.abs(pcm - theirs).max() <= 2e-6


def reference_wav_in(path):
    out = path.with_suffix(".ref.wav")
    ffmpeg("-i", str(path), "-c:a", "pcm_f32le", str(out))
    return out


def test_a_region_is_read_as_lhotse_counts_it(made):
    """lhotse's region of a recording in a container: samples [start, start + n) of the whole."""
    from lhotse.utils import compute_num_samples

    from mimi_cli.formats.audio import read_region
    from mimi_cli.formats.media import MediaReader

    path = made / "in" / "aac.m4a"
    with MediaReader(path, "mov") as m:
        whole = np.concatenate(list(m.blocks()))
    region, rate = read_region(path, 0.5, 0.25, ValueError("libsndfile's"), compute_num_samples)
    start, n = compute_num_samples(0.5, rate), compute_num_samples(0.25, rate)
    assert rate == 44100 and np.array_equal(region, whole[start:start + n].T)


def test_a_pushed_stream_that_is_dropped_ends_its_thread(made):
    from mimi_cli.formats.media import PushedStream

    stream = PushedStream()
    data = (made / "in" / "opus.webm").read_bytes()
    stream.push(data[:len(data) // 2])
    thread = stream._thread
    assert thread.is_alive()  # waiting for more
    stream.abort()
    thread.join(5)
    assert not thread.is_alive()


def test_pcm_of_minus_ones_is_not_taken_for_mp3_or_aac():
    raw = b"\xff" * 64  # s16le samples of -1, as a quiet raw stream starts
    assert media.stream_demuxer_for(raw[:12]) is None and media.demuxer_for(raw[:12]) is None
    assert media.stream_demuxer_for(b"\xff\xfb\x90\x64" + bytes(8)) == "mp3"  # a real MP3 frame header


@needs_ffmpeg
def test_max_duration_holds_whatever_the_header_says(made):
    with pytest.raises(AudioError, match="over --max-duration"):
        decode_24k(made / "in" / "aac.m4a", mix=True, max_seconds=1.0)
    with pytest.raises(AudioError, match="over --max-duration"):  # ADTS states no length: counted as read
        decode_24k(io.BytesIO((made / "in" / "adts.aac").read_bytes()), mix=True, max_seconds=1.0)


# --- what hostile containers cost (found by attacking the readers) --------------------------------

@needs_ffmpeg
def test_a_sample_table_claiming_millions_of_samples_is_refused_before_ffmpeg_indexes_it(made, tmp_path):
    """A 10 KB MP4 whose constant sample size stands for 80 million samples: FFmpeg would build
    an index entry for each (gigabytes) before reading one."""
    data = bytearray((made / "in" / "aac.m4a").read_bytes())
    at = data.find(b"stsz") + 4 + 4  # past the type, version and flags
    data[at:at + 8] = (10).to_bytes(4, "big") + (80_000_000).to_bytes(4, "big")
    (tmp_path / "bomb.m4a").write_bytes(bytes(data))
    with pytest.raises(AudioError, match="claims 80000000 samples"):
        decode_24k(tmp_path / "bomb.m4a", mix=True)


def _ebml(ident: bytes, body: bytes) -> bytes:
    n = len(body)
    size = next(((1 << (7 * k)) | n).to_bytes(k, "big") for k in range(1, 9) if n < (1 << (7 * k)) - 1)
    return ident + size + body


def test_packets_whose_samples_are_all_discarded_still_count_against_a_message(monkeypatch):
    """WebM/Opus of 120 ms packets whose DiscardPadding drops all they decode to: FFmpeg works on
    each, none of it comes out, so a push counts packets, not only samples."""
    head = b"OpusHead" + bytes([1, 1]) + (312).to_bytes(2, "little") + (48000).to_bytes(4, "little") + bytes(3)
    unknown = b"\x01\xff\xff\xff\xff\xff\xff\xff"
    ebml = _ebml(b"\x1a\x45\xdf\xa3", _ebml(b"\x42\x82", b"webm"))
    audio = _ebml(b"\xe1", _ebml(b"\xb5", struct.pack(">d", 48000.0)) + _ebml(b"\x9f", b"\x01"))
    track = _ebml(b"\xae", _ebml(b"\xd7", b"\x01") + _ebml(b"\x83", b"\x02") + _ebml(b"\x86", b"A_OPUS")
                  + _ebml(b"\x63\xa2", head) + audio)
    body = bytearray()
    for i in range(600):  # 72 s of 2-byte packets of packet-loss concealment
        if i % 250 == 0:
            body += b"\x1f\x43\xb6\x75" + unknown + _ebml(b"\xe7", (i * 120).to_bytes(4, "big"))
        block = b"\x81" + struct.pack(">h", (i % 250) * 120) + b"\x00" + bytes([(31 << 3) | 3, 6])
        body += _ebml(b"\xa0", _ebml(b"\xa1", block) + _ebml(b"\x75\xa2", (120_000_000).to_bytes(4, "big")))
    data = ebml + b"\x18\x53\x80\x67" + unknown + _ebml(b"\x16\x54\xae\x6b", track) + bytes(body)
    stream = media.PushedStream()
    with pytest.raises(AudioError, match="over 5 s of audio"):
        stream.push(data)


def test_a_stream_that_never_completes_a_packet_is_refused_before_memory_grows(monkeypatch):
    """Ogg pages that continue one packet forever: FFmpeg would hold every byte of it."""
    monkeypatch.setattr(media, "MAX_SILENT_BYTES", 1 << 20)

    def page(sequence: int, body: bytes, lacing: list[int], flags: int = 0) -> bytes:
        header = b"OggS\x00" + bytes([flags]) + (0).to_bytes(8, "little") + (7).to_bytes(4, "little") \
            + sequence.to_bytes(4, "little") + bytes(4) + bytes([len(lacing)]) + bytes(lacing)
        crc = _ogg_crc(header + body)
        return header[:22] + crc.to_bytes(4, "little") + header[26:] + body

    head = b"OpusHead" + bytes([1, 1]) + (312).to_bytes(2, "little") + (48000).to_bytes(4, "little") + bytes(3)
    tags = b"OpusTags" + (0).to_bytes(4, "little") + (0).to_bytes(4, "little")
    data = page(0, head, [len(head)], 2) + page(1, tags, [len(tags)])
    data += b"".join(page(2 + i, bytes(255 * 255), [255] * 255, 1 if i else 0) for i in range(40))  # 2.6 MB
    stream = media.PushedStream()
    with pytest.raises(AudioError, match="decoded to no audio"):
        for i in range(0, len(data), 65536):
            stream.push(data[i:i + 65536])
        stream.close()


def _ogg_crc(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7 if crc & 0x80000000 else crc << 1) & 0xFFFFFFFF
    return crc


@needs_ffmpeg
def test_an_mp3_that_states_no_length_is_read_to_its_end(tmp_path):
    """libsndfile reads an MP3 without a Xing/Info/VBRI header only as far as it guesses from the
    first frame's bit rate: a quarter of a VBR file whose loud start is followed by quiet, with
    no error. Such a file is read by FFmpeg, to where it ends, as `ffmpeg -i X` reads it."""
    wav = tmp_path / "a.wav"
    noise = np.random.default_rng(0).standard_normal(8000 * 4) * 0.3
    sf.write(wav, np.concatenate([noise, np.zeros(8000 * 16)]).astype(np.float32), 8000)
    path = tmp_path / "vbr.mp3"
    ffmpeg("-i", str(wav), "-c:a", "libmp3lame", "-q:a", "9", "-write_xing", "0", str(path))
    assert sf.info(str(path)).duration < 12  # what libsndfile believes, and would stop at
    theirs, _ = decode_24k(reference_wav(path), mix=True)
    for source in (path, io.BytesIO(path.read_bytes())):
        ours, info = decode_24k(source, mix=True)
        assert ours.shape == theirs.shape and info.num_frames >= 8000 * 20
        assert np.abs(ours - theirs).max() <= 2e-6


def test_a_reader_left_open_at_exit_is_finalised_quietly(tmp_path):
    """A generator left paused is closed as the interpreter ends: its GeneratorExit passes the
    reader's except clause, which must not import anything then (it printed "Exception ignored
    ... reading this container needs PyAV")."""
    import subprocess
    import sys

    buf = io.BytesIO()
    sf.write(buf, np.zeros(24000 * 3, np.float32), 24000, format="FLAC", subtype="PCM_16")
    flac = bytearray(buf.getvalue())
    flac[8 + 13] &= 0xF0  # STREAMINFO's total sample count zeroed: FFmpeg reads it
    flac[8 + 14:8 + 18] = bytes(4)
    (tmp_path / "piped.flac").write_bytes(bytes(flac))
    script = ("import sys\nfrom mimi_cli.formats.audio import open_24k\n"
              "audio = open_24k(sys.argv[1], True)\nnext(iter(audio))\nprint('read')\n")
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "piped.flac")], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and done.stdout == "read\n" and done.stderr == ""


@needs_ffmpeg
def test_what_a_container_drops_counts_as_decoded(tmp_path):
    """Every packet of this WebM says to drop all it decodes (DiscardPadding): FFmpeg decodes a
    minute of Opus and keeps nothing. What is decoded and dropped counts against what the item
    may decode, so a 10 MB file of such packets (days of Opus) is refused, not decoded to its end."""
    from tests.media_helpers import discard_every_block

    ffmpeg("-f", "lavfi", "-i", "sine=f=300:r=48000:d=60", "-c:a", "libopus", "-b:a", "16k", "-frame_duration", "20",
           "-f", "webm", "-live", "1", str(tmp_path / "live.webm"))
    crafted = discard_every_block((tmp_path / "live.webm").read_bytes(), 20_000_000)
    audio, _ = decode_24k(tmp_path / "live.webm", mix=True, max_seconds=10 ** 4)
    assert audio.shape[1] == 24000 * 60  # made right: the file as written decodes whole
    with pytest.raises(AudioError, match="drops more audio than the item may decode"):
        decode_24k(io.BytesIO(crafted), mix=True, max_seconds=10)


def test_an_alac_header_of_overlong_frames_is_refused_before_ffmpeg_opens_it(made, tmp_path, monkeypatch):
    """FFmpeg's ALAC decoder allocates for the longest frame its header gives when it opens the
    file (up to 16.7 M samples a channel: 0.5 GB for eight); mimi takes frames of up to 65,536
    samples, read from the MP4 sample description before FFmpeg sees it."""
    data = bytearray((made / "in" / "alac.m4a").read_bytes())
    cookie = data.rindex(b"alac")  # the ALACSpecificConfig atom inside the sample entry
    assert int.from_bytes(data[cookie + 8:cookie + 12], "big") == 4096
    decode_24k(io.BytesIO(bytes(data)), mix=True)
    data[cookie + 8:cookie + 12] = (1 << 24).to_bytes(4, "big")

    def never(*args, **kwargs):
        raise AssertionError("FFmpeg was asked to open the file")

    monkeypatch.setattr("av.open", never)
    with pytest.raises(AudioError, match="ALAC header gives frames of 16777216 samples"):
        decode_24k(io.BytesIO(bytes(data)), mix=True)
