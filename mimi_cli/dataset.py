"""Corpus jobs as a library: encode audio files into a token dataset, decode one back to audio.

`encode_dataset` is what `mimi encode` runs. Its heart, `encode_items`, turns a batch of audio
items into rows; the Ray engine calls the same function, so both engines give the same rows.
"""
from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
import pyarrow as pa
import torch

from . import __version__
from .codec import DEFAULT_WEIGHTS, FRAME_RATE, FRAME_SAMPLES, SAMPLE_RATE, MimiCodec
from .formats.audio import MAX_SECONDS, AudioError, check_readable, decode_24k, probe, resample, write_audio
from .formats.lock import OutputLock
from .formats.manifests import ManifestOptions
from .formats.output import DatasetOutput, OutputLayout, errors_path, recorded_errors, same_model
from .formats.paths import UnsafePathError, audio_file_names, confined
from .formats.shards import (
    COMMIT_SECONDS,
    DatasetError,
    NoProvenanceError,
    Row,
    SourceInfo,
    iter_rows,
    open_shard,
    read_metadata,
    read_table,
    shard_files,
)
from .formats.sources import Problem, Source, collect_sources, select_shard
from .formats.storage import Location, RemotePath, atomic_write, readable

T = TypeVar("T")


@dataclass
class EncodeOptions:
    num_codebooks: int = 8
    channels: str = "mix"  # "mix": one mono row per file; "each": one row per channel
    format: str = "parquet"  # or "npy" (directory output only)
    overwrite: bool = False
    shard_index: int = 0
    num_shards: int = 1
    batch_seconds: float = 240.0  # padded audio per model batch
    max_batch: int = 16
    readers: int = 2  # background threads that decode and resample; 2 keep up with a GPU (docs/performance.md)
    manifest: ManifestOptions = field(default_factory=ManifestOptions)  # how .tsv/.csv/.jsonl inputs are read
    commit_seconds: float = COMMIT_SECONDS  # finished rows reach disk at least this often
    max_duration_s: float = MAX_SECONDS  # an input longer than this is an error row (its 24 kHz audio is held whole)


@dataclass
class AudioItem:
    """One row's worth of audio, ready for the model: mono float32 at 24 kHz."""

    id: str
    channel: int
    pcm: np.ndarray
    source: SourceInfo


@dataclass
class Summary:
    output: Location
    rows: int = 0
    files: int = 0
    skipped: int = 0
    failed: list[Problem] = field(default_factory=list)
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0
    errors_path: Location | None = None


def model_metadata(codec: MimiCodec, num_codebooks: int, channels: str) -> dict:
    info = codec.weights_info
    return {"tool": "mimi-cli", "tool_version": __version__,
            "model": {k: info[k] for k in ("source", "repo", "revision", "file", "sha256") if k in info},
            "num_codebooks": num_codebooks, "frame_rate": FRAME_RATE, "sample_rate": SAMPLE_RATE,
            "codebook_size": codec.config.codebook_size, "channels": channels}


# -- reading --------------------------------------------------------------------------------------
def load_items(source: Source, channels: str, max_seconds: float = MAX_SECONDS) -> list[AudioItem]:
    """The audio of one input as rows-to-be (one mono item, or one per channel); AudioError if
    unusable or longer than `max_seconds`."""
    mix = channels != "each"
    if source.member is not None:  # inside a container: as listed, read again now
        pcm, info = source.member.decode(mix, max_seconds)
        return _items(source.id, pcm, SourceInfo(info.sample_rate, info.channels, *source.resume_key()), channels)
    if isinstance(source.path, Path):
        stat = check_readable(source.path)
    else:
        try:
            stat = source.path.stat()
        except OSError as e:
            raise AudioError(f"cannot read: {e.strerror or e}") from None
        if stat.st_size == 0:
            raise AudioError("empty file (0 bytes)")
    pcm, info = decode_24k(readable(source.path), mix, max_seconds)
    return _items(source.id, pcm, SourceInfo(info.sample_rate, info.channels, stat.st_size, stat.st_mtime_ns),
                  channels)


def _items(ident: str, pcm: np.ndarray, info: SourceInfo, channels: str) -> list[AudioItem]:
    """Rows-to-be of 24 kHz audio [rows, n]: one per channel ("each"), or the one mixed row."""
    if channels == "each":
        return [AudioItem(ident, c, pcm[c], info) for c in range(pcm.shape[0])]
    return [AudioItem(ident, -1, pcm[0], info)]


