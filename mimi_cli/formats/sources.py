"""Turning command-line INPUTs into audio items with ids: audio files, directories, globs and
brace ranges, @lists, manifests, WebDataset tars, Hugging Face audio Parquet and lhotse cuts.

An id names a row for good: it is what resume, `mimi decode` and users key on, so two inputs
never share one. A file found under a directory INPUT is named by its path relative to that
directory; a file named directly, by a glob or in the `@-` list (read from stdin), by its path
relative to the current directory; a file in an `@list.txt`, relative to the list's directory
(a list that is a pipe, such as `@/dev/stdin`, counts as `@-`).
A file outside that base is named by its absolute path without the leading `/`. Ids are
normalised and `/`-separated; bytes of a file name that are not UTF-8 appear as `\\xNN`.
Items inside containers are named as their format names them: a tar sample by its key, a cut
by its id, a Parquet row by its `path` (or `FILE:ROW`); see docs/token-format.md.
"""
from __future__ import annotations

import glob
import io
import logging
import os
import re
import sys
from collections import deque
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Literal, TypeVar

import numpy as np
import pyarrow as pa

from ..errors import MimiError
from ..spec import SAMPLE_RATE
from .audio import AUDIO_EXTENSIONS, MAX_SECONDS, Audio24k, AudioError, check_readable, open_24k, probe
from .containers import (
    ContainerError,
    Item,
    ParquetCell,
    RefusedContainer,
    TarMember,
    audio_columns,
    parquet_items,
    parquet_paths,
    tar_items,
)
from .cuts import LhotseItem, is_lhotse, lhotse_items, stat_or_zero
from .digests import DTYPE, Digests, digests
from .limits import LimitError, parquet_footer
from .manifests import RESERVED, ManifestError, ManifestOptions, is_manifest, read_manifest
from .paths import AudioRoot, RealPaths, UnsafePathError, check_relative, missing_hint
from .shards import SourceInfo
from .storage import Location, RemotePath, first_line, is_uri, open_read, os_reason, readable

log = logging.getLogger("mimi_cli.sources")

CHUNK = 1000  # items of a manifest listed at a time, so that millions are never held at once
UNIQUE_BATCH = 1 << 18  # audio Parquet paths checked for repeats at a time: sorted together, they are searched fast
Channels = Literal["mix", "each"]  # one mono row per input (the mix), or one row per channel


def check_channels(channels: str) -> None:
    """ValueError unless `channels` is one of Channels."""
    if channels not in ("mix", "each"):
        raise ValueError(f"channels={channels!r}: 'mix' or 'each'")


class InputError(MimiError):
    """INPUTs that cannot make a dataset as given (two of them would get the same id)."""


