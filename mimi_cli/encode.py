"""`mimi encode` as a library: audio inputs (files, containers, manifests) into a token dataset.

`encode_dataset` lists the inputs, skips what an earlier run wrote, and hands (source, length)
pairs to an engine: `LocalEngine` here, or `mimi_cli.ray_engine.RayEngine`. Both turn audio into
rows through `encode_items`, so both give the same rows; the writer, resume and errors are shared.
"""
from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Literal, TypeVar

from . import __version__
from .codec import DEFAULT_CODEBOOKS, FRAME_RATE, SAMPLE_RATE, MimiCodec
from .codec.batch import encode_batch, encode_blocks, plan_batches
from .formats.audio import MAX_SECONDS, AudioError
from .formats.containers import forget_row_groups
from .formats.listing import WINDOW, Window, windows
from .formats.lock import OutputLock
from .formats.manifests import ManifestOptions
from .formats.output import DatasetOutput, OutputLayout
from .formats.shards import COMMIT_SECONDS, DatasetError, Row
from .formats.sources import AudioItem, Channels, InputError, Problem, Source, SourceAudio, check_channels, select_shard
from .formats.storage import Location
from .summary import Summary

T = TypeVar("T")


@dataclass(frozen=True)
class EncodeOptions:
    """How `encode_dataset` runs: depth, rows per input, output layout, batching and reading."""

    num_codebooks: int = DEFAULT_CODEBOOKS
    channels: Channels = "mix"  # "mix": one mono row per file; "each": one row per channel
    format: Literal["parquet", "npy"] = "parquet"  # npy: directory output only
    overwrite: bool = False
    shard_index: int = 0
    num_shards: int = 1
    batch_seconds: float = 240.0  # padded audio per model batch
    max_batch: int = 16
    readers: int = 2  # threads that decode and resample while the model runs; a GPU gains from more (performance.md)
    manifest: ManifestOptions = field(default_factory=ManifestOptions)  # how .tsv/.csv/.jsonl inputs are read
    commit_seconds: float = COMMIT_SECONDS  # finished rows reach disk at least this often
    max_duration_s: float = MAX_SECONDS  # an input longer than this is an error row
    window: int = WINDOW  # inputs listed, checked and batched at a time (a manifest of millions is never whole)

    def __post_init__(self) -> None:
        check_channels(self.channels)
        if self.format not in ("parquet", "npy"):
            raise ValueError(f"format={self.format!r}: 'parquet' or 'npy'")
        if self.window < 1:
            raise ValueError(f"window={self.window}: at least 1")


def model_metadata(codec: MimiCodec, num_codebooks: int, channels: Channels) -> dict:
    """The provenance a dataset records: tool, model (source, sha256), K, rates, channels."""
    info = codec.weights_info
    return {"tool": "mimi-cli", "tool_version": __version__,
            "model": {k: info[k] for k in ("source", "repo", "revision", "file", "sha256") if k in info},
            "num_codebooks": num_codebooks, "frame_rate": FRAME_RATE, "sample_rate": SAMPLE_RATE,
            "codebook_size": codec.config.codebook_size, "channels": channels}


def encode_items(codec: MimiCodec, items: list[AudioItem], num_codebooks: int) -> list[Row]:
    """Rows for a batch of items, encoded as one batch (the same codes as each alone)."""
    codes = encode_batch(codec, [it.pcm for it in items], num_codebooks)
    return [Row(it.id, it.channel, c, len(it.pcm), it.source) for it, c in zip(items, codes)]


def encode_audio(codec: MimiCodec, audio: SourceAudio, num_codebooks: int) -> list[Row]:
    """Rows for a source's audio encoded as it is read (the same codes as `encode_items` of it
    whole): for an item too long to hold. AudioError if it turns out unusable on the way."""
    codes, samples = encode_blocks(codec, audio, audio.rows, num_codebooks)
    return [Row(audio.id, label, c, samples, audio.info) for label, c in zip(audio.labels, codes)]


@dataclass(frozen=True)
class Batch:
    """What an engine hands back for one batch of inputs: rows, failures, inputs consumed."""

    rows: list[Row]
    failed: list[Problem]
    inputs: int


