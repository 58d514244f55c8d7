"""formats/headers.py: what a container's header asks of FFmpeg, counted before FFmpeg reads it.

FFmpeg files tags and chapters in lists it scans for each new one: a header of 100,000 tags keeps
it busy for minutes. The counts here must bound what FFmpeg files (checked against what PyAV
reports, on files the real ffmpeg writes and on seeded mutations of them), and a file over
MAX_TAGS must be refused before FFmpeg sees it.
"""
from __future__ import annotations

import io
import random
import zlib
from pathlib import Path

import pytest

from mimi_cli.formats import headers
from mimi_cli.formats.audio import AudioError, decode_24k
from tests.media_helpers import ffmpeg, needs_ffmpeg

# name: (ffmpeg's output options, FFmpeg's demuxer)
WRITTEN = {
    "tags.m4a": (["-c:a", "aac", "-movflags", "use_metadata_tags"], "mov"),
    "tags.mp3": (["-c:a", "libmp3lame", "-write_xing", "0"], "mp3"),
    "tags4.mp3": (["-c:a", "libmp3lame", "-write_xing", "0", "-id3v2_version", "4"], "mp3"),
    "tags.flac": (["-c:a", "flac"], "flac"),
    "tags.wma": (["-c:a", "wmav2"], "asf"),
}
MATROSKA = {"tags.mkv": (["-c:a", "flac"], "matroska"), "tags.webm": (["-c:a", "libopus"], "matroska")}
OWN = 8  # entries FFmpeg adds of its own (an MP4's brands, its encoder): no header holds those


def _metadata(tags: int, chapters: int) -> str:
    lines = [";FFMETADATA1"] + [f"key{i}=value {i}" for i in range(tags)]
    for i in range(chapters):
        lines += ["[CHAPTER]", "TIMEBASE=1/1000", f"START={i * 5}", f"END={i * 5 + 5}", f"title=Chapter {i}"]
    return "\n".join(lines) + "\n"


def _write(root: Path, name: str, tags: int, chapters: int) -> Path:
    """`name` of WRITTEN, a second of tone, with `tags` tags and `chapters` chapters, as ffmpeg writes it."""
    (root / f"{tags}-{chapters}.txt").write_text(_metadata(tags, chapters))
    out = root / f"{tags}-{chapters}-{name}"
    ffmpeg("-f", "lavfi", "-i", "sine=f=300:d=1", "-i", str(root / f"{tags}-{chapters}.txt"), "-map", "0",
           "-map_metadata", "1", "-map_chapters", "1", *{**WRITTEN, **MATROSKA}[name][0], str(out))
    return out


def _filed(data: bytes, demuxer: str) -> int:
    """The longest list FFmpeg filed for `data`: the file's tags, a stream's, the chapters, or a
    chapter's (QuickTime's chapter track is left out: FFmpeg files it in order, at no cost)."""
    import av

    with av.open(io.BytesIO(data), format=demuxer, metadata_errors="ignore") as c:
        chapters = [] if demuxer == "mov" else c.chapters()
        return max([len(c.metadata), len(chapters)] + [len(s.metadata) for s in c.streams]
                   + [len(x.get("metadata", {})) for x in chapters])


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = tmp_path_factory.mktemp("tags")
    return {name: _write(root, name, 1500, 300) for name in WRITTEN}


@needs_ffmpeg
@pytest.mark.parametrize("name", sorted(WRITTEN))
def test_the_count_bounds_what_ffmpeg_files_and_such_a_file_is_read(written, name):
    data, demuxer = written[name].read_bytes(), WRITTEN[name][1]
    assert headers.count_tags(io.BytesIO(data), demuxer) + OWN >= _filed(data, demuxer) >= 1500
    audio, _ = decode_24k(written[name], mix=True)
    assert abs(audio.shape[-1] - 24000) < 2000  # a second, at 24 kHz


@needs_ffmpeg
@pytest.mark.parametrize("name", sorted(set(WRITTEN) - {"tags.flac"}))  # libsndfile reads that FLAC
def test_a_header_of_thousands_of_tags_is_refused_before_ffmpeg_reads_it(tmp_path, monkeypatch, name):
    path = _write(tmp_path, name, 5000, 0)
    monkeypatch.setattr("av.open", _never)
    with pytest.raises(AudioError, match="more than 4096 tags and chapters"):
        decode_24k(path, mix=True)


