"""Where datasets and audio live: a local path, or a URI any pyarrow filesystem understands.

Local locations are plain `pathlib.Path`s. A URI (s3://bucket/key, gs://..., file:///...)
becomes a `RemotePath`: the few Path operations the readers and writers use (name, parent,
`/`, glob, open, replace, unlink, stat ...) over `pyarrow.fs`. So there is one implementation of
every reader and writer, whatever the storage.
"""
from __future__ import annotations

import fnmatch
import io
import os
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from types import SimpleNamespace
from typing import BinaryIO

import pyarrow.fs as pafs

from ..errors import MimiError

_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_uri(location: str | Path) -> bool:
    return isinstance(location, str) and bool(_URI.match(location))


def as_location(location: str | Path) -> Path | RemotePath:
    """A Path for local locations, a RemotePath for URIs."""
    if isinstance(location, RemotePath | Path):
        return location
    return RemotePath.from_uri(location) if is_uri(location) else Path(location)


class RemotePath:
    """A file or directory on a pyarrow filesystem, with the subset of Path's API we use."""

    def __init__(self, fs: pafs.FileSystem, path: str, prefix: str) -> None:
        self.fs, self.path, self.prefix = fs, path.rstrip("/") or "/", prefix

    @classmethod
    def from_uri(cls, uri: str) -> RemotePath:
        try:
            fs, path = pafs.FileSystem.from_uri(uri)
        except (ValueError, OSError) as e:
            raise OSError(f"cannot open {uri}: {e}") from None
        prefix = uri[:len(uri) - len(path)] if uri.endswith(path) else uri.split("://", 1)[0] + "://"
        return cls(fs, path, prefix)

    def __str__(self) -> str:
        return self.prefix + self.path

    __repr__ = __str__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RemotePath) and str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))

    def __truediv__(self, part: str) -> RemotePath:
        return RemotePath(self.fs, f"{self.path}/{part}", self.prefix)

    @property
    def _pure(self) -> PurePosixPath:
        return PurePosixPath(self.path)

    name = property(lambda self: self._pure.name)
    stem = property(lambda self: self._pure.stem)
    suffix = property(lambda self: self._pure.suffix)
    parent = property(lambda self: RemotePath(self.fs, str(self._pure.parent), self.prefix))

    def with_name(self, name: str) -> RemotePath:
        return RemotePath(self.fs, str(self._pure.with_name(name)), self.prefix)

    def _type(self) -> pafs.FileType:
        return self.fs.get_file_info(self.path).type

    def is_file(self) -> bool:
        return self._type() == pafs.FileType.File

    def is_dir(self) -> bool:
        return self._type() == pafs.FileType.Directory

    def exists(self) -> bool:
        return self._type() != pafs.FileType.NotFound

    def _children(self, recursive: bool) -> list[pafs.FileInfo]:
        if not self.is_dir():
            return []
        return self.fs.get_file_info(pafs.FileSelector(self.path, recursive=recursive))

    def glob(self, pattern: str) -> list[RemotePath]:
        """Direct children whose name matches (no `**`)."""
        return sorted((RemotePath(self.fs, i.path, self.prefix) for i in self._children(False)
                       if fnmatch.fnmatch(i.base_name, pattern)), key=str)

    def files(self) -> list[RemotePath]:
        """Every file below this directory."""
        return sorted((RemotePath(self.fs, i.path, self.prefix) for i in self._children(True)
                       if i.type == pafs.FileType.File), key=str)

    def relative_to(self, other: RemotePath) -> PurePosixPath:
        return self._pure.relative_to(other._pure)

    def resolve(self) -> RemotePath:
        return self

    def mkdir(self, parents: bool = False, exist_ok: bool = False) -> None:
        self.fs.create_dir(self.path, recursive=True)

    def unlink(self, missing_ok: bool = False) -> None:
        try:
            self.fs.delete_file(self.path)
        except FileNotFoundError:
            if not missing_ok:
                raise

    def rmtree(self) -> None:
        if self.is_dir():
            self.fs.delete_dir(self.path)

    def replace(self, target: RemotePath) -> RemotePath:
        self.fs.move(self.path, target.path)
        return target

    def stat(self) -> SimpleNamespace:
        info = self.fs.get_file_info(self.path)
        if info.type == pafs.FileType.NotFound:
            raise FileNotFoundError(str(self))
        return SimpleNamespace(st_size=info.size, st_mtime_ns=info.mtime_ns or 0)

    def open(self, mode: str = "rb"):
        if mode in ("rb", "r"):
            f = self.fs.open_input_file(self.path)
        elif mode in ("wb", "w"):
            f = self.fs.open_output_stream(self.path)
        else:
            raise ValueError(mode)
        return io.TextIOWrapper(f, encoding="utf-8") if "b" not in mode else f

    def read_bytes(self) -> bytes:
        with self.open("rb") as f:
            return f.read()


