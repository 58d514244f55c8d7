"""Listings of a corpus as they ship (Common Voice's `train.tsv`, a CSV, NeMo's JSONL, a Parquet
table of paths) as inputs.

Each row names one audio file (by a path column) and may carry other fields (text, speaker) that
`--keep-columns` copies into the token dataset with their types.
"""
from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from ..errors import MimiError
from .limits import batches, open_parquet, parquet_footer, parse_json, plain_type, python_values, read_lines, slices
from .storage import first_line

MANIFEST_EXTENSIONS = (".tsv", ".csv", ".jsonl", ".parquet")
MAX_NAMES = 1000  # field names of a JSONL manifest named in a message, at most
PATH_COLUMNS = ("path", "audio", "audio_filepath")  # tried in this order: ours, Common Voice's, NeMo's
RESERVED = {"id", "channel", "codes", "num_frames", "num_samples", "duration_s", "npy_path",
            "source_sample_rate", "source_channels", "source_bytes", "source_mtime_ns", "source_fingerprint"}


class ManifestError(MimiError):
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
    allow_network: bool = False  # lhotse `url` sources: fetched only if the user allows it
    allow_commands: bool = False  # lhotse `command` sources: shell commands, run only if the user allows it


Tables = Callable[[], Iterator[pa.Table]]  # each call reads the rows afresh, a table at a time


@dataclass
class ManifestRows:
    """One manifest's rows, held as Arrow columns (a Parquet manifest: read a row group at a time
    as `chunks` come to it) and turned into Python values a slice at a time: a manifest of millions
    of rows is never a list of millions of strings."""

    path: Path
    tables: Tables  # the path column, then the id column (if any), then the kept ones
    path_column: str
    id_column: str | None
    root: Path
    types: dict[str, pa.DataType] = field(default_factory=dict)  # of the kept columns

    def chunks(self, size: int = 1000) -> Iterator[tuple[list[str | None], list[str | None], dict[str, list]]]:
        """(audio paths (None where the cell is empty), ids, kept values) of at most `size` rows at
        a time; ManifestError at a row group or a cell that cannot be read."""
        start = 0
        try:
            for table in self.tables():
                for _, part in slices(table, size):
                    paths = [None if v is None or v in ("", b"") else _text(v)
                             for v in python_values(part.column(self.path_column))]
                    ids = ([None if v is None else _text(v) for v in python_values(part.column(self.id_column))]
                           if self.id_column else [None] * part.num_rows)
                    kept = {c: python_values(part.column(c)) for c in self.types}
                    yield paths, ids, kept
                    start += part.num_rows
        except (pa.ArrowException, OSError, ValueError) as e:  # text cells that are not UTF-8, say
            raise ManifestError(f"{self.path}: not a readable manifest at row {start} or after "
                                f"({first_line(e)})") from None

    # Whole views, read in one pass (for small manifests and tests; a listing uses `chunks`).
    @property
    def paths(self) -> list[str | None]:
        return self._whole[0]

    @property
    def ids(self) -> list[str | None]:
        return self._whole[1]

    @property
    def kept(self) -> dict[str, list]:
        return self._whole[2]

    @functools.cached_property
    def _whole(self) -> tuple[list[str | None], list[str | None], dict[str, list]]:
        paths, ids, kept = [], [], {c: [] for c in self.types}
        for some_paths, some_ids, some_kept in self.chunks():
            paths += some_paths
            ids += some_ids
            for c in kept:
                kept[c] += some_kept[c]
        return paths, ids, kept


def is_manifest(path: Path) -> bool:
    return path.suffix.lower() in MANIFEST_EXTENSIONS and path.is_file()


def read_manifest(path: Path, options: ManifestOptions) -> ManifestRows:
    """The rows of a .tsv / .csv / .jsonl / .parquet manifest; ManifestError naming what is missing."""
    wanted = [options.path_column or "", *PATH_COLUMNS, options.id_column or "", *options.keep_columns]
    tables, names, types = _read(path, wanted)
    column = options.path_column or next((c for c in PATH_COLUMNS if c in names), None)
    if column is None or column not in names:
        wanted_text = f"--path-column {column}" if column else f"a column {' / '.join(PATH_COLUMNS)}"
        raise ManifestError(f"{path}: no {wanted_text} (its columns: {', '.join(names)}); name the one that holds "
                            "the audio file with --path-column")
    for name in (options.id_column, *options.keep_columns):
        if name is not None and name not in names:
            raise ManifestError(f"{path}: no column {name!r} (its columns: {', '.join(names)})")
    used = list(dict.fromkeys([column, *([options.id_column] if options.id_column else []), *options.keep_columns]))
    for name in [column, options.id_column]:
        if name is not None and pa.types.is_nested(types[name]):
            raise ManifestError(f"{path}: its column {name!r} holds {types[name]}, not text; name the column that "
                                "holds the audio file with --path-column, and the id with --id-column")
    twice = [name for name in used if names.count(name) > 1]
    if twice:
        raise ManifestError(f"{path}: {names.count(twice[0])} columns are named {twice[0]!r}; name each once")

    def selected() -> Iterator[pa.Table]:
        return (table.select(used) for table in tables())

    return ManifestRows(path, selected, column, options.id_column, options.audio_root or path.parent,
                        {c: types[c] for c in options.keep_columns})