def _never(*args, **kwargs):
    raise AssertionError("FFmpeg was asked to read the file")


def _id3(frames: list[bytes], version: int = 3, flags: int = 0) -> bytes:
    body = b"".join(frames)
    size = bytes((len(body) >> s) & 0x7F for s in (21, 14, 7, 0))
    return b"ID3" + bytes([version, 0, flags]) + size + body


def _frame(name: bytes, body: bytes, flags: int = 0, size: int | None = None) -> bytes:
    return name + (len(body) if size is None else size).to_bytes(4, "big") + flags.to_bytes(2, "big") + body


def _txxx(i: int) -> bytes:
    return _frame(b"TXXX", b"\x00" + f"key {i}".encode() + b"\x00value")


def _tone(factory, name: str, *options: str) -> bytes:
    """A second of tone as ffmpeg writes it with `options`."""
    out = factory.mktemp("tone") / name
    ffmpeg("-f", "lavfi", "-i", "sine=f=300:d=1", *options, str(out))
    return out.read_bytes()


@pytest.fixture(scope="module")
def mp3(tmp_path_factory):
    return _tone(tmp_path_factory, "plain.mp3", "-c:a", "libmp3lame", "-write_xing", "0")


@needs_ffmpeg
def test_id3_frames_sized_as_ffmpeg_reads_them_are_counted(mp3):
    """ID3v2.4 sizes are syncsafe, but some writers put v2.3 sizes there, and FFmpeg looks at
    what follows each frame to tell: the walk reads each size as FFmpeg does."""
    long_value = b"\x00key\x00" + b"v" * 300  # over 0x7F bytes: both readings of its size differ
    frames = [_frame(b"TXXX", long_value.replace(b"key", f"k{i:03}".encode())) for i in range(200)]
    data = _id3(frames, version=4) + mp3
    assert headers.count_tags(io.BytesIO(data), "mp3") >= _filed(data, "mp3") == 200


@needs_ffmpeg
def test_frames_inside_id3_chapters_count(mp3, monkeypatch):
    """FFmpeg files a CHAP frame's own text frames in the chapter's list."""
    inner = b"".join(_txxx(i) for i in range(5000))
    chapter = _frame(b"CHAP", b"ch1\x00" + bytes(16) + inner)
    data = _id3([chapter]) + mp3
    assert _filed(data, "mp3") >= 5000 and headers.count_tags(io.BytesIO(data), "mp3") > 4096
    whole = b"ch1\x00" + bytes(16) + inner
    packed = zlib.compress(whole)
    squeezed = _id3([_frame(b"CHAP", len(whole).to_bytes(4, "big") + packed, flags=0x0009)]) + mp3
    monkeypatch.setattr("av.open", _never)
    for hostile in (data, squeezed):
        with pytest.raises(AudioError, match="more than 4096 tags"):
            decode_24k(io.BytesIO(hostile), mix=True)


@needs_ffmpeg
def test_long_names_count_against_how_many_there_are(mp3, monkeypatch):
    """FFmpeg compares a new tag's name with every name before it as far as they agree: 2000
    names of 1000 bytes that differ at their ends cost as much as millions of short ones. An
    audiobook's thousand chapters beside a megabyte of cover art are read."""
    long_names = [_frame(b"TXXX", b"\x00" + b"K" * 1000 + b"%04d\x00v" % i) for i in range(2000)]
    chapters = [_frame(b"CHAP", b"c%d\x00" % i + bytes(16) + _frame(b"TIT2", b"\x00Chapter %d" % i))
                for i in range(1000)]
    cover = _frame(b"APIC", b"\x00image/jpeg\x00\x03\x00" + bytes(1 << 20))
    assert headers.count_tags(io.BytesIO(_id3(chapters + [cover]) + mp3), "mp3") >= _filed(
        _id3(chapters + [cover]) + mp3, "mp3")
    decode_24k(io.BytesIO(_id3(chapters + [cover]) + mp3), mix=True)
    monkeypatch.setattr("av.open", _never)
    with pytest.raises(AudioError, match="tags too long for how many there are"):
        decode_24k(io.BytesIO(_id3(long_names) + mp3), mix=True)


