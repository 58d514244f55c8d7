"""`mimi eval`: what each RVQ depth buys, on the user's audio, as objective quality numbers.

Inputs are listed and read as `mimi encode` reads them (`collect_sources`, `Source.read`),
optionally sampled (seeded) to `limit` files or `seconds` of audio, and batched by length.
Each batch of files is encoded once at the largest depth, then decoded at every depth from the
first K codes; each decode is measured against the input as the codec saw it (24 kHz mono) by
`metrics.measure`. Where every way runs on an accelerator the metrics run in threads beside it;
on the CPU they run in turn with the codec, whose threads have the cores. Other ways of running
the codec (`ways[1:]`: another dtype, device or weights) go through the same files and depths,
for a side-by-side comparison.
"""
from __future__ import annotations

import logging
import math
import random
import statistics
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from . import __version__
from .codec import CODEBOOK_SIZE, FRAME_RATE, MAX_CODEBOOKS, SAMPLE_RATE, InvalidArgument, MimiCodec
from .codec.batch import decode_batch, encode_batch
from .formats.audio import AudioError
from .formats.sources import Problem, Source, collect_sources
from .metrics import HIGHER_IS_BETTER, METRICS, has_pesq, has_stoi, measure

log = logging.getLogger("mimi_cli.evaluate")

DEFAULT_DEPTHS = (1, 2, 4, 8, 16, 32)
MISSING_HINTS = {"stoi": "pip install 'mimi-cli[eval]' (pystoi)", "pesq_wb": "pip install 'mimi-cli[pesq]' (pesq)"}


def bitrate_kbps(depth: int, codebook_size: int = CODEBOOK_SIZE) -> float:
    """K codebooks x 11 bits (log2 of 2048 entries) x 12.5 frames a second."""
    return depth * math.log2(codebook_size) * FRAME_RATE / 1000


@dataclass(frozen=True)
class EvalOptions:
    depths: tuple[int, ...] = DEFAULT_DEPTHS
    limit: int | None = None  # at most this many files, sampled
    seconds: float | None = None  # files sampled until their audio reaches this
    seed: int = 0
    batch_size: int = 8  # files encoded and decoded together
    players: int = 3  # files whose decodes are kept for the report's players

    def __post_init__(self) -> None:
        if not self.depths or any(not 1 <= d <= MAX_CODEBOOKS for d in self.depths):
            raise ValueError(f"depths must be in 1..{MAX_CODEBOOKS}, got {self.depths}")


@dataclass
class Way:
    """A way of running the codec, and what it measured: per file, per depth, per metric."""

    name: str
    codec: MimiCodec
    files: list[dict] = field(default_factory=list)
    clips: dict[str, dict[int, np.ndarray]] = field(default_factory=dict)  # kept decodes, by file id


@dataclass
class EvalResult:
    ways: list[Way]
    depths: tuple[int, ...]
    failed: list[Problem]
    originals: dict[str, np.ndarray]  # kept inputs (24 kHz mono), by file id
    sample: dict
    skipped_metrics: dict[str, str]

    def summary(self, way: Way) -> dict[str, dict[str, dict]]:
        """Per depth, per metric: mean, median, worst value and the worst file (None values left out)."""
        out: dict[str, dict[str, dict]] = {}
        for d in self.depths:
            per_metric = {}
            for name in METRICS:
                values = [(f["depths"][str(d)][name], f["id"]) for f in way.files
                          if f["depths"][str(d)][name] is not None and not math.isnan(f["depths"][str(d)][name])]
                if not values:
                    per_metric[name] = None
                    continue
                pick = min if HIGHER_IS_BETTER[name] else max
                worst = pick(values, key=lambda v: v[0])
                xs = [v for v, _ in values]
                per_metric[name] = {"mean": _mean(xs), "median": statistics.median(xs), "worst": worst[0],
                                    "worst_file": worst[1]}
            out[str(d)] = per_metric
        return out

    def as_dict(self) -> dict:
        first = self.ways[0].codec
        source = first.weights_info.get("source", "")
        return {
            "tool": "mimi-cli", "tool_version": __version__,
            "model": {k: v for k, v in first.weights_info.items() if k in ("source", "repo", "revision", "sha256")},
            "synthetic_weights": source.startswith("synthetic"),
            "sample": self.sample,
            "depths": list(self.depths),
            "bitrate_kbps": {str(d): bitrate_kbps(d, first.config.codebook_size) for d in self.depths},
            "metrics": list(METRICS), "skipped_metrics": self.skipped_metrics,
            "ways": [{"name": w.name, "device": str(w.codec.device), "dtype": _dtype_name(w.codec),
                      "weights": w.codec.weights_info.get("source"),
                      "summary": _json_safe(self.summary(w)), "files": _json_safe(w.files)} for w in self.ways],
            "failed": [{"id": p.id, "path": p.path, "error": p.error} for p in self.failed],
        }


def _mean(xs: list[float]) -> float:
    """The mean of the finite values (a file decoded without loss would make any mean infinite);
    inf only when every file is identical."""
    finite = [x for x in xs if math.isfinite(x)]
    return float(np.mean(finite)) if finite else xs[0]


def _dtype_name(codec: MimiCodec) -> str:
    int8 = any(getattr(m, "int8", None) is not None for m in codec.modules())
    return "int8" if int8 else str(codec.dtype).removeprefix("torch.")


