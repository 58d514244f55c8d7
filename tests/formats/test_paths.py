"""Names from a dataset used as paths stay inside their root, whatever the dataset says."""
from __future__ import annotations

import os

import pytest

from mimi_cli.formats.paths import UnsafePathError, audio_file_names, check_relative, confined, regular_file


@pytest.mark.parametrize("name", ["", None, 3, "/etc/passwd", "../x.wav", "a/../../x.wav", "a/..", "x\0.wav"])
def test_unsafe_names_are_refused(name):
    with pytest.raises(UnsafePathError):
        check_relative(name)


@pytest.mark.parametrize("name", ["x.wav", "a/b/x.wav", "..x.wav", "a/.../x", "caf\\xe9.wav", "a b/c"])
def test_ordinary_names_pass(name):
    assert check_relative(name) == name


def test_symbolic_links_out_of_the_root_are_refused(tmp_path):
    root = tmp_path / "out"
    root.mkdir()
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", root / "link")
    os.symlink(tmp_path / "elsewhere" / "f.wav", root / "f.wav")
    (root / "inside").mkdir()
    os.symlink(root / "inside", root / "ok")
    for name in ("link/x.wav", "f.wav"):
        with pytest.raises(UnsafePathError, match="outside"):
            confined(root, name)
    assert confined(root, "ok/x.wav") == root / "ok" / "x.wav"
    assert confined(root, "new/dir/x.wav") == root / "new" / "dir" / "x.wav"


def test_only_regular_files_are_read(tmp_path):
    os.mkfifo(tmp_path / "fifo.npy")
    with pytest.raises(UnsafePathError, match="not a regular file"):
        regular_file(tmp_path / "fifo.npy")
    with pytest.raises(UnsafePathError, match="not a regular file"):
        regular_file(tmp_path)


def test_decoded_names_replace_the_extension_unless_that_clashes():
    names = audio_file_names([("a/one.flac", -1), ("u.wav", -1), ("u.flac", -1), ("s.wav", 0), ("s.wav", 1)], "wav")
    assert names[("a/one.flac", -1)] == "a/one.wav"
    assert names[("u.wav", -1)] == "u.wav.wav" and names[("u.flac", -1)] == "u.flac.wav"
    assert names[("s.wav", 0)] == "s.ch0.wav" and names[("s.wav", 1)] == "s.ch1.wav"
    assert len(set(names.values())) == len(names)