def encode_items(codec: MimiCodec, items: list[AudioItem], num_codebooks: int) -> list[Row]:
    """Rows for a batch of items: right-padded into one batch (exact: the model is causal)."""
    if not items:
        return []
    longest = max(len(it.pcm) for it in items)
    batch = torch.zeros(len(items), 1, longest)
    for i, it in enumerate(items):
        batch[i, 0, :len(it.pcm)] = torch.from_numpy(it.pcm)
    codes = codec.encode(batch, num_codebooks).cpu().numpy().astype(np.int16)
    return [Row(it.id, it.channel, codes[i, :, :math.ceil(len(it.pcm) / FRAME_SAMPLES)], len(it.pcm), it.source)
            for i, it in enumerate(items)]


def plan_batches(items: list[tuple[T, float]], budget: float, max_batch: int,
                 group: Callable[[T], str] = lambda _: "") -> list[list[T]]:
    """Groups (item, length) pairs by similar length, so that padding a batch to its longest wastes
    little: at most `max_batch` items, and at most `budget` of length once padded. Items of one
    `group` (read together: one Parquet row group) are batched among themselves."""
    batches: list[list[T]] = []
    current: list[T] = []
    longest = 0.0
    for item, length in sorted(items, key=lambda il: (group(il[0]), il[1])):
        if current and (len(current) + 1 > max_batch or (len(current) + 1) * max(longest, length) > budget
                        or group(item) != group(current[0])):
            batches.append(current)
            current, longest = [], 0.0
        current.append(item)
        longest = max(longest, length)
    if current:
        batches.append(current)
    return batches


# -- encode ----------------------------------------------------------------------------------------
@dataclass
class Batch:
    """What an engine hands back for one batch of inputs: rows, failures, inputs consumed."""

    rows: list[Row]
    failed: list[Problem]
    inputs: int


class LocalEngine:
    """This process: the next batches are read and resampled in threads while the model runs."""

    def __init__(self, codec: MimiCodec) -> None:
        self.codec = codec

    def __call__(self, todo: list[tuple[Source, float]], o: EncodeOptions) -> Iterator[Batch]:
        batches = plan_batches(todo, o.batch_seconds, o.max_batch, lambda source: source.locality)
        with ThreadPoolExecutor(max_workers=max(1, o.readers)) as pool:
            for loaded in _prefetch(pool, batches, o.channels, o.max_duration_s):
                items: list[AudioItem] = []
                failed = []
                for source, result in loaded:
                    if isinstance(result, Exception):
                        failed.append(Problem(source.id, str(source.path), str(result)))
                    else:
                        items.extend(result)
                yield Batch(encode_items(self.codec, items, o.num_codebooks), failed, len(loaded))


def output_lock(output: Location, options: EncodeOptions) -> OutputLock:
    """The lock `encode_dataset` holds on `output` (re-entrant): take it before a slow model load
    to refuse a busy OUTPUT at once."""
    return OutputLock(output, options.shard_index, options.num_shards)


def encode_dataset(codec: MimiCodec, inputs: list[str], output: Location, options: EncodeOptions | None = None,
                   progress: Callable[..., object] | None = None,
                   engine: Callable[[list[tuple[Source, float]], EncodeOptions], Iterator[Batch]] | None = None
                   ) -> Summary:
    """Encodes every audio file named by `inputs` into the dataset at `output`; resumes by default.

    `engine` turns (source, duration) pairs into batches of rows: LocalEngine (default) or
    mimi_cli.ray_engine.RayEngine. Everything else (inputs, resume, shards, errors) is shared.

    Per-file failures are recorded (Summary.failed and an errors file) and the run goes on.
    Finished rows are committed as complete shards at least every `commit_seconds`; on
    KeyboardInterrupt (and the CLI's SIGTERM) what is finished is committed, then it re-raises.
    InputError if two inputs would get one id; OutputBusyError if another process writes `output`.
    """
    o = options or EncodeOptions()
    start = time.perf_counter()
    metadata = model_metadata(codec, o.num_codebooks, o.channels)
    with output_lock(output, o):
        sources, problems = collect_sources(inputs, manifest=o.manifest)
        out = DatasetOutput(output, metadata, OutputLayout(o.format, o.shard_index, o.num_shards),
                            overwrite=o.overwrite, commit_seconds=o.commit_seconds)
        summary = Summary(output=output, errors_path=out.errors_path)
        summary.failed.extend(problems)
        if o.num_shards > 1:
            sources = select_shard(sources, o.shard_index, o.num_shards)
        todo = _todo(sources, out, summary)
        _run(engine or LocalEngine(codec), todo, o, out, summary, progress, start)
        out.finish()
    summary.wall_seconds = time.perf_counter() - start
    return summary


