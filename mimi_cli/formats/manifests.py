"""Listings of a corpus as they ship (Common Voice's `train.tsv`, a CSV, NeMo's JSONL, a Parquet
table of paths) as inputs.

Each row names one audio file (by a path column) and may carry other fields (text, speaker) that
`--keep-columns` copies into the token dataset with their types.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from .storage import first_line

MANIFEST_EXTENSIONS = (".tsv", ".csv", ".jsonl", ".parquet")
PATH_COLUMNS = ("path", "audio", "audio_filepath")  # tried in this order: ours, Common Voice's, NeMo's
RESERVED = {"id", "channel", "codes", "num_frames", "num_samples", "duration_s", "npy_path",
            "source_sample_rate", "source_channels", "source_bytes", "source_mtime_ns", "source_fingerprint"}


class ManifestError(Exception):
    """A manifest that cannot be used as given (no path column, a column asked for that it lacks)."""


@dataclass(frozen=True)
class ManifestOptions:
    """How to read manifests and containers: which columns hold the path (or the audio) and the
    id, where relative paths start, and which other columns to keep."""

    path_column: str | None = None  # None: the first of PATH_COLUMNS present
    id_column: str | None = None  # None: the audio file's path relative to the audio root
    audio_root: Path | None = None  # None: the manifest's own directory
    keep_columns: tuple[str, ...] = ()
    audio_column: str | None = None  # Hugging Face audio Parquet: None, the one `{bytes, path}` column


@dataclass
class ManifestRows:
    """One manifest's rows: audio paths (None where the cell is empty), ids and kept values."""

    paths: list[str | None]
    ids: list[str | None]
    root: Path
    kept: dict[str, list] = field(default_factory=dict)
    types: dict[str, pa.DataType] = field(default_factory=dict)


def is_manifest(path: Path) -> bool:
    return path.suffix.lower() in MANIFEST_EXTENSIONS and path.is_file()


def read_manifest(path: Path, options: ManifestOptions) -> ManifestRows:
    """The rows of a .tsv / .csv / .jsonl manifest; ManifestError naming what is missing."""
    table = _read(path)
    names = table.column_names
    column = options.path_column or next((c for c in PATH_COLUMNS if c in names), None)
    if column is None or column not in names:
        wanted = f"--path-column {column}" if column else f"a column {' / '.join(PATH_COLUMNS)}"
        raise ManifestError(f"{path}: no {wanted} (its columns: {', '.join(names)}); name the one that holds "
                            "the audio file with --path-column")
    for name in (options.id_column, *options.keep_columns):
        if name is not None and name not in names:
            raise ManifestError(f"{path}: no column {name!r} (its columns: {', '.join(names)})")
    paths = [None if v is None or str(v) == "" else str(v) for v in table.column(column).to_pylist()]
    ids = ([None if v is None else str(v) for v in table.column(options.id_column).to_pylist()]
           if options.id_column else [None] * table.num_rows)
    return ManifestRows(paths, ids, options.audio_root or path.parent,
                        {c: table.column(c).to_pylist() for c in options.keep_columns},
                        {c: table.schema.field(c).type for c in options.keep_columns})


def _read(path: Path) -> pa.Table:
    import pyarrow.csv as pcsv
    import pyarrow.json as pjson
    import pyarrow.parquet as pq

    try:
        if path.suffix.lower() == ".parquet":
            return pq.read_table(path)
        if path.suffix.lower() == ".jsonl":
            return pjson.read_json(path)
        # Tab-separated listings (Common Voice) quote nothing, and their sentences hold quotes.
        tsv = path.suffix.lower() == ".tsv"
        parse = pcsv.ParseOptions(delimiter="\t" if tsv else ",", quote_char=False if tsv else '"')
        return pcsv.read_csv(path, parse_options=parse)
    except (pa.ArrowInvalid, OSError, ValueError) as e:
        raise ManifestError(f"{path}: not a readable {path.suffix.lstrip('.').upper()} manifest "
                            f"({first_line(e)})") from None
