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


@pytest.mark.parametrize("output, num_shards", [("new/out", 1), ("new/out", 4), ("new/deeper/out.parquet", 1)])
def test_a_run_that_writes_nothing_leaves_no_folder_behind(tmp_path, output, num_shards):
    with pytest.raises(RuntimeError), OutputLock(tmp_path / output, 1 if num_shards > 1 else 0, num_shards):
        raise RuntimeError("a usage error found after the lock was taken")
    assert list(tmp_path.iterdir()) == []


def test_folders_that_were_there_or_hold_output_are_kept(tmp_path):
    (tmp_path / "there").mkdir()
    with OutputLock(tmp_path / "there"):
        pass
    assert (tmp_path / "there").is_dir() and list((tmp_path / "there").iterdir()) == []
    with OutputLock(tmp_path / "new" / "out", 0, 2):
        (tmp_path / "new" / "out" / "part-00000-00000.parquet").write_bytes(b"rows")
    assert (tmp_path / "new" / "out" / "part-00000-00000.parquet").is_file()


def test_an_array_job_keeps_the_folder_another_job_still_writes(tmp_path):
    out = tmp_path / "out"
    other = ("import sys, pathlib; from mimi_cli.formats.lock import OutputLock\n"
             "with OutputLock(pathlib.Path(sys.argv[1]), 1, 2):\n    print('in', flush=True); sys.stdin.read()")
    with OutputLock(out, 0, 2):
        job = subprocess.Popen([sys.executable, "-c", other, str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert job.stdout.readline() == b"in\n"
    assert (out / ".mimi.lock").is_file()  # the other job holds it
    job.communicate(b"")
    assert job.returncode == 0