def _todo(sources: list[Source], out: DatasetOutput, summary: Summary) -> list[tuple[Source, float]]:
    """The sources still to encode, with their length hints; skipped and unreadable ones noted."""
    todo: list[tuple[Source, float]] = []
    changed: list[str] = []
    for s in sources:
        if s.id in out.existing:
            try:
                key = s.resume_key()
            except OSError:  # encoded before, gone since: its row stays as it is
                summary.skipped += 1
                continue
            if out.existing[s.id] == key:
                summary.skipped += 1
            else:
                changed.append(s.id)
            continue
        try:
            todo.append((s, _duration_hint(s)))
        except AudioError as e:
            summary.failed.append(Problem(s.id, str(s.path), str(e)))
    if changed:
        raise DatasetError(f"{len(changed)} inputs changed since they were encoded into {out.path} (first: "
                           f"{', '.join(changed[:3])}); use --overwrite to encode everything again")
    return todo


def _run(engine, todo: list[tuple[Source, float]], o: EncodeOptions, out: DatasetOutput, summary: Summary,
         progress: Callable[..., object] | None, start: float) -> None:
    """Feeds the engine's rows to the writer, an input's rows together, committing as they age."""
    bar = progress(total=len(todo)) if progress else None
    pending: dict[str, list[Row]] = {}  # rows of inputs whose other channels have not come yet
    kept = {s.id: s.columns for s, _ in todo if s.columns}  # joined here, so every engine's rows get them
    if o.manifest.keep_columns:
        out.writer.keep_columns(next((s.types for s, _ in todo if s.types), {}))
    last_batch = time.perf_counter()
    try:
        for batch in engine(todo, o):
            summary.failed.extend(batch.failed)
            for row in batch.rows:
                rows = pending.setdefault(row.id, [])
                rows.append(row)
                if len(rows) < (row.source.channels if o.channels == "each" else 1):
                    continue
                for r in pending.pop(row.id):
                    r.kept = kept.get(r.id, {})
                    out.writer.add(r)
                    summary.rows += 1
                    summary.audio_seconds += r.num_samples / SAMPLE_RATE
                summary.files += 1
            now = time.perf_counter()
            # Commit before the next batch would take the oldest row past its deadline.
            out.writer.commit_if_due(lookahead_s=now - last_batch)
            last_batch = now
            if bar is not None:
                bar.update(batch.inputs)
                elapsed = now - start
                bar.set_postfix_str(f"{summary.audio_seconds / 3600:.2f} h audio, "
                                    f"{summary.audio_seconds / max(elapsed, 1e-9):.1f}x real time")
    finally:
        try:
            out.writer.flush()  # whatever is complete is kept, also on Ctrl-C or SIGTERM
        finally:
            if bar is not None:
                bar.close()
            _write_errors(out.errors_path, summary.failed)


def _duration_hint(source: Source) -> float:
    """Length used to batch similar files: the listing's for items in containers, the header's
    for local files; for remote ones, the size (reading every header would fetch every object twice)."""
    if source.duration_s is not None:
        return source.duration_s
    if isinstance(source.path, RemotePath):
        return source.path.stat().st_size / (2 * SAMPLE_RATE)
    return probe(source.path).duration_s


def _prefetch(pool: ThreadPoolExecutor, batches: list[list[Source]], channels: str, max_seconds: float,
              ahead: int = 2) -> Iterator[list[tuple[Source, list[AudioItem] | Exception]]]:
    """Yields each batch's loaded audio while the next `ahead` batches are read in the background."""
    def load(source: Source):
        try:
            return load_items(source, channels, max_seconds)
        except AudioError as e:
            return e

    futures = [[(s, pool.submit(load, s)) for s in b] for b in batches[:ahead]]
    for i in range(len(batches)):
        if i + ahead < len(batches):
            futures.append([(s, pool.submit(load, s)) for s in batches[i + ahead]])
        yield [(s, f.result()) for s, f in futures[i]]
        futures[i] = []


def _write_errors(path: Location, failed: list[Problem]) -> None:
    if not failed:
        path.unlink(missing_ok=True)
        return
    with atomic_write(path) as f:
        f.write("".join(json.dumps({"id": p.id, "path": p.path, "error": p.error}) + "\n" for p in failed).encode())


