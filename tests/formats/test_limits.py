"""Decompression bombs in Parquet, as each reader meets them: a value stored once in a dictionary
and repeated a million times, and run-length values a footer's sizes do not show."""
from __future__ import annotations

import io
import os
import struct

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mimi_cli.formats.containers import ContainerError, parquet_items
from mimi_cli.formats.limits import LimitError, json_depth, open_parquet, parse_json, read_footer
from mimi_cli.formats.manifests import ManifestError, ManifestOptions, read_manifest
from mimi_cli.formats.shards import DatasetError, iter_rows
from tests.parquet_footer import understate_sizes


def repeated(blob: bytes, n: int) -> pa.DictionaryArray:
    return pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)), pa.array([blob], pa.binary()))


def test_hf_audio_repeated_from_a_dictionary_is_refused_before_it_is_copied(tmp_path):
    # 1 MB stored once, 3000 rows: 3 GB once expanded; the Arrow schema is left out, as a crafted
    # file would, so that pyarrow would otherwise read the column dense.
    audio = pa.StructArray.from_arrays([repeated(os.urandom(1 << 20), 3000), pa.array(["x.wav"] * 3000)],
                                       names=["bytes", "path"])
    path = tmp_path / "bomb.parquet"
    pq.write_table(pa.table({"audio": audio}), path, compression="zstd", store_schema=False)
    assert path.stat().st_size < 2 << 20
    with pytest.raises(ContainerError, match="decompression bomb"):
        list(parquet_items(path, "audio", ()))


def test_a_manifest_path_repeated_from_a_dictionary_is_refused(tmp_path):
    path = tmp_path / "m.parquet"
    paths = repeated(b"a/" * 500_000, 2000).cast(pa.dictionary(pa.int32(), pa.string()))
    pq.write_table(pa.table({"path": paths}), path, store_schema=False)
    rows = read_manifest(path, ManifestOptions())  # rows are read a row group at a time, as they are listed
    with pytest.raises(ManifestError, match="decompression bomb"):
        next(rows.chunks())


def test_token_codes_that_run_length_encoding_hides_are_refused(tmp_path):
    frames = 5_000_000
    codes = pa.ListArray.from_arrays(pa.array([0, 2], pa.int32()), pa.ListArray.from_arrays(
        pa.array([0, frames, 2 * frames], pa.int32()), pa.array(np.zeros(2 * frames, np.int16))))
    table = pa.table({"id": ["x"], "channel": pa.array([-1], pa.int16()), "codes": codes,
                      "num_samples": pa.array([frames * 1920], pa.int64())},
                     metadata={b"mimi_cli": b'{"num_codebooks": 2, "codebook_size": 2048, "model": {}}'})
    pq.write_table(table, tmp_path / "t.parquet", compression="zstd")
    assert (tmp_path / "t.parquet").stat().st_size < 1 << 20
    with pytest.raises(DatasetError, match="decompression bomb"):
        list(iter_rows(tmp_path / "t.parquet"))


def test_a_footer_claiming_more_than_the_file_holds_is_refused(tmp_path):
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"x": list(range(1000))}), path)
    with open(path, "rb") as f:
        open_parquet(f, path.stat().st_size)
        with pytest.raises(LimitError):
            open_parquet(f, 100)  # as if the file were 100 bytes: its columns claim more


def test_json_depth_is_counted_without_recursion():
    assert json_depth(1) == 0 and json_depth([]) == 1 and json_depth({"a": [{"b": []}]}) == 4
    deep = "[" * 200_000 + "]" * 200_000
    with pytest.raises(LimitError, match="nested over 64 deep"):
        parse_json(deep)
    with pytest.raises(LimitError, match="nested over 64 deep"):
        parse_json("[" * 65 + "]" * 65)
    assert parse_json("[" * 64 + "]" * 64) is not None


