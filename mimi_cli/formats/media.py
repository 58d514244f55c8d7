"""Audio in the containers libsndfile does not read (M4A/MP4, WebM/Matroska, ADTS AAC, WMA, AMR),
decoded by FFmpeg through PyAV, under an allow-list.

FFmpeg parses many formats and has a long record of parser bugs, so it sees only what is on the
lists here: the container is recognised from its first bytes by this module (FFmpeg probes
nothing), that one demuxer is the only one allowed, only the decoders in DECODERS may open, and
FFmpeg reads through a file object we hold, with every nested open (a playlist's entry, an MP4
data reference) refused. Samples come out as FFmpeg's command line writes them with
`-c:a pcm_f32le`: encoder delay and padding trimmed, integer formats converted by libswresample.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import os
import threading
from collections.abc import Callable, Iterator
from typing import BinaryIO

import numpy as np

from . import headers
from .audio import AudioError, check_format
from .pcm import MAX_CHANNELS


def _av():
    """PyAV, imported when a container is first read: WAV pipes and the CLI never map FFmpeg."""
    try:
        import av
    except ImportError:  # av is a core dependency: only a broken install lacks it
        raise AudioError("reading this container needs PyAV: pip install av") from None
    return av

# Audio decoders FFmpeg may open: the codecs these containers carry for speech and music.
DECODERS = frozenset({
    "aac", "aac_fixed", "alac", "opus", "libopus", "vorbis", "libvorbis", "flac", "mp3", "mp3float", "mp2",
    "mp2float", "wmav1", "wmav2", "wmapro", "wmalossless", "wmavoice", "amrnb", "amrwb", "libopencore_amrnb",
    "libopencore_amrwb", "ac3", "eac3", "pcm_s16le", "pcm_s16be", "pcm_s24le", "pcm_s24be", "pcm_s32le",
    "pcm_s32be", "pcm_f32le", "pcm_f32be", "pcm_f64le", "pcm_f64be", "pcm_u8", "pcm_s8", "pcm_alaw", "pcm_mulaw",
})
# What FFmpeg may do beyond the one demuxer: decoders on the list, no protocol of its own.
_OPTIONS = {"codec_whitelist": ",".join(sorted(DECODERS)), "protocol_whitelist": "none", "enable_drefs": "0"}
# A live stream starts at once: the format is taken from the stream's headers, not from seconds of
# audio read ahead (FFmpeg's default reads up to 5 s before the first frame).
_LIVE_OPTIONS = {**_OPTIONS, "probesize": "32", "analyzeduration": "0"}
LIVE_BUFFER = 4096  # FFmpeg's reads from a pipe: small, so that nothing waits on a full buffer
BLOCK_SAMPLES = 1 << 16  # decoded frames are gathered into blocks of about this many samples a channel
SNIFF_BYTES = 12  # what a stream's format is told from
MAX_PUSH_SECONDS = 5.0  # mono seconds of audio one push may decode to (the event loop waits on it)
PUSH_TIMEOUT_S = 2.0  # how long a push may keep the event loop waiting for FFmpeg
NEEDS_SEEKING = frozenset({"mov", "asf"})  # their index is usually at the end: files, not pipes
MAX_SILENT_BYTES = 16 << 20  # a stream may go this far without a decoded frame (FFmpeg buffers it)
MAX_PACKET_S = 0.12  # a packet that states no duration counts as Opus's longest
STATED_LENGTH = frozenset({"mov", "matroska", "asf"})  # containers whose headers state a length
END_SLACK_S = 0.2  # how far short of its stated length a stream may end (containers round it)
MAX_FRAME_SAMPLES = 1 << 24  # samples in one decoded frame, all channels (FLAC's longest: 524,280)


def demuxer_for(head: bytes) -> str | None:
    """The FFmpeg demuxer for a file starting with `head`, if it is a container read here."""
    if head[4:8] in (b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip") and len(head) >= 8:
        return "mov"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "matroska"
    if head[:16] == b"\x30\x26\xb2\x75\x8e\x66\xcf\x11\xa6\xd9\x00\xaa\x00\x62\xce\x6c":
        return "asf"
    if head[:5] == b"#!AMR":
        return "amr"
    if _adts_header(head, after_id3(head)):
        return "aac"
    return None


def stream_demuxer_for(head: bytes) -> str | None:
    """The demuxer for a stream (a pipe) starting with `head`: `demuxer_for`'s containers and the
    streamable ones libsndfile reads only from files (Ogg, FLAC, MP3)."""
    if head[:4] == b"OggS":
        return "ogg"
    if head[:4] == b"fLaC":
        return "flac"
    found = demuxer_for(head)
    if found is not None:
        return found
    if head[:3] == b"ID3" or _mpeg_audio_header(head, after_id3(head)):
        return "mp3"
    return None


def _adts_header(head: bytes, at: int) -> bool:
    """Whether an ADTS frame header starts at `at`: sync, layer 0, a sample-rate index in use and
    a frame length that holds its header (raw PCM of -1s, FF FF ..., is none)."""
    if at + 7 > len(head) or head[at] != 0xFF or head[at + 1] & 0xF6 != 0xF0:
        return False
    length = ((head[at + 3] & 3) << 11) | (head[at + 4] << 3) | (head[at + 5] >> 5)
    return (head[at + 2] >> 2) & 0xF < 13 and length >= 7


def _mpeg_audio_header(head: bytes, at: int) -> bool:
    """Whether an MPEG audio (MP3) frame header starts at `at`: sync, a layer, and a bit rate and
    sample rate in use (raw PCM of -1s, FF FF FF ..., has neither)."""
    if at + 4 > len(head) or head[at] != 0xFF or head[at + 1] & 0xE0 != 0xE0 or not head[at + 1] & 0x06:
        return False
    bitrate, rate = head[at + 2] >> 4, (head[at + 2] >> 2) & 3
    return bitrate not in (0, 15) and rate != 3 and (head[at + 1] >> 3) & 3 != 1


def after_id3(head: bytes) -> int:
    """Where the data after a leading ID3v2 tag starts (0 without one)."""
    if head[:3] != b"ID3" or len(head) < 10:
        return 0
    return 10 + sum((b & 0x7F) << (7 * (3 - i)) for i, b in enumerate(head[6:10]))


class _Stream:
    """What FFmpeg reads through: `read` only (a pipe). An OSError ends the stream and is kept,
    to be reported as ours; PyAV would print the traceback of an exception raised into FFmpeg.
    A Matroska stream's tags are hidden from FFmpeg as they pass (`headers.hidden`)."""

    def __init__(self, file: BinaryIO, tags: headers.StreamTags | None = None,
                 hide: headers.HiddenStream | None = None) -> None:
        self.file, self.error = file, None
        self.unheard = 0  # bytes read since the last decoded frame
        self.tags = tags  # the header's tags, counted until the first decoded frame
        self._hide = hide

    def read(self, n: int) -> bytes:
        if self.error is not None:
            return b""
        if self.unheard > MAX_SILENT_BYTES:  # FFmpeg would hold it all: a packet that never ends
            self.error = OSError(f"{MAX_SILENT_BYTES >> 20} MiB of the stream decoded to no audio")
            return b""
        try:
            data = self._read(n)
            if self.tags is not None:
                self.tags.feed(data)
        except OSError as e:
            self.error = e
            return b""
        except AudioError as e:
            self.error = OSError(str(e))
            return b""
        self.unheard += len(data)
        return data

    def _read(self, n: int) -> bytes:
        while True:
            data = self.file.read(n)
            if self._hide is None:
                return data
            shown = self._hide.feed(data)
            if shown or not data:  # b"" only at the end: bytes held back are read again with more
                return shown

    def heard(self) -> None:
        """A frame was decoded: the header is past."""
        self.unheard = 0
        if self.tags is not None:
            self.tags.heard()
            if self.tags.ended:
                self.tags = None


