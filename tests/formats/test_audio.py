"""Audio files as untrusted input: decoded a block at a time to exactly what a whole read gives,
cut short files caught where a header states their length, and lengths bounded."""
from __future__ import annotations

import io
import struct

import numpy as np
import pytest
import soundfile as sf

from mimi_cli.formats.audio import AudioError, decode_24k, open_24k, probe, probe_bytes, read_audio, resample
from tests.helpers import CORPUS, write_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.mark.parametrize("rel", [c[0] for c in CORPUS])
def test_block_decoding_equals_a_whole_read(corpus, rel, monkeypatch):
    monkeypatch.setattr("mimi_cli.formats.audio.BLOCK_FRAMES", 4097)  # many blocks, none aligned to anything
    audio, rate = read_audio(corpus / rel)
    whole = resample(audio, rate, 24000)
    each, info = decode_24k(corpus / rel, mix=False)
    mixed, _ = decode_24k(io.BytesIO((corpus / rel).read_bytes()), mix=True)
    assert np.array_equal(each, whole) and (info.sample_rate, info.channels) == (rate, audio.shape[0])
    assert np.array_equal(mixed[0], whole.mean(axis=0))


def encoded(fmt: str, subtype: str, seconds: float = 2.0, rate: int = 24000) -> bytes:
    buf = io.BytesIO()
    x = 0.1 * np.random.default_rng(0).standard_normal(int(rate * seconds))
    sf.write(buf, x.astype(np.float32), rate, format=fmt, subtype=subtype)
    return buf.getvalue()


@pytest.mark.parametrize("fmt,subtype", [("WAV", "PCM_16"), ("WAV", "FLOAT"), ("AIFF", "PCM_16"), ("AU", "PCM_16"),
                                         ("FLAC", "PCM_16"), ("MP3", "MPEG_LAYER_III"), ("OGG", "VORBIS"),
                                         ("OGG", "OPUS")])
def test_a_file_cut_short_is_an_error_not_shorter_audio(fmt, subtype):
    data = encoded(fmt, subtype, rate=48000 if subtype == "OPUS" else 24000)
    decode_24k(io.BytesIO(data), mix=True)  # whole: fine
    for keep in (0.5, 0.9):
        with pytest.raises(AudioError, match="truncated|damaged"):
            decode_24k(io.BytesIO(data[:int(len(data) * keep)]), mix=True)


def test_a_streaming_wav_header_states_no_length():
    data = bytearray(encoded("WAV", "PCM_16"))
    data[4:8] = data[40:44] = b"\xff\xff\xff\xff"  # as ffmpeg writes to a pipe: runs to the end
    pcm, info = decode_24k(io.BytesIO(bytes(data[:30000])), mix=True)
    assert info.num_frames == (30000 - 44) // 2


def unstated(flac: bytes) -> bytes:
    """A FLAC with STREAMINFO's total sample count zeroed: "unknown", as FFmpeg writes one to a pipe."""
    unknown = bytearray(flac)
    total_at = 8 + 10
    field = int.from_bytes(unknown[total_at:total_at + 8], "big") & ~((1 << 36) - 1)
    unknown[total_at:total_at + 8] = field.to_bytes(8, "big")
    return bytes(unknown)


def test_a_flac_that_states_no_length_is_read_to_its_end(tmp_path):
    """libsndfile cannot read such a FLAC (one written to a pipe) to its end: FFmpeg reads it,
    to the same samples as the FLAC that states its length."""
    data = encoded("FLAC", "PCM_16", seconds=3.0)
    (tmp_path / "piped.flac").write_bytes(unstated(data))
    whole, _ = decode_24k(io.BytesIO(data), mix=True)
    for source in (tmp_path / "piped.flac", io.BytesIO(unstated(data))):
        audio, info = decode_24k(source, mix=True)
        assert np.array_equal(audio, whole) and info.num_frames == 72000


def test_a_flac_that_states_no_length_and_holds_thousands_of_tags_is_refused_at_once():
    """FFmpeg files each tag of a FLAC with a scan of those before it (77,000 tags took two
    minutes to open); a FLAC that FFmpeg reads may hold 4096, each metadata block counting as one."""
    data = bytearray(unstated(encoded("FLAC", "PCM_16", seconds=1.0)))
    data[4] &= 0x7F  # STREAMINFO is no longer the last block: a VORBIS_COMMENT block follows it

    def tagged(n: int) -> bytes:
        body = (1).to_bytes(4, "little") + b"x" + n.to_bytes(4, "little") + b"".join(
            len(t).to_bytes(4, "little") + t for t in (f"K{i}=v".encode() for i in range(n)))
        return bytes(data[:42]) + b"\x84" + len(body).to_bytes(3, "big") + body + bytes(data[42:])

    decode_24k(io.BytesIO(tagged(4094)), mix=True)  # and STREAMINFO and VORBIS_COMMENT: 4096
    with pytest.raises(AudioError, match="more than 4096 tags and chapters"):
        decode_24k(io.BytesIO(tagged(4095)), mix=True)


