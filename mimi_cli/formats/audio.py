"""Reading audio files into 24 kHz float32, and writing decoded audio back."""
from __future__ import annotations

import io
import itertools
import math
import os
import re
import stat
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf
import soxr

from ..errors import MimiError
from ..spec import SAMPLE_RATE
from .pcm import MAX_CHANNELS, MAX_RATE, SAMPLE_FORMATS, StreamFormatError, read_wav_header
from .storage import atomic_write, os_reason

# What a directory walk takes as audio: libsndfile's formats, then the containers FFmpeg reads (media.py).
AUDIO_EXTENSIONS = {".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".aifc",
                    ".caf", ".w64", ".rf64", ".au", ".snd",
                    ".m4a", ".m4b", ".mp4", ".mov", ".3gp", ".3g2", ".webm", ".mka", ".mkv", ".aac", ".adts",
                    ".wma", ".asf", ".amr", ".awb"}


MAX_SECONDS = 3600.0  # an item's length by default (--max-duration)
# An item decodes at most this many times the samples of --max-duration at 24 kHz mono, every
# channel at its own rate: an hour of 7.1 at 48 kHz, or of 192 kHz stereo, at the default.
DECODE_FACTOR = 16
BLOCK_FRAMES = 1 << 18  # decoded a block at a time
HEAD_BYTES = 1 << 16  # what is read of a file to find the length its header states
UNKNOWN_FRAMES = 1 << 62  # libsndfile's count for a stream that states no length (SF_COUNT_MAX)


class AudioError(MimiError):
    """An input that cannot be used as audio; the message says why."""


@dataclass
class AudioInfo:
    sample_rate: int
    channels: int
    num_frames: int  # samples per channel at the source rate

    @property
    def duration_s(self) -> float:
        return self.num_frames / self.sample_rate if self.sample_rate else 0.0


def check_readable(path: str | os.PathLike) -> os.stat_result:
    """The stat of a local audio file; AudioError, in the OS's words, if it is no regular file
    that can be opened (a FIFO or device would hang or mislead the decoder), or empty."""
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise AudioError(f"not a regular file: {path}")
        with open(path, "rb"):
            pass
    except OSError as e:
        raise AudioError(f"{os_reason(e)}: {path}") from None
    if st.st_size == 0:
        raise AudioError("empty file (0 bytes)")
    return st


def probe(path: str | os.PathLike) -> AudioInfo:
    """Rate, channels and length from the header alone (cheap: used to batch by length)."""
    check_readable(path)
    try:
        info = sf.info(os.fsencode(path))  # bytes: names that are not UTF-8 reach libsndfile as they are
    except (sf.LibsndfileError, RuntimeError, OSError) as e:
        return _probe_media(path, e)
    if info.format == "FLAC" and info.frames >= UNKNOWN_FRAMES:  # FFmpeg reads it (`ffmpeg_reads_instead`)
        return _probe_media(path, None, "flac")
    return AudioInfo(info.samplerate, info.channels, info.frames)


def probe_bytes(data: bytes) -> AudioInfo:
    """`probe` for an audio file held in memory (a tar member, a Parquet cell)."""
    try:
        info = sf.info(io.BytesIO(data))
    except (sf.LibsndfileError, RuntimeError, OSError) as e:
        return _probe_media(io.BytesIO(data), e)
    if info.format == "FLAC" and info.frames >= UNKNOWN_FRAMES:
        return _probe_media(io.BytesIO(data), None, "flac")
    return AudioInfo(info.samplerate, info.channels, info.frames)


def _probe_media(source: str | os.PathLike | io.BytesIO, error: Exception | None,
                 demuxer: str | None = None) -> AudioInfo:
    """`probe` through FFmpeg for a container on media's list (or `demuxer`, where the caller
    knows it); else libsndfile's `error` stands."""
    from . import media

    rate, channels, seconds = media.probe_media(source, demuxer or media_demuxer(source, error))
    check_format(rate, channels)
    return AudioInfo(rate, channels, round(seconds * rate))