Location = Path | RemotePath  # where a dataset or an audio file lives


def rmtree(location: Path | RemotePath) -> None:
    """Removes a directory tree, if it is there."""
    if isinstance(location, RemotePath):
        location.rmtree()
    else:
        import shutil

        shutil.rmtree(location, ignore_errors=True)


class OutputError(MimiError):
    """An output that cannot be written (a full disk, no permission, a file where a directory goes)."""


def first_line(e: Exception) -> str:
    """An exception's message in one line of at most 200 characters (its type's name if it has none)."""
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


def os_reason(e: OSError) -> str:
    """An OSError in words (\"no space left on device\"), without Python's [Errno N] prefix."""
    text = e.strerror or str(e).splitlines()[0] or type(e).__name__
    return text[:1].lower() + text[1:]


def temporary_path(path: Location) -> Location:
    """A new name beside `path` to write it under: `.name.RANDOM.tmp`. Random, not the process id,
    so that writers of one name never share a temporary: array jobs sharing an OUTPUT run on
    several hosts, or in containers where each is process 1."""
    return path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")


def open_read(location: Location) -> BinaryIO:
    """`location` open to read its bytes, seekable (a remote file is read as it is sought)."""
    return location.open("rb") if isinstance(location, RemotePath) else open(location, "rb")


@contextmanager
def atomic_write(path: Location) -> Iterator[BinaryIO]:
    """A binary file to write `path` through: written under `temporary_path` beside it and renamed
    over `path` only once complete, so readers and later runs never see half a file.

    On any failure the temporary file is removed; an OSError (a full disk, say) becomes an
    OutputError naming `path`.
    """
    tmp = temporary_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with (tmp.open("wb") if isinstance(tmp, RemotePath) else create_new(tmp)) as f:
            yield f
            if isinstance(f, io.BufferedWriter):  # local: on disk before the rename, so a power cut keeps it
                f.flush()
                os.fsync(f.fileno())
        tmp.replace(path)
    except BaseException as e:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise OutputError(f"cannot write {path}: {os_reason(e)}") from None
        raise


_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def create_new(path: Path) -> BinaryIO:
    """A new file at `path` to write, made by us: whatever was at that name (a stale temporary,
    or a symbolic link planted to make us write elsewhere) is removed first, never followed."""
    try:
        os.unlink(path)  # removes a link itself, not what it points to
    except FileNotFoundError:
        pass
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | getattr(os, "O_CLOEXEC", 0), 0o666)
    return os.fdopen(fd, "wb")


def own_directory(path: Path) -> None:
    """Makes `path` a directory of ours: a symbolic link at that name is removed, not followed
    (a staging folder planted as a link would send our writes, and later our removals, elsewhere)."""
    if path.is_symlink():
        path.unlink()
    path.mkdir(parents=True, exist_ok=True)


def readable(location: Path | RemotePath):
    """What soundfile, numpy and pyarrow can read: the path itself, or the remote bytes."""
    return location if isinstance(location, Path) else io.BytesIO(location.read_bytes())