class LocalEngine:
    """This process: the next batches are read and resampled in threads while the model runs.

    An item listed as longer than `batch_seconds` is encoded at its turn as it is read, never
    held whole. One read ahead is held to twice its listed length plus a share of a batch
    (`batch_seconds / max_batch`); one whose header understates its length stops there, and the
    rest is read at its turn the same way. Once read, items are batched again by their real
    lengths. So what is held stays near what the batches were planned with, whatever headers
    say (docs/security.md)."""

    def __init__(self, codec: MimiCodec) -> None:
        self.codec = codec

    def __call__(self, todo: list[tuple[Source, float]], o: EncodeOptions) -> Iterator[Batch]:
        batches = plan_batches(todo, o.batch_seconds, o.max_batch, lambda source: source.locality)
        seconds = {id(s): length for s, length in todo}
        share = o.batch_seconds / o.max_batch

        def load(source: Source) -> list[AudioItem] | SourceAudio | AudioError | None:
            """Its items; or its audio, to go on reading at its turn; or None: opened at its turn
            (listed as long: a reader would hold its container's bytes until then)."""
            listed = seconds[id(source)]
            if listed > o.batch_seconds:
                return None
            try:
                audio = source.open(o.channels, o.max_duration_s)
            except AudioError as e:
                return _bare(e)
            keep = False
            try:
                items = audio.whole(2 * listed + share)
                if items is not None:
                    return items
                keep = True
                return audio if audio.length_stated else _read_out(audio)
            except AudioError as e:
                return _bare(e)
            finally:
                if not keep:
                    audio.close()

        with ThreadPoolExecutor(max_workers=max(1, o.readers)) as pool:
            for loaded in _prefetch(pool, batches, load):
                items: list[AudioItem] = []
                failed, later = [], []
                for source, result in loaded:
                    if isinstance(result, Exception):
                        failed.append(Problem(source.id, str(source.path), str(result)))
                    elif isinstance(result, list):
                        items.extend(result)
                    else:
                        later.append([source, result])
                # Batched again by the lengths read, which may not be the ones listed.
                lengths = [(it, len(it.pcm) / SAMPLE_RATE) for it in items]
                rows = [row for batch in plan_batches(lengths, o.batch_seconds, o.max_batch)
                        for row in encode_items(self.codec, batch, o.num_codebooks)]
                try:
                    for i, (source, audio) in enumerate(later):
                        try:
                            if audio is None:  # opened here, so its bytes are not held until its turn
                                audio = later[i][1] = _open_checked(source, o)
                            with audio:
                                rows.extend(encode_audio(self.codec, audio, o.num_codebooks))
                        except AudioError as e:
                            failed.append(Problem(source.id, str(source.path), str(e)))
                finally:
                    forget_row_groups()  # a long item's row group, read on this thread: not kept past it
                    for _, audio in later:
                        if audio is not None:
                            audio.close()
                yield Batch(rows, failed, len(loaded))


def _bare(e: AudioError) -> AudioError:
    """`e` without its traceback and the exception it replaced: their frames hold the item's
    decoder (250 MB for 64 channels of Opus) until the batch that reports it is written. The
    memory it frees goes back to the system at once (`media.return_freed_memory`)."""
    from .formats.media import return_freed_memory

    e.__traceback__ = e.__context__ = e.__cause__ = None
    return_freed_memory()
    return e


def _open_checked(source: Source, o: EncodeOptions) -> SourceAudio:
    """Its audio, opened to be encoded as it is read (`_read_out` where no header states its length)."""
    audio = source.open(o.channels, o.max_duration_s)
    return audio if audio.length_stated else _read_out(audio)


