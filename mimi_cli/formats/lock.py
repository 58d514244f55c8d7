"""One writer per output: an advisory lock file that the kernel drops when its holder dies.

`mimi encode` into a directory takes `DIR/.mimi.lock` exclusively; array jobs (`--num-shards N`)
share it and each takes `DIR/.mimi.shard-I.lock` exclusively, so jobs of one array run side by
side while a second plain run, or a second job with the same index, is refused at once. A
single-file output `out.parquet` is locked through `.out.parquet.lock` beside it. The locks are
`flock`s: a killed process cannot leave one stuck. URIs (object stores) are not locked.
"""
from __future__ import annotations

import fcntl
import os
import socket
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
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutputError(f"cannot write {path.parent}: {e.strerror or e}") from None
        while True:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                raise OutputError(f"cannot write {path}: {e.strerror or e}") from None
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
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
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
            if exclusive:  # a shared lock's file may still be held by another job: it stays
                try:
                    os.unlink(key)
                except OSError:
                    pass
            os.close(fd)
        self._fds.clear()
