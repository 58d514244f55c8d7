"""Live pipes as a library: PCM bytes -> token frames (`encode_stream`) and back (`decode_stream`).

Both read whatever bytes the pipe has (never waiting for more than it needs), run each frame
through the codec's streaming state the moment it is complete, and flush every frame out.
Memory is constant in stream length.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
import soxr
import torch

from .codec import DEFAULT_CODEBOOKS, SAMPLE_RATE, MimiCodec
from .formats.audio import AudioError, check_format, to_mono
from .formats.media import NEEDS_SEEKING, SNIFF_BYTES, MediaReader, stream_demuxer_for
from .formats.pcm import (
    PcmDecoder,
    PcmFormat,
    Prefixed,
    StreamFormatError,
    encode_pcm,
    finish_wav_header,
    read_up_to,
    read_wav_header,
    streaming_wav_header,
)
from .formats.tokenstream import StreamHeader, TokenWriter, read_tokens
from .threads import BacklogThreads, ThreadPolicy

READ_BYTES = 4096  # at most this much per read: a read returns as soon as the pipe has anything
# A backlog of a compressed frame: its size is not known ahead, so a typical Opus speech frame's.
CONTAINER_FRAME_BYTES = 512


class StreamEncoder:
    """One audio stream in (bytes of a PCM format), frames of codes out."""

    def __init__(self, codec: MimiCodec, fmt: PcmFormat, num_codebooks: int) -> None:
        self.codec, self.k = codec, num_codebooks
        self.pcm = PcmDecoder(fmt)
        self.resampler = (soxr.ResampleStream(fmt.rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ")
                          if fmt.rate != SAMPLE_RATE else None)
        self.state = codec.init_encoder_state(1)
        # Samples of the current frame held back until three quarters of it are in: right after a
        # frame's codes leave, the next process in the pipe (stream-decode, say) steps on them.
        self.held = np.zeros(0, np.float32)

    def _encode(self, audio: np.ndarray) -> Iterator[np.ndarray]:
        """Codes [K, 1] of each frame that `audio` completes, each yielded before the next frame's
        samples go in (so a frame's codes do not wait for work on the audio after it)."""
        held = np.concatenate([self.held, audio]) if self.held.size else audio
        start = 0
        while True:
            in_frame = self.state.samples_in_frame
            stop = start + self.codec.frame_samples - in_frame
            if stop > held.size:
                break
            yield self._step(held[start:stop])[0].cpu().numpy()
            start = stop
        self.held = held[start:]
        if self.held.size and in_frame + self.held.size >= self.codec.frame_samples * 3 // 4:
            # 60 of the frame's 80 ms are in: the SEANet front starts on them now, so that little
            # is left to do when the frame's last sample comes (`partial_frame` says why one thread).
            with ThreadPolicy.partial_frame():
                self._step(self.held)
            self.held = self.held[:0]

    def _step(self, audio: np.ndarray) -> torch.Tensor:
        return self.codec.encode_step(self.state, torch.from_numpy(np.ascontiguousarray(audio))[None], self.k)

    def feed(self, data: bytes) -> Iterator[np.ndarray]:
        """Codes [K, 1] of each frame these bytes complete, as each frame completes."""
        yield from self.feed_samples(self.pcm(data))

    def feed_samples(self, audio: np.ndarray) -> Iterator[np.ndarray]:
        """`feed` for mono float32 samples at the stream's rate (a container's, decoded)."""
        if self.resampler is not None:
            audio = self.resampler.resample_chunk(audio)
        yield from self._encode(audio)

    def finish(self) -> Iterator[np.ndarray]:
        """Codes of what is left: the resampler's tail, then the last frame padded with silence."""
        if self.resampler is not None:
            yield from self._encode(self.resampler.resample_chunk(np.zeros(0, np.float32), last=True))
        if self.held.size:  # less than a frame: only the front runs
            self._step(self.held)
            self.held = self.held[:0]
        codes = self.codec.encode_flush(self.state, self.k)[0].cpu().numpy()
        if codes.shape[1]:
            yield codes


class StreamDecoder:
    """Frames of codes in, audio out at `rate` (24 kHz, or resampled as it streams)."""

    def __init__(self, codec: MimiCodec, rate: int = SAMPLE_RATE) -> None:
        self.codec = codec
        self.state = codec.init_decoder_state(1)
        self.resampler = (soxr.ResampleStream(SAMPLE_RATE, rate, 1, dtype="float32", quality="HQ")
                          if rate != SAMPLE_RATE else None)

    def feed(self, codes: np.ndarray) -> np.ndarray:
        """Audio of frames [K, n]: 1920 samples each at 24 kHz."""
        audio = self.codec.decode_step(self.state, torch.from_numpy(codes)[None])[0, 0].float().cpu().numpy()
        return self.resampler.resample_chunk(audio) if self.resampler else audio

    def finish(self) -> np.ndarray:
        if self.resampler is None:
            return np.zeros(0, np.float32)
        return self.resampler.resample_chunk(np.zeros(0, np.float32), last=True)


def warm_up(codec: MimiCodec, direction: str, steps: int = 3) -> None:
    """A few throwaway steps of `direction` ("encode" or "decode"), so that the first real frames
    do not pay for lazy initialisation (allocator, kernel selection, the layers' column blocks),
    which would otherwise delay them. Only that direction: the other half of the model then holds
    no column blocks in this process."""
    if direction == "encode":
        enc = codec.init_encoder_state(1)
        for _ in range(steps):
            codec.encode_step(enc, torch.zeros(1, codec.frame_samples, device=codec.device))
    else:
        dec = codec.init_decoder_state(1)
        codes = torch.zeros(1, codec.config.num_codebooks, 1, dtype=torch.long, device=codec.device)
        for _ in range(steps):
            codec.decode_step(dec, codes)


@dataclass
class StreamStats:
    frames: int = 0
    samples_out: int = 0


def encode_stream(codec: MimiCodec, instream: BinaryIO, outstream: BinaryIO, num_codebooks: int = DEFAULT_CODEBOOKS,
                  output_format: str = "binary", raw: PcmFormat | None = None,
                  threads: ThreadPolicy | None = None) -> StreamStats:
    """Reads audio (WAV, or `raw` PCM) to end of stream and writes each frame's codes the moment
    they exist; `threads` (default: torch's current count, not following the backlog) holds only
    during the call."""
    policy = threads or ThreadPolicy(torch.get_num_threads())
    with policy.applied():
        return _encode_stream(codec, instream, outstream, num_codebooks, output_format, raw, policy)


def _encode_stream(codec: MimiCodec, instream: BinaryIO, outstream: BinaryIO, num_codebooks: int,
                   output_format: str, raw: PcmFormat | None, policy: ThreadPolicy) -> StreamStats:
    stats = StreamStats()
    warm_up(codec, "encode")
    writer = TokenWriter(outstream, output_format, StreamHeader(num_codebooks, SAMPLE_RATE, codec.frame_rate,
                                                                codec.config.codebook_size))
    if raw is None:
        head = read_up_to(instream, SNIFF_BYTES)
        demuxer = stream_demuxer_for(head)
        if demuxer is not None and _seekable(instream):  # a file: FFmpeg may seek in it (an MP4's index)
            instream.seek(0)
            _encode_container(codec, instream, demuxer, writer, num_codebooks, policy, stats)
            return stats
        instream = Prefixed(head, instream)
        if demuxer in NEEDS_SEEKING:
            kind = {"mov": "MP4/M4A", "asf": "WMA"}[demuxer]
            raise StreamFormatError(f"{kind} cannot be read from a pipe (its index is where a pipe cannot go back "
                                    "to); give the file by name, or pipe it as Ogg: ffmpeg -i IN -c:a libopus -f ogg -")
        if demuxer is not None:
            _encode_container(codec, instream, demuxer, writer, num_codebooks, policy, stats)
            return stats
    fmt, remaining = (raw, None) if raw is not None else read_wav_header(instream)
    encoder = StreamEncoder(codec, fmt, num_codebooks)
    frame_bytes = round(fmt.rate / codec.frame_rate) * fmt.frame_bytes
    with policy.backlog(instream, frame_bytes) as backlog:
        while remaining is None or remaining > 0:
            data = instream.read(READ_BYTES if remaining is None else min(READ_BYTES, remaining))
            if not data:
                break
            if remaining is not None:
                remaining -= len(data)
            _write(encoder.feed(data), writer, stats, backlog)
        _write(encoder.finish(), writer, stats)
    return stats


def _write(frames: Iterator[np.ndarray], writer: TokenWriter, stats: StreamStats,
           backlog: BacklogThreads | None = None) -> None:
    """Each frame's codes out the moment they exist, counted; the backlog looked at after each."""
    for codes in frames:
        writer.frames(codes)
        stats.frames += codes.shape[1]
        if backlog is not None:
            backlog.after_frame()


def _seekable(stream: BinaryIO) -> bool:
    try:
        return stream.seekable()
    except (AttributeError, OSError, ValueError):
        return False


def _encode_container(codec: MimiCodec, instream: BinaryIO, demuxer: str, writer: TokenWriter, num_codebooks: int,
                      policy: ThreadPolicy, stats: StreamStats) -> None:
    """`_encode_stream` for a container stream (Ogg, WebM, ADTS AAC, MP3, FLAC; from a file, MP4
    and WMA too): FFmpeg decodes each of its frames as it arrives, and the samples go on as a
    WAV's do."""
    try:
        with MediaReader(instream, demuxer, live=True) as media, \
                policy.backlog(instream, CONTAINER_FRAME_BYTES) as backlog:
            encoder = None
            for block in media.blocks(0):
                if encoder is None:
                    check_format(media.rate, media.channels)
                    encoder = StreamEncoder(codec, PcmFormat(media.rate, 1, "f32le"), num_codebooks)
                _write(encoder.feed_samples(to_mono(block)), writer, stats, backlog)
            if encoder is None:
                raise StreamFormatError(f"the {demuxer} stream holds no audio")
            _write(encoder.finish(), writer, stats)
    except AudioError as e:
        hint = "" if stats.frames else "; if it is raw PCM, pass --raw --rate R"
        raise StreamFormatError(f"{e} ({demuxer} stream{hint})") from None


def decode_stream(codec: MimiCodec, instream: BinaryIO, outstream: BinaryIO, rate: int = SAMPLE_RATE,
                  sample_format: str = "s16le", wav: bool = True, threads: ThreadPolicy | None = None) -> StreamStats:
    """Reads a token stream and writes audio (WAV with a streaming header, or raw), a frame at a
    time; `threads` as for `encode_stream`."""
    policy = threads or ThreadPolicy(torch.get_num_threads())
    with policy.applied():
        return _decode_stream(codec, instream, outstream, rate, sample_format, wav, policy)


def _decode_stream(codec: MimiCodec, instream: BinaryIO, outstream: BinaryIO, rate: int, sample_format: str,
                   wav: bool, policy: ThreadPolicy) -> StreamStats:
    stats = StreamStats()
    warm_up(codec, "decode")
    header, frames = read_tokens(instream)
    if header.num_codebooks > codec.config.num_codebooks:
        raise StreamFormatError(f"the stream has {header.num_codebooks} codebooks; Mimi has at most "
                                f"{codec.config.num_codebooks}")
    decoder = StreamDecoder(codec, rate)
    start = _position(outstream)
    if wav:
        outstream.write(streaming_wav_header(rate, sample_format))
        outstream.flush()
    written = 0
    try:
        # A binary frame is 2 bytes a code; a text one is longer, so this waits for a frame or more.
        with policy.backlog(instream, 2 * header.num_codebooks) as backlog:
            for frame in frames:
                audio = decoder.feed(frame[:, None])
                data = encode_pcm(audio, sample_format)
                outstream.write(data)
                outstream.flush()
                written += len(data)
                stats.frames += 1
                stats.samples_out += audio.size
                backlog.after_frame()
        tail = decoder.finish()
        if tail.size:
            data = encode_pcm(tail, sample_format)
            outstream.write(data)
            outstream.flush()
            written += len(data)
    finally:  # a file (not a pipe) gets its true sizes, also when the stream ends early
        if wav:
            finish_wav_header(outstream, start, written)
    return stats


def _position(stream: BinaryIO) -> int | None:
    """Where the next write lands in `stream`, or None for a pipe."""
    try:
        return stream.tell() if stream.seekable() else None
    except (AttributeError, OSError, ValueError):
        return None