def media_demuxer(source: str | os.PathLike | BinaryIO, error: Exception, head: bytes | None = None) -> str:
    """The demuxer FFmpeg reads `source` with, now that libsndfile refused it with `error`: its
    first bytes (`head`, where the caller has read them) must be a container on media's list,
    else libsndfile's reason stands. A file object is left at its start."""
    from . import media

    if head is not None:
        if hasattr(source, "seek"):
            source.seek(0)
    elif hasattr(source, "read"):
        source.seek(0)
        head = source.read(HEAD_BYTES)
        source.seek(0)
    else:
        head = file_ends(source)[0]
    demuxer = media.demuxer_for(head)
    if demuxer is None:
        raise AudioError(_reason(error))
    return demuxer


def read_region(source: str | os.PathLike | BinaryIO, offset_s: float, seconds: float, error: Exception | None,
                samples: Callable[[float, int], int] = lambda s, rate: round(s * rate),
                demuxer: str | None = None) -> tuple[np.ndarray, int]:
    """[channels, n] float32 at the file's own rate, `seconds` from `offset_s` (`samples` turns
    seconds into a count at the rate), through FFmpeg, for a file libsndfile refused with `error`
    or would misread (`demuxer`, from `ffmpeg_reads_instead`): a lhotse recording's region;
    decoding stops there."""
    from . import media

    demuxer = demuxer or media_demuxer(source, error)
    with media.MediaReader(source, demuxer) as m:
        _count_dropped(m, lambda rate, channels: samples(offset_s, rate) + samples(seconds, rate))
        parts, at, start, stop = [], 0, 0, 0
        for block in m.blocks():
            if at == 0:  # the rate is known once a frame is decoded
                check_format(m.rate, m.channels)
                start = samples(offset_s, m.rate) if offset_s > 0 else 0
                stop = start + samples(seconds, m.rate)
            lo, hi = max(start - at, 0), min(stop - at, len(block))
            if lo < hi:
                parts.append(block[lo:hi])
            at += len(block)
            if at >= stop:
                break
        audio = np.concatenate(parts) if parts else np.zeros((0, max(m.channels, 1)), np.float32)
        return np.ascontiguousarray(audio.T), m.rate


