"""Where datasets live: atomic writes that leave nothing half-written, and URIs through pyarrow's filesystems."""
from __future__ import annotations

import errno
import subprocess
import sys

import pytest

from mimi_cli.formats.storage import OutputError, RemotePath, as_location, atomic_write, is_uri, readable


def test_atomic_write_replaces_only_when_complete(tmp_path):
    target = tmp_path / "sub" / "x.bin"
    with atomic_write(target) as f:
        f.write(b"new")
        assert not target.exists() and len(list((tmp_path / "sub").glob(".x.bin.*.tmp"))) == 1
    assert target.read_bytes() == b"new" and list((tmp_path / "sub").iterdir()) == [target]


def test_two_writers_of_one_name_do_not_share_a_temporary(tmp_path):
    """Array jobs write the same sidecar at once: neither may remove or rename the other's file."""
    target = tmp_path / "x.bin"
    with atomic_write(target) as f:
        f.write(b"first, still writing")
        other = subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; "
                                "from mimi_cli.formats.storage import atomic_write\n"
                                "with atomic_write(Path(sys.argv[1])) as g: g.write(b'second')", str(target)],
                               capture_output=True, text=True)
        assert other.returncode == 0, other.stderr
        assert target.read_bytes() == b"second"
    assert target.read_bytes() == b"first, still writing"


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "x.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_write(target) as f:
        f.write(b"half")
        raise RuntimeError("interrupted")
    assert target.read_bytes() == b"old" and list(tmp_path.iterdir()) == [target]


def test_a_full_disk_is_an_output_error_naming_the_file(tmp_path):
    target = tmp_path / "x.bin"
    with pytest.raises(OutputError, match=r"cannot write .*x\.bin: no space left on device"), atomic_write(target):
        raise OSError(errno.ENOSPC, "No space left on device")
    assert list(tmp_path.iterdir()) == []


def test_uris_go_through_pyarrow_filesystems(tmp_path):
    assert is_uri("s3://bucket/key") and is_uri("file:///tmp") and not is_uri("/tmp/x") and not is_uri("c:/x")
    root = as_location(f"file://{tmp_path}")
    assert isinstance(root, RemotePath) and str(root) == f"file://{tmp_path}"
    with atomic_write(root / "d" / "x.bin") as f:
        f.write(b"remote")
    x = root / "d" / "x.bin"
    assert x.is_file() and not x.is_dir() and x.parent.is_dir() and x.name == "x.bin" and x.suffix == ".bin"
    assert readable(x).read() == b"remote" and x.stat().st_size == 6
    assert [str(p) for p in root.files()] == [str(x)]
    assert [p.name for p in (root / "d").glob("*.bin")] == ["x.bin"]
    x.unlink()
    assert not x.exists()
    with pytest.raises(FileNotFoundError):
        x.stat()


def test_a_link_planted_at_the_temporary_name_is_replaced_not_followed(tmp_path, monkeypatch):
    from mimi_cli.formats import storage

    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    (tmp_path / "out").mkdir()
    monkeypatch.setattr(storage.secrets, "token_hex", lambda n: "guessed")  # as if the name were guessed
    (tmp_path / "out" / ".x.bin.guessed.tmp").symlink_to(victim)
    with atomic_write(tmp_path / "out" / "x.bin") as f:
        f.write(b"ours")
    assert victim.read_bytes() == b"precious" and (tmp_path / "out" / "x.bin").read_bytes() == b"ours"
    assert not (tmp_path / "out" / "x.bin").is_symlink()


def test_a_link_at_the_target_name_is_replaced_not_written_through(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    (tmp_path / "x.bin").symlink_to(victim)
    with atomic_write(tmp_path / "x.bin") as f:
        f.write(b"ours")
    assert victim.read_bytes() == b"precious" and not (tmp_path / "x.bin").is_symlink()
