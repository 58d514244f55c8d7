"""Tar shards as untrusted input: our header reader against Python's tarfile on what real
writers make, and every crafted or damaged archive answered per sample, in bounded work."""
from __future__ import annotations

import io
import json
import os
import tarfile
from dataclasses import dataclass

import numpy as np
import pytest
import soundfile as sf

from mimi_cli.formats.containers import ContainerError, tar_items
from mimi_cli.formats.tar import MAX_EXTENDED_BYTES, TarDamage, tar_entries


def flac(seconds: float = 0.2, seed: int = 0) -> bytes:
    buf = io.BytesIO()
    x = 0.1 * np.random.default_rng(seed).standard_normal(int(24000 * seconds))
    sf.write(buf, x.astype(np.float32), 24000, format="FLAC")
    return buf.getvalue()


@dataclass(frozen=True)
class Special:
    """A member of another kind than a regular file: its tarfile type flag (tarfile.SYMTYPE ...)."""

    kind: bytes


def write_tar(path, members, fmt=tarfile.PAX_FORMAT):
    """members: (name, bytes) for regular files, or (name, Special(type)) for the others."""
    with tarfile.open(path, "w", format=fmt) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            if not isinstance(data, Special):
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                info.type = data.kind
                info.linkname = "/etc/passwd" if data.kind in (tarfile.SYMTYPE, tarfile.LNKTYPE) else ""
                tar.addfile(info)
    return path


def set_field(raw: bytearray, header_at: int, start: int, value: bytes) -> None:
    """Overwrites a header field and makes the header's checksum right again."""
    raw[header_at + start:header_at + start + len(value)] = value
    raw[header_at + 148:header_at + 156] = b" " * 8
    raw[header_at + 148:header_at + 156] = b"%06o\0 " % sum(raw[header_at:header_at + 512])


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_entries_match_tarfile_on_what_it_writes(tmp_path, fmt):
    long = "d/" + "x" * 140 + "/ü.flac"  # a long, non-ASCII name: a pax record or a GNU long name
    members = [("a/b.flac", flac()), ("a/b.json", b'{"t": 1}'), ("e.txt", b""), ("big.bin", os.urandom(70000))]
    if fmt != tarfile.USTAR_FORMAT:
        members.append((long, flac(seed=1)))
    path = write_tar(tmp_path / "t.tar", members, fmt)
    with open(path, "rb") as f:
        ours = [(e.name, e.kind, e.offset, e.size) for e in tar_entries(f)]
    with tarfile.open(path) as tar:
        theirs = [(m.name, "file", m.offset_data, m.size) for m in tar.getmembers()]
    assert ours == theirs


def test_a_truncated_tar_keeps_every_sample_before_the_damage(tmp_path):
    path = write_tar(tmp_path / "t.tar", [(f"k{i}.flac", flac(seed=i)) for i in range(4)])
    raw = path.read_bytes()
    with open(path, "rb") as f:
        last = list(tar_entries(f))[-1]
    path.write_bytes(raw[:last.offset + last.size // 2])  # cut inside the last member, as a download stops
    items = list(tar_items(path))
    assert [i.key for i in items[:3]] == ["k0", "k1", "k2"] and all(i.error is None for i in items[:3])
    assert len(items) == 4 and "cut short" in items[3].error


def test_a_member_that_claims_more_than_the_archive_holds(tmp_path):
    path = write_tar(tmp_path / "t.tar", [("a.flac", flac()), ("b.flac", flac(seed=1)), ("c.flac", flac(seed=2))],
                     tarfile.USTAR_FORMAT)
    raw = bytearray(path.read_bytes())
    with open(path, "rb") as f:
        second = list(tar_entries(f))[1]
    set_field(raw, second.offset - 512, 124, b"%011o\0" % (1_500_000_000))  # 1.5 GB
    path.write_bytes(bytes(raw))
    items = list(tar_items(path))
    assert items[0].key == "a" and items[0].error is None
    assert len(items) == 2 and "claims 1500000000 bytes" in items[1].error


@pytest.mark.parametrize("kind,word", [(tarfile.SYMTYPE, "symbolic link"), (tarfile.LNKTYPE, "hard link"),
                                       (tarfile.FIFOTYPE, "FIFO"), (tarfile.CHRTYPE, "character device"),
                                       (tarfile.BLKTYPE, "block device")])
def test_link_device_and_fifo_members_are_error_rows(tmp_path, kind, word):
    path = write_tar(tmp_path / "t.tar", [("a.flac", flac()), ("b.flac", Special(kind)), ("c.flac", flac(seed=2))])
    items = {i.key: i for i in tar_items(path)}
    assert items["a"].error is None and items["c"].error is None
    assert word in items["b"].error and "regular members only" in items["b"].error


def test_deep_or_huge_json_is_an_error_row_not_a_traceback(tmp_path):
    deep = b"[" * 100_000 + b"]" * 100_000
    path = write_tar(tmp_path / "t.tar", [("a.flac", flac()), ("a.json", deep), ("b.flac", flac(seed=1)),
                                          ("b.json", b'{"x": ' + b"[" * 65 + b"]" * 65 + b"}")])
    items = {i.key: i for i in tar_items(path)}
    assert "nested over 64 deep" in items["a"].error and "nested over 64 deep" in items["b"].error


def test_an_extended_header_is_parsed_in_one_pass_and_bounded(tmp_path):
    # Digits without a record end made Python's tarfile (before 3.11.10) backtrack for hours.
    for size in (MAX_EXTENDED_BYTES - 1024, MAX_EXTENDED_BYTES + 1):
        path = write_tar(tmp_path / "t.tar", [("a.flac", flac()), ("b.flac", flac(seed=1))], tarfile.USTAR_FORMAT)
        raw = bytearray(path.read_bytes())
        with open(path, "rb") as f:
            second = list(tar_entries(f))[1]
        at = second.offset - 512
        body = b"1" * size
        header = bytearray(raw[at:at + 512])
        set_field(header, 0, 0, b"PaxHeader".ljust(100, b"\0"))
        set_field(header, 0, 124, b"%011o\0" % size)
        set_field(header, 0, 156, b"x")
        padded = body + bytes(-len(body) % 512)
        path.write_bytes(bytes(raw[:at]) + bytes(header) + padded + bytes(raw[at:]))
        items = list(tar_items(path))
        assert items[0].key == "a" and items[0].error is None
        assert len(items) == 2 and "damaged tar" in items[1].error


def test_not_a_tar_at_all_is_one_container_error(tmp_path):
    (tmp_path / "x.tar").write_bytes(b"\0" * 10 + b"x" * 1000)
    with pytest.raises(ContainerError, match="not a readable tar"):
        list(tar_items(tmp_path / "x.tar"))
    with open(tmp_path / "x.tar", "rb") as f, pytest.raises(TarDamage):
        list(tar_entries(f))


def test_json_fields_still_read(tmp_path):
    path = write_tar(tmp_path / "t.tar", [("u.flac", flac()), ("u.json", json.dumps({"text": "hi"}).encode()),
                                          ("u.txt", b"HI")])
    (item,) = tar_items(path)
    assert item.fields == {"text": "hi", "txt": "HI"} and item.error is None
