"""Turning command-line INPUTs (files, directories, globs, @lists) into audio files with ids."""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path

from .audio import AUDIO_EXTENSIONS
from .storage import RemotePath, is_uri


@dataclass(frozen=True)
class Source:
    path: Path | RemotePath
    id: str  # path relative to the input root it was found under ("/"-separated)


@dataclass(frozen=True)
class Problem:
    """An input that yields no audio file (missing path, empty directory): reported, not fatal."""

    id: str
    path: str
    error: str


def _walk(root: Path) -> list[Source]:
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
    return [Source(p, p.relative_to(root).as_posix()) for p in files]


def collect_sources(inputs: list[str]) -> tuple[list[Source], list[Problem]]:
    """Every audio file named by `inputs`, in a stable order, and the inputs that named none."""
    found: list[Source] = []
    problems: list[Problem] = []
    pending = list(inputs)
    while pending:
        item = pending.pop(0)
        if item.startswith("@"):
            listing = Path(item[1:])
            try:
                lines = [ln.strip() for ln in listing.read_text().splitlines()]
            except OSError as e:
                problems.append(Problem(item, item, f"cannot read list file: {e.strerror or e}"))
                continue
            base = listing.parent
            pending = [str(base / ln) if not os.path.isabs(ln) else ln
                       for ln in lines if ln and not ln.startswith("#")] + pending
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
                    found.append(Source(remote, remote.name))
                else:
                    problems.append(Problem(item, item, "no such file or directory"))
            except OSError as e:
                problems.append(Problem(item, item, str(e).splitlines()[0]))
            continue
        path = Path(item)
        if path.is_dir():
            files = _walk(path)
            if not files:
                problems.append(Problem(item, item, "directory holds no audio files"))
            found.extend(files)
        elif path.is_file():
            found.append(Source(path, path.name))
        elif glob.has_magic(item):
            matches = sorted(glob.glob(item, recursive=True))
            if not matches:
                problems.append(Problem(item, item, "pattern matches no files"))
            found.extend(Source(Path(m), Path(m).name) for m in matches if Path(m).is_file())
        else:
            problems.append(Problem(item, item, "no such file or directory"))
    unique: dict[str, Source] = {}
    for s in found:
        unique.setdefault(str(s.path.resolve()), s)
    return list(unique.values()), problems


def select_shard(sources: list[Source], shard_index: int, num_shards: int) -> list[Source]:
    """This job's share of `sources`: a deterministic split by id, for N array jobs."""
    import zlib

    return [s for s in sources if zlib.crc32(s.id.encode()) % num_shards == shard_index]
