"""Speed and capacity measurements of the codec (what `mimi bench` prints).

Every figure is a median over repeats after a warm-up, with the device synchronised before
each clock read. `compare="moshi"` measures Kyutai's reference MimiModel the same way in the
same process, so ratios are like for like.
"""
from __future__ import annotations

import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch

from .codec import (
    CODEBOOK_SIZE,
    DEFAULT_CODEBOOKS,
    FRAME_SAMPLES,
    SAMPLE_RATE,
    InvalidArgument,
    MimiCodec,
    MimiError,
    load_codec,
)
from .codec.config import MimiConfig
from .codec.linear import product_layout
from .codec.weights import synthetic_tensors
from .threads import torch_threads

FRAME_S = FRAME_SAMPLES / SAMPLE_RATE  # 80 ms: a live stream's budget per frame


@dataclass(frozen=True)
class BenchSettings:
    """What `run_bench` measures: the offline clip's length and repeats, and the streaming batches."""

    seconds: float = 30.0
    repeats: int = 3
    stream_frames: int = 40  # frames timed per streaming measurement, after 5 warm-up frames
    streams: tuple[int, ...] = (1, 4, 16, 64)
    num_codebooks: int = DEFAULT_CODEBOOKS


DTYPE_NAMES = ("float32", "bfloat16", "float16", "int8")


@dataclass(frozen=True)
class StreamsFigure:
    """The batched streaming step for `streams` live streams (median ms per 80 ms frame)."""

    streams: int
    encode_step_ms: float
    decode_step_ms: float


@dataclass(frozen=True)
class EngineFigures:
    """One way of running the codec, measured: offline speed, the batch-1 step, and capacity."""

    encode_x_realtime: float
    decode_x_realtime: float
    encode_step_ms_p50: float
    encode_step_ms_p99: float
    decode_step_ms_p50: float
    decode_step_ms_p99: float
    concurrency: tuple[StreamsFigure, ...]
    max_realtime_streams: dict[str, int]  # encode, decode, encode+decode: the most streams within 80 ms


@dataclass(frozen=True)
class BenchReport:
    """What `run_bench` measured, and on what; `as_dict()` is what `mimi bench --json` prints."""

    device: str
    hardware: str
    dtype: str
    threads: int
    torch: str
    products: str | None  # the CPU's layout of few-row products (design.md)
    weights: str
    synthetic_weights: bool
    num_codebooks: int
    clip_seconds: float
    load_seconds: float
    state_bytes_per_stream: int
    engines: dict[str, EngineFigures]
    peak_rss_mb: float
    vs_first_dtype: dict[str, dict[str, float]] | None = None  # later dtypes against the first
    ratios_vs_moshi: dict[str, float] | None = None
    peak_device_memory_mb: float | None = None

    def as_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


def parse_dtypes(text: str) -> tuple[str, ...]:
    """"float32,int8" -> ("float32", "int8"); InvalidArgument unless distinct names of DTYPE_NAMES."""
    dtypes = tuple(d.strip() for d in text.split(","))
    if not text.strip() or any(d not in DTYPE_NAMES for d in dtypes) or len(set(dtypes)) != len(dtypes):
        raise InvalidArgument(f"--dtype {text}: give distinct precisions from {', '.join(DTYPE_NAMES)}, "
                              "like float32,int8")
    return dtypes