def test_a_row_group_too_many_rows_to_read_as_a_dictionary_is_refused(tmp_path, monkeypatch):
    """Text inside lists is read as a dictionary, which takes memory for every row of its row
    group at once, so a row group of more rows than pyarrow's default is refused where such a
    column is read. Flat text is streamed a batch of rows at a time, and is not held to it."""
    from mimi_cli.formats import limits

    monkeypatch.setattr(limits, "MAX_DICTIONARY_ROWS", 100)
    names = pa.array([f"{i}.wav" for i in range(101)])
    tags = pa.array([["a", "b"]] * 101)
    audio = pa.StructArray.from_arrays([pa.nulls(101, pa.binary()), names], names=["bytes", "path"])
    pq.write_table(pa.table({"audio": audio, "tags": tags}), tmp_path / "a.parquet", row_group_size=101)
    pq.write_table(pa.table({"path": names, "tags": tags}), tmp_path / "m.parquet", row_group_size=101,
                   use_dictionary=False)
    with pytest.raises(ContainerError, match="row group 0 holds 101 rows, over the 100 .* smaller row groups"):
        list(parquet_items(tmp_path / "a.parquet", "audio", ("tags",)))
    with pytest.raises(ManifestError, match="row group 0 holds 101 rows, over the 100 "):
        read_manifest(tmp_path / "m.parquet", ManifestOptions(keep_columns=("tags",)))
    assert [item.path for item in parquet_items(tmp_path / "a.parquet", "audio", ())] == names.to_pylist()
    assert read_manifest(tmp_path / "m.parquet", ManifestOptions()).paths == names.to_pylist()


def test_text_read_whole_is_read_as_a_dictionary_whatever_the_footer_says(tmp_path):
    """A footer can hide a dictionary page (and with it a value repeated in every row), so text a
    row group at a time (token shards) is read as a dictionary and counted before it is copied
    out; streamed (audio files, manifests), only text inside lists is, the rest bounded by pages."""
    from mimi_cli.formats.limits import dictionary_columns

    audio = pa.StructArray.from_arrays([pa.array([b"x", b"y"]), pa.array(["a.wav", "b.wav"])], names=["bytes", "path"])
    pq.write_table(pa.table({"audio": audio, "text": ["t", "u"], "n": [1, 2], "tags": [["a"], ["b"]]}),
                   tmp_path / "a.parquet", use_dictionary=False)
    pf = pq.ParquetFile(tmp_path / "a.parquet")
    assert dictionary_columns(pf) == ["audio.bytes", "audio.path", "tags.list.element", "text"]
    assert dictionary_columns(pf, ["audio", "n"]) == ["audio.bytes", "audio.path"]
    assert dictionary_columns(pf, streamed=True) == ["tags.list.element"]


def _unused_entry_files(tmp_path, junk: bytes, pad: int = 0) -> dict:
    """An audio Parquet, a manifest and a token shard whose text column's dictionary holds, in
    each of 30 row groups, `junk` that no row uses (pyarrow writes the dictionary it is given),
    and whose footer states no chunk larger than it is stored; `pad`: bytes of noise a row in a
    column no reader reads."""
    def column(names):
        values = pa.array([*names, junk.decode()] if junk else names)
        return pa.DictionaryArray.from_arrays(pa.array(range(len(names)), pa.int32()), values)

    def groups(make, path):
        tables, buffer = [make(g) for g in range(30)], io.BytesIO()
        if pad:
            tables = [t.append_column("pad", pa.array([os.urandom(pad) for _ in range(t.num_rows)])) for t in tables]
        with pq.ParquetWriter(buffer, tables[0].schema, compression="zstd") as w:
            for t in tables:
                w.write_table(t)
        path.write_bytes(understate_sizes(buffer.getvalue()))  # as a crafted file would: only the pages tell
        return path

    names = lambda g: [f"{g}_{i}.wav" for i in range(2)]  # noqa: E731
    meta = {b"mimi_cli": b'{"num_codebooks": 1, "codebook_size": 2048, "model": {}}'}
    return {
        "audio": groups(lambda g: pa.table({"audio": pa.StructArray.from_arrays(
            [pa.nulls(2, pa.binary()), column(names(g))], names=["bytes", "path"])}), tmp_path / "a.parquet"),
        "manifest": groups(lambda g: pa.table({"path": column(names(g))}), tmp_path / "m.parquet"),
        "tokens": groups(lambda g: pa.table(
            {"id": column(names(g)), "channel": pa.array([-1, -1], pa.int16()),
             "codes": pa.array([[[1]], [[2]]], pa.list_(pa.list_(pa.int16()))),
             "num_samples": pa.array([1920, 1920], pa.int64())}, metadata=meta), tmp_path / "t.parquet"),
    }


def _read_all(kind: str, path) -> int:
    if kind == "audio":
        return len(list(parquet_items(path, "audio", ())))
    if kind == "manifest":
        return sum(len(paths) for paths, _, _ in read_manifest(path, ManifestOptions()).chunks())
    return len(list(iter_rows(path)))


