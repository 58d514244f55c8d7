"""`mimi serve`: WebSocket endpoints for live encode and decode, a browser page, health and
metrics, over aiohttp. The protocol is in docs/serve.md."""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import signal
import threading
from dataclasses import dataclass
from importlib import resources

import numpy as np
import soxr
from aiohttp import WSCloseCode, WSMsgType, web

from ..codec import MimiCodec
from ..errors import MimiError
from ..formats.audio import AudioError, to_mono
from ..formats.media import OggOpusWriter, PushedStream
from ..formats.pcm import PcmDecoder, PcmFormat, StreamFormatError, encode_pcm
from ..formats.tokenstream import HEADER, StreamHeader, binary_frame, binary_header, parse_binary_header
from ..spec import CODEBOOK_SIZE, DEFAULT_CODEBOOKS, FRAME_SAMPLES, SAMPLE_RATE
from ..streaming import warm_up
from .access import IDLE_TIMEOUT_S, MAX_MESSAGE_BYTES, FailedTokens, given_token, token_matches
from .batcher import DecodeStream, EncodeStream, Stepper
from .metrics import Metrics

log = logging.getLogger("mimi_cli.serve")  # under the CLI's logger, so `mimi serve` shows it
FORMATS = ("s16le", "f32le", "opus")  # opus: Ogg/Opus out; in, Ogg/Opus or WebM/Opus (as browsers record)
OPUS_BITRATE = 32000  # /v1/decode's Opus by default (?bitrate=): clear speech at 24 kHz mono
OPUS_IN = (frozenset({"ogg", "matroska"}), frozenset({"opus", "libopus"}))
MIN_RATE, MAX_RATE = 8000, 192000
MAX_CHANNELS = 8
BUFFER_FRAMES = 25  # input a client may have waiting (2 s): more, and the server stops reading it
QUEUE_MESSAGES = 64  # output a client may leave unread (5 s of frames): more, and it is disconnected
CLOSE_TIMEOUT_S = 3.0  # how long a close waits for the client's reply
CLOSE_UNAUTHORIZED = 4401
CLOSE_IDLE = 4408
CLOSE_LOCKED_OUT = 4429
CLOSE_POLICY = WSCloseCode.POLICY_VIOLATION  # 1008
CLOSE_FULL = WSCloseCode.TRY_AGAIN_LATER  # 1013
CLOSE_GOING_AWAY = WSCloseCode.GOING_AWAY  # 1001


@dataclass(frozen=True)
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    max_streams: int = 64
    token: str | None = None
    num_codebooks: int = DEFAULT_CODEBOOKS
    max_wait_s: float = 0.08  # how long streams with a frame wait for the others before stepping without them
    idle_timeout_s: float = IDLE_TIMEOUT_S
    max_message_bytes: int = MAX_MESSAGE_BYTES


class BadRequest(MimiError, ValueError):
    """A query or stream the server refuses (closed with 1008 and this message)."""


def _int(query, name: str, default: int, lo: int, hi: int) -> int:
    raw = query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name}={raw!r} is not an integer") from None
    if not lo <= value <= hi:
        raise BadRequest(f"{name}={value} is not in {lo}..{hi}")
    return value


def _not_with(query, names: tuple[str, ...], why: str) -> None:
    """BadRequest if the query gives any of `names`, which its format does not take."""
    given = [n for n in names if n in query]
    if given:
        raise BadRequest(f"{', '.join(given)} with format={query.get('format')}: {why}")


def _format(query) -> str:
    fmt = query.get("format", "s16le")
    if fmt not in FORMATS:
        raise BadRequest(f"format={fmt!r}: one of {', '.join(FORMATS)}")
    return fmt