def parse_streams(text: str) -> tuple[int, ...]:
    """"1,4,16" -> (1, 4, 16); InvalidArgument unless batch sizes from 1 to 65536."""
    try:
        sizes = tuple(int(n) for n in text.split(","))
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1 or max(sizes) > 65536:
        raise InvalidArgument(f"--streams {text}: give batch sizes from 1 to 65536 like 1,4,16,64")
    return sizes


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds one call of `fn` takes, the device synchronised before and after (CUDA, MPS)."""
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def _hardware_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def peak_rss_mb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1 << 20) if sys.platform == "darwin" else rss / 1024  # bytes on macOS, KiB on Linux


class Engine:
    """What a benchmark needs of a codec: offline calls and batched streaming steps."""

    name = "mimi-cli"

    def __init__(self, codec: MimiCodec, num_codebooks: int, name: str | None = None) -> None:
        self.codec, self.k = codec, num_codebooks
        self.name = name or self.name
        self.device = codec.device
        self.codebook_size = codec.config.codebook_size

    def encode(self, audio: torch.Tensor) -> torch.Tensor:
        return self.codec.encode(audio, self.k)

    def decode(self, codes: torch.Tensor) -> None:
        self.codec.decode(codes)

    def stream_encoder(self, batch: int) -> Callable[[torch.Tensor], object]:
        state = self.codec.init_encoder_state(batch)
        return lambda frame: self.codec.encode_step(state, frame, self.k)

    def stream_decoder(self, batch: int) -> Callable[[torch.Tensor], object]:
        state = self.codec.init_decoder_state(batch)
        return lambda codes: self.codec.decode_step(state, codes)


class MoshiEngine(Engine):
    """Kyutai's reference (the `moshi` package), driven through its own streaming mode."""

    name = "moshi"

    def __init__(self, codec: MimiCodec, num_codebooks: int) -> None:
        try:
            from moshi.models import loaders
        except ImportError as e:
            raise MimiError(f"--compare moshi needs Kyutai's `moshi` package importable ({e})") from None
        self.k, self.device, self.codebook_size = num_codebooks, codec.device, CODEBOOK_SIZE
        mimi = loaders.get_mimi(None, device=str(codec.device))
        # Speed does not depend on weight values: the reference gets synthetic weights of its layout.
        mimi.load_state_dict(synthetic_tensors(MimiConfig(), 0), strict=False)
        self.mimi = mimi.to(codec.dtype).eval()
        self.mimi.set_num_codebooks(num_codebooks)
        self._contexts: list = []

    def encode(self, audio: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.mimi.encode(audio.to(self.device, next(self.mimi.parameters()).dtype))

    def decode(self, codes: torch.Tensor) -> None:
        with torch.no_grad():
            self.mimi.decode(codes)

    def _streaming(self, batch: int, fn: Callable) -> Callable:
        for ctx in self._contexts:  # one streaming mode at a time on the reference model
            ctx.__exit__(None, None, None)
        ctx = self.mimi.streaming(batch)
        ctx.__enter__()
        self._contexts = [ctx]

        def step(x):
            with torch.no_grad():
                return fn(x)
        return step

    def stream_encoder(self, batch: int) -> Callable:
        return self._streaming(batch, lambda frame: self.mimi.encode(frame))

    def stream_decoder(self, batch: int) -> Callable:
        return self._streaming(batch, lambda codes: self.mimi.decode(codes))


def _offline(engines: list[Engine], s: BenchSettings) -> tuple[list[dict], list[torch.Tensor]]:
    """x-real-time of offline encode and decode, engines alternating within each repeat; and
    each engine's codes of the clip."""
    audio = 0.1 * torch.randn(1, 1, int(s.seconds * SAMPLE_RATE))
    audio = [audio.to(e.device) for e in engines]
    codes = [e.encode(a) for e, a in zip(engines, audio)]  # warm-up, and the codes to decode
    for e, c in zip(engines, codes):
        e.decode(c)
    enc: list[list[float]] = [[] for _ in engines]
    dec: list[list[float]] = [[] for _ in engines]
    for _ in range(s.repeats):
        for i, e in enumerate(engines):
            enc[i].append(timed(lambda e=e, i=i: e.encode(audio[i]), e.device))
            dec[i].append(timed(lambda e=e, i=i: e.decode(codes[i]), e.device))
    return [{"encode_x_realtime": s.seconds / statistics.median(a),
             "decode_x_realtime": s.seconds / statistics.median(b)} for a, b in zip(enc, dec)], codes


def _step_times(engine: Engine, batch: int, frames: int, num_codebooks: int) -> tuple[list[float], list[float]]:
    """Seconds per streaming step (one 80 ms frame for each of `batch` streams), encode and decode."""
    frame = (0.1 * torch.randn(batch, 1, FRAME_SAMPLES)).to(engine.device)
    codes = torch.randint(0, engine.codebook_size, (batch, num_codebooks, 1), device=engine.device)
    warmup = 5
    encode = engine.stream_encoder(batch)
    enc = [timed(lambda: encode(frame), engine.device) for _ in range(warmup + frames)][warmup:]
    decode = engine.stream_decoder(batch)
    dec = [timed(lambda: decode(codes), engine.device) for _ in range(warmup + frames)][warmup:]
    return enc, dec


def _ms(values: list[float], q: float) -> float:
    return float(np.percentile(values, q) * 1000)


def _streaming(engine: Engine, s: BenchSettings) -> dict:
    enc, dec = _step_times(engine, 1, s.stream_frames, s.num_codebooks)
    out = {"encode_step_ms_p50": _ms(enc, 50), "encode_step_ms_p99": _ms(enc, 99),
           "decode_step_ms_p50": _ms(dec, 50), "decode_step_ms_p99": _ms(dec, 99)}
    rows = []
    for n in s.streams:
        enc, dec = _step_times(engine, n, max(5, s.stream_frames // 4), s.num_codebooks)
        rows.append(StreamsFigure(n, _ms(enc, 50), _ms(dec, 50)))
        if min(rows[-1].encode_step_ms, rows[-1].decode_step_ms) > 3 * FRAME_S * 1000:
            break  # far past real time: larger batches only take longer to measure
    budget = FRAME_S * 1000

    def most(key: Callable[[StreamsFigure], float]) -> int:
        return max([r.streams for r in rows if key(r) <= budget], default=0)

    out["concurrency"] = tuple(rows)
    out["max_realtime_streams"] = {
        "encode": most(lambda r: r.encode_step_ms), "decode": most(lambda r: r.decode_step_ms),
        "encode+decode": most(lambda r: r.encode_step_ms + r.decode_step_ms)}
    return out


def run_bench(weights: str | None = None, device: str = "auto", dtype: str = "float32",
              threads: int | None = None, settings: BenchSettings | None = None,
              compare: str | None = None, config: MimiConfig | None = None,
              log: Callable[[str], None] = lambda msg: None) -> BenchReport:
    """Measures the codec in each of `dtype` ("float32" or several, "float32,int8", interleaved in
    one run; optionally the reference too) and returns every figure; torch's ops run on `threads`
    (default: as they are) during the call only."""
    with torch_threads(threads or None):
        return _run_bench(weights, device, dtype, settings or BenchSettings(), compare, config, log)


def _run_bench(weights: str | None, device: str, dtype: str, s: BenchSettings, compare: str | None,
               config: MimiConfig | None, log: Callable[[str], None]) -> BenchReport:
    dtypes = parse_dtypes(dtype)
    start = time.perf_counter()
    codec = load_codec(weights, device=device, dtype=dtypes[0], config=config)
    load_s = time.perf_counter() - start
    engines = [Engine(codec, s.num_codebooks, f"mimi-cli {dtypes[0]}" if len(dtypes) > 1 else None)]
    for other in dtypes[1:]:
        engines.append(Engine(load_codec(weights, device=device, dtype=other, config=config), s.num_codebooks,
                              f"mimi-cli {other}"))
    if compare:
        if compare != "moshi":
            raise MimiError(f"--compare {compare}: only 'moshi' is supported")
        if config is not None and config != MimiConfig():
            raise MimiError("--compare moshi needs the full-size model")
        engines.append(MoshiEngine(codec, s.num_codebooks))
    dev = codec.device
    log("measuring offline encode and decode")
    offline, codes = _offline(engines, s)
    figures: dict[str, EngineFigures] = {}
    for engine, speed in zip(engines, offline):
        log(f"measuring {engine.name}: streaming")
        figures[engine.name] = EngineFigures(**speed, **_streaming(engine, s))
    vs_first = None
    if len(dtypes) > 1:
        base = figures[engines[0].name]
        vs_first = {}
        for engine, c in zip(engines[1:], codes[1:]):
            e = figures[engine.name]
            equal = (c.cpu() == codes[0].cpu())[0]  # [K, frames]
            vs_first[engine.name] = {
                "encode_x_realtime": e.encode_x_realtime / base.encode_x_realtime,
                "encode_step": e.encode_step_ms_p50 / base.encode_step_ms_p50,
                "decode_step": e.decode_step_ms_p50 / base.decode_step_ms_p50,
                "live_encode_streams": e.max_realtime_streams["encode"],
                "codes_equal_codebook0": float(equal[0].float().mean()),
                "codes_equal_all": float(equal.all(0).float().mean())}
    vs_moshi = None
    if compare:
        ours, ref = figures["mimi-cli"], figures["moshi"]
        vs_moshi = {
            "encode_x_realtime": ours.encode_x_realtime / ref.encode_x_realtime,
            "decode_x_realtime": ours.decode_x_realtime / ref.decode_x_realtime,
            "encode_step_speedup": ref.encode_step_ms_p50 / ours.encode_step_ms_p50,
            "decode_step_speedup": ref.decode_step_ms_p50 / ours.decode_step_ms_p50,
        }
    device_mb = None
    if dev.type == "cuda":
        device_mb = torch.cuda.max_memory_allocated(dev) / 2**20
    elif dev.type == "mps":
        device_mb = torch.mps.driver_allocated_memory() / 2**20
    return BenchReport(
        device=str(dev), hardware=_hardware_name(dev), dtype=",".join(dtypes), threads=torch.get_num_threads(),
        torch=torch.__version__, products=product_layout().name if dev.type == "cpu" else None,
        weights=codec.weights_info.get("source", ""), synthetic_weights="synthetic" in codec.weights_info,
        num_codebooks=s.num_codebooks, clip_seconds=s.seconds, load_seconds=load_s,
        state_bytes_per_stream=codec.init_encoder_state(1).nbytes() + codec.init_decoder_state(1).nbytes(),
        engines=figures, peak_rss_mb=peak_rss_mb(), vs_first_dtype=vs_first, ratios_vs_moshi=vs_moshi,
        peak_device_memory_mb=device_mb)


def format_report(r: BenchReport) -> str:
    """The result of `run_bench` as a table for a terminal."""
    lines = [
        f"device   {r.device} ({r.hardware}), {r.dtype}, {r.threads} threads, torch {r.torch}"
        + (f", {r.products} products" if r.products else ""),
        f"weights  {r.weights}{' (synthetic: speed only, tokens are not Mimi)' if r.synthetic_weights else ''}",
        f"model    loaded in {r.load_seconds:.2f} s; {r.num_codebooks} codebooks; "
        f"streaming state {r.state_bytes_per_stream / 2**20:.2f} MiB per stream (encode+decode)",
        "",
    ]
    names = list(r.engines)
    lines.append(f"{'':34}" + "".join(f"{n:>14}" for n in names))

    def row(label: str, key: str, fmt: str) -> None:
        lines.append(f"{label:34}" + "".join(f"{format(getattr(r.engines[n], key), fmt):>14}" for n in names))

    row(f"offline encode (x real time, {r.clip_seconds:g} s)", "encode_x_realtime", ".1f")
    row("offline decode (x real time)", "decode_x_realtime", ".1f")
    for what in ("encode", "decode"):
        for q in ("p50", "p99"):
            row(f"streaming {what} step, ms {q}", f"{what}_step_ms_{q}", ".1f")
    lines.append("")
    for n in names:
        e = r.engines[n]
        lines.append(f"{n}: batched streaming step (ms) for N live streams (real time: <= {FRAME_S * 1000:.0f} ms)")
        for c in e.concurrency:
            lines.append(f"  N={c.streams:<5} encode {c.encode_step_ms:8.1f}   decode {c.decode_step_ms:8.1f}")
        m = e.max_realtime_streams
        lines.append(f"  live streams in real time (of those measured): encode {m['encode']}, "
                     f"decode {m['decode']}, encode+decode {m['encode+decode']}")
    for name, x in (r.vs_first_dtype or {}).items():
        lines.append("")
        lines.append(f"{name} against {names[0]}: offline encode {x['encode_x_realtime']:.2f}x the speed; "
                     f"streaming step {x['encode_step']:.2f}x (encode), {x['decode_step']:.2f}x (decode) the time; "
                     f"codes of the clip equal on {x['codes_equal_all']:.1%} of frames in all K "
                     f"({x['codes_equal_codebook0']:.1%} in codebook 0; `mimi verify` measures your audio)")
    if r.ratios_vs_moshi:
        x = r.ratios_vs_moshi
        lines.append("")
        lines.append(f"vs moshi: offline encode {x['encode_x_realtime']:.2f}x, "
                     f"decode {x['decode_x_realtime']:.2f}x; streaming step encode "
                     f"{x['encode_step_speedup']:.2f}x, decode {x['decode_step_speedup']:.2f}x faster")
    mem = f"peak RSS {r.peak_rss_mb:.0f} MB"
    if r.peak_device_memory_mb is not None:
        mem += f", device memory {r.peak_device_memory_mb:.0f} MB"
    lines.append(mem)
    return "\n".join(lines)