# -- decode ----------------------------------------------------------------------------------------
@dataclass
class DecodeOptions:
    num_codebooks: int | None = None  # None: all stored
    sample_rate: int = SAMPLE_RATE
    audio_format: str = "wav"  # or "flac"
    sample_format: str = "s16le"  # 16-bit PCM, which every player and stdlib `wave` read; or s24le, s32le, f32le
    ids: list[str] | None = None
    overwrite: bool = False
    max_batch: int = 8
    batch_seconds: float = 240.0  # padded audio per model batch (rows are batched with rows of similar length)
    # Decode a dataset that has lost its provenance (rewritten by another tool) with this codec anyway.
    without_provenance: bool = False
    # Decode with a codec whose weights are not the ones the dataset records (its audio will be noise).
    force_weights: bool = False


WINDOW_ROWS = 512  # rows read ahead and sorted by length before they are batched
MAX_ROW_FRAMES = int(10 * 24 * 3600 * FRAME_RATE)  # ten days: a row claiming more is not counted by `info`


def recorded_weights(model: dict) -> str | None:
    """The `--weights` that load the model a dataset records, where mimi loads it on its own: the
    released model (at its recorded revision) and synthetic weights. None for anything else (a
    local file, another Hub repo): a dataset is untrusted, and what it names is not read or
    fetched unless the user names it too."""
    source, revision = str(model.get("source", "")), model.get("revision")
    if source.startswith("synthetic"):
        return source
    if source == DEFAULT_WEIGHTS or model.get("repo") == DEFAULT_WEIGHTS:
        return f"{DEFAULT_WEIGHTS}@{revision}" if revision else DEFAULT_WEIGHTS
    return None


def check_model(codec: MimiCodec, recorded: dict, what: Location) -> None:
    """DatasetError unless `codec` has the weights the dataset `what` records (by sha256 where
    both have one, else by source): other weights decode its codes to noise."""
    mine = codec.weights_info
    if same_model(recorded, mine):
        return
    def named(m: dict) -> str:
        return m.get("source", "?") + (f" (sha256 {m['sha256'][:12]})" if m.get("sha256") else "")

    raise DatasetError(f"{what} was encoded with {named(recorded)}, not with --weights {named(mine)}: its codes "
                       "would decode to noise; give the weights that made it, or --force-weights to decode anyway")