class Server:
    """The state of one running server: the stepper thread, live connections and counters."""

    def __init__(self, codec: MimiCodec, config: ServeConfig, model: str, stepper_thread: bool = True) -> None:
        self.codec, self.config, self.model = codec, config, model
        self.stepper_thread = stepper_thread  # False: the caller runs `stepper.run()` itself
        self.metrics = Metrics()
        self.stepper = Stepper(codec, config.max_wait_s, on_step=self.metrics.stepped)
        self.sockets: set[web.WebSocketResponse] = set()
        self.failed_tokens = FailedTokens()

    # -- the app ------------------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application()
        app.add_routes([web.get("/", self.page), web.get("/worklet.js", self.worklet),
                        web.get("/health", self.health), web.get("/metrics", self.metrics_text),
                        web.get("/v1/encode", self.encode), web.get("/v1/decode", self.decode)])
        app.on_startup.append(self._start)
        app.on_shutdown.append(self._shutdown)
        return app

    async def _start(self, app: web.Application) -> None:
        self.loop = asyncio.get_running_loop()
        if self.stepper_thread:
            self.stepper.start()

    async def _shutdown(self, app: web.Application) -> None:
        for ws in list(self.sockets):
            await ws.close(code=CLOSE_GOING_AWAY, message=b"server shutting down")
        self.stepper.stop()

    async def page(self, request: web.Request) -> web.Response:
        return web.Response(text=_static("index.html"), content_type="text/html")

    async def worklet(self, request: web.Request) -> web.Response:
        return web.Response(text=_static("worklet.js"), content_type="application/javascript")

    async def health(self, request: web.Request) -> web.Response:
        if self.config.token is not None and not self._token_ok(request):
            return web.json_response({"status": "ok"})  # the rest is for those who hold the token
        live = self.stepper.live
        return web.json_response({"status": "ok", "live_streams": live, "connections": len(self.sockets),
                                  "capacity": self.config.max_streams,
                                  "device": str(self.codec.device), "dtype": str(self.codec.dtype).removeprefix(
                                      "torch."), "model": self.model, "num_codebooks": self.config.num_codebooks})

    async def metrics_text(self, request: web.Request) -> web.Response:
        refusal = self._refusal(request)
        if refusal is not None:
            status = 429 if refusal[0] == CLOSE_LOCKED_OUT else 401
            return web.Response(status=status, text=refusal[1] + "\n")
        return web.Response(text=self.metrics.text(self.stepper.live), content_type="text/plain",
                            charset="utf-8")

    # -- connections --------------------------------------------------------------------------------
    def _token_ok(self, request: web.Request) -> bool:
        return self.config.token is None or token_matches(given_token(request.query, request.headers),
                                                          self.config.token)

    def _refusal(self, request: web.Request) -> tuple[int, str] | None:
        """Why a request may not go on (close code, reason), or None: a missing or wrong token, or an
        address locked out after too many wrong ones (counted here)."""
        if self.config.token is None:
            return None
        address = request.remote or "unknown"
        wait = self.failed_tokens.wait_s(address)
        if wait:
            self.metrics.refused("locked out")
            return CLOSE_LOCKED_OUT, f"too many wrong tokens from this address; try again in {math.ceil(wait)} s"
        if self._token_ok(request):
            return None
        self.failed_tokens.failed(address)
        self.metrics.refused("unauthorized")
        return CLOSE_UNAUTHORIZED, "no or wrong token"

    async def _accept(self, request: web.Request) -> tuple[web.WebSocketResponse, bool]:
        """The WebSocket, and whether it may go on (if not, it is closed with the code that says why)."""
        # No permessage-deflate: PCM and codes do not compress, and each connection would hold a zlib stream.
        ws = web.WebSocketResponse(max_msg_size=self.config.max_message_bytes, heartbeat=30,
                                   timeout=CLOSE_TIMEOUT_S, compress=False)
        await ws.prepare(request)
        refusal = self._refusal(request)
        if refusal is not None:
            await ws.close(code=refusal[0], message=refusal[1].encode())
            return ws, False
        if len(self.sockets) >= self.config.max_streams:  # connections, streams or not yet
            self.metrics.refused("full")
            await ws.close(code=CLOSE_FULL, message=f"full: {self.config.max_streams} streams".encode())
            return ws, False
        self.sockets.add(ws)
        return ws, True

    async def _refuse(self, ws: web.WebSocketResponse, reason: str) -> None:
        self.sockets.discard(ws)
        self.metrics.refused("bad request")
        await ws.close(code=CLOSE_POLICY, message=reason.encode()[:120])

    async def encode(self, request: web.Request) -> web.WebSocketResponse:
        ws, ok = await self._accept(request)
        if not ok:
            return ws
        try:
            q = request.query
            kind = _format(q)
            if kind == "opus":
                _not_with(q, ("rate", "channels"), "an Opus stream states its own rate and channels")
            fmt = PcmFormat(_int(q, "rate", SAMPLE_RATE, MIN_RATE, MAX_RATE),
                            _int(q, "channels", 1, 1, MAX_CHANNELS), kind) if kind != "opus" else None
            k = _int(q, "num_codebooks", self.config.num_codebooks, 1, self.codec.config.num_codebooks)
        except BadRequest as e:
            await self._refuse(ws, str(e))
            return ws
        conn = _Connection(self, ws)
        stream = EncodeStream(k, conn.deliver_codes, conn.done_soon)
        audio = _AudioIn(fmt) if fmt is not None else _OpusIn()
        conn.queue.put_nowait(binary_header(StreamHeader(k, SAMPLE_RATE, self.codec.frame_rate,
                                                         self.codec.config.codebook_size)))  # sent first
        def finish() -> None:  # the resampler's last samples, before the last frame is padded
            stream.push(audio.tail())

        try:
            await conn.run(stream, lambda data: stream.push(audio(data)), finish)
        finally:
            audio.abort()
        return ws

    async def decode(self, request: web.Request) -> web.WebSocketResponse:
        ws, ok = await self._accept(request)
        if not ok:
            return ws
        try:
            q = request.query
            rate = _int(q, "rate", SAMPLE_RATE, MIN_RATE, MAX_RATE)
            fmt = _format(q)
            bitrate = _int(q, "bitrate", OPUS_BITRATE, 6000, 256000)
            if fmt == "opus":
                _not_with(q, ("rate",), "Opus is sent at 24 kHz, which Opus decoders play at any rate")
            else:
                _not_with(q, ("bitrate",), "bitrate is Opus's; PCM has none")
        except BadRequest as e:
            await self._refuse(ws, str(e))
            return ws
        conn = _Connection(self, ws)
        tokens = _TokensIn(self.codec.config.num_codebooks)
        audio = _AudioOut(rate, fmt) if fmt != "opus" else _OpusOut(bitrate)
        stream_box: list[DecodeStream] = []

        def deliver(pcm: np.ndarray) -> None:  # on the stepper thread: one message a frame
            for i in range(0, pcm.size, FRAME_SAMPLES):
                conn.send(audio(pcm[i:i + FRAME_SAMPLES]))

        def done() -> None:  # on the stepper thread, after the last frame's audio
            conn.send(audio.tail())
            conn.done_soon()

        def feed(data: bytes) -> bool:
            frames = tokens(data)
            if not stream_box:
                if tokens.header is None:
                    return False
                stream_box.append(DecodeStream(tokens.header.num_codebooks, deliver, done))
                self.stepper.add(stream_box[0])
            return stream_box[0].push(frames)

        await conn.run(None, feed, lambda: None, lambda: stream_box[0] if stream_box else None)
        return ws