@needs_ffmpeg
def test_an_id3_frame_that_inflates_past_its_bound_is_refused(mp3, monkeypatch):
    """FFmpeg allocates the size a compressed frame states, inflates into it and keeps the text:
    10 MB of frames stating 256 MiB each took 16 GB. Together they may inflate to 16 MiB."""
    packed = zlib.compress(bytes(1 << 20))
    bomb = _frame(b"TXXX", (1 << 30).to_bytes(4, "big") + packed, flags=0x0009)
    small = [_frame(b"PRIV", (5 << 20).to_bytes(4, "big") + packed, flags=0x0009) for _ in range(4)]
    monkeypatch.setattr("av.open", _never)
    with pytest.raises(AudioError, match="its compressed ID3 frames inflate to 1073741824 bytes"):
        decode_24k(io.BytesIO(_id3([bomb], version=4) + mp3), mix=True)
    with pytest.raises(AudioError, match="inflate to 20971520 bytes or more"):  # 5 MiB each, four of them
        decode_24k(io.BytesIO(_id3(small) + mp3), mix=True)


@needs_ffmpeg
def test_an_ape_tag_at_the_end_counts(mp3, monkeypatch):
    items = b"".join(len(v).to_bytes(4, "little") + bytes(4) + f"Key{i}".encode() + b"\x00" + v
                     for i, v in ((i, b"value") for i in range(5000)))
    footer = b"APETAGEX" + (2000).to_bytes(4, "little") + (len(items) + 32).to_bytes(4, "little") + \
        (5000).to_bytes(4, "little") + bytes(12)
    monkeypatch.setattr("av.open", _never)
    with pytest.raises(AudioError, match="more than 4096 tags"):
        decode_24k(io.BytesIO(mp3 + items + footer), mix=True)


@needs_ffmpeg
def test_mp4_tag_boxes_count_wherever_they_lie(tmp_path):
    """FFmpeg reads MP4 boxes it knows inside more boxes than the walk enters: every box named
    as one that holds tags counts, wherever it lies."""
    m4a = _write(tmp_path, "tags.m4a", 0, 0).read_bytes()
    items = b"".join((24).to_bytes(4, "big") + b"\xa9n%02x" % (i % 256) + (16).to_bytes(4, "big") + b"data" + bytes(8)
                     for i in range(5000))
    udta = (8 + len(items)).to_bytes(4, "big") + b"udta" + items
    hidden = m4a + (8 + len(udta)).to_bytes(4, "big") + b"skip" + udta
    assert headers.count_tags(io.BytesIO(hidden), "mov") > 4096


def _shown(data: bytes, demuxer: str = "matroska") -> tuple[int, int, int]:
    """What FFmpeg files reading `data` through mimi (tags, chapters, attachments), and the
    samples it decodes."""
    from mimi_cli.formats.media import MediaReader

    with MediaReader(io.BytesIO(data), demuxer) as m:
        c = m.container
        filed = max([len(c.metadata), len(c.chapters())] + [len(s.metadata) for s in c.streams])
        return filed, len(c.streams), sum(len(b) for b in m.blocks())


@needs_ffmpeg
@pytest.mark.parametrize("name", sorted(MATROSKA))
def test_matroska_tags_chapters_and_attachments_are_hidden_from_ffmpeg(tmp_path, name):
    """FFmpeg's costs for Matroska tags multiply with their nesting and count (it converts the
    whole list again after each Tag), so it is shown none: the file's audio is read whole, its
    5000 tags and 300 chapters are not, wherever they lie (behind a SeekHead, past damage)."""
    data = bytearray(_write(tmp_path, name, 5000, 300).read_bytes())
    assert _filed(bytes(data), "matroska") >= 5000  # what FFmpeg files left to itself
    plain = _write(tmp_path, name, 0, 0).read_bytes()
    filed, streams, samples = _shown(bytes(data))
    assert filed <= 4 and streams == 1 and samples == _shown(plain)[2]
    at = data.find(b"\x11\x4d\x9b\x74")  # the SeekHead: its size now runs over what follows it
    data[at + 4:at + 5] = b"\x08"
    assert _shown(bytes(data))[0] <= 4
    _piped(bytes(_write(tmp_path, name, 5000, 300).read_bytes()))