@dataclass(frozen=True)
class Source:
    """One item to encode: an audio file, or an item inside the container at `path`."""

    path: Path | RemotePath
    id: str
    # Fields the input carries to the dataset (--keep-columns), and their Arrow types.
    columns: dict = field(default_factory=dict, compare=False)
    types: dict = field(default_factory=dict, compare=False)
    member: TarMember | ParquetCell | LhotseItem | None = None  # where in `path` the audio lies
    # An item's resume key and length, as listed (a file's come from its stat and header instead).
    size: int = field(default=0, compare=False)
    mtime_ns: int = field(default=0, compare=False)
    fingerprint: str | None = field(default=None, compare=False)
    duration_s: float | None = field(default=None, compare=False)
    real: str | None = field(default=None, compare=False, repr=False)  # `path` resolved, where listing did

    @property
    def locality(self) -> str:
        """Items with the same locality are read together (Parquet row groups); files: ''."""
        return self.member.locality if self.member is not None else ""

    def resume_key(self) -> tuple[int, int, str | None]:
        """What resume compares with the row's `source_*`: (size, mtime, fingerprint); OSError if gone."""
        if self.member is not None:
            return self.size, self.mtime_ns, self.fingerprint
        st = self.path.stat()
        return st.st_size, st.st_mtime_ns, None

    def length_s(self) -> float:
        """Its length in seconds, to batch similar items: the listing's for items in containers, the
        header's for local files, and for remote ones a guess from the size (reading every header
        would fetch every object twice). AudioError if a local header cannot be read."""
        if self.duration_s is not None:
            return self.duration_s
        if isinstance(self.path, RemotePath):
            return self.path.stat().st_size / (2 * SAMPLE_RATE)
        return probe(self.path).duration_s

    def read(self, channels: Channels = "mix", max_seconds: float = MAX_SECONDS) -> list[AudioItem]:
        """Its audio as rows-to-be: one mono item ("mix"), or one per channel ("each"); AudioError if
        unusable or longer than `max_seconds`."""
        with self.open(channels, max_seconds) as audio:
            return audio.whole()

    def open(self, channels: Channels = "mix", max_seconds: float = MAX_SECONDS) -> SourceAudio:
        """Its audio as it is read, in 24 kHz blocks [rows, n] (rows: as `read` gives items); AudioError
        here or while it is read, as for `read`. Close it, or use it in a `with`."""
        check_channels(channels)
        mix = channels == "mix"
        if isinstance(self.member, LhotseItem):  # as listed, read again now
            return SourceAudio(self.id, lambda: self.member.open(mix, max_seconds), self.resume_key(), channels,
                               self.member.channels)
        if self.member is not None:
            data, resume = io.BytesIO(self.member.read()), self.resume_key()
        elif isinstance(self.path, Path):
            stat = check_readable(self.path)
            data, resume = self.path, (stat.st_size, stat.st_mtime_ns, None)
        else:
            try:
                stat = self.path.stat()
            except OSError as e:
                raise AudioError(f"cannot read: {e.strerror or e}") from None
            if stat.st_size == 0:
                raise AudioError("empty file (0 bytes)")
            data, resume = readable(self.path), (stat.st_size, stat.st_mtime_ns, None)
        return SourceAudio(self.id, lambda: open_24k(_rewound(data), mix, max_seconds), resume, channels)


def _rewound(data: Path | io.BytesIO) -> Path | io.BytesIO:
    if isinstance(data, io.BytesIO):
        data.seek(0)
    return data


class SourceAudio:
    """A source's audio as it is read: `Audio24k`'s blocks [rows, n], each row one row-to-be, by
    `labels` (its channel, or -1 for the mix), and what those rows record of the source (`info`).
    `again` reads it once more from the start, from the bytes already fetched."""

    def __init__(self, ident: str, opener: Callable[[], Audio24k], resume: tuple[int, int, str | None],
                 channels: Channels, picked: tuple[int, ...] | None = None) -> None:
        self.id, self._opener, self.audio = ident, opener, opener()
        self._resume, self._channels, self._picked = resume, channels, picked
        self.rows = self.audio.rows
        if channels == "each":  # `picked`: the source channels a cut's rows hold, else all of the file's, in order
            self.labels = [picked[c] if picked else c for c in range(self.rows)]
        else:  # a cut of one channel is that channel, not a mix: its row says which one it encodes
            self.labels = [picked[0] if picked and len(picked) == 1 else -1]

    def again(self) -> SourceAudio:
        """Its audio from the start, as a new reading (this one is closed)."""
        self.close()
        return SourceAudio(self.id, self._opener, self._resume, self._channels, self._picked)

    @property
    def info(self) -> SourceInfo:
        return SourceInfo(self.audio.rate, self.audio.channels, *self._resume)

    @property
    def length_stated(self) -> bool:
        return self.audio.expected is not None

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter(self.audio)

    def whole(self, hold_seconds: float | None = None) -> list[AudioItem] | None:
        """Its rows-to-be, read whole; None where a row would hold more than `hold_seconds` of
        audio, with what was read held, to come first when it is iterated (`Audio24k.whole`)."""
        pcm = self.audio.whole(None if hold_seconds is None else int(hold_seconds * SAMPLE_RATE))
        return None if pcm is None else self.items(pcm)

    def items(self, pcm: np.ndarray) -> list[AudioItem]:
        return [AudioItem(self.id, label, pcm[row], self.info) for row, label in enumerate(self.labels)]

    def __enter__(self) -> SourceAudio:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.audio.close()


@dataclass(frozen=True)
class AudioItem:
    """One row's worth of audio, ready for the model: mono float32 at 24 kHz (channel -1: the mix)."""

    id: str
    channel: int
    pcm: np.ndarray
    source: SourceInfo