def _read_out(audio: SourceAudio) -> SourceAudio:
    """Audio whose length no header states, read to its end holding nothing, then from its start
    again: one too long or damaged is an error row (AudioError) before the model spends any time
    on it. A stream FFmpeg reads may run past any length its container states."""
    try:
        audio.audio.read_out()
    except BaseException:
        audio.close()
        raise
    return audio.again()


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

    Inputs are listed `options.window` at a time (formats/listing.py), each window encoded before
    the next is listed. Per-file failures are recorded (Summary.failures, the first in
    Summary.failed, all in an errors file) and the run goes on. Finished rows are committed as
    complete shards at least every `commit_seconds`; on KeyboardInterrupt (and the CLI's SIGTERM)
    what is finished is committed, then it re-raises. InputError if two inputs would get one id
    (before any work when the listing fits one window, else when the second one's window comes);
    OutputBusyError if another process writes `output`.
    """
    o = options or EncodeOptions()
    start = time.perf_counter()
    metadata = model_metadata(codec, o.num_codebooks, o.channels)
    with output_lock(output, o):
        listing = windows(inputs, o.manifest, o.window)
        first = next(listing)  # clashing ids in a listing of one window are refused before OUTPUT is touched
        out = DatasetOutput(output, metadata, OutputLayout(o.format, o.shard_index, o.num_shards),
                            overwrite=o.overwrite, commit_seconds=o.commit_seconds)
        summary = Summary(output=output, errors_path=out.errors_path)
        # The first window's inputs are checked (changed since encoded?) before anything is written.
        work = itertools.chain([_window_work(first, o, out, summary)],
                               (_window_work(w, o, out, summary) for w in listing))
        _run(engine or LocalEngine(codec), work, o, out, summary, progress, start)
        out.finish()
    summary.wall_seconds = time.perf_counter() - start
    return summary


@dataclass(frozen=True)
class _Work:
    """A window's sources still to encode, with their length hints; `last`: the listing ends here."""

    todo: list[tuple[Source, float]]
    last: bool


def _window_work(window: Window, o: EncodeOptions, out: DatasetOutput, summary: Summary) -> _Work:
    sources, problems = window.sources, window.problems
    if o.num_shards > 1:  # each input, found or not, belongs to one job: one job reports it
        sources = select_shard(sources, o.shard_index, o.num_shards)
        problems = select_shard(problems, o.shard_index, o.num_shards)
    summary.fail(problems)
    return _Work(_unfinished(sources, out, summary), window.last)


def _unfinished(sources: list[Source], out: DatasetOutput, summary: Summary) -> list[tuple[Source, float]]:
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
            todo.append((s, s.length_s()))
        except AudioError as e:
            summary.fail([Problem(s.id, str(s.path), str(e))])
    if changed:
        raise DatasetError(f"{len(changed)} inputs changed since they were encoded into {out.path} (first: "
                           f"{', '.join(changed[:3])}); use --overwrite to encode everything again")
    return todo


def _run(engine, work: Iterator[_Work], o: EncodeOptions, out: DatasetOutput, summary: Summary,
         progress: Callable[..., object] | None, start: float) -> None:
    """Feeds the engine's rows to the writer, an input's rows together, committing as they age;
    `work` a window at a time (the progress total is known once the last window is listed)."""
    bar = None
    pending: dict[str, list[Row]] = {}  # rows of inputs whose other channels have not come yet
    typed = not o.manifest.keep_columns
    done = 0
    last_batch = time.perf_counter()
    try:
        for w in work:
            if progress is not None and bar is None:
                bar = progress(total=len(w.todo) if w.last else None)
            elif bar is not None and w.last:
                bar.total = done + len(w.todo)
            kept = {s.id: s.columns for s, _ in w.todo if s.columns}  # joined here, so every engine's rows get them
            if not typed and any(s.types for s, _ in w.todo):
                out.writer.keep_columns(next(s.types for s, _ in w.todo if s.types))
                typed = True
            if o.manifest.keep_columns:
                _check_kept_types(w.todo, out.writer.kept_types)
            for batch in engine(w.todo, o) if w.todo else ():
                summary.fail(batch.failed)
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
                done += batch.inputs
                if bar is not None:
                    bar.set_postfix_str(_postfix(summary, now - start))
                    bar.update(batch.inputs)
            if bar is not None and not w.todo:  # a window that failed whole still shows the run is alive
                bar.set_postfix_str(_postfix(summary, time.perf_counter() - start))
                bar.update(0)
    finally:
        try:
            out.writer.flush()  # whatever is complete is kept, also on Ctrl-C or SIGTERM
        finally:
            if bar is not None:
                bar.close()
            summary.close_errors()


def _check_kept_types(todo: list[tuple[Source, float]], types: dict) -> None:
    """InputError if an input's kept columns have other types than the dataset's (one column, one type)."""
    checked = None
    for s, _ in todo:
        if s.types and s.types is not checked:  # the sources of one container share one dict
            for name, t in s.types.items():
                if types.get(name) != t:
                    raise InputError(f"--keep-columns: {name!r} is {t} for {s.id!r} but {types.get(name)} for the "
                                     "inputs before it; one column holds one type: make them agree, or encode them "
                                     "into separate OUTPUTs")
            checked = s.types


def _postfix(summary: Summary, elapsed: float) -> str:
    failed = f", {summary.failures} failed" if summary.failures else ""
    return (f"{summary.audio_seconds / 3600:.2f} h audio, {summary.audio_seconds / max(elapsed, 1e-9):.1f}x real "
            f"time{failed}")


def _prefetch(pool: ThreadPoolExecutor, batches: list[list[Source]], load: Callable[[Source], T]
              ) -> Iterator[list[tuple[Source, T]]]:
    """Yields each batch's sources with what `load` made of them, while the next two batches are
    loaded in the background."""
    futures = [[(s, pool.submit(load, s)) for s in b] for b in batches[:2]]
    try:
        for i in range(len(batches)):
            if i + 2 < len(batches):
                futures.append([(s, pool.submit(load, s)) for s in batches[i + 2]])
            yield [(s, f.result()) for s, f in futures[i]]
            futures[i] = None
    finally:  # stopped early (Ctrl-C, an error): what was not started never is, what was loaded is closed
        pending = [f for batch in futures if batch for _, f in batch if not f.cancel()]
        for f in pending:
            if f.exception() is None and hasattr(f.result(), "close"):
                f.result().close()