def test_an_id_split_between_two_pieces_of_a_stream_is_hidden():
    stream = headers.HiddenStream()
    data = b"ab\x12\x54\xc3\x67cd\x10\x43" + b"\xa7\x70ef\x19"
    shown = b""
    for at in range(len(data)):
        shown += stream.feed(data[at:at + 1])
    shown += stream.feed(b"")
    assert shown == b"ab\x1f\x00\x00\x00cd\x1f\x00\x00\x00ef\x19"


@needs_ffmpeg
@pytest.mark.parametrize("seed", [0, 1])
def test_the_count_bounds_what_ffmpeg_files_in_mutated_headers(written, seed):
    """Seeded mutations of the header bytes of each written file: the count raises only our
    error, and never falls short of what FFmpeg files."""
    rng = random.Random(seed)
    names = sorted(WRITTEN)
    for _ in range(120):
        name = rng.choice(names)
        data, demuxer = bytearray(written[name].read_bytes()), WRITTEN[name][1]
        reach = min(len(data), rng.choice([200, 2000, 20000, len(data)]))
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(reach)] = rng.randrange(256)
        try:
            counted = headers.count_tags(io.BytesIO(bytes(data)), demuxer)
        except AudioError:
            continue
        try:
            filed = _filed(bytes(data), demuxer)
        except Exception:  # noqa: BLE001 - FFmpeg refusing a mutation is not what is tested
            continue
        assert counted + OWN >= filed, (name, seed)


def _piped(data: bytes) -> None:
    """`data` read as `mimi stream-encode` reads a pipe: live, with no seeking."""
    from mimi_cli.formats.media import MediaReader, stream_demuxer_for
    from mimi_cli.formats.pcm import Prefixed

    with MediaReader(Prefixed(data[:12], io.BytesIO(data[12:])), stream_demuxer_for(data[:12]), live=True) as m:
        for _ in m.blocks(0):
            pass


@needs_ffmpeg
@pytest.mark.parametrize("name", ["tags.mp3", "tags.flac"])
def test_a_stream_header_of_thousands_of_tags_is_refused_as_it_arrives(tmp_path, name):
    """A pipe cannot be walked before FFmpeg reads it: its bytes are counted on their way."""
    _piped(_write(tmp_path, name, 1500, 0).read_bytes())
    hostile = _write(tmp_path, name, 5000, 0).read_bytes()
    with pytest.raises(AudioError, match="more than 4096 tags and chapters"):
        _piped(hostile)


@needs_ffmpeg
def test_an_ogg_comment_header_is_refused_as_it_arrives(tmp_path):
    for count, refused in ((1500, False), (5000, True)):
        path = tmp_path / f"{count}.opus"
        ffmpeg("-f", "lavfi", "-i", "sine=f=300:d=1", "-i", str(_metadata_file(tmp_path, count)), "-map", "0",
               "-map_metadata", "1", "-c:a", "libopus", str(path))
        if refused:
            with pytest.raises(AudioError, match="more than 4096 tags and chapters"):
                _piped(path.read_bytes())
        else:
            _piped(path.read_bytes())