@dataclass(frozen=True)
class Problem:
    """An input that yields no audio file (missing path, empty directory): reported, not fatal."""

    id: str
    path: str
    error: str


def printable(name: str) -> str:
    """`name` with the bytes that are not UTF-8 (held as surrogates by the OS layer) written `\\xNN`."""
    if name.isascii():
        return name
    try:
        return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a lone surrogate from JSON ("\ud800"), not a byte the OS layer held
        return name.encode("utf-8", "backslashreplace").decode("utf-8")


def _clean_relative(name: str) -> bool:
    """Whether `name` is relative with no `.`, `..` or empty parts: then it is its own id below its base."""
    return not os.path.isabs(name) and all(part not in ("", ".", "..") for part in name.split(os.sep))


def _relative_id(path: Path, base: Path) -> str:
    absolute = os.path.abspath(path)
    rel = os.path.relpath(absolute, os.path.abspath(base))
    if rel == ".." or rel.startswith(".." + os.sep):
        rel = absolute.lstrip(os.sep)
    return printable(Path(rel).as_posix())


def _walk(root: Path) -> tuple[list[Path], list[Path], list[Path]]:
    """The audio files, the Parquet files and the other files below a directory, in a stable order."""
    files = sorted(p for p in root.rglob("*") if p.is_file())
    audio = [p for p in files if p.suffix.lower() in AUDIO_EXTENSIONS]
    tables = [p for p in files if p.suffix.lower() == ".parquet" and not p.name.startswith(".")]
    taken = set(audio) | set(tables)
    return audio, tables, [p for p in files if p not in taken]


def _left_out(others: list, root: Location | None, what: str = "file") -> str:
    """"3 files not named as audio (notes.txt, a.json, b.tar)": what a walk did not take."""
    names = [printable(p) if isinstance(p, str) else _below(p, root) for p in others[:5]]
    more = f", and {len(others) - 5} more" if len(others) > 5 else ""
    many = len(others) != 1
    listed = ", ".join(names) + more
    return f"{len(others)} {what}{'s' if many else ''} not named as audio ({listed})"


def _list_entries(item: str, stdin: BinaryIO | None) -> tuple[list[str], Path]:
    """The paths an @list names (made absolute against the list's directory, or the current one for @-)."""
    if item == "@-":
        data = (stdin or sys.stdin.buffer).read()
        base = Path.cwd()
    else:
        listing = Path(item[1:])
        data = listing.read_bytes()
        # A list from a pipe (@/dev/stdin, bash's @<(find ...)) is relative to where we run, like @-.
        base = listing.parent if listing.is_file() else Path.cwd()
    lines = [os.fsdecode(ln.strip()) for ln in data.splitlines()]
    return [str(base / ln) for ln in lines if ln and not ln.startswith("#")], base


_RANGE = re.compile(r"\{(-?\d+)\.\.(-?\d+)\}|\{([^{}]*,[^{}]*)\}")


def expand_braces(pattern: str) -> list[str]:
    """`a-{000..002}.tar` -> a-000.tar, a-001.tar, a-002.tar; `{x,y}` -> x, y (as webdataset and bash)."""
    m = _RANGE.search(pattern)
    if m is None:
        return [pattern]
    head, tail = pattern[:m.start()], pattern[m.end():]
    if m.group(3) is not None:
        choices = m.group(3).split(",")
    else:
        a, b = m.group(1), m.group(2)
        width = len(a) if a.lstrip("-").startswith("0") else 0
        lo, hi = int(a), int(b)
        step = 1 if hi >= lo else -1
        if abs(hi - lo) > 1_000_000:
            raise InputError(f"{pattern}: a brace range of over a million names")
        choices = [str(i).zfill(width) for i in range(lo, hi + step, step)]
    return [name for c in choices for name in expand_braces(head + c + tail)]