class _Connection:
    """One WebSocket's life: read input (with backpressure), send output in order (with a bound),
    end on `{"type": "end"}` (after the last output) or when the client goes."""

    def __init__(self, server: Server, ws: web.WebSocketResponse) -> None:
        self.server, self.ws = server, ws
        self.loop = server.loop
        self.queue: asyncio.Queue = asyncio.Queue(maxsize=QUEUE_MESSAGES)
        self.finished = asyncio.Event()
        self.too_slow = False

    # Called on the stepper thread.
    def deliver_codes(self, codes: np.ndarray) -> None:
        for frame in codes.T:
            self.send(frame.astype("<u2").tobytes())

    def send(self, data: bytes) -> None:
        self.loop.call_soon_threadsafe(self._put, data)

    def done_soon(self) -> None:
        self.loop.call_soon_threadsafe(self.finished.set)

    def _put(self, data: bytes) -> None:
        if data and not self.too_slow:
            try:
                self.queue.put_nowait(data)
            except asyncio.QueueFull:
                self.too_slow = True

    async def _sender(self) -> None:
        while True:
            data = await self.queue.get()
            if data is None:
                return
            await self.ws.send_bytes(data)

    async def run(self, stream, feed, finish, current=None) -> None:
        """Reads messages until end or close; `feed(bytes)` takes input, `finish()` flushes it."""
        server = self.server
        current = current or (lambda: stream)
        if stream is not None:
            server.stepper.add(stream)
        sender = asyncio.create_task(self._sender())
        reason: tuple[int, str] | None = None
        idle_s = server.config.idle_timeout_s
        last_frame = self.loop.time()
        try:
            while True:
                try:  # pings and pieces of a frame do not count: only complete frames keep a stream
                    msg = await asyncio.wait_for(self.ws.receive(), last_frame + idle_s - self.loop.time())
                except asyncio.TimeoutError:
                    server.metrics.error("idle")
                    reason = (CLOSE_IDLE, f"idle: no complete frame for {idle_s:g} s")
                    break
                if msg.type == WSMsgType.BINARY:
                    try:
                        completed = feed(msg.data)
                    except (StreamFormatError, BadRequest) as e:
                        reason = (CLOSE_POLICY, str(e))
                        break
                    if completed:  # a frame is whole: the stepper may have a step to make
                        server.stepper.wake()
                    s = current()
                    while s is not None and s.buffered > BUFFER_FRAMES and not self.too_slow:
                        await asyncio.sleep(0.01)  # backpressure: TCP holds the client while we wait
                    if self.too_slow:
                        break
                    if completed:
                        last_frame = self.loop.time()
                elif msg.type == WSMsgType.TEXT:
                    try:
                        kind = json.loads(msg.data).get("type")
                    except (ValueError, AttributeError):
                        kind = None
                    if kind != "end":
                        reason = (CLOSE_POLICY, 'text messages are {"type": "end"} only')
                        break
                    try:
                        finish()
                    except (StreamFormatError, BadRequest) as e:
                        reason = (CLOSE_POLICY, str(e))
                        break
                    s = current()
                    if s is None:
                        break
                    s.end()
                    server.stepper.wake()
                    await self.finished.wait()
                    break
                else:  # closed, or an error (a message over the size limit: closed with 1009)
                    break
            if self.too_slow:
                server.metrics.error("slow client")
                reason = (CLOSE_POLICY, "the client does not read its output")
        finally:
            s = current()
            if s is not None:
                s.closed = True
                server.stepper.wake()
            if self.too_slow:  # what it has not read will not be read: drop it
                sender.cancel()
            else:
                await self._put_when_room(None)
                try:
                    await asyncio.wait_for(sender, timeout=5)
                except (asyncio.TimeoutError, ConnectionError):
                    sender.cancel()
            server.sockets.discard(self.ws)
            if reason is not None:
                if reason[0] != CLOSE_IDLE:
                    server.metrics.error("bad stream" if reason[0] == CLOSE_POLICY else "other")
                await self.ws.close(code=reason[0], message=reason[1].encode()[:120])
            else:
                await self.ws.close(code=WSCloseCode.OK)

    async def _put_when_room(self, item) -> None:
        try:
            await asyncio.wait_for(self.queue.put(item), timeout=5)
        except asyncio.TimeoutError:
            pass