def decode_dataset(codec: MimiCodec, tokens: Location, outdir: Path, options: DecodeOptions | None = None,
                   progress: Callable[..., object] | None = None) -> Summary:
    """Writes one audio file per row of the token dataset, trimmed to the row's num_samples.

    Every file lands inside `outdir`: a row whose id would lead elsewhere (absolute, `..`, a
    symbolic link out) is refused as an error row, like a malformed one, and the rest goes on.
    """
    o = options or DecodeOptions()
    start = time.perf_counter()
    try:
        meta = read_metadata(tokens)
    except NoProvenanceError:
        if not o.without_provenance:
            raise
        meta = None  # K from the rows, codes bounded by this codec's codebooks
    if meta is not None and not o.force_weights:
        check_model(codec, meta.get("model", {}), tokens)
    stored = meta["num_codebooks"] if meta else None
    codebook_size = meta["codebook_size"] if meta else codec.config.codebook_size
    k = o.num_codebooks or stored
    if stored is not None and k > stored:
        raise DatasetError(f"-q {k}: the dataset stores only {stored} codebooks")
    wanted = set(o.ids) if o.ids else None
    keys = read_table(tokens, columns=["id", "channel"]).to_pylist()
    # Named from every row, not only the ones asked for, so a row's file name never depends on --id.
    names = audio_file_names([(r["id"], r["channel"]) for r in keys
                              if isinstance(r["id"], str) and isinstance(r["channel"], int)], o.audio_format)
    summary = Summary(output=outdir, errors_path=errors_path(outdir))  # beside OUTDIR, as encode's is
    bar = progress(total=len(keys) if wanted is None else len(wanted)) if progress else None
    seen: set[str] = set()
    done: set[tuple[str, int]] = set()
    window: list[tuple[dict, Path]] = []

    def fail(row: dict, error: str) -> None:
        summary.failed.append(Problem(row["id"], str(tokens), error))
        if bar is not None:
            bar.update(1)

    def run(rows: list[tuple[dict, Path]], k: int) -> None:
        codes = np.zeros((len(rows), k, max(r["codes"].shape[1] for r, _ in rows)), dtype=np.int64)
        for i, (r, _) in enumerate(rows):
            codes[i, :, :r["codes"].shape[1]] = r["codes"][:k]
        audio = codec.decode(torch.from_numpy(codes)).float().cpu().numpy()[:, 0]
        for i, (r, target) in enumerate(rows):
            pcm = audio[i, :r["num_samples"]]
            if o.sample_rate != SAMPLE_RATE:
                pcm = resample(pcm[None], SAMPLE_RATE, o.sample_rate)[0]
            write_audio(target, pcm, o.sample_rate, o.audio_format, o.sample_format)
            summary.rows += 1
            summary.audio_seconds += r["num_samples"] / SAMPLE_RATE
        if bar is not None:
            bar.update(len(rows))

    def decode_window(rows: list[tuple[dict, Path]]) -> None:  # in batches of similar length
        lengths = [(r, float(r[0]["codes"].shape[1])) for r in rows]
        for batch in plan_batches(lengths, o.batch_seconds * FRAME_RATE, o.max_batch):
            run(batch, k)

    try:
        for row in iter_rows(tokens, wanted, codebook_size):
            seen.add(row["id"])
            if "error" in row:
                fail(row, row["error"])
                continue
            k = k or row["codes"].shape[0]  # without provenance: the first row's depth
            key = (row["id"], row["channel"])
            if key in done:
                fail(row, "another row has the same id and channel; only the first was decoded")
                continue
            done.add(key)
            if key not in names:
                fail(row, "its file name would clash with another row's; decode it alone with --id")
                continue
            try:
                target = confined(outdir, names[key])
            except UnsafePathError as e:
                fail(row, f"not written: {e}")
                continue
            if target.exists() and not o.overwrite:
                summary.skipped += 1
                if bar is not None:
                    bar.update(1)
                continue
            if row["codes"].shape[0] < k:
                fail(row, f"the row has {row['codes'].shape[0]} codebooks, fewer than -q {k}")
                continue
            window.append((row, target))
            if len(window) >= WINDOW_ROWS:
                decode_window(window)
                window = []
        decode_window(window)
    finally:
        if bar is not None:
            bar.close()
    if wanted:
        summary.failed.extend(Problem(i, str(tokens), "no row with this id") for i in sorted(wanted - seen))
    _write_errors(summary.errors_path, summary.failed)
    summary.wall_seconds = time.perf_counter() - start
    return summary


def dataset_info(tokens: Location) -> dict:
    """What a token dataset holds: rows, hours, K, model, shards, recorded errors."""
    import pyarrow.compute as pc

    shards = shard_files(tokens)
    try:
        meta = read_metadata(tokens)
    except NoProvenanceError as e:  # rewritten by another tool: described if its columns are a token dataset's
        try:
            open_shard(shards[0])
        except DatasetError:
            raise e from None
        meta = None
    table = read_table(tokens, columns=["id", "num_frames", "num_samples"])
    errors = sum(p.read_bytes().count(b"\n") for p in recorded_errors(tokens))
    try:
        frames = pc.cast(pc.fill_null(table.column("num_frames"), -1), pa.int64())
        samples = pc.cast(pc.fill_null(table.column("num_samples"), -1), pa.int64())
    except (pa.ArrowException, TypeError):
        raise DatasetError(f"{tokens}: columns num_frames and num_samples do not hold numbers") from None
    # A row's lengths count only where they add up (a crafted row may claim any number of hours).
    plausible = pc.and_(pc.and_(pc.greater_equal(frames, 0), pc.less_equal(frames, MAX_ROW_FRAMES)),
                        pc.and_(pc.greater_equal(samples, 0),
                                pc.less_equal(samples, pc.multiply(frames, FRAME_SAMPLES))))
    counted = int(pc.sum(pc.cast(plausible, pa.int64())).as_py() or 0)

    def total(column) -> int:
        return int(pc.sum(pc.filter(column, plausible)).as_py() or 0)

    return {"path": str(tokens), "rows": table.num_rows, "inputs": pc.count_distinct(table.column("id")).as_py(),
            "hours": total(samples) / SAMPLE_RATE / 3600, "frames": total(frames),
            "implausible_rows": table.num_rows - counted,
            "shards": len(shards), "bytes": sum(p.stat().st_size for p in shards), "errors": errors,
            "metadata": meta}
