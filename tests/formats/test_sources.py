"""Input ids: unique, stable and safe, whichever way a file is named."""
from __future__ import annotations

import io
import os

import numpy as np
import pytest
import soundfile as sf

from mimi_cli.formats.sources import InputError, collect_sources


def _wav(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.zeros(2400, np.float32), 24000)
    return path


def _ids(inputs, **kw):
    sources, problems = collect_sources([str(i) for i in inputs], **kw)
    assert not problems, problems
    return sorted(s.id for s in sources)


def test_directory_files_are_named_relative_to_the_directory(tmp_path):
    _wav(tmp_path / "d" / "x.wav")
    _wav(tmp_path / "d" / "sub" / "y.flac")
    assert _ids([tmp_path / "d"]) == ["sub/y.flac", "x.wav"]


def test_files_named_directly_or_by_glob_are_named_relative_to_the_current_directory(tmp_path, monkeypatch):
    _wav(tmp_path / "a" / "x.wav")
    _wav(tmp_path / "b" / "x.wav")
    monkeypatch.chdir(tmp_path)
    assert _ids(["a/x.wav", "./b/../b/x.wav"]) == ["a/x.wav", "b/x.wav"]
    assert _ids(["*/x.wav"]) == ["a/x.wav", "b/x.wav"]
    assert _ids([tmp_path / "a" / "x.wav"]) == ["a/x.wav"]  # absolute, but below the current directory


def test_a_file_outside_the_current_directory_is_named_by_its_absolute_path(tmp_path, monkeypatch):
    f = _wav(tmp_path / "far" / "x.wav")
    (tmp_path / "here").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    assert _ids([f]) == [str(f).lstrip("/")]


def test_list_entries_are_relative_to_the_list(tmp_path, monkeypatch):
    _wav(tmp_path / "cv" / "clips" / "a.mp3.wav")
    _wav(tmp_path / "cv" / "clips" / "b.wav")
    (tmp_path / "cv" / "list.txt").write_text("# clips\nclips/a.mp3.wav\n\nclips/b.wav\n")
    monkeypatch.chdir(tmp_path)
    assert _ids(["@cv/list.txt"]) == ["clips/a.mp3.wav", "clips/b.wav"]


def test_list_on_stdin_is_relative_to_the_current_directory(tmp_path, monkeypatch):
    _wav(tmp_path / "a" / "x.wav")
    monkeypatch.chdir(tmp_path)
    assert _ids(["@-"], stdin=io.BytesIO(b"a/x.wav\n")) == ["a/x.wav"]


@pytest.mark.parametrize("inputs", [["a/x.wav", "b"], ["a", "b"], ["@list.txt"]])
def test_two_files_with_one_id_are_refused_with_both_paths(tmp_path, monkeypatch, inputs):
    _wav(tmp_path / "a" / "x.wav")
    _wav(tmp_path / "b" / "a" / "x.wav")
    _wav(tmp_path / "b" / "x.wav")
    (tmp_path / "list.txt").write_text("a/x.wav\nb\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError) as e:
        collect_sources(inputs)
    assert "'x.wav'" in str(e.value) or "'a/x.wav'" in str(e.value)
    assert "b/" in str(e.value)


def test_the_same_file_named_twice_is_one_input(tmp_path, monkeypatch):
    _wav(tmp_path / "a" / "x.wav")
    monkeypatch.chdir(tmp_path)
    assert _ids(["a", "a/x.wav", "a/*.wav"]) == ["x.wav"]


def test_names_that_are_not_utf8_become_escaped_ids(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    raw = os.fsencode(d) + b"/caf\xe9.wav"  # Latin-1 bytes on disk
    with open(raw, "wb") as f:
        sf.write(f, np.zeros(2400, np.float32), 24000, format="WAV")
    sources, _ = collect_sources([str(d)])
    assert [s.id for s in sources] == ["caf\\xe9.wav"]
    assert sources[0].id.encode("utf-8")  # storable as a Parquet string
    assert sources[0].path.exists()  # and the real file is still what is read
    (tmp_path / "list.txt").write_bytes(b"d/caf\xe9.wav\n")
    sources, problems = collect_sources([f"@{tmp_path / 'list.txt'}"])
    assert not problems and [s.id for s in sources] == ["d/caf\\xe9.wav"]


def test_a_list_from_a_pipe_is_relative_to_the_current_directory(tmp_path, monkeypatch):
    _wav(tmp_path / "a" / "x.wav")
    monkeypatch.chdir(tmp_path)
    read, write = os.pipe()
    os.write(write, b"a/x.wav\n")
    os.close(write)
    try:
        assert _ids([f"@/dev/fd/{read}"]) == ["a/x.wav"]
    finally:
        os.close(read)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to read the file as another user")
def test_an_unreadable_file_is_named_in_the_os_words(tmp_path):
    """As an ordinary user (root reads everything): a forked child drops to `nobody` and reads."""
    from mimi_cli.formats.audio import AudioError, check_readable

    f = _wav(tmp_path / "locked.wav")
    os.chmod(f, 0o600)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: only os calls, then out without running any cleanup
        message = b"read it"
        try:
            os.setuid(65534)
            check_readable(f)
        except AudioError as e:
            message = str(e).encode()
        except BaseException as e:  # noqa: BLE001 - anything else is reported to the parent
            message = repr(e).encode()
        os.write(write, message)
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read, "rb") as r:
        assert r.read().decode() == f"permission denied: {f}"