def _text(value: object) -> str:
    """A cell as text: bytes that are not UTF-8 (a column Arrow read as binary) as the OS would
    take them for a file name."""
    return os.fsdecode(value) if isinstance(value, bytes) else str(value)


def _read(path: Path, columns: list[str]) -> tuple[Tables, list[str], dict[str, pa.DataType]]:
    """The manifest's rows as tables (a Parquet one with only `columns` read, those it has, a row
    group at a time; the others whole), the names of all its columns, and the value types of
    those read."""
    import pyarrow.csv as pcsv

    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            return _read_parquet(path, columns)
        if suffix == ".jsonl":
            table, names = _read_jsonl(path, columns)
        else:
            # Tab-separated listings (Common Voice) quote nothing, and their sentences hold quotes.
            tsv = suffix == ".tsv"
            parse = pcsv.ParseOptions(delimiter="\t" if tsv else ",", quote_char=False if tsv else '"')
            table = pcsv.read_csv(path, parse_options=parse)
            names = table.column_names
        return (lambda: iter([table])), names, _types(table.schema)
    except (pa.ArrowException, OSError, ValueError) as e:
        raise ManifestError(f"{path}: not a readable {suffix.lstrip('.').upper()} manifest "
                            f"({first_line(e)})") from None


def _read_parquet(path: Path, columns: list[str]) -> tuple[Tables, list[str], dict[str, pa.DataType]]:
    """Its footer checked now; its rows read a row group at a time whenever the tables are
    iterated, from the same file (a file replaced since is refused)."""
    with path.open("rb") as f:
        known = os.fstat(f.fileno())
        metadata = parquet_footer(path, f, known.st_size)  # parsed once: a large footer parses to many times its size
        schema = open_parquet(f, known.st_size, [], metadata=metadata).schema_arrow  # nothing as a dictionary
        names = schema.names  # ValueError for names that are not UTF-8
        wanted = [c for c in dict.fromkeys(columns) if c in names]
        open_parquet(f, known.st_size, wanted, streamed=True, metadata=metadata)  # a row group too large: now

    def tables() -> Iterator[pa.Table]:
        with path.open("rb") as f:
            now = os.fstat(f.fileno())
            if (now.st_dev, now.st_ino, now.st_size, now.st_mtime_ns) != (
                    known.st_dev, known.st_ino, known.st_size, known.st_mtime_ns):
                raise ValueError("the file changed while it was being read")
            pf = open_parquet(f, now.st_size, wanted, streamed=True, metadata=metadata)
            for _, _, table in batches(pf, f, now.st_size, wanted):
                yield table

    return tables, names, {name: kind for name, kind in _types(schema).items() if name in wanted}


def _types(schema: pa.Schema) -> dict[str, pa.DataType]:
    """Each column's type, a dictionary column's as its values'."""
    return {f.name: plain_type(f.type) for f in schema}


def _read_jsonl(path: Path, columns: list[str]) -> tuple[pa.Table, list[str]]:
    """One JSON object a line, read with mimi's own bounds (pyarrow's reader crashes on JSON nested
    deep enough): the fields named in `columns` as a table (types as Arrow infers them over all
    rows), and the names of all fields (the first MAX_NAMES). Only the wanted fields are kept, so
    lines that each name new fields cost no more than any others."""
    wanted = set(columns)
    rows = []
    names: dict[str, None] = {}
    for n, line in enumerate(read_lines(path)):
        row = parse_json(line, f"line {n}")
        if not isinstance(row, dict):
            raise ValueError(f"line {n} is not a JSON object")
        if len(names) < MAX_NAMES:
            names.update(dict.fromkeys(row))
        rows.append({k: v for k, v in row.items() if k in wanted})
    present = {k for r in rows for k in r}  # the wanted fields some line has
    names.update(dict.fromkeys(sorted(present - names.keys())))
    kept = [name for name in names if name in present]
    arrays = []
    for name in kept:
        try:
            arrays.append(pa.array([r.get(name) for r in rows]))
        except (pa.ArrowException, TypeError, ValueError, OverflowError):
            raise ValueError(f"the field {name!r} holds values of mixed types or out of range") from None
    return (pa.table(dict(zip(kept, arrays))) if kept else pa.table({})), list(names)