class _File(_Stream):
    """`_Stream` for a file that can seek (its headers are walked before FFmpeg reads it); a seek
    FFmpeg asks for before the start is refused with EINVAL, as the OS would, rather than raised."""

    def __init__(self, file: BinaryIO, demuxer: str) -> None:
        super().__init__(file)
        self._matroska = demuxer == "matroska"

    def _read(self, n: int) -> bytes:
        if not self._matroska:
            return self.file.read(n)
        at = self.file.tell()
        before = min(at, 3)  # an id that starts in the bytes before, or runs past, is found whole
        self.file.seek(at - before)
        window = self.file.read(before + n + 3)
        data = headers.hidden(window)[before:before + n]
        self.file.seek(at + len(data))
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        try:
            return self.file.seek(offset, whence)
        except (OSError, ValueError):
            return -errno.EINVAL

    def tell(self) -> int:
        return self.file.tell()


def _refuse_open(url: str, flags: int, options: dict):
    raise AudioError("the file asks to open another file or address, which mimi never does")


def _reason(e: Exception) -> str:
    text = getattr(e, "strerror", None) or str(e) or type(e).__name__
    return text.strip().rstrip(".").splitlines()[0]


class MediaReader:
    """One container's best audio stream, decoded a block at a time: float32 [n, channels] at
    the stream's own rate. AudioError, with the reason, for anything not on the lists, any
    damaged packet, or a rate or channel count that changes mid-stream."""

    def __init__(self, source: str | os.PathLike | BinaryIO, demuxer: str, live: bool = False) -> None:
        av = _av()
        self._own = not hasattr(source, "read")
        try:
            self._file = open(source, "rb") if self._own else source  # noqa: SIM115 - closed in close()
        except OSError as e:
            raise AudioError(f"cannot read: {e.strerror or e}") from None
        self.demuxer = demuxer
        seekable = hasattr(self._file, "seek") and getattr(self._file, "seekable", lambda: True)()
        try:
            if demuxer in NEEDS_SEEKING and not seekable:
                raise AudioError(f"{demuxer} cannot be read as a stream (its index is where a stream cannot go "
                                 "back to)")
            if seekable:
                headers.check(self._file, demuxer)
        except BaseException:
            self.close()
            raise
        if seekable:
            self._io = _File(self._file, demuxer)
        else:
            self._io = _Stream(self._file, headers.StreamTags(demuxer),
                               headers.HiddenStream() if demuxer == "matroska" else None)
        try:
            self.container = av.open(self._io, format=demuxer,
                                     container_options=dict(_LIVE_OPTIONS if live else _OPTIONS),
                                     io_open=_refuse_open, metadata_errors="ignore",
                                     buffer_size=LIVE_BUFFER if live else 32768)
        except AudioError:
            self.close()
            raise
        except (av.FFmpegError, ValueError, OSError) as e:
            self.close()
            raise AudioError(self._read_error() or f"damaged or unsupported audio file ({demuxer}): {_reason(e)}"
                             ) from None
        try:
            if self._read_error():  # the reading ended it, FFmpeg only saw the stream end
                raise AudioError(self._read_error())
            self.stream = self.container.streams.best("audio")
            if self.stream is None:
                raise AudioError("the file holds no audio stream")
            context = self.stream.codec_context
            if context is None:
                raise AudioError("its audio is in a codec FFmpeg does not know")
            if context.name not in DECODERS:
                raise AudioError(f"its audio is {context.name}, which mimi does not decode")
            _check_frame_length(context)
        except BaseException:
            self.close()
            raise
        skip = getattr(getattr(av, "stream", None), "Discard", None)
        for other in self.container.streams:
            if other.index != self.stream.index:
                other.discard = skip.all if skip is not None else "all"  # a video track's data is skipped
        cc = self.stream.codec_context
        self.rate, self.channels = int(cc.sample_rate or 0), int(cc.channels or 0)
        # The decoder hands over every sample it decodes, with what the container says to drop
        # (encoder delay and padding, Matroska's DiscardPadding, an edit list) beside it: mimi
        # drops those as FFmpeg would (`_trimmed`), and counts them first, since decoding them cost
        # as much as any (a 10 MB file can hold days of audio that is all dropped).
        manual = getattr(getattr(getattr(av, "codec", None), "context", None), "Flags2", None)
        if manual is not None:
            cc.flags2 |= int(manual.skip_manual)
        cc.options = {**cc.options, "max_samples": str(MAX_FRAME_SAMPLES)}
        self._convert = None
        # Called with each packet's duration before it is decoded: decoding costs time even where
        # the decoder keeps none of the samples (Opus's discard padding), so budgets count packets.
        self.on_packet: Callable[[float], None] | None = None
        # Called with the frames (samples a channel) decoded and dropped, as they are dropped.
        self.on_dropped: Callable[[int], None] | None = None

    def __enter__(self) -> MediaReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        container, self.container = getattr(self, "container", None), None
        self.stream = self._convert = None  # the decoder goes with the last reference to its stream
        try:
            if container is not None:
                container.close()
                del container
                return_freed_memory()
        finally:
            if self._own and getattr(self, "_file", None) is not None:
                self._file.close()
                self._file = None

    @property
    def duration_s(self) -> float | None:
        """The length the container states (None where it states none, as a live WebM, or where
        FFmpeg only guesses it from the bit rate, as for ADTS and AMR)."""
        if self.demuxer not in STATED_LENGTH:
            return None
        s = self.stream
        if s.duration is not None and s.time_base is not None and s.duration > 0:
            return float(s.duration * s.time_base)
        if self.container.duration is not None and self.container.duration > 0:
            return self.container.duration / 1_000_000
        return None

    def _samples(self, frame) -> np.ndarray:
        """A decoded frame as float32 [n, channels], converted as `-c:a pcm_f32le` converts it:
        by libswresample to packed float, planar float of 8 or more channels too (PyAV's planar
        view of such a frame reads past it)."""
        if frame.format.name == "flt":
            frames = [frame]
        elif frame.format.name == "fltp" and frame.layout.nb_channels < 8:
            return frame.to_ndarray().T
        else:
            if self._convert is None:
                self._convert = _av().AudioResampler(format="flt", layout=frame.layout, rate=frame.rate)
            frames = self._convert.resample(frame)
        parts = [f.to_ndarray().reshape(-1, f.layout.nb_channels) for f in frames]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def blocks(self, block_samples: int = BLOCK_SAMPLES) -> Iterator[np.ndarray]:
        """The stream's samples, float32 [n, channels], in blocks of about `block_samples` (0: each
        decoded frame as it comes, for live streams)."""
        pending: list[np.ndarray] = []
        held = 0
        seconds = 0.0
        # Looked up here, not in the except clause: closing the generator passes GeneratorExit through
        # that clause, and at interpreter exit the import there fails.
        ffmpeg_error = _av().FFmpegError
        skip_type = _skip_samples_type()
        skip = 0  # samples still to drop from the start of what comes (FFmpeg's skip_samples)
        try:
            for packet in self.container.demux(self.stream):
                if self.on_packet is not None:
                    known = packet.duration is not None and packet.time_base is not None and packet.duration > 0
                    self.on_packet(float(packet.duration * packet.time_base) if known else MAX_PACKET_S)
                for frame in packet.decode():
                    self._io.heard()
                    check_format(frame.sample_rate, frame.layout.nb_channels)
                    if frame.sample_rate != self.rate or frame.layout.nb_channels != self.channels:
                        if self.rate == 0 or self.channels == 0:  # stated by the first frame only
                            self.rate, self.channels = frame.sample_rate, frame.layout.nb_channels
                            yield np.zeros((0, self.channels), np.float32)  # the caller checks them
                        else:
                            raise AudioError(f"its audio changes to {frame.layout.nb_channels} channels at "
                                             f"{frame.sample_rate} Hz at {seconds:.2f} s; mimi reads one format a "
                                             "file")
                    block, skip = _trimmed(self._samples(frame), frame, packet.is_discard, skip, skip_type)
                    if self.on_dropped is not None and len(block) < frame.samples:
                        self.on_dropped(frame.samples - len(block))
                    if not len(block):
                        continue
                    pending.append(block)
                    held += len(block)
                    seconds += len(block) / self.rate
                    if held >= block_samples:
                        yield pending[0] if len(pending) == 1 else np.concatenate(pending)
                        pending, held = [], 0
            if self._convert is not None:
                for f in self._convert.resample(None):
                    pending.append(f.to_ndarray().reshape(-1, f.layout.nb_channels))
        except (ffmpeg_error, ValueError) as e:
            raise AudioError(self._read_error() or f"damaged audio at {seconds:.2f} s: {_reason(e)}") from None
        if self._read_error():
            raise AudioError(self._read_error())
        if pending:
            yield pending[0] if len(pending) == 1 else np.concatenate(pending)

    def _read_error(self) -> str | None:
        error = self._io.error
        if error is None:
            return None
        return f"cannot read: {error.strerror}" if error.strerror else str(error)