class _Collector:
    """Gathers the sources and problems of every INPUT."""

    def __init__(self, options: ManifestOptions) -> None:
        self.options = options
        self.found: list[Source] = []
        self.problems: list[Problem] = []
        self.roots: dict[Location, AudioRoot] = {}
        self._row_root: tuple[Location, Location] | None = None  # the last Parquet file's rows' root

    def drain(self) -> tuple[list[Source], list[Problem]]:
        """What was listed since the last drain."""
        found, problems = self.found, self.problems
        self.found, self.problems = [], []
        return found, problems

    def drained(self, listing: Iterator[None]) -> Iterator[tuple[list[Source], list[Problem]]]:
        """Runs a listing that yields when a chunk is ready, draining after each."""
        for _ in listing:
            yield self.drain()

    def problem(self, item: str, error: str) -> None:
        error = error.removeprefix(f"{item}: ")  # the id says which input it is
        self.problems.append(Problem(printable(item), printable(item), error))

    def file(self, path: Location, base: Path) -> Iterator[None]:
        """One file named by an INPUT: an audio file, or a manifest or container of many (a
        manifest's items come a chunk at a time: this yields when the collector holds one)."""
        name = path.name.lower()
        if name.endswith(".tar"):
            self.tar(path)
            return
        if name.endswith(".parquet"):
            try:
                columns = _parquet_audio_columns(path)
            except ContainerError as e:
                raise InputError(str(e)) from None
            if columns:
                yield from self.hf_parquet([path], path.parent, columns, single=True)
                return
        if (name.endswith(".jsonl") or name.endswith(".jsonl.gz")) and isinstance(path, Path) and is_lhotse(path):
            yield from self.lhotse(path)
            return
        if isinstance(path, Path) and is_manifest(path):
            yield from self.manifest(path)
            return
        if self.options.keep_columns:
            raise InputError(f"--keep-columns copies fields of manifests and containers; {printable(str(path))} "
                             "is an audio file")
        if isinstance(path, RemotePath):
            self.found.append(Source(path, path.path.lstrip("/")))
        else:
            self.found.append(Source(path, _relative_id(path, base)))

    def directory(self, root: Location, item: str) -> Iterator[None]:
        if isinstance(root, RemotePath):
            files = root.files()
            audio = [f for f in files if f.suffix.lower() in AUDIO_EXTENSIONS]
            tables = [f for f in files if f.suffix.lower() == ".parquet"]
            others = [f for f in files if f.suffix.lower() not in AUDIO_EXTENSIONS | {".parquet"}]
        else:
            audio, tables, others = _walk(root)
        hf = []
        for t in tables:
            try:
                columns = _parquet_audio_columns(t)
            except RefusedContainer as e:  # maybe audio, refused unread: an error row, not a file skipped
                self.problem(_below(t, root), str(e).removeprefix(f"{t}: "))
                continue
            except ContainerError:
                continue
            if columns:
                hf.append((t, columns))
        others += [t for t in tables if t not in {h for h, _ in hf}]  # Parquet without an audio column
        if not audio and not hf:
            self.problem(item, "directory holds no audio files" + (f": {_left_out(others, root)}" if others else ""))
        elif others:  # never a quiet success for a folder whose audio is in a format not read here
            log.warning("%s: skipped %s; an INPUT named directly is tried whatever its name", printable(item),
                        _left_out(others, root))
        if audio and self.options.keep_columns:
            raise InputError(f"--keep-columns copies fields of manifests and containers; {printable(item)} holds "
                             "audio files")
        for f in audio:
            self.found.append(Source(f, _below(f, root)))
        if hf:
            yield from self.hf_parquet([t for t, _ in hf], root, hf[0][1], single=False)

    def manifest(self, path: Path) -> Iterator[None]:
        """A manifest's rows: paths relative to the audio root, ids from --id-column or the path;
        a row without a path is a problem, not the end of the run. Yields after each chunk of at most
        CHUNK rows (a Parquet manifest's chunks end with its row groups)."""
        try:
            rows = read_manifest(path, self.options)
        except ManifestError as e:
            raise InputError(str(e)) from None
        item = printable(str(path))
        root = AudioRoot(rows.root)
        hint = None  # where the missing files are, worked out at the first one
        i = 0
        try:
            for paths, ids, kept in rows.chunks(CHUNK):
                for k, (value, given_id) in enumerate(zip(paths, ids)):
                    j = i + k  # the row's index in the manifest
                    if value is None:
                        self.problems.append(Problem(f"{item}:{j}", item, f"row {j} names no audio file"))
                        continue
                    p = Path(value) if os.path.isabs(value) else rows.root / value
                    if given_id is not None:
                        ident = printable(given_id)
                    else:
                        ident = printable(value) if _clean_relative(value) else _relative_id(p, rows.root)
                    try:
                        real = root.real_path(value)
                    except UnsafePathError as e:
                        self.problems.append(Problem(ident, printable(value), str(e)))
                        continue
                    if hint is None and not os.path.lexists(real):  # the first missing file: is the root wrong?
                        hint = missing_hint(value, rows.root)
                        if hint:
                            log.warning("%s names %s, which is not there%s", item, printable(value), hint)
                    self.found.append(Source(p, ident, {c: values[k] for c, values in kept.items()}, rows.types,
                                             real=real))
                i += len(paths)
                yield
        except ManifestError as e:  # a cell that is not text, found when its chunk is converted
            raise InputError(str(e)) from None

    def tar(self, path: Location) -> None:
        """A WebDataset shard: one source per sample key with an audio member."""
        skipped: list[str] = []
        try:
            items = list(tar_items(path, skipped))
        except ContainerError as e:
            return self.problem(str(path), str(e))
        except OSError as e:
            return self.problem(str(path), f"cannot read: {e.strerror or e}")
        if not items:
            return self.problem(str(path), "the shard holds no audio members" + (
                f": {_left_out(skipped, None, 'member')}" if skipped else " (it is empty)"))
        if skipped:
            log.warning("%s: skipped %s; a sample's audio is a member named KEY.wav, KEY.flac, KEY.m4a ...",
                        printable(str(path)), _left_out(skipped, None, "member"))
        self.items([(it, it.key, path) for it in items], None)
        return None

    def hf_parquet(self, files: list[Location], root: Location, columns: list[str], single: bool
                   ) -> Iterator[None]:
        """Hugging Face audio Parquet (one file, or a directory's shards), CHUNK rows at a time:
        ids are the rows' paths when these are unique across `files` (a first pass reads only
        the paths to know), else FILE:ROW."""
        o = self.options
        column = o.audio_column or (columns[0] if len(columns) == 1 else None)
        if column is None:
            raise InputError(f"{files[0]}: several audio columns ({', '.join(columns)}); choose one with "
                             "--audio-column")
        wanted = tuple(dict.fromkeys([*o.keep_columns, *([o.id_column] if o.id_column else [])]))
        types: dict[str, pa.DataType] = {}
        usable = []
        for f in files:  # a column asked for that a file lacks is refused before any work
            try:
                schema = _schema(f)
            except ContainerError as e:
                self.problem(str(f), str(e))
                continue
            if column not in schema.names:
                raise InputError(f"{f}: no audio column {column!r} (its audio columns: "
                                 f"{', '.join(audio_columns(schema)) or 'none'})")
            missing = [c for c in wanted if c not in schema.names]
            if missing:
                raise InputError(f"{f}: no column {missing[0]!r} (its columns: {', '.join(schema.names)})")
            if o.id_column and pa.types.is_nested(schema.field(o.id_column).type):
                raise InputError(f"{f}: its column {o.id_column!r} holds {schema.field(o.id_column).type}, not "
                                 "text; name the column that holds the ids with --id-column")
            types.update({c: schema.field(c).type for c in o.keep_columns})
            usable.append(f)
        by_path = not o.id_column and _unique_paths(usable, column)

        def name(f: Location, it: Item) -> str:
            row = f"{printable(f.name) if single else _below(f, root)}:{it.key}"  # FILE:ROW
            if o.id_column:
                value = it.fields.get(o.id_column)
                return row if value is None else str(value)
            return it.path if by_path else row

        for f in usable:
            chunk: list[tuple[Item, str, Location]] = []
            try:
                for it in parquet_items(f, column, wanted):
                    chunk.append((it, name(f, it), f))
                    if len(chunk) == CHUNK:
                        self.items(chunk, types)
                        chunk = []
                        yield
            except ContainerError as e:  # the rows before the damage are kept
                self.items(chunk, types)
                chunk = []
                self.problem(str(f), str(e))
            self.items(chunk, types)
            yield

    def lhotse(self, path: Path) -> Iterator[None]:
        """A lhotse manifest's cuts or recordings, CHUNK at a time (yielding after each)."""
        stats: dict[str, tuple[int, int]] = {}  # cuts of one recording lie together: their file is stat'ed once
        types: dict | None = None  # the kept fields' types, from the first chunk
        entries = lhotse_items(path, self.options)
        while True:
            chunk = []
            try:
                for item, loader, audio_file in entries:
                    if item.error is None:
                        item.member = loader
                        if audio_file and audio_file not in stats:
                            if len(stats) >= CHUNK:
                                stats.clear()
                            stats[audio_file] = stat_or_zero(audio_file)  # an unreadable file: reading it says why
                        item.size, item.mtime_ns = stats.get(audio_file, (0, 0))
                    chunk.append((item, item.key, Path(audio_file) if audio_file else path))
                    if len(chunk) == CHUNK:
                        break
            except ContainerError as e:
                raise InputError(str(e)) from None
            except OSError as e:
                self.items(chunk, types, after=types is not None)
                self.problem(str(path), f"cannot read the lhotse manifest: {os_reason(e)}")
                return
            if not chunk:
                return
            types = self.items(chunk, types, after=types is not None)
            yield

    def items(self, entries: list[tuple[Item, str, Location]], types: dict | None, after: bool = False) -> dict:
        """Sources (or error rows) for listed container items (item, id, where it lies), with the
        kept fields they carry; `types` of those fields where the container declares them, else
        inferred from these items. `after`: these items follow others of the same container, whose
        `types` they must fit. Returns the types."""
        keep = self.options.keep_columns
        rows = [(it, printable(ident), where) for it, ident, where in entries]
        if keep and after:
            for c in keep:
                values = [it.fields.get(c) for it, _, _ in rows]
                try:  # built as the writer builds it, and refused unless every value comes back as it was
                    if pa.array(values, type=types[c]).to_pylist() != values:  # 1.5 cut to 1, a struct's new key
                        raise ValueError
                except (pa.ArrowException, TypeError, ValueError, OverflowError):
                    raise InputError(f"the field {c!r} of {printable(str(rows[0][2]))} holds values of mixed types "
                                     f"(not all {types[c]}, the type of the first {CHUNK} items); it cannot be one "
                                     "column") from None
        elif keep:
            present = {c for it, _, _ in rows if it.error is None for c in it.fields}
            missing = [c for c in keep if c not in present]
            if missing and rows:
                fields = sorted(present)
                whom = "no item" if len(rows) < CHUNK else f"none of the first {CHUNK} items"
                raise InputError(f"{whom} of {printable(str(rows[0][2]))} has a field {missing[0]!r} (their "
                                 f"fields: {', '.join(fields) or 'none'})")
            types = dict(types or {})
            for c in keep:
                if c not in types:
                    try:
                        t = pa.array([it.fields.get(c) for it, _, _ in rows]).type
                    except (pa.ArrowException, TypeError, ValueError, OverflowError):
                        raise InputError(f"the field {c!r} holds values of mixed types; it cannot be one column"
                                         ) from None
                    types[c] = pa.string() if pa.types.is_null(t) else t
        for it, ident, where in rows:
            if it.error is not None:
                self.problems.append(Problem(ident, printable(str(where)), it.error))
                continue
            kept = {c: it.fields.get(c) for c in keep}
            if it.member is None:  # a Parquet row whose bytes are null: read from its path, inside the root
                try:
                    p, real = self._row_path(it.path, where)
                except UnsafePathError as e:
                    self.problems.append(Problem(ident, printable(str(where)), f"its audio path is refused: {e}"))
                    continue
                self.found.append(Source(p, ident, kept, types or {}, real=real))
                continue
            self.found.append(Source(where, ident, kept, types or {}, it.member, it.size,
                                     it.mtime_ns, it.fingerprint, it.duration_s))
        return types or {}

    def _row_path(self, name: str, container: Location) -> tuple[Location, str | None]:
        """Where an audio Parquet row's `path` leads, and its real path: inside --audio-root, else
        the file's folder (a remote file's: a relative name without `..`; no real path)."""
        if self._row_root is None or self._row_root[0] is not container:  # rows of one file come together
            root = self.options.audio_root or container.parent
            if not isinstance(root, RemotePath) and root not in self.roots:
                self.roots[root] = AudioRoot(root)
            self._row_root = container, root
        root = self._row_root[1]
        if isinstance(root, RemotePath):
            return root / check_relative(name), None
        real = self.roots[root].real_path(name)
        return (Path(name) if os.path.isabs(name) else root / name), real