def test_the_length_is_bounded_before_and_while_decoding(tmp_path, monkeypatch):
    data = encoded("FLAC", "PCM_16", seconds=3.0)
    with pytest.raises(AudioError, match="over --max-duration 1 s"):
        decode_24k(io.BytesIO(data), mix=True, max_seconds=1)  # from the header, before decoding
    with pytest.raises(AudioError, match="over --max-duration 1 s"):
        decode_24k(io.BytesIO(unstated(data)), mix=True, max_seconds=1)  # counted as it decodes
    stereo = encoded("WAV", "PCM_16", seconds=0.8)
    two = io.BytesIO()
    sf.write(two, np.stack([sf.read(io.BytesIO(stereo))[0]] * 2, axis=1), 24000, format="WAV")
    decode_24k(io.BytesIO(two.getvalue()), mix=True, max_seconds=1)
    with pytest.raises(AudioError, match="over --max-duration"):  # each channel counts when kept apart
        decode_24k(io.BytesIO(two.getvalue()), mix=False, max_seconds=1)


def eight_channels(container: str, seconds: float = 0.6) -> bytes:
    """Eight channels at 96 kHz: 0.6 s of them mix to 0.6 s, within --max-duration 1 s, but hold
    460,800 samples to decode, over the 384,000 (16 x 24,000) that 1 s allows."""
    x = (0.1 * np.random.default_rng(0).standard_normal((int(96000 * seconds), 8))).astype(np.float32)
    buf = io.BytesIO()
    if container == "flac":
        sf.write(buf, x, 96000, format="FLAC", subtype="PCM_16")
        return buf.getvalue()
    import av

    with av.open(buf, "w", format="matroska") as out:  # a seekable output: the Duration is written
        stream = out.add_stream("flac", rate=96000, layout="7.1")
        for at in range(0, len(x), 4800):
            frame = av.AudioFrame.from_ndarray((x[at:at + 4800] * 32767).astype(np.int16).reshape(1, -1),
                                               format="s16", layout="7.1")
            frame.sample_rate, frame.pts = 96000, at
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return buf.getvalue()


@pytest.mark.parametrize("container", ["flac", "matroska"])
def test_what_an_item_may_decode_is_told_from_its_header(container, monkeypatch):
    """Decoding costs by the sample: an item decodes at most 16 times the samples of
    --max-duration at 24 kHz mono, every channel at its own rate. A header that states as much
    is refused when the file is opened, before a block is decoded, with the flag that admits it."""
    data = eight_channels(container)
    monkeypatch.setattr("mimi_cli.formats.audio.Audio24k", None)  # nothing may be read
    with pytest.raises(AudioError, match="8 channels at 96000 Hz, more samples than --max-duration 1 s lets mimi "
                                         r"decode \(0.384 M.*give it --max-duration 2 or more"):
        open_24k(io.BytesIO(data), True, max_seconds=1)
    monkeypatch.undo()
    audio, _ = decode_24k(io.BytesIO(data), mix=True, max_seconds=1.2)  # 460,800 samples allowed
    assert audio.shape == (1, 14400)


def test_what_an_item_may_decode_is_counted_where_no_header_states_it():
    data = unstated(eight_channels("flac", seconds=4.0))  # 4 s mixed: within --max-duration 5 s
    with open_24k(io.BytesIO(data), True, max_seconds=1) as audio:  # nothing to refuse it by yet
        with pytest.raises(AudioError, match="8 channels at 96000 Hz, more samples than --max-duration 1 s"):
            audio.whole()
        assert 384000 // 8 < audio.frames <= 384000 // 8 + (1 << 16) + 4608  # stopped at the block that crossed it
    with pytest.raises(AudioError, match="more samples than --max-duration 5 s"):
        decode_24k(io.BytesIO(data), mix=True, max_seconds=5)  # 3,072,000 samples, over 1,920,000
    audio, _ = decode_24k(io.BytesIO(data), mix=True, max_seconds=8)
    assert audio.shape == (1, 96000)


