"""How many CPU threads torch's ops use, and the one place that count is changed.

Library code changes torch's thread count only inside `torch_threads`, which puts back the count
it found, so a caller's setting is the same after any call into mimi_cli as before it. Only a
program's entry point (the `mimi` command) sets the process default, with `set_default_threads`.

The stream commands' policy lives here too (`ThreadPolicy`): their steps are bound by reading
weights from memory, and two processes of a pipe on a small machine must not stall each other
(docs/design.md, "Live pipes").
"""
from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import BinaryIO

import torch


@contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """Torch's CPU ops on `count` threads inside (None: left as they are); on exit, however it
    comes, the count found on entry is put back, also where code inside changed it."""
    found = torch.get_num_threads()
    if count is not None and count != found:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        if torch.get_num_threads() != found:
            torch.set_num_threads(found)


def set_default_threads(count: int) -> None:
    """Sets the process's thread count for torch's CPU ops from here on: for an entry point such
    as the `mimi` command, never for library code (which uses `torch_threads`)."""
    torch.set_num_threads(count)


class BacklogThreads:
    """Steps on one thread while the input is backlogged, on the usual number while it is live.

    When audio arrives no faster than real time, a process idles between frames and its 2-thread
    step is the fastest (lowest latency). When input is waiting (a file piped as fast as it
    goes), the two busy processes of `stream-encode | stream-decode` on 2 cores, with 2 OpenMP
    threads each, stall on each other's preempted threads (docs/design.md). Backlogged means a
    whole frame's bytes wait in the input after `patience` frames in a row; live again after as
    many without. The usual number is the count on construction, and `close` (the end of a `with`)
    puts it back.
    """

    def __init__(self, stream: BinaryIO, frame_bytes: int, patience: int = 2, enabled: bool = True) -> None:
        self.fd = _fileno(stream) if enabled else None  # no descriptor: the count is never changed
        self.frame_bytes, self.patience = frame_bytes, patience
        self.threads = torch.get_num_threads()
        self.backlogged, self.streak = False, 0

    def __enter__(self) -> BacklogThreads:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def after_frame(self) -> None:
        """Looks at the input once a frame is out; sets torch's threads for the next steps."""
        waiting = _bytes_waiting(self.fd)
        if waiting is None:
            return
        behind = waiting >= self.frame_bytes
        self.streak = 0 if behind == self.backlogged else self.streak + 1
        if self.streak >= self.patience:
            self.backlogged, self.streak = behind, 0
            torch.set_num_threads(1 if behind else self.threads)

    def close(self) -> None:
        """Puts back the thread count this started with."""
        if torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)


def _fileno(stream: BinaryIO) -> int | None:
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both
        return None


def _bytes_waiting(fd: int | None) -> int | None:
    """Bytes ready to read from `fd` now (a pipe's contents; what is left of a file), or None
    where that cannot be told (no descriptor; a platform without FIONREAD)."""
    if fd is None:
        return None
    try:
        import fcntl
        import termios

        return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]
    except (ImportError, OSError):
        return None


def backlog_threads_useful(threads: int) -> bool:
    """Whether two processes of a pipe, `threads` each, would oversubscribe this machine's CPUs."""
    return threads > 1 and (os.cpu_count() or 1) < 2 * threads + 1


@dataclass(frozen=True)
class ThreadPolicy:
    """How a stream process uses CPU threads: `threads` for a frame's step, one thread while the
    input is backlogged if `follow_backlog` (`BacklogThreads`), and one for work on part of a
    frame (`partial_frame`). `for_command` is what the stream commands use."""

    threads: int
    follow_backlog: bool = False

    @classmethod
    def for_command(cls, threads: int | None = None) -> ThreadPolicy:
        """`--threads N` kept as given; by default 2 (1 on a 1-CPU machine), following the backlog
        where the two processes of a pipe would oversubscribe the CPUs."""
        n = threads or min(2, os.cpu_count() or 1)
        return cls(n, threads is None and backlog_threads_useful(n))

    def applied(self) -> AbstractContextManager[None]:
        """`threads` for torch's ops inside, the caller's count put back on exit."""
        return torch_threads(self.threads)

    def backlog(self, stream: BinaryIO, frame_bytes: int) -> BacklogThreads:
        return BacklogThreads(stream, frame_bytes, enabled=self.follow_backlog)

    @staticmethod
    def partial_frame() -> AbstractContextManager[None]:
        """Torch ops on one thread inside. Work on a piece of a frame (the SEANet front) is not on
        any frame's latency path, and two OpenMP teams of 2 threads (`stream-encode` working on a
        piece while `stream-decode` steps, on 2 cores) wait on each other's preempted threads
        (docs/design.md)."""
        return torch_threads(1)