def _unique_paths(files: list[Location], column: str) -> bool:
    """Whether every row of `files` has a path and no two the same (read as `parquet_paths` reads
    them: a file's rows up to where it cannot be read). Known by digests, so that ten million rows
    take 120 MB, checked UNIQUE_BATCH at a time (the first repeat ends the pass)."""
    seen = Digests()
    batch: list[np.ndarray] = []

    def batch_repeats() -> bool:
        """Whether the batch repeats a path, within itself or of an earlier batch; else it joins `seen`."""
        found = np.concatenate(batch) if batch else np.empty(0, DTYPE)
        batch.clear()
        if len(np.unique(found)) != len(found) or seen.holds(found).any():
            return True
        seen.add(found)
        return False

    pending = 0
    for f in files:
        try:
            for paths in parquet_paths(f, column):
                if None in paths:
                    return False
                batch.append(digests(paths))
                pending += len(paths)
                if pending >= UNIQUE_BATCH:
                    pending = 0
                    if batch_repeats():
                        return False
        except ContainerError:
            continue
    return not batch_repeats()


def _below(f: Location, root: Location) -> str:
    """`f`'s path below the directory `root`, as an id."""
    return printable(str(f.relative_to(root).as_posix() if isinstance(f, Path) else f.relative_to(root)))