def _reason(e: Exception) -> str:
    """libsndfile's complaint in a user's words."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    text = re.sub(r"^Error opening .*?: ", "", text).strip()
    if "Format not recognised" in text or "unknown format" in text.lower():
        return ("not an audio file mimi reads (WAV, FLAC, Ogg, MP3, AIFF, CAF, M4A/MP4, WebM/MKV, AAC, WMA, AMR): "
                "format not recognised")
    if "possibly a pipe" in text or "pipe based" in text:
        return "damaged or unsupported audio file: libsndfile could not seek in it (as in a pipe or device)"
    if text.startswith("System error"):
        return "the file could not be read (system error)"
    return f"damaged or unsupported audio file: {text.rstrip('.')}"


def read_audio(path: str | os.PathLike | io.IOBase) -> tuple[np.ndarray, int]:
    """Samples [channels, frames] float32 and the sample rate, with a clear AudioError if unusable."""
    try:
        data, rate = sf.read(path if hasattr(path, "read") else os.fsencode(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as e:
        raise AudioError(_reason(e)) from None
    if data.shape[0] == 0:
        raise AudioError("no audio samples (zero-length file)")
    if not np.isfinite(data).all():
        raise AudioError("the file holds NaN or infinite samples")
    return np.ascontiguousarray(data.T), rate


def check_duration(seconds: float, max_seconds: float) -> None:
    """AudioError if an item of `seconds` is longer than the `max_seconds` it may last."""
    if seconds > max_seconds:
        raise AudioError(f"it lasts {_clock(seconds)}, over --max-duration {max_seconds:g} s; raise that to encode "
                         "longer recordings")


def check_decoding(frames: float, rate: int, channels: int, max_seconds: float, known: bool = True) -> None:
    """AudioError if an item of `frames` (all it holds, if `known`, else what is read so far) at
    `rate` in `channels` takes more decoding than `max_seconds` allows: DECODE_FACTOR times its
    samples at 24 kHz mono, every channel at its own rate. Decoding costs by the sample, so a file
    of a high rate and many channels that packs an hour of silence into kilobytes is refused
    within seconds, not minutes."""
    limit = max_seconds * SAMPLE_RATE * DECODE_FACTOR
    if frames * channels > limit:
        seconds = math.ceil(frames * channels / (SAMPLE_RATE * DECODE_FACTOR))
        needed = f"--max-duration {seconds} or more, " if known else ""
        raise AudioError(f"it holds {channels} channel{'s' if channels > 1 else ''} at {rate} Hz, more samples than "
                         f"--max-duration {max_seconds:g} s lets mimi decode ({limit / 1e6:.3g} M: {DECODE_FACTOR} "
                         f"times that at 24 kHz mono, every channel at its own rate); give it {needed}or mix it to "
                         "fewer channels or resample it to a lower rate first")


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if seconds < 1e9 else f"{seconds:.3g} s"


def decode_24k(source: str | os.PathLike | io.BytesIO, mix: bool, max_seconds: float = MAX_SECONDS
               ) -> tuple[np.ndarray, AudioInfo]:
    """An audio file as float32 at 24 kHz: [1, n] mixed to mono if `mix`, else [channels, n], and
    what it was (its own rate, channels and frames): `open_24k`'s blocks, gathered."""
    with open_24k(source, mix, max_seconds) as audio:
        return audio.whole(), audio.info


def open_24k(source: str | os.PathLike | io.BytesIO, mix: bool, max_seconds: float = MAX_SECONDS) -> Audio24k:
    """An audio file as it is read: float32 blocks at 24 kHz, [1, n] mixed to mono if `mix`, else
    [channels, n] (close it, or use it in a `with`).

    libsndfile reads what it can (WAV, FLAC, Ogg, MP3, AIFF ...); FFmpeg the containers in
    `media` (M4A/MP4, WebM, AAC, WMA, AMR) and what libsndfile would misread
    (`ffmpeg_reads_instead`). Read and resampled a block at a time, so memory holds a block, never
    the file at its own rate (soxr's stream gives the same samples as one call on the whole).
    AudioError if it is no audio or its header states over `max_seconds` or more samples than
    that lets it decode (`check_decoding`), here; while it is read, if it goes past either
    (stopping there, whatever its header claims), holds NaN, or decodes to fewer samples than its
    header states (a truncated file).
    """
    head, tail = file_ends(source)
    try:
        f = sf.SoundFile(source if isinstance(source, io.IOBase) else os.fsencode(source))
    except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as e:
        return _open_media(source, head, e, mix, max_seconds)
    try:
        demuxer = ffmpeg_reads_instead(f, source, head)
        if demuxer is None:
            check_format(f.samplerate, f.channels)
            check_duration(f.frames / f.samplerate * (1 if mix else f.channels), max_seconds)
            check_decoding(f.frames, f.samplerate, f.channels, max_seconds)
            if f.format == "OGG" and not _ogg_ended(tail):
                raise AudioError("the Ogg stream ends without its last page (truncated, as by an interrupted "
                                 "download?)")
            declared = _declared_frames(head, f.format, f.frames)
    except BaseException:
        f.close()
        raise
    if demuxer is not None:
        f.close()
        if isinstance(source, io.IOBase):
            source.seek(0)
        return _open_media(source, head, None, mix, max_seconds, demuxer)

    def complete(frames: int) -> None:
        if declared is not None and frames < declared:
            raise AudioError(f"the file ends early: it holds {frames} of the {declared} samples its header states "
                             "(truncated, as by an interrupted download?)")

    blocks = _sndfile_blocks(f)
    return Audio24k(blocks, f.samplerate, f.channels, mix, max_seconds, f.frames, complete,
                    lambda: (blocks.close(), f.close()))


