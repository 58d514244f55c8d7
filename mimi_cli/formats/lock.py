"""One writer per output: an advisory lock file that the kernel drops when its holder dies.

`mimi encode` into a directory takes `DIR/.mimi.lock` exclusively; array jobs (`--num-shards N`)
share it and each takes `DIR/.mimi.shard-I.lock` exclusively, so jobs of one array run side by
side while a second plain run, or a second job with the same index, is refused at once. A
single-file output `out.parquet` is locked through `.out.parquet.lock` beside it. The locks are
`flock`s: a killed process cannot leave one stuck. URIs (object stores) are not locked.

The lock makes the folders it needs; a run that writes nothing into them (it stopped at a usage
error) removes them again, so a refused run leaves no empty OUTPUT behind.
"""
from __future__ import annotations

import errno
import fcntl
import os
import socket
import stat
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .storage import Location, OutputError

_held: dict[str, int] = {}  # lock path -> how many holders in this process (the lock is re-entrant)


class OutputBusyError(OutputError):
    """Another process is writing the same output."""


@dataclass
class OutputLock:
    """Holds the output's lock(s) while in a `with` block; OutputBusyError if another process does."""

    output: Location
    shard_index: int = 0
    num_shards: int = 1
    _fds: list[tuple[str, int, bool]] = field(default_factory=list, init=False)
    _made: list[Path] = field(default_factory=list, init=False)  # folders made for the lock, deepest first

    def _files(self) -> list[tuple[Path, bool]]:
        """(lock file, exclusive) pairs, outermost first."""
        out = Path(self.output)
        if out.suffix == ".parquet":
            return [(out.with_name(f".{out.name}.lock"), True)]
        if self.num_shards == 1:
            return [(out / ".mimi.lock", True)]
        return [(out / ".mimi.lock", False), (out / f".mimi.shard-{self.shard_index:05d}.lock", True)]

    def __enter__(self) -> OutputLock:
        if not isinstance(self.output, Path):
            return self
        try:
            for path, exclusive in self._files():
                self._take(path, exclusive)
        except BaseException:
            self.__exit__()
            raise
        return self

    def _take(self, path: Path, exclusive: bool) -> None:
        key = str(path.absolute())
        if key in _held:
            _held[key] += 1
            self._fds.append((key, -1, exclusive))
            return
        tries = 0
        while True:
            self._made[:0] = _make_folders(path.parent)
            try:
                fd = _open_lock_file(path)
            except FileNotFoundError as e:  # another run just removed the empty folder it had made: again
                tries += 1
                if tries == 10:
                    raise OutputError(f"cannot write {path}: {e.strerror}") from None
                continue
            try:
                fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 512, 0).decode(errors="replace").strip()
                os.close(fd)
                who = f" ({holder})" if holder else " (array jobs of --num-shards)"
                raise OutputBusyError(f"{self.output} is being written by another mimi encode{who}; wait for "
                                      "it to finish, or write to another OUTPUT") from None
            # A holder that just finished removed the file: our lock may be on a name no one sees.
            try:
                same = os.lstat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        if exclusive:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%H:%M:%S')}: "
                          f"{' '.join(sys.argv[1:])[:300]}".encode(), 0)
        _held[key] = 1
        self._fds.append((key, fd, exclusive))

    def __exit__(self, *exc: object) -> None:
        for key, fd, exclusive in reversed(self._fds):
            _held[key] -= 1
            if _held[key]:
                continue
            del _held[key]
            # A shared lock's file may still be held by another job: it stays, unless this run made
            # the folder and no other job holds it (then the folder may go too).
            if exclusive or self._made and _alone(fd):
                try:
                    os.unlink(key)
                except OSError:
                    pass
            os.close(fd)
        self._fds.clear()
        for folder in self._made:
            try:
                folder.rmdir()  # only an empty one: anything written into it keeps it
            except OSError:
                break
        self._made.clear()


def _make_folders(folder: Path) -> list[Path]:
    """Makes `folder` and its missing parents; gives back those it made, deepest first."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    try:
        for made in reversed(missing):
            made.mkdir(exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot write {e.filename or folder}: {e.strerror or e}") from None
    return missing


def _alone(fd: int) -> bool:
    """Whether no other process holds the lock on `fd` (this one's shared lock becomes exclusive)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _open_lock_file(path: Path) -> int:
    """The lock file opened for reading and writing, created if missing. A symbolic link, a
    hard-linked file or anything but a regular file at its name is refused: the lock is written
    to, and a planted link would make that write land on another file."""
    flags = os.O_RDWR | os.O_CREAT | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, 0o644)
    except FileNotFoundError:
        raise
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise OutputError(f"{path} is a symbolic link, not a lock file mimi made; mimi never writes through "
                              "it: remove it and run again") from None
        raise OutputError(f"cannot write {path}: {e.strerror or e}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
        os.close(fd)
        what = "a hard link to another file" if stat.S_ISREG(st.st_mode) else "not a regular file"
        raise OutputError(f"{path} is {what}, not a lock file mimi made; mimi never writes to it: remove it and "
                          "run again")
    return fd