def _schema(path: Location) -> pa.Schema:
    """A Parquet file's schema; RefusedContainer where its footer is past a bound (it may hold
    audio: an error row), ContainerError where it is not Parquet."""
    try:
        with open_read(path) as f:
            return parquet_footer(path, f, path.stat().st_size, checked=False).schema.to_arrow_schema()
    except LimitError as e:
        raise RefusedContainer(f"{path}: not a readable Parquet file ({first_line(e)})") from None
    except (pa.ArrowException, OSError, ValueError) as e:  # ValueError: names that are not UTF-8
        raise ContainerError(f"{path}: not a readable Parquet file ({(str(e).splitlines() or [''])[0][:200]})"
                             ) from None


def _parquet_audio_columns(path: Location) -> list[str]:
    return audio_columns(_schema(path))


def list_sources(inputs: list[str], stdin: BinaryIO | None = None, manifest: ManifestOptions | None = None
                 ) -> Iterator[tuple[list[Source], list[Problem]]]:
    """Every item named by `inputs`, in a stable order, a piece at a time: (sources, problems) for
    each INPUT, and for a manifest or lhotse file every CHUNK of its items, so that a listing of
    millions of items need never be held whole. Nothing is deduplicated or checked for clashing
    ids here (`collect_sources` and `listing.windows` do that).

    Files are dispatched by name: `.tar` (WebDataset), `.parquet` (Hugging Face audio, else a
    manifest of paths), `.jsonl(.gz)` (lhotse, else a manifest), `.tsv` / `.csv` (manifests),
    anything else an audio file. InputError for a column asked for that is missing.
    """
    options = manifest or ManifestOptions()
    clash = RESERVED & set(options.keep_columns)
    if clash:
        raise InputError(f"--keep-columns {', '.join(sorted(clash))}: a token dataset has its own column of "
                         "that name; rename it in the source")
    c = _Collector(options)
    pending = deque((item, Path.cwd()) for item in inputs)
    while pending:
        item, base = pending.popleft()
        if item.startswith("@"):
            try:
                entries, list_base = _list_entries(item, stdin)
            except OSError as e:
                c.problems.append(Problem(item, item, f"cannot read list file: {e.strerror or e}"))
                yield c.drain()
                continue
            pending.extendleft((entry, list_base) for entry in reversed(entries))
            continue
        if is_uri(item):
            try:
                remote = RemotePath.from_uri(item)
                if remote.is_dir():
                    yield from c.drained(c.directory(remote, item))
                elif remote.is_file():
                    yield from c.drained(c.file(remote, base))
                else:
                    c.problem(item, "no such file or directory")
            except OSError as e:
                c.problem(item, str(e).splitlines()[0])
        else:
            path = Path(item)
            if path.is_dir():
                yield from c.drained(c.directory(path, item))
            elif path.is_file() or path.exists():  # a FIFO or device too: reading it reports what it is
                yield from c.drained(c.file(path, base))
            elif glob.has_magic(item) or _RANGE.search(item):
                names = expand_braces(item)
                matches = sorted({m for n in names for m in (glob.glob(n, recursive=True) if glob.has_magic(n)
                                                              else [n] if os.path.exists(n) else [])})
                if not matches:
                    c.problem(item, "pattern matches no files")
                for m in matches:
                    if Path(m).is_file():
                        yield from c.drained(c.file(Path(m), base))
            else:
                c.problem(item, "no such file or directory")
        yield c.drain()