@pytest.mark.parametrize("kind", ["audio", "manifest", "tokens"])
def test_unused_dictionary_entries_are_counted_as_they_inflate(tmp_path, kind):
    """No row uses the 4 MiB entry, so no value counts it, but pyarrow inflates and decodes the
    dictionary page of every row group all the same: 30 of them is 120 MB from a 20 kB file."""
    path = _unused_entry_files(tmp_path, b"j" * (4 << 20))[kind]
    assert path.stat().st_size < 64 << 10
    with pytest.raises((ContainerError, ManifestError, DatasetError), match="pages decompress to over"):
        _read_all(kind, path)
    (tmp_path / "plain").mkdir()
    assert _read_all(kind, _unused_entry_files(tmp_path / "plain", b"")[kind]) == 60


@pytest.fixture
def parses(monkeypatch) -> list[bool]:
    """One entry for each pq.ParquetFile made, True where it parsed a footer (no `metadata=`)."""
    made = []

    class Counting(pq.ParquetFile):
        def __init__(self, source, *args, metadata=None, **kwargs):
            made.append(metadata is None)
            super().__init__(source, *args, metadata=metadata, **kwargs)

    monkeypatch.setattr(pq, "ParquetFile", Counting)
    return made


@pytest.mark.parametrize("kind", ["audio", "manifest", "tokens"])
def test_a_file_that_is_not_parquet_is_called_so(tmp_path, kind):
    """Without Parquet's magic at its end, a file's last bytes are no footer length: an audio file
    given where Parquet belongs is named as no Parquet, not as one with a footer too large."""
    path = tmp_path / "x.parquet"
    path.write_bytes(b"fLaC" + bytes(4000) + struct.pack("<I", 1 << 30) + b"\xff\xf8\x00\x00")
    with pytest.raises((ContainerError, ManifestError, DatasetError), match="(?i)not a parquet file"):
        _read_all(kind, path)


@pytest.mark.parametrize("kind", ["audio", "manifest", "tokens"])
def test_a_footer_over_the_cap_is_refused_before_it_is_parsed(tmp_path, monkeypatch, parses, kind):
    from mimi_cli.formats import limits
    from mimi_cli.formats.sources import _schema

    path = _unused_entry_files(tmp_path, b"")[kind]
    with open(path, "rb") as f:
        f.seek(-8, 2)
        footer = int.from_bytes(f.read(4), "little")
    monkeypatch.setattr(limits, "FOOTER_BYTES", footer - 1)
    with pytest.raises((ContainerError, ManifestError, DatasetError),
                       match=f"its footer takes {footer} bytes, over the .* fewer, larger row groups"):
        _read_all(kind, path)
    if kind == "audio":
        with pytest.raises(ContainerError, match="its footer takes"):
            _schema(path)
    assert not any(parses)
    monkeypatch.setattr(limits, "FOOTER_BYTES", footer)
    assert _read_all(kind, path) == 60


@pytest.mark.parametrize("kind", ["audio", "manifest", "tokens"])
def test_a_footer_of_more_structures_than_its_parse_may_take_is_refused_before_it_is_parsed(
        tmp_path, monkeypatch, parses, kind):
    """pyarrow's parse takes about 700 bytes a column chunk, however few bytes the footer gives it
    (a chunk stating only its offset takes 3): the chunks are counted in the footer's bytes first."""
    from mimi_cli.formats import limits

    path = _unused_entry_files(tmp_path, b"")[kind]
    monkeypatch.setattr(limits, "FOOTER_PARSE_BYTES", 40_000)  # 60 to 160 structures here: 42 kB and more
    with pytest.raises((ContainerError, ManifestError, DatasetError), match="or more row groups, column chunks"):
        _read_all(kind, path)
    assert not any(parses)
    monkeypatch.setattr(limits, "FOOTER_PARSE_BYTES", 1 << 20)
    assert _read_all(kind, path) == 60


def test_a_footer_list_stating_more_elements_than_it_holds_is_refused_before_pyarrow_makes_room():
    """pyarrow sizes a list's vector to the length the footer states before reading an element:
    a 17-byte footer stating 900,000 column chunks took 630 MB before it failed."""
    def varint(n: int) -> bytes:
        out = b""
        while n > 0x7F:
            out, n = out + bytes([n & 0x7F | 0x80]), n >> 7
        return out + bytes([n])

    footer = (b"\x15\x02"  # version 1
              + b"\x19\x1c\x48\x01s\x00"  # schema: one element named "s"
              + b"\x16\x00"  # no rows
              + b"\x19\x1c"  # one row group, whose ...
              + b"\x19\xfc" + varint(900_000))  # ... column chunks are stated, and end there
    data = b"PAR1" + footer + len(footer).to_bytes(4, "little") + b"PAR1"
    with pytest.raises(LimitError, match="states more values than it holds"):
        read_footer(io.BytesIO(data), len(data))