def _json_safe(value):
    """inf and -inf as the strings "inf" and "-inf" (identical audio; JSON has no infinity), NaN as null."""
    if isinstance(value, float):
        if math.isnan(value):
            return None
        return ("inf" if value > 0 else "-inf") if math.isinf(value) else value
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def sample_sources(sources: list[Source], options: EvalOptions, failed: list[Problem],
                   length: Callable[[Source], float] = Source.length_s) -> list[Source]:
    """The sources to measure: all of them in listed order, or a seeded random sample of `limit`
    files, or of files whose lengths add up to at least `seconds`."""
    if options.limit is None and options.seconds is None:
        return sources
    order = list(sources)
    random.Random(options.seed).shuffle(order)
    if options.limit is not None:
        order = order[:options.limit]
    if options.seconds is None:
        return order
    picked, total = [], 0.0
    for s in order:
        if total >= options.seconds:
            break
        try:
            total += length(s)
        except AudioError as e:
            failed.append(Problem(s.id, str(s.path), str(e)))
            continue
        picked.append(s)
    return picked


class _Inline:
    """A pool of no threads: metrics computed when submitted (the codec has the CPU's cores)."""

    def submit(self, fn, *args) -> Future:
        future: Future = Future()
        future.set_result(fn(*args))
        return future

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None


def _by_length(sources: list[Source], failed: list[Problem],
               length: Callable[[Source], float] = Source.length_s) -> list[Source]:
    """Sources in order of length, so that a batch pads its files little (as encode batches)."""
    lengths = []
    for s in sources:
        try:
            lengths.append((length(s), s))
        except AudioError as e:
            failed.append(Problem(s.id, str(s.path), str(e)))
    return [s for _, s in sorted(lengths, key=lambda x: x[0])]


def evaluate(ways: list[tuple[str, MimiCodec]], inputs: list[str], options: EvalOptions | None = None,
             progress: Callable[..., object] | None = None, threads: int | None = None) -> EvalResult:
    """Measures every way on the inputs' audio at every depth (see the module docstring). Metrics
    run in `threads` threads beside the codec; by default 2 when every way runs on an accelerator,
    else none: on the CPU they would take cores from the codec's own threads."""
    o = options or EvalOptions()
    for name, codec in ways:  # before any audio is read
        if max(o.depths) > codec.config.num_codebooks:
            raise InvalidArgument(f"{name}: this model has {codec.config.num_codebooks} codebooks; "
                                  f"-q asks for {max(o.depths)}")
    if threads is None:
        threads = 0 if any(codec.device.type == "cpu" for _, codec in ways) else 2
    depths = tuple(sorted(set(o.depths)))
    sources, failed = collect_sources(inputs)
    listed = len(sources)
    known: dict[int, float] = {}  # a header is probed once, for the sample and for the order

    def length(s: Source) -> float:
        if id(s) not in known:
            known[id(s)] = s.length_s()
        return known[id(s)]

    sources = _by_length(sample_sources(sources, o, failed, length), failed, length)
    skip = frozenset(n for n, present in (("stoi", has_stoi()), ("pesq_wb", has_pesq())) if not present)
    result = EvalResult([Way(name, codec) for name, codec in ways], depths, failed, {},
                        {"files_listed": listed, "limit": o.limit, "seconds_asked": o.seconds, "seed": o.seed},
                        {n: MISSING_HINTS[n] for n in sorted(skip)})
    bar = progress(total=len(sources)) if progress else None
    audio_seconds = 0.0
    files_measured = 0
    with (ThreadPoolExecutor(max_workers=threads) if threads else _Inline()) as pool:
        for first in range(0, len(sources), o.batch_size):
            batch = []
            for s in sources[first:first + o.batch_size]:
                try:
                    batch.append((s, s.read("mix")[0].pcm))
                except AudioError as e:
                    failed.append(Problem(s.id, str(s.path), str(e)))
                    log.warning("%s: %s", s.id, e)
            if batch:
                keep = max(0, o.players - len(result.originals))
                for s, pcm in batch[:keep]:
                    result.originals[s.id] = pcm
                for way in result.ways:
                    _measure_batch(way, batch, depths, pool, skip, set(result.originals))
                audio_seconds += sum(len(p) for _, p in batch) / SAMPLE_RATE
                files_measured += len(batch)
            if bar is not None:
                bar.update(len(sources[first:first + o.batch_size]))
    if bar is not None:
        bar.close()
    result.sample.update(files=files_measured, seconds=audio_seconds)
    return result


def _measure_batch(way: Way, batch: list[tuple[Source, np.ndarray]], depths: tuple[int, ...], pool,
                   skip: frozenset[str], keep: set[str]) -> None:
    """Encodes a batch once at the largest depth, decodes each depth, and measures every decode."""
    pcms = [p for _, p in batch]
    codes = encode_batch(way.codec, pcms, max(depths))
    futures: list[tuple[int, int, Future]] = []
    for d in depths:
        decoded = decode_batch(way.codec, [c[:d] for c in codes], [len(p) for p in pcms])
        for i, (s, pcm) in enumerate(batch):
            futures.append((i, d, pool.submit(measure, pcm, decoded[i], skip)))
            if s.id in keep:
                way.clips.setdefault(s.id, {})[d] = decoded[i]
    rows = [{"id": s.id, "seconds": len(p) / SAMPLE_RATE, "depths": {}} for s, p in batch]
    for i, d, future in futures:
        rows[i]["depths"][str(d)] = future.result()
    way.files.extend(rows)