def ffmpeg_reads_instead(f: sf.SoundFile, source: str | os.PathLike | BinaryIO, head: bytes) -> str | None:
    """FFmpeg's demuxer for a file libsndfile opened (`f`, from `source`, which starts with
    `head`) but would misread, else None. libsndfile stops an MP3 that states no length where the
    first frame's bit rate says it ends (a quarter of a VBR file, silently), and cannot read a FLAC
    that states none (as FFmpeg writes one to a pipe) to its end; FFmpeg reads either to where it
    ends. libsndfile gives no other format an unknown length; one that did is refused here."""
    if f.format == "MP3" and not _has_mp3_length_tag(_mp3_first_frame(source, head)):
        return "mp3"
    if f.frames >= UNKNOWN_FRAMES:
        if f.format == "FLAC":
            return "flac"
        raise AudioError(f"its {f.format} header states no length, which mimi cannot read to its end; write it "
                         "again as a file")
    return None


def _open_media(source: str | os.PathLike | io.BytesIO, head: bytes, error: Exception | None, mix: bool,
                max_seconds: float, demuxer: str | None = None) -> Audio24k:
    """`open_24k` for a file libsndfile refused (with `error`) and that starts with `head`:
    FFmpeg reads it if it is a container on media's list, else the refusal stands. `demuxer`:
    FFmpeg's, where the caller knows it (libsndfile read the file, but not far enough)."""
    from . import media

    m = media.MediaReader(source, demuxer or media_demuxer(source, error, head))
    _count_dropped(m, lambda rate, channels: decode_limit(rate, channels, 1 if mix else channels, max_seconds))
    try:
        if m.rate and m.channels:
            check_format(m.rate, m.channels)
        stated = m.duration_s
        if stated is not None and m.channels:
            check_duration(stated * (1 if mix else m.channels), max_seconds)
            check_decoding(stated * m.rate, m.rate, m.channels, max_seconds)
        blocks = m.blocks()
        first = next(blocks, None)  # a stream may state its format only in its first frame
        if first is None:
            raise AudioError("no audio samples (zero-length file)")
        check_format(m.rate, m.channels)
    except BaseException:
        if "blocks" in locals():
            blocks.close()
        m.close()
        raise
    return Audio24k(itertools.chain([first], blocks), m.rate, m.channels, mix, max_seconds, None,
                    lambda frames: media.check_complete(m, frames), lambda: (blocks.close(), m.close()))