@pytest.mark.parametrize("kind", ["audio", "manifest", "tokens"])
def test_a_footer_within_a_sixteenth_of_its_file_is_read_however_large(tmp_path, monkeypatch, kind):
    """Real files of many row groups have footers of megabytes (mimi's own single-file output
    of millions of rows, a `datasets` export in row groups of 1000 rows): a footer may take a
    sixteenth of its file, so its parse costs at most twice the file, not a fixed size."""
    from mimi_cli.formats import limits

    monkeypatch.setattr(limits, "FOOTER_BYTES", 1)
    (tmp_path / "padded").mkdir()
    padded = _unused_entry_files(tmp_path / "padded", b"", pad=8192)[kind]
    footer = int.from_bytes(padded.read_bytes()[-8:-4], "little")
    assert 16 * footer < padded.stat().st_size
    assert _read_all(kind, padded) == 60
    bare = _unused_entry_files(tmp_path, b"")[kind]
    with pytest.raises((ContainerError, ManifestError, DatasetError), match="its footer takes .* for a file of its"):
        _read_all(kind, bare)


def test_a_parquet_file_in_a_folder_whose_footer_is_refused_is_an_error_row_not_skipped(tmp_path, monkeypatch):
    """It may hold audio, so it is reported, not passed over as a file of another kind."""
    import soundfile as sf

    from mimi_cli.formats import limits
    from mimi_cli.formats.sources import list_sources

    (tmp_path / "corpus").mkdir()
    _unused_entry_files(tmp_path, b"")["audio"].rename(tmp_path / "corpus" / "train-0.parquet")
    sf.write(tmp_path / "corpus" / "x.wav", np.zeros(2400, np.int16), 24000)
    monkeypatch.setattr(limits, "FOOTER_BYTES", 100)
    found = [(s, p) for s, p in list_sources([str(tmp_path / "corpus")])]
    assert [source.id for s, _ in found for source in s] == ["x.wav"]
    problems = [p for _, ps in found for p in ps]
    assert [p.id for p in problems] == ["train-0.parquet"] and "its footer takes" in problems[0].error


def test_an_audio_parquet_footer_is_parsed_once_for_its_listing_and_reads(tmp_path, parses):
    """A footer parses to many times its size: the dispatch, both listing passes and every reader
    thread share one parse of it, not one each (and not one per row group read); a manifest's
    dispatch and listing too."""
    import soundfile as sf

    from mimi_cli.formats.sources import list_sources

    clips = []
    for i in range(6):
        buffer = io.BytesIO()
        sf.write(buffer, np.full(2400, i, np.int16), 24000, format="WAV", subtype="PCM_16")
        clips.append(buffer.getvalue())
    audio = pa.StructArray.from_arrays([pa.array(clips, pa.binary()), pa.array([f"{i}.wav" for i in range(6)])],
                                       names=["bytes", "path"])
    pq.write_table(pa.table({"audio": audio}), tmp_path / "a.parquet", row_group_size=2)
    sources = [s for found, _ in list_sources([str(tmp_path / "a.parquet")]) for s in found]
    assert len(sources) == 6
    assert [len(s.member.read()) for s in sources] == [len(c) for c in clips]
    assert sum(parses) == 1
    pq.write_table(pa.table({"path": [f"{i}.wav" for i in range(6)]}), tmp_path / "m.parquet", row_group_size=2)
    parses.clear()
    assert sum(len(s) for s, _ in list_sources([str(tmp_path / "m.parquet")])) == 6
    assert sum(parses) == 1
    (tmp_path / "hf").mkdir()  # a folder of shards, as the Hub lays them out: each footer parsed once
    for i in range(3):
        pq.write_table(pa.table({"audio": audio}), tmp_path / "hf" / f"train-{i:05d}-of-00003.parquet",
                       row_group_size=2)
    parses.clear()
    sources = [s for found, _ in list_sources([str(tmp_path / "hf")]) for s in found]
    assert len(sources) == 18 and all(s.member.read() for s in sources)
    assert sum(parses) == 3
