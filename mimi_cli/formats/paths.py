"""Names from data used as paths: ids and `npy_path`s stay inside the directory they belong to.

A token dataset may come from anyone, so a row's id is never trusted as a path: like `tarfile`'s
data filter, a name that is empty, absolute, holds a `..` part or a NUL, or that resolves (through
symbolic links too) outside its root is refused.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

from ..errors import MimiError
from .storage import Location, RemotePath


class UnsafePathError(MimiError):
    """A name from a dataset that would reach outside the directory it must stay in."""


def check_relative(name: object) -> str:
    """`name` if it is a safe relative path ("/"-separated); UnsafePathError says why not."""
    if not isinstance(name, str) or not name:
        raise UnsafePathError("empty or missing name")
    if "\0" in name:
        raise UnsafePathError("name holds a NUL byte")
    windows = os.sep == "\\"  # there a backslash separates too, and "C:" starts an absolute path
    posix = name.replace("\\", "/") if windows else name
    if posix.startswith("/") or (windows and name[1:2] == ":"):
        raise UnsafePathError(f"absolute path {name!r}")
    if ".." in posix.split("/"):
        raise UnsafePathError(f"path {name!r} climbs out with '..'")
    return name


def confined(root: Location, name: object) -> Location:
    """root / name, refused (UnsafePathError) if it would land outside root, symbolic links included."""
    rel = check_relative(name)
    target = root / rel
    if isinstance(root, RemotePath):
        return target
    real_root = os.path.realpath(root)
    real = os.path.realpath(target)
    if not inside(real, real_root) or real == real_root:
        raise UnsafePathError(f"{name!r} leads outside {root}")
    return target


def inside(real: str, real_root: str) -> bool:
    """Whether the real path `real` is `real_root` or below it (both resolved)."""
    return real == real_root or real.startswith(real_root if real_root.endswith(os.sep) else real_root + os.sep)


class RealPaths:
    """Real paths (symbolic links resolved) of files, a directory's resolved once: one lstat a
    file rather than one a part of its path. Holds at most MAX_DIRS directories."""

    MAX_DIRS = 10_000

    def __init__(self) -> None:
        self._dirs: dict[str, str] = {}  # a directory as written -> its real path

    def __call__(self, path: str) -> str:
        # Split as written, never normalised first: `link/..` means the link's parent, not `.`.
        parent, leaf = os.path.split(path)
        if leaf in ("", ".", ".."):
            return os.path.realpath(path)
        if parent not in self._dirs:
            if len(self._dirs) >= self.MAX_DIRS:
                self._dirs.clear()
            self._dirs[parent] = os.path.realpath(parent)
        real = os.path.join(self._dirs[parent], leaf)
        return os.path.realpath(real) if os.path.islink(real) else real


class AudioRoot:
    """The folder that paths taken from a dataset (a manifest's rows, a lhotse source, an audio
    Parquet row's path) must stay in: `--audio-root`, else the dataset's own folder."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.real = os.path.realpath(self.root)
        self._real_paths = RealPaths()

    def resolve(self, name: str) -> Path:
        """The file `name` names (relative names start at the root), resolved through symbolic
        links; UnsafePathError if it lands outside the root. Absolute paths under the root are
        fine (NeMo and lhotse write them)."""
        return Path(self.real_path(name))

    def real_path(self, name: str) -> str:
        """`resolve`'s answer as a string."""
        if "\0" in name:
            raise UnsafePathError("the path holds a NUL byte")
        real = self._real_paths(os.path.join(self.root, name))  # an absolute name stays as it is
        if not inside(real, self.real):
            raise UnsafePathError(f"{name} lies outside the audio root {self.root}; mimi reads no file a dataset "
                                  "names outside it unless you widen it with --audio-root (--audio-root / for any)")
        return real


def missing_hint(name: str, root: Path) -> str:
    """Where a file a manifest names, missing under its root, is found after all: in a folder
    beside the manifest (Common Voice's `clips/`), or from the current directory (where lhotse
    reads relative paths from); '' if nowhere."""
    if os.path.isabs(name):
        return ""
    try:
        folders = sorted(d for d in root.iterdir() if d.is_dir())[:100]
    except OSError:
        folders = []
    try:
        for folder in folders:
            if (folder / name).is_file():
                return f" (it is in {folder}/: give --audio-root {folder})"
        if Path(name).is_file():
            return " (it is there from the current directory: give --audio-root .)"
    except (OSError, ValueError):  # a name no file can have (too long, a NUL)
        pass
    return ""


def regular_file(path: Location) -> Location:
    """`path` if it is a regular file (not a FIFO, device or directory that would hang or mislead a read)."""
    if isinstance(path, RemotePath):
        if not path.is_file():
            raise UnsafePathError(f"{path}: no such file")
        return path
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        raise UnsafePathError(f"{path}: {e.strerror or e}") from None
    if not stat.S_ISREG(mode):
        raise UnsafePathError(f"{path}: not a regular file")
    return Path(path)


def npy_file_name(item_id: str, channel: int) -> str:
    """The .npy a row's codes go to: its whole id, so `u.wav` and `u.flac` stay apart (`u.wav.npy`,
    `u.flac.npy`; `a.wav.ch1.npy` for a per-channel row)."""
    return f"{item_id}.ch{channel}.npy" if channel >= 0 else f"{item_id}.npy"


def _stem(item_id: str) -> str:
    return item_id.rsplit(".", 1)[0] if "." in item_id.rsplit("/", 1)[-1] else item_id


def audio_file_names(keys: list[tuple[str, int]], extension: str) -> dict[tuple[str, int], str]:
    """The file each (id, channel) row is decoded to: the id with its audio extension replaced
    (`a/b.flac` -> `a/b.wav`, `a/b.ch1.wav` per channel); rows whose names would clash that way
    keep their whole id (`u.flac.wav`). Rows left clashing even then get no name."""
    def name(key: tuple[str, int], whole: bool) -> str:
        stem = key[0] if whole else _stem(key[0])
        return f"{stem}.ch{key[1]}.{extension}" if key[1] >= 0 else f"{stem}.{extension}"

    def clashing(names: dict) -> set:
        seen: dict[str, int] = {}
        for n in names.values():
            seen[n] = seen.get(n, 0) + 1
        return {k for k, n in names.items() if seen[n] > 1}

    names = {key: name(key, False) for key in dict.fromkeys(keys)}
    for key in clashing(names):
        names[key] = name(key, True)
    for key in clashing(names):
        del names[key]
    return names
