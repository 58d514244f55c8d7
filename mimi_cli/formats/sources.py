"""Turning command-line INPUTs (files, directories, globs, @lists) into audio files with ids.

An id names a row for good: it is what resume, `mimi decode` and users key on, so two inputs
never share one. A file found under a directory INPUT is named by its path relative to that
directory; a file named directly, by a glob or in the `@-` list (read from stdin), by its path
relative to the current directory; a file in an `@list.txt`, relative to the list's directory
(a list that is a pipe, such as `@/dev/stdin`, counts as `@-`).
A file outside that base is named by its absolute path without the leading `/`. Ids are
normalised and `/`-separated; bytes of a file name that are not UTF-8 appear as `\\xNN`.
"""
from __future__ import annotations

import glob
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from .audio import AUDIO_EXTENSIONS
from .manifests import ManifestError, ManifestOptions, is_manifest, read_manifest
from .storage import RemotePath, is_uri


class InputError(Exception):
    """INPUTs that cannot make a dataset as given (two of them would get the same id)."""


@dataclass(frozen=True)
class Source:
    path: Path | RemotePath
    id: str
    # Fields a manifest row carries to the dataset (--keep-columns), and their Arrow types.
    columns: dict = field(default_factory=dict, compare=False)
    types: dict = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class Problem:
    """An input that yields no audio file (missing path, empty directory): reported, not fatal."""

    id: str
    path: str
    error: str


def printable(name: str) -> str:
    """`name` with the bytes that are not UTF-8 (held as surrogates by the OS layer) written `\\xNN`."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _relative_id(path: Path, base: Path) -> str:
    absolute = os.path.abspath(path)
    rel = os.path.relpath(absolute, os.path.abspath(base))
    if rel == ".." or rel.startswith(".." + os.sep):
        rel = absolute.lstrip(os.sep)
    return printable(Path(rel).as_posix())


def _walk(root: Path) -> list[Source]:
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
    return [Source(p, printable(p.relative_to(root).as_posix())) for p in files]


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


def _manifest_sources(item: str, options: ManifestOptions) -> tuple[list[Source], list[Problem]]:
    """A manifest's rows as sources: paths relative to the audio root, ids from --id-column or
    the path; a row without a path is a problem, not the end of the run."""
    try:
        rows = read_manifest(Path(item), options)
    except ManifestError as e:
        raise InputError(str(e)) from None
    found, problems = [], []
    for i, (value, given_id) in enumerate(zip(rows.paths, rows.ids)):
        if value is None:
            problems.append(Problem(f"{printable(item)}:{i}", printable(item), f"row {i} names no audio file"))
            continue
        path = Path(value) if os.path.isabs(value) else rows.root / value
        kept = {c: values[i] for c, values in rows.kept.items()}
        found.append(Source(path, given_id if given_id is not None else _relative_id(path, rows.root), kept,
                            rows.types))
    return found, problems


def collect_sources(inputs: list[str], stdin: BinaryIO | None = None,
                    manifest: ManifestOptions | None = None) -> tuple[list[Source], list[Problem]]:
    """Every audio file named by `inputs`, in a stable order, and the inputs that named none.

    `.tsv`, `.csv`, `.jsonl` and `.parquet` files are manifests, read as `manifest` says. InputError if two
    different files would get one id (listing them), or a manifest lacks a column asked for,
    before anything is read.
    """
    manifest = manifest or ManifestOptions()
    found: list[Source] = []
    problems: list[Problem] = []
    pending = [(item, Path.cwd()) for item in inputs]
    while pending:
        item, base = pending.pop(0)
        if not is_uri(item) and not item.startswith("@") and is_manifest(Path(item)):
            more, trouble = _manifest_sources(item, manifest)
            found.extend(more)
            problems.extend(trouble)
            continue
        if manifest.keep_columns:
            raise InputError(f"--keep-columns copies fields of manifest rows; {printable(item)} is not a manifest "
                             "(.tsv, .csv, .jsonl, .parquet)")
        if item.startswith("@"):
            try:
                entries, list_base = _list_entries(item, stdin)
            except OSError as e:
                problems.append(Problem(item, item, f"cannot read list file: {e.strerror or e}"))
                continue
            pending = [(entry, list_base) for entry in entries] + pending
            continue
        if is_uri(item):
            try:
                remote = RemotePath.from_uri(item)
                if remote.is_dir():
                    files = [f for f in remote.files() if f.suffix.lower() in AUDIO_EXTENSIONS]
                    if not files:
                        problems.append(Problem(item, item, "directory holds no audio files"))
                    found.extend(Source(f, str(f.relative_to(remote))) for f in files)
                elif remote.is_file():
                    found.append(Source(remote, remote.path.lstrip("/")))
                else:
                    problems.append(Problem(item, item, "no such file or directory"))
            except OSError as e:
                problems.append(Problem(item, item, str(e).splitlines()[0]))
            continue
        path = Path(item)
        if path.is_dir():
            files = _walk(path)
            if not files:
                problems.append(Problem(printable(item), printable(item), "directory holds no audio files"))
            found.extend(files)
        elif path.is_file() or path.exists():  # a FIFO or device too: reading it reports what it is
            found.append(Source(path, _relative_id(path, base)))
        elif glob.has_magic(item):
            matches = sorted(glob.glob(item, recursive=True))
            if not matches:
                problems.append(Problem(printable(item), printable(item), "pattern matches no files"))
            found.extend(Source(Path(m), _relative_id(Path(m), base)) for m in matches if Path(m).is_file())
        else:
            problems.append(Problem(printable(item), printable(item), "no such file or directory"))
    unique: dict[str, Source] = {}
    for s in found:  # the same file named twice (a directory and a file in it) is one input
        unique.setdefault(str(s.path.resolve()), s)
    sources = list(unique.values())
    _refuse_clashes(sources)
    return sources, problems


def _refuse_clashes(sources: list[Source]) -> None:
    by_id: dict[str, list[Source]] = {}
    for s in sources:
        by_id.setdefault(s.id, []).append(s)
    clashes = {i: group for i, group in by_id.items() if len(group) > 1}
    if not clashes:
        return
    shown = "; ".join(f"{i!r}: " + ", ".join(printable(str(s.path)) for s in group)
                      for i, group in list(clashes.items())[:5])
    more = f" and {len(clashes) - 5} more" if len(clashes) > 5 else ""
    raise InputError(f"{len(clashes)} ids would name more than one input file ({shown}{more}); give their "
                     "common parent directory as the INPUT, or name the files directly, so that their ids differ")


def select_shard(sources: list[Source], shard_index: int, num_shards: int) -> list[Source]:
    """This job's share of `sources`: a deterministic split by id, for N array jobs."""
    import zlib

    return [s for s in sources if zlib.crc32(s.id.encode()) % num_shards == shard_index]