@functools.cache
def _malloc_trim():
    """glibc's malloc_trim, or None where the C library has none (macOS, musl)."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def return_freed_memory() -> None:
    """Gives the pages a closed decoder freed back to the system. glibc keeps freed memory in the
    arena of the thread that freed it: a 64-channel Opus decoder's 250 MB, freed on each reader
    thread in turn, stayed resident (48 such items took 3.8 GB; trimmed, 0.1 GB)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def _check_frame_length(context) -> None:
    """AudioError for an ALAC stream whose header gives frames longer than
    headers.MAX_ALAC_FRAME: its decoder allocates buffers for the longest frame when it opens
    (16.7 M samples a channel, 0.5 GB for eight, is what FFmpeg takes). An MP4's is checked
    before FFmpeg opens it; this catches the others (Matroska's CodecPrivate)."""
    if context.name != "alac":
        return
    cookie = bytes(context.extradata or b"")
    at = 12 if cookie[4:8] == b"alac" else 0  # FFmpeg's own layout carries the atom's header
    if len(cookie) >= at + 4:
        headers.check_alac_frame(int.from_bytes(cookie[at:at + 4], "big"))


def _skip_samples_type():
    """PyAV's name for a frame's AV_FRAME_DATA_SKIP_SAMPLES side data (None where it has none)."""
    side = getattr(_av(), "sidedata", None)
    kinds = getattr(getattr(side, "sidedata", None), "Type", None)
    return getattr(kinds, "SKIP_SAMPLES", None)