def test_a_probe_of_a_flac_that_states_no_length_is_no_nonsense(tmp_path):
    """libsndfile's count for it is 2^63 - 1 frames; the listing takes FFmpeg's probe instead."""
    (tmp_path / "piped.flac").write_bytes(unstated(encoded("FLAC", "PCM_16", seconds=3.0)))
    for info in (probe(tmp_path / "piped.flac"), probe_bytes((tmp_path / "piped.flac").read_bytes())):
        assert (info.sample_rate, info.channels) == (24000, 1) and info.num_frames <= 72000


def test_headers_beyond_what_anything_records_are_refused():
    data = bytearray(encoded("WAV", "PCM_16", seconds=0.1))
    data[24:28] = struct.pack("<I", 10_000_000)  # 10 MHz
    with pytest.raises(AudioError, match="channels at"):
        decode_24k(io.BytesIO(bytes(data)), mix=True)


def test_nan_samples_are_refused():
    buf = io.BytesIO()
    x = np.zeros(4800, np.float32)
    x[4000] = np.nan
    sf.write(buf, x, 24000, subtype="FLOAT", format="WAV")
    with pytest.raises(AudioError, match="NaN"):
        decode_24k(io.BytesIO(buf.getvalue()), mix=True)


def test_a_long_file_is_held_once_while_it_is_decoded(tmp_path):
    """An hour of 24 kHz audio is 345 MB: decoding it into one array sized from the header, not
    in pieces joined at the end, keeps it from being held twice (measured in a process of its own)."""
    import subprocess
    import sys

    sf.write(tmp_path / "short.wav", np.zeros(800, np.int16), 8000)
    noise = (np.random.default_rng(0).standard_normal(8000 * 300) * 0.1).astype(np.float32)
    sf.write(tmp_path / "long.wav", noise, 8000, subtype="PCM_16")
    script = """
import sys
from mimi_cli.formats.audio import decode_24k
def kb(key): return next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith(key))
decode_24k(sys.argv[2], True)  # libraries loaded first
before = kb('VmRSS')
pcm, _ = decode_24k(sys.argv[1], True)
print(pcm.nbytes, (kb('VmHWM') - before) * 1024)
"""
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "long.wav"), str(tmp_path / "short.wav")],
                          capture_output=True, text=True, check=True)
    pcm_bytes, grew = map(int, done.stdout.split())
    assert pcm_bytes == 300 * 24000 * 4
    assert grew < 1.7 * pcm_bytes  # joined pieces: over twice


@pytest.mark.parametrize("rate", [8000, 24000, 44100])
@pytest.mark.parametrize("hold", [0, 5000, 30000, 70000])
def test_audio_that_stops_short_of_whole_goes_on_from_where_it_stopped(monkeypatch, rate, hold):
    """`whole(hold)` stops at the block that takes a row past `hold` samples and keeps what it
    read; iterating then gives every sample once, in order: the same as reading it whole,
    whether the stop comes inside the array sized from the header or past it."""
    from mimi_cli.formats.audio import open_24k

    monkeypatch.setattr("mimi_cli.formats.audio.BLOCK_FRAMES", 4096)
    data = encoded("WAV", "PCM_16", seconds=3.0, rate=rate)
    whole, _ = decode_24k(io.BytesIO(data), mix=False)
    with open_24k(io.BytesIO(data), mix=False) as audio:
        assert audio.whole(hold) is None
        assert 0 < audio.held_samples <= hold + 4096 * 24000 // rate + 1
        rest = np.concatenate(list(audio), axis=1)
    assert np.array_equal(rest, whole)


def test_an_mp3_length_tag_after_a_long_id3_tag_is_found(tmp_path):
    """A Xing/Info header sits after the ID3v2 tag, which cover art makes longer than the first
    64 KiB read: it is looked for there, so such an MP3 stays with libsndfile, its length stated."""
    from mimi_cli.formats.audio import open_24k

    plain = encoded("MP3", "MPEG_LAYER_III", seconds=1.0, rate=24000)
    art = 100_000
    size = bytes((art >> shift) & 0x7F for shift in (21, 14, 7, 0))
    tagged = b"ID3\x03\x00\x00" + size + b"\x00" * art + plain
    for data in (plain, tagged):
        with open_24k(io.BytesIO(data), mix=True) as audio:
            assert audio.expected is not None
    (tmp_path / "a.mp3").write_bytes(tagged)
    with open_24k(tmp_path / "a.mp3", mix=True) as audio:
        assert audio.expected is not None