def _pages(packets: list[bytes], serial: int = 7) -> bytes:
    """Ogg pages holding `packets` (laced as the spec says; the checksum is left out)."""
    lacing, body = [], b""
    for packet in packets:
        lacing += [255] * (len(packet) // 255) + [len(packet) % 255]
        body += packet
    out, at, continued = b"", 0, False
    while lacing:
        page, lacing = lacing[:255], lacing[255:]
        size = sum(page)
        out += (b"OggS\x00" + bytes([1 if continued else 0]) + bytes(8) + serial.to_bytes(4, "little") + bytes(8)
                + bytes([len(page)]) + bytes(page) + body[at:at + size])
        continued, at = page[-1] == 255, at + size
    return out


@pytest.mark.parametrize("vendor", [13, 100_000])
def test_an_ogg_comment_count_is_read_where_it_arrives(vendor):
    """The count follows a vendor string of any length, across pages: it is read from the bytes
    that hold it, before the comments themselves arrive."""
    head = b"OpusHead" + bytes([1, 1]) + bytes(9)
    comments = b"".join(len(c).to_bytes(4, "little") + c for c in (f"k{i}=v".encode() for i in range(5000)))
    tags = b"OpusTags" + vendor.to_bytes(4, "little") + b"v" * vendor + (5000).to_bytes(4, "little") + comments
    packet_end = len(_pages([head, tags]))
    data = _pages([head, tags, b"\xfc" + bytes(40)])
    counter = headers._OggComments()
    rng, at, seen = random.Random(vendor), 0, 0
    while not seen:
        piece = data[at:at + rng.randint(1, 5000)]
        seen = counter.feed(piece)[0]
        at += len(piece)
    assert seen == 5000 and at - len(piece) < packet_end  # known before the packet is whole


def _metadata_file(root: Path, tags: int) -> Path:
    path = root / f"{tags}.txt"
    path.write_text(_metadata(tags, 0))
    return path


@needs_ffmpeg
def test_mp4_tables_that_claim_more_than_the_file_holds_are_refused_before_ffmpeg_reads_them(tmp_path, monkeypatch):
    """FFmpeg makes room for every name a `keys` box states (268 M of them: 2.1 GB from a file
    of 743 bytes), and indexes a PCM track by the samples its chunks claim (a billion each: 2.9
    GB from 49 KB)."""
    keyed = bytearray(_write(tmp_path, "tags.m4a", 10, 0).read_bytes())
    at = keyed.find(b"keys") + 8  # past the type and the full box's flags
    keyed[at:at + 4] = (268_000_000).to_bytes(4, "big")
    pcm = tmp_path / "pcm.mov"
    ffmpeg("-f", "lavfi", "-i", "sine=f=300:d=1", "-c:a", "pcm_s16le", str(pcm))
    chunked = bytearray(pcm.read_bytes())
    decode_24k(io.BytesIO(bytes(chunked)), mix=True)
    at = chunked.find(b"stsc") + 4 + 4 + 4  # past the type, the flags and the count: the first run
    chunked[at + 4:at + 8] = (1 << 30).to_bytes(4, "big")
    monkeypatch.setattr("av.open", _never)
    with pytest.raises(AudioError, match="its keys box claims 268000000 names"):
        decode_24k(io.BytesIO(bytes(keyed)), mix=True)
    with pytest.raises(AudioError, match="chunks claim .* samples, more than the file holds"):
        decode_24k(io.BytesIO(bytes(chunked)), mix=True)


@pytest.fixture(scope="module")
def adts(tmp_path_factory):
    return _tone(tmp_path_factory, "plain.aac", "-c:a", "aac", "-f", "adts")


@needs_ffmpeg
def test_id3_tags_between_adts_frames_count_together(adts, monkeypatch):
    """FFmpeg files the tags of every ID3v2 tag it meets between ADTS frames into one list:
    two tags of 3000 between the frames of a file, or of a stream, are over the bound."""
    tag = _id3([_txxx(i) for i in range(3000)])
    cut = 0
    for _ in range(5):  # after five frames
        cut += ((adts[cut + 3] & 3) << 11) | (adts[cut + 4] << 3) | (adts[cut + 5] >> 5)
    one, two = adts[:cut] + tag + adts[cut:], adts[:cut] + tag + adts[cut:] + tag + adts[cut:]
    assert headers.count_tags(io.BytesIO(one), "aac") == 3000
    _piped(one)
    with pytest.raises(AudioError, match="more than 4096 tags"):
        _piped(two)
    monkeypatch.setattr("av.open", _never)
    with pytest.raises(AudioError, match="more than 4096 tags"):
        decode_24k(io.BytesIO(two), mix=True)


def test_a_tag_between_adts_frames_is_refused_as_it_arrives():
    """Where mimi ends a stream inside a tag, FFmpeg files the part it was given: a tag between
    frames is walked as it comes, and refused long before its end."""
    tag = _id3([_txxx(i) for i in range(20000)])
    between, at = headers._TagsBetween(), 0
    while at < len(tag):
        piece = tag[at:at + 4096]
        at += len(piece)
        if headers._over(*between.feed(piece)):
            break
    assert at < len(tag) // 2