def _trimmed(block: np.ndarray, frame, discard: bool, skip: int, skip_type) -> tuple[np.ndarray, int]:
    """A decoded frame's samples less what FFmpeg's decoder drops without
    AV_CODEC_FLAG2_SKIP_MANUAL (libavcodec's discard_samples): a frame of a packet marked discard,
    `skip` samples from the start (replaced by the frame's own count where it states one, carried
    over frames), then the padding the frame states at its end, if no more than it holds. The
    samples kept, and the skip left."""
    padding = 0
    if skip_type is not None:
        for side in frame.side_data:
            if side.type == skip_type:
                data = bytes(side)
                if len(data) >= 10:
                    skip, padding = max(0, int.from_bytes(data[0:4], "little", signed=True)), int.from_bytes(
                        data[4:8], "little")
    n = len(block)
    if discard:
        return block[:0], max(0, skip - n)
    if skip:
        if n <= skip:
            return block[:0], skip - n
        block, skip = block[skip:], 0
    if 0 < padding <= len(block):
        block = block[:len(block) - padding]
    return block, skip


def probe_media(source: str | os.PathLike | BinaryIO, demuxer: str) -> tuple[int, int, float]:
    """Rate, channels and length in seconds of a container: the stated one, else FFmpeg's guess
    from the bit rate, else 0 (used only to batch items of similar length)."""
    with MediaReader(source, demuxer) as m:
        if m.rate == 0 or m.channels == 0:
            for block in m.blocks():  # a stream that states its format only in its first frame
                if m.rate and m.channels:
                    break
                del block
        guess = m.container.duration / 1_000_000 if m.container.duration else 0.0  # FFmpeg's, to batch by
        return m.rate, m.channels, m.duration_s or guess


