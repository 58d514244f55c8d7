"""`mimi decode` as a library: a token dataset back to one audio file per row.

Rows are read in windows, sorted by length and decoded in batches of similar length, so the order
they are stored in costs nothing. The model that decodes them must be the one that encoded them.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .codec import DEFAULT_WEIGHTS, FRAME_RATE, SAMPLE_RATE, MimiCodec
from .codec.batch import decode_batch, plan_batches
from .formats.audio import resample, write_audio
from .formats.output import errors_path, same_model
from .formats.paths import UnsafePathError, audio_file_names, confined
from .formats.shards import DatasetError, NoProvenanceError, iter_rows, read_metadata, read_table
from .formats.sources import Problem
from .formats.storage import Location
from .summary import Summary


@dataclass(frozen=True)
class DecodeOptions:
    """How `decode_dataset` runs: depth, the audio it writes, which rows, batching, and checks."""

    num_codebooks: int | None = None  # None: all stored
    sample_rate: int = SAMPLE_RATE
    audio_format: Literal["wav", "flac"] = "wav"
    sample_format: str = "s16le"  # 16-bit PCM, which every player and stdlib `wave` read; or s24le, s32le, f32le
    ids: tuple[str, ...] | None = None
    overwrite: bool = False
    max_batch: int = 8
    batch_seconds: float = 240.0  # padded audio per model batch (rows are batched with rows of similar length)
    # Decode a dataset that has lost its provenance (rewritten by another tool) with this codec anyway.
    without_provenance: bool = False
    # Decode with a codec whose weights are not the ones the dataset records (its audio will be noise).
    force_weights: bool = False


WINDOW_ROWS = 512  # rows read ahead and sorted by length before they are batched


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
        summary.fail([Problem(row["id"], str(tokens), error)])
        if bar is not None:
            bar.update(1)

    def run(rows: list[tuple[dict, Path]], k: int) -> None:
        audio = decode_batch(codec, [r["codes"][:k] for r, _ in rows], [r["num_samples"] for r, _ in rows])
        for pcm, (r, target) in zip(audio, rows):
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
        if wanted:
            summary.fail(Problem(i, str(tokens), "no row with this id") for i in sorted(wanted - seen))
    finally:
        if bar is not None:
            bar.close()
        summary.close_errors()
    summary.wall_seconds = time.perf_counter() - start
    return summary
