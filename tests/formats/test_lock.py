"""The output lock: one writer at a time, and never a write through a file someone planted at its name."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from mimi_cli.formats.lock import OutputLock
from mimi_cli.formats.storage import OutputError


def test_a_second_writer_is_refused_and_the_lock_file_goes_with_the_first(tmp_path):
    out = tmp_path / "out.parquet"
    other = ("import sys, pathlib; from mimi_cli.formats.lock import OutputLock, OutputBusyError\n"
             "try:\n    OutputLock(pathlib.Path(sys.argv[1])).__enter__()\nexcept OutputBusyError:\n    sys.exit(3)")
    with OutputLock(out):
        assert (tmp_path / ".out.parquet.lock").is_file()
        assert subprocess.run([sys.executable, "-c", other, str(out)]).returncode == 3
    assert not (tmp_path / ".out.parquet.lock").exists()


@pytest.mark.parametrize("plant", ["symlink", "hardlink", "fifo"])
def test_something_planted_at_the_lock_name_is_refused_and_untouched(tmp_path, plant):
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    lock = tmp_path / ".out.parquet.lock"
    if plant == "symlink":
        lock.symlink_to(victim)
    elif plant == "hardlink":
        os.link(victim, lock)
    else:
        os.mkfifo(lock)
    with pytest.raises(OutputError, match="not a lock file mimi made|symbolic link"):
        OutputLock(tmp_path / "out.parquet").__enter__()
    assert victim.read_bytes() == b"precious" and os.path.lexists(lock)


def test_a_stale_lock_file_of_a_killed_run_is_taken_over(tmp_path):
    (tmp_path / ".out.parquet.lock").write_bytes(b"pid 1 on somewhere")
    with OutputLock(tmp_path / "out.parquet"):
        assert b"pid" in (tmp_path / ".out.parquet.lock").read_bytes()