def check_complete(reader: MediaReader, frames: int) -> None:
    """AudioError if the stream ended well short of the length its container states: a file
    cut short, as by an interrupted download."""
    stated = reader.duration_s
    if stated is not None and reader.rate and frames < (stated - END_SLACK_S) * reader.rate:
        raise AudioError(f"the file ends early: it holds {frames / reader.rate:.2f} s of the {stated:.2f} s its "
                         "header states (truncated, as by an interrupted download?)")


class PushedStream:
    """A container stream that arrives in pieces (WebSocket messages), decoded by FFmpeg on a
    thread of its own: `push(data)` returns the samples those bytes complete, once FFmpeg has
    used them up and waits for more; `close()` ends the stream and returns the rest.

    `demuxers` and `decoders` narrow the lists further (a server taking Opus takes only Opus)."""

    def __init__(self, demuxers: frozenset[str] | None = None, decoders: frozenset[str] | None = None,
                 max_channels: int = MAX_CHANNELS) -> None:
        self.demuxers, self.decoders, self.max_channels = demuxers, decoders, max_channels
        self._cond = threading.Condition()
        self._inbox = bytearray()
        self._ended = False  # no more input
        self._waiting = False  # FFmpeg has used up the input and waits for more
        self._done = False  # the decoding thread has ended
        self._error: AudioError | None = None
        self._out: list[np.ndarray] = []
        self._thread: threading.Thread | None = None
        self.rate = self.channels = 0
        self.head = b""
        # What the bytes pushed may still decode to: seconds of packets, and mono seconds of
        # samples (every channel's); each push sets both anew.
        self._budget = self._samples_left = 0.0

    def _start(self, demuxer: str) -> None:
        self._thread = threading.Thread(target=self._decode, args=(demuxer,), name="mimi-media", daemon=True)
        self._thread.start()

    def push(self, data: bytes) -> list[np.ndarray]:
        """Blocks [n, channels] at `rate` that `data` completes; AudioError if the stream is no
        container on the lists, or damaged."""
        if self._thread is None:
            self.head += data
            if len(self.head) < SNIFF_BYTES:
                return []
            demuxer = stream_demuxer_for(self.head)
            if demuxer is None or (self.demuxers is not None and demuxer not in self.demuxers):
                raise AudioError(f"the stream is not {_names(self.demuxers)} (it starts with {self.head[:4]!r})")
            data, self.head = self.head, b""
            self._start(demuxer)
        with self._cond:
            self._inbox += data
            self._budget = self._samples_left = MAX_PUSH_SECONDS
            self._waiting = False
            self._cond.notify_all()
            if not self._cond.wait_for(lambda: (self._waiting and not self._inbox) or self._done, PUSH_TIMEOUT_S):
                self._ended = True
                raise AudioError(f"FFmpeg took over {PUSH_TIMEOUT_S:g} s on a message; the stream is dropped")
            return self._take()

    def close(self) -> list[np.ndarray]:
        """Ends the stream: the blocks of what is left (FFmpeg flushes its decoder)."""
        if self._thread is None:
            if self.head:
                raise AudioError(f"the stream ended after {len(self.head)} bytes, before its format could be told")
            return []
        with self._cond:
            self._ended = True
            self._budget = self._samples_left = MAX_PUSH_SECONDS
            self._cond.notify_all()
            if not self._cond.wait_for(lambda: self._done, PUSH_TIMEOUT_S):
                raise AudioError(f"FFmpeg took over {PUSH_TIMEOUT_S:g} s to end the stream; it is dropped")
            return self._take()

    def abort(self) -> None:
        """Ends the stream without waiting for what is left (the client has gone)."""
        with self._cond:
            self._ended = True
            self._inbox.clear()
            self._cond.notify_all()

    def _spend(self, seconds: float) -> None:
        """A packet of `seconds` is about to be decoded (on the decoding thread)."""
        self._budget -= seconds
        if self._budget < 0:
            raise AudioError(f"a message carries over {MAX_PUSH_SECONDS:g} s of audio")

    def _take(self) -> list[np.ndarray]:
        if self._error is not None:
            raise self._error
        out, self._out = self._out, []
        return out

    def read(self, n: int) -> bytes:  # FFmpeg's reads, on the decoding thread
        with self._cond:
            if not self._inbox and not self._ended:
                self._waiting = True
                self._cond.notify_all()
                self._cond.wait_for(lambda: self._inbox or self._ended)
            data = bytes(self._inbox[:n])
            del self._inbox[:n]
            return data

    def _decode(self, demuxer: str) -> None:
        try:
            with MediaReader(self, demuxer, live=True) as media:
                media.on_packet = self._spend
                codec = media.stream.codec_context.name
                if self.decoders is not None and codec not in self.decoders:
                    raise AudioError(f"the stream's audio is {codec}, not {_names(self.decoders)}")
                for block in media.blocks(0):
                    if media.channels > self.max_channels:
                        raise AudioError(f"the stream has {media.channels} channels; at most {self.max_channels}")
                    with self._cond:
                        self.rate, self.channels = media.rate, media.channels
                        self._out.append(block)
                        self._samples_left -= block.size / max(media.rate, 1)
                        if self._samples_left < 0:  # a few bytes of Opus can hold minutes: no message may
                            raise AudioError(f"a message carries over {MAX_PUSH_SECONDS:g} s of audio (counting "
                                             "every channel)")
        except AudioError as e:
            self._error = e
        except Exception as e:  # noqa: BLE001 - whatever FFmpeg raised ends this stream, not the server
            self._error = AudioError(f"the stream could not be decoded: {_reason(e)}")
        finally:
            with self._cond:
                self._done = True
                self._cond.notify_all()