def unique_sources(sources: Iterable[Source], real_paths: RealPaths | None = None) -> dict[tuple, Source]:
    """`sources` by what they read, the first of each kept: the same file named twice (a directory
    and a file in it) is one input. Keyed by (real path, member)."""
    real_paths = real_paths or RealPaths()
    unique: dict[tuple, Source] = {}
    for s in sources:
        if s.real is not None:
            real = s.real
        else:
            real = real_paths(os.fspath(s.path)) if isinstance(s.path, Path) else str(s.path.resolve())
        unique.setdefault((real, s.member), s)
    return unique


def collect_sources(inputs: list[str], stdin: BinaryIO | None = None,
                    manifest: ManifestOptions | None = None) -> tuple[list[Source], list[Problem]]:
    """Every item named by `inputs` (as `list_sources`), in a stable order, and the inputs that
    named none, held whole. InputError if two different items would get one id (listing them), or a
    column asked for is missing, before anything is encoded.
    """
    found: list[Source] = []
    problems: list[Problem] = []
    for sources, failed in list_sources(inputs, stdin, manifest):
        found += sources
        problems += failed
    sources = list(unique_sources(found).values())
    refuse_clashes(sources)
    return sources, problems


def _paths(sources: Iterable[Source]) -> str:
    return ", ".join(printable(str(s.path)) for s in sources)