def decode_limit(rate: int, channels: int, rows: int, max_seconds: float) -> int:
    """The frames at `rate` an item in `channels` (`rows` of them kept) may decode: as many as
    last `max_seconds` over its rows, and as many as that lets it decode (`check_decoding`)."""
    return min(int(max_seconds * rate) // rows, int(max_seconds * SAMPLE_RATE * DECODE_FACTOR) // max(channels, 1))


def _count_dropped(reader, limit: Callable[[int, int], int]) -> None:
    """Has a MediaReader refuse its stream once the samples it decodes and its container drops
    (encoder delay and padding, Matroska's DiscardPadding, an edit list) run a second past a
    sixteenth of `limit(rate, channels)` frames: decoding them costs as much as decoding what is
    kept, which is bounded apart, and a file whose packets are all dropped yields nothing to
    count. Real files drop a fraction of a second."""
    dropped = 0

    def count(frames: int) -> None:
        nonlocal dropped
        dropped += frames
        if reader.rate and reader.channels and dropped > limit(reader.rate, reader.channels) // 16 + reader.rate:
            raise AudioError(f"its container drops more audio than the item may decode ({dropped / reader.rate:.0f} "
                             "s decoded and dropped): damaged or crafted?")

    reader.on_dropped = count


def to_mono(block: np.ndarray) -> np.ndarray:
    """Samples [n, channels] -> [n]: the channels' mean, as every input is mixed."""
    return block.mean(axis=1) if block.shape[1] > 1 else block[:, 0]


def check_format(rate: int, channels: int) -> None:
    """AudioError unless a stream's rate and channel count are ones mimi reads."""
    if not 1 <= channels <= MAX_CHANNELS or not 1 <= rate <= MAX_RATE:
        raise AudioError(f"its header gives {channels} channels at {rate} Hz (mimi reads 1 to {MAX_CHANNELS} "
                         f"channels at up to {MAX_RATE} Hz)")


def _sndfile_blocks(f: sf.SoundFile) -> Iterator[np.ndarray]:
    """libsndfile's samples, float32 [n, channels], a block at a time."""
    while True:
        try:
            block = f.read(BLOCK_FRAMES, dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as e:
            raise AudioError(_reason(e)) from None
        if not len(block):
            return
        yield block


class Audio24k:
    """Audio as it is read: blocks [n, channels] at `rate` in, float32 blocks [rows, m] at 24 kHz
    out (rows: 1 if `mix`, else `channels`), through one soxr stream. AudioError while it is read
    past `max_seconds` or past the samples that lets it decode (`check_decoding`), on NaN, for no
    samples at all, or where `complete(frames)` finds it ended early. `expected`: the frames the
    header states, where it states them and reading stops there (libsndfile's count; None for
    FFmpeg's, which a stream may run past); `info` is final once every block is out. Its blocks
    come once: from `whole`, or by iterating (after what `whole` read and held, if it stopped
    short). `close` (or the end of a `with`) frees what reads it."""

    def __init__(self, blocks: Iterator[np.ndarray], rate: int, channels: int, mix: bool, max_seconds: float,
                 expected: int | None = None, complete: Callable[[int], None] = lambda frames: None,
                 close: Callable[[], None] = lambda: None) -> None:
        self._complete, self._close = complete, close
        self.rate, self.channels, self.mix = rate, channels, mix
        self.rows = 1 if mix else channels
        self.max_seconds, self.expected = max_seconds, expected
        self.frames = 0  # frames in so far, at the source rate
        # frames at the source rate --max-duration allows: its length, and what it may decode
        self._limit = decode_limit(rate, channels, self.rows, max_seconds)
        self._source, self._blocks = blocks, self._resampled(blocks)
        self._held: list[np.ndarray] = []  # read by `whole`, which stopped short: they come first

    @property
    def info(self) -> AudioInfo:
        return AudioInfo(self.rate, self.channels, self.frames)

    @property
    def held_samples(self) -> int:
        """Samples a row that `whole` read and holds (it stopped short of the end)."""
        return sum(block.shape[1] for block in self._held)

    def __enter__(self) -> Audio24k:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        close, self._close = self._close, lambda: None
        self._held = []
        self._blocks.close()  # generators left paused would be finalised late, perhaps at exit
        close()

    def __iter__(self) -> Iterator[np.ndarray]:
        held, self._held = self._held, []
        yield from held
        for block in self._blocks:  # noqa: UP028 - `yield from` would close the stream when `whole` stops short
            yield block

    def _count(self, block: np.ndarray) -> None:
        """Counts a block in at the source rate: AudioError past --max-duration or on NaN."""
        self.frames += len(block)
        if self.frames > self._limit:
            check_duration(self.frames / self.rate * self.rows, self.max_seconds)
            check_decoding(self.frames, self.rate, self.channels, self.max_seconds, known=False)
        if not np.isfinite(block).all():
            raise AudioError("the file holds NaN or infinite samples")

    def read_out(self) -> None:
        """Reads the rest to its end, neither resampled nor held: the AudioErrors its blocks would
        give (too long, NaN, no samples, ended early), at the cost of decoding alone."""
        self._blocks.close()  # what it resampled is not wanted; its source goes on where it stopped
        self._held = []
        for block in self._source:
            self._count(block)
        if self.frames == 0:
            raise AudioError("no audio samples (zero-length file)")
        self._complete(self.frames)

    def _resampled(self, blocks: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
        rate, channels, mix = self.rate, self.channels, self.mix
        resampler = (soxr.ResampleStream(rate, SAMPLE_RATE, channels, dtype="float32", quality="HQ")
                     if rate != SAMPLE_RATE else None)
        ended = False
        while not ended:
            block = next(blocks, None)
            ended = block is None
            if ended:
                block = np.zeros((0, channels), np.float32)
            self._count(block)
            if resampler is not None:
                block = resampler.resample_chunk(block, last=ended)
            if len(block):
                out = np.ascontiguousarray(block.T)
                yield out.mean(axis=0, keepdims=True) if mix and channels > 1 else out
        if self.frames == 0:
            raise AudioError("no audio samples (zero-length file)")
        self._complete(self.frames)

    def whole(self, hold: int | None = None) -> np.ndarray | None:
        """Every block as one array [rows, n], written into one array sized from the header where it
        states a length (joining pieces would hold the audio twice: 700 MB for an hour). With
        `hold`, it stops at the block that takes a row past that many samples and returns None;
        what was read, that block included, stays held and comes first when the rest is iterated."""
        sized = -(-self.expected * SAMPLE_RATE // self.rate) + 64 if self.expected else 0
        capacity = sized if hold is None or sized <= hold + 64 else 0
        whole = np.empty((self.rows, capacity), np.float32) if capacity else None
        filled, rest = 0, []  # samples a row so far; the blocks that did not fit `whole`
        for block in self:
            n = block.shape[1]
            if hold is not None and filled + n > hold:
                self._held = [*_filled(whole, filled, rest), *rest, block]
                return None
            if whole is not None and not rest and filled + n <= capacity:
                whole[:, filled:filled + n] = block  # np.empty: pages not written are never touched
            else:
                rest.append(block)
            filled += n
        pieces = [*_filled(whole, filled, rest), *rest] or [np.zeros((self.rows, 0), np.float32)]
        return pieces[0] if len(pieces) == 1 else np.concatenate(pieces, axis=1)


def _filled(whole: np.ndarray | None, filled: int, rest: list[np.ndarray]) -> list[np.ndarray]:
    """The written part of `whole`, [] if none: `filled` samples a row, less those in `rest`."""
    n = filled - sum(block.shape[1] for block in rest)
    return [whole[:, :n]] if whole is not None and n else []


def file_ends(source: str | os.PathLike | io.BytesIO) -> tuple[bytes, bytes]:
    """The first bytes of a file (where its header states its length) and its last ones (where an
    Ogg stream says it ended)."""
    if isinstance(source, io.BytesIO):
        view = source.getbuffer()
        return bytes(view[:HEAD_BYTES]), bytes(view[-HEAD_BYTES:])
    try:
        with open(source, "rb") as f:
            head = f.read(HEAD_BYTES)
            f.seek(max(0, os.fstat(f.fileno()).st_size - HEAD_BYTES))
            return head, f.read(HEAD_BYTES)
    except OSError as e:
        raise AudioError(f"{os_reason(e)}: {source}") from None


def _ogg_ended(tail: bytes) -> bool:
    """Whether the last Ogg page in `tail` is complete and marked end-of-stream (flag 4 of its
    header type): an Ogg file cut short, as by an interrupted download, ends without it."""
    at = tail.rfind(b"OggS")
    if at < 0 or at + 27 > len(tail):
        return False
    segments = tail[at + 26]
    if at + 27 + segments > len(tail):
        return False
    body = sum(tail[at + 27:at + 27 + segments])
    return bool(tail[at + 5] & 4) and at + 27 + segments + body <= len(tail)


def _declared_frames(head: bytes, fmt: str, frames: int) -> int | None:
    """How many frames the file's header says it holds, where a header says so: WAV, AIFF and AU
    data sizes (libsndfile quietly reads what is there), FLAC's total and an MP3's Xing/Info
    count (an MP3 without one reaches FFmpeg instead); None where nothing states a length (Ogg,
    whose end is checked apart)."""
    if fmt in ("WAV", "WAVEX", "RF64"):
        return _wav_frames(head)
    if fmt == "AIFF" and head[:4] == b"FORM":
        return _aiff_frames(head)
    if fmt == "AU" and head[:4] == b".snd" and len(head) >= 24:
        _, _, data_size, encoding, _, channels = struct.unpack(">6I", head[:24])
        width = {2: 1, 3: 2, 4: 3, 5: 4, 6: 4, 7: 8}.get(encoding)
        return None if data_size == 0xFFFFFFFF or not width or not channels else data_size // (width * channels)
    if fmt == "FLAC" and frames > 0:
        return frames
    if fmt == "MP3" and frames > 0:  # one without a length tag is read by FFmpeg (open_24k)
        return frames
    return None


def _wav_frames(head: bytes) -> int | None:
    try:
        fmt, data_bytes = read_wav_header(io.BytesIO(head))
    except StreamFormatError:
        return None  # a header this reader does not take apart; libsndfile's count stands
    return None if data_bytes is None else data_bytes // (SAMPLE_FORMATS[fmt.sample_format][0] * fmt.channels)


def _aiff_frames(head: bytes) -> int | None:
    """numSampleFrames of an AIFF's COMM chunk (big-endian chunks after the 12-byte FORM header)."""
    at = 12
    while at + 8 <= len(head):
        chunk, size = struct.unpack(">4sI", head[at:at + 8])
        if chunk == b"COMM" and at + 14 <= len(head):
            return struct.unpack(">I", head[at + 10:at + 14])[0]
        at += 8 + size + (size & 1)
    return None


def _mp3_first_frame(source: str | os.PathLike | io.BytesIO, head: bytes) -> bytes:
    """The 2 kB of an MP3 after its ID3v2 tag, where a Xing, Info or VBRI header would be: in
    `head`, or read from the file where the tag is longer (cover art)."""
    from .media import after_id3

    start = after_id3(head)
    if start + 2048 <= len(head):
        return head[start:start + 2048]
    try:
        if isinstance(source, io.BytesIO):
            return bytes(source.getbuffer()[start:start + 2048])
        with open(source, "rb") as f:
            f.seek(start)
            return f.read(2048)
    except OSError as e:
        raise AudioError(f"{os_reason(e)}: {source}") from None


def _has_mp3_length_tag(frame: bytes) -> bool:
    """Whether an MP3's first frame (`_mp3_first_frame`) carries a Xing, Info or VBRI header (its
    exact length)."""
    return any(tag in frame for tag in (b"Xing", b"Info", b"VBRI"))


def resample(audio: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """[channels, n] at from_rate -> [channels, m] at to_rate (soxr, high quality)."""
    if from_rate == to_rate:
        return audio
    out = soxr.resample(audio.T, from_rate, to_rate, quality="HQ")
    return np.ascontiguousarray(np.asarray(out, dtype=np.float32).reshape(-1, audio.shape[0]).T)


SUBTYPES = {"s16le": "PCM_16", "s24le": "PCM_24", "s32le": "PCM_32", "f32le": "FLOAT"}  # our names -> libsndfile's


def write_audio(path: Path, audio: np.ndarray, rate: int, fmt: str = "wav", sample_format: str = "s16le") -> None:
    """Writes mono audio atomically (temporary name, then rename): never half a file. Integer
    formats are clipped to [-1, 1]; float WAV keeps the decoder's values as they are."""
    subtype = SUBTYPES[sample_format]
    encoded = io.BytesIO()  # libsndfile's own writes hide a full disk's error; ours report it
    sf.write(encoded, audio if subtype == "FLOAT" else np.clip(audio, -1.0, 1.0), rate, format=fmt.upper(),
             subtype=subtype)
    with atomic_write(path) as f:
        f.write(encoded.getbuffer())