class _AudioIn:
    """PCM bytes of the client's format -> 24 kHz mono float32 (resampled as it streams)."""

    def __init__(self, fmt: PcmFormat) -> None:
        self.pcm = PcmDecoder(fmt)
        self.resampler = (soxr.ResampleStream(fmt.rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ")
                          if fmt.rate != SAMPLE_RATE else None)

    def __call__(self, data: bytes) -> np.ndarray:
        audio = self.pcm(data)
        if not np.isfinite(audio).all():
            raise BadRequest("the audio holds NaN or infinite samples")
        return self.resampler.resample_chunk(audio) if self.resampler is not None else audio

    def tail(self) -> np.ndarray:
        if self.resampler is None:
            return np.zeros(0, np.float32)
        return self.resampler.resample_chunk(np.zeros(0, np.float32), last=True)

    def abort(self) -> None:
        pass


class _OpusIn:
    """Ogg/Opus or WebM/Opus bytes, as they come -> 24 kHz mono float32: FFmpeg decodes each
    packet (media's allow-list, narrowed to those containers and Opus), soxr resamples."""

    def __init__(self) -> None:
        self.media = PushedStream(*OPUS_IN, max_channels=MAX_CHANNELS)
        self.resampler: soxr.ResampleStream | None = None

    def __call__(self, data: bytes) -> np.ndarray:
        try:
            return self._mono(self.media.push(data))
        except AudioError as e:
            raise BadRequest(str(e)) from None

    def _mono(self, blocks: list[np.ndarray], last: bool = False) -> np.ndarray:
        audio = np.concatenate([to_mono(b) for b in blocks]) if blocks else np.zeros(0, np.float32)
        if not np.isfinite(audio).all():
            raise BadRequest("the audio holds NaN or infinite samples")
        if self.resampler is None:
            if self.media.rate in (0, SAMPLE_RATE):  # not yet known, or nothing to resample
                return audio
            self.resampler = soxr.ResampleStream(self.media.rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ")
        return self.resampler.resample_chunk(audio, last=last)

    def tail(self) -> np.ndarray:
        try:
            return self._mono(self.media.close(), last=True)
        except AudioError as e:
            raise BadRequest(str(e)) from None

    def abort(self) -> None:
        self.media.abort()


class _OpusOut:
    """Decoded 24 kHz audio -> Ogg/Opus pages, one message a frame."""

    def __init__(self, bitrate: int) -> None:
        self.writer = OggOpusWriter(SAMPLE_RATE, bitrate)

    def __call__(self, audio: np.ndarray) -> bytes:
        return self.writer(audio)

    def tail(self) -> bytes:
        return self.writer.close()


class _AudioOut:
    """Decoded 24 kHz audio -> PCM bytes at the client's rate and format."""

    def __init__(self, rate: int, fmt: str) -> None:
        self.fmt = fmt
        self.resampler = (soxr.ResampleStream(SAMPLE_RATE, rate, 1, dtype="float32", quality="HQ")
                          if rate != SAMPLE_RATE else None)

    def __call__(self, audio: np.ndarray) -> bytes:
        if self.resampler is not None:
            audio = self.resampler.resample_chunk(audio)
        return encode_pcm(audio, self.fmt)

    def tail(self) -> bytes:
        if self.resampler is None:
            return b""
        return encode_pcm(self.resampler.resample_chunk(np.zeros(0, np.float32), last=True), self.fmt)


class _TokensIn:
    """A binary token stream split anyhow -> its header, then frames [K] as they complete."""

    def __init__(self, max_codebooks: int) -> None:
        self.max_codebooks = max_codebooks
        self.header: StreamHeader | None = None
        self.rest = b""
        self.index = 0

    def __call__(self, data: bytes) -> list[np.ndarray]:
        self.rest += data
        if self.header is None:
            if len(self.rest) < HEADER.size:
                return []
            self.header = parse_binary_header(self.rest[:HEADER.size])
            if self.header.num_codebooks > self.max_codebooks:
                raise BadRequest(f"the stream has {self.header.num_codebooks} codebooks; Mimi has "
                                 f"{self.max_codebooks}")
            if self.header.codebook_size > CODEBOOK_SIZE:
                raise BadRequest(f"codebook size {self.header.codebook_size}; Mimi's is {CODEBOOK_SIZE}")
            self.rest = self.rest[HEADER.size:]
        size = 2 * self.header.num_codebooks
        whole = len(self.rest) // size * size
        frames = [binary_frame(self.rest[i:i + size], self.header, self.index + i // size)
                  for i in range(0, whole, size)]
        self.rest = self.rest[whole:]
        self.index += len(frames)
        return frames


def _static(name: str) -> str:
    return resources.files("mimi_cli.serve").joinpath("static", name).read_text(encoding="utf-8")


class QuietLoop:
    """Holds an event loop still while a codec step runs on another thread, once the loop has had
    a few turns at what was ready: its message handling would otherwise take CPU from the step's
    threads, and a step whose thread is preempted waits for it (docs/design.md)."""

    TURNS = 3  # loop iterations first: a message's read, its handler, and a send of codes
    MAX_WAIT_S = 0.02  # a step starts after this even if the loop is still busy
    MAX_HOLD_S = 1.0

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.cond = threading.Condition()
        self.step = 0  # the step in progress, or the last one
        self.running = False
        self.holding = False

    @contextlib.contextmanager
    def __call__(self):
        with self.cond:
            self.step += 1
            step, self.running, self.holding = self.step, True, False
        self.loop.call_soon_threadsafe(self._turn, step, self.TURNS)
        with self.cond:
            self.cond.wait_for(lambda: self.holding, timeout=self.MAX_WAIT_S)
        try:
            yield
        finally:
            with self.cond:
                self.running = False
                self.cond.notify_all()

    def _turn(self, step: int, left: int) -> None:
        if left:
            self.loop.call_soon(self._turn, step, left - 1)
            return
        with self.cond:
            if step != self.step or not self.running:  # that step is over
                return
            self.holding = True
            self.cond.notify_all()
            self.cond.wait_for(lambda: not self.running or step != self.step, timeout=self.MAX_HOLD_S)


def run_server(codec: MimiCodec, config: ServeConfig, model: str) -> None:
    """Serves until SIGINT or SIGTERM, then closes every stream with 1001.

    The codec steps on this (the main) thread and the event loop runs on another, since torch's
    parallel steps run faster on the main thread and the step is what the capacity is made of
    (docs/design.md). The loop holds still during each step (`QuietLoop`). The codec is warmed up
    first, so the first clients do not wait for torch's one-time set-up."""
    warm_up(codec, "encode")
    warm_up(codec, "decode")
    server = Server(codec, config, model, stepper_thread=False)
    runner = web.AppRunner(server.app(), handle_signals=False, access_log=None, shutdown_timeout=5)
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    failed: list[BaseException] = []

    def serve_loop() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(runner.setup())
            loop.run_until_complete(web.TCPSite(runner, config.host, config.port).start())
        except BaseException as e:  # a port in use, say: reported by the main thread
            failed.append(e)
            server.stepper.stop()
            ready.set()
            return
        ready.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())  # closes every stream (1001), then stops the stepper
        server.stepper.stop()

    thread = threading.Thread(target=serve_loop, name="mimi-event-loop")
    thread.start()
    ready.wait()
    if failed:
        thread.join()
        raise failed[0]

    def shut_down(signum, frame) -> None:
        loop.call_soon_threadsafe(loop.stop)

    server.stepper.quiet = QuietLoop(loop)
    previous = {sig: signal.signal(sig, shut_down) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.stepper.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if thread.is_alive():
            loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=15)