def refuse_clashes(sources: list[Source], earlier: Collection[str] = ()) -> None:
    """InputError if two of `sources` would get one id, or one would get an id in `earlier` (the
    ids of inputs listed before these, which are no longer at hand)."""
    by_id: dict[str, list[Source]] = {}
    for s in sources:
        by_id.setdefault(s.id, []).append(s)
    clashes = {i: group for i, group in by_id.items() if len(group) > 1 or i in earlier}
    if not clashes:
        return
    shown = "; ".join(f"{i!r}: {_paths(group)}{' and an input listed before' if i in earlier else ''}"
                      for i, group in list(clashes.items())[:5])
    more = f" and {len(clashes) - 5} more" if len(clashes) > 5 else ""
    if any(s.member is not None for group in clashes.values() for s in group):
        hint = ("items inside containers keep their own keys: take ids from a column with --id-column, or "
                "encode the containers into separate OUTPUTs")
    else:
        hint = ("give their common parent directory as the INPUT, or name the files directly, so that their "
                "ids differ")
    if clashes.keys() & set(earlier):
        hint += ("; OUTPUT already holds the rows of the inputs listed before (a long listing is encoded 20,000 "
                 "items at a time): once the ids differ, encode into a new OUTPUT or with --overwrite")
    raise InputError(f"{len(clashes)} ids would name more than one input ({shown}{more}); {hint}")


_Entry = TypeVar("_Entry", Source, Problem)


def select_shard(entries: list[_Entry], shard_index: int, num_shards: int) -> list[_Entry]:
    """This job's share of `entries` (sources, or the problems of inputs that named none): a
    deterministic split by id, for N array jobs."""
    import zlib

    return [s for s in entries if zlib.crc32(s.id.encode()) % num_shards == shard_index]