def _names(allowed: frozenset[str] | None) -> str:
    return " or ".join(sorted(allowed)) if allowed else "a container mimi reads"


class OggOpusWriter:
    """24 kHz mono float32 in, Ogg/Opus bytes out (libopus, 20 ms packets, a page per call), for
    clients that take compressed audio. `close()` returns the last pages."""

    def __init__(self, rate: int, bitrate: int) -> None:
        av = _av()
        self._pages: list[bytes] = []
        self.container = av.open(_Sink(self._pages), "w", format="ogg",
                                 options={"page_duration": "20000", "flush_packets": "1"})
        self.stream = self.container.add_stream("libopus", rate=rate)
        self.stream.layout = "mono"
        self.stream.bit_rate = bitrate
        self.stream.codec_context.format = "flt"
        self.rate, self._pts = rate, 0

    def __call__(self, audio: np.ndarray) -> bytes:
        if not audio.size:
            return b""
        frame = _av().AudioFrame.from_ndarray(np.ascontiguousarray(audio, dtype=np.float32)[None], format="flt",
                                           layout="mono")
        frame.sample_rate, frame.pts = self.rate, self._pts
        self._pts += audio.size
        for packet in self.stream.encode(frame):
            self.container.mux(packet)
        return self._take()

    def close(self) -> bytes:
        for packet in self.stream.encode(None):
            self.container.mux(packet)
        self.container.close()
        return self._take()

    def _take(self) -> bytes:
        data = b"".join(self._pages)
        self._pages.clear()
        return data


class _Sink:
    """Where the Ogg muxer writes: a list of byte strings."""

    def __init__(self, pages: list[bytes]) -> None:
        self.pages = pages

    def write(self, data) -> int:
        self.pages.append(bytes(data))
        return len(data)
