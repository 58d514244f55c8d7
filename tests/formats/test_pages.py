"""Parquet page headers read as pyarrow meets them: the same sizes an honest footer states, a
dictionary page a footer hides, and crafted headers answered with LimitError only."""
from __future__ import annotations

import io
import itertools
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mimi_cli.formats.containers import ContainerError, parquet_items
from mimi_cli.formats.limits import LimitError, paged_dictionary
from mimi_cli.formats.pages import chunk_pages
from tests.parquet_footer import hide_dictionaries

TABLE = pa.table({"s": [f"v{i % 50}" for i in range(3000)], "b": [bytes([i % 256]) * (i % 300) for i in range(3000)],
                  "l": [[f"x{i}"] * (i % 4) for i in range(3000)], "n": [None if i % 3 else i for i in range(3000)],
                  "st": pa.array([{"p": f"p{i}", "q": i} for i in range(3000)])})


def written(table=TABLE, **options) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, data_page_size=4096, row_group_size=1000, **options)
    return buf.getvalue()


@pytest.mark.parametrize("compression,dictionary,version", list(itertools.product(
    ["none", "zstd", "snappy", "gzip"], [True, False], ["1.0", "2.0"])))
def test_page_headers_add_up_to_what_an_honest_footer_states(compression, dictionary, version):
    data = written(compression=compression, use_dictionary=dictionary, data_page_version=version)
    meta = pq.ParquetFile(io.BytesIO(data)).metadata
    for g in range(meta.num_row_groups):
        for c in range(meta.num_columns):
            chunk, pages = meta.row_group(g).column(c), chunk_pages(io.BytesIO(data), len(data), meta, g, c)
            assert (pages.dictionary, pages.stored) == (chunk.has_dictionary_page, chunk.total_compressed_size)
            assert pages.expanded >= chunk.total_uncompressed_size  # a page is held at its stored size at least
            assert 0 < pages.largest < chunk.total_uncompressed_size


def test_a_dictionary_page_the_footer_hides_is_found():
    data = hide_dictionaries(written(pa.table({"s": ["x" * 1000] * 5000})))
    pf = pq.ParquetFile(io.BytesIO(data))
    assert not pf.metadata.row_group(0).column(0).has_dictionary_page and pf.read().num_rows == 5000
    assert chunk_pages(io.BytesIO(data), len(data), pf.metadata, 0, 0).dictionary


def test_audio_bytes_a_footer_hides_the_dictionary_of_are_counted_before_they_are_copied(tmp_path):
    """One blob stored once and repeated in every row, its dictionary page hidden: listed a batch
    the dictionary bounds at a time and refused, and read as a dictionary when encoded."""
    blob = random.Random(0).randbytes(1 << 16)
    audio = pa.StructArray.from_arrays([pa.array([blob] * 2000, pa.binary()), pa.array(["x.wav"] * 2000)],
                                       names=["bytes", "path"])
    path = tmp_path / "hidden.parquet"
    path.write_bytes(hide_dictionaries(written(pa.table({"audio": audio}), compression="zstd")))
    pf = pq.ParquetFile(path)
    assert not any(pf.metadata.row_group(g).column(0).has_dictionary_page for g in range(pf.metadata.num_row_groups))
    with open(path, "rb") as f:
        assert all(paged_dictionary(f, path.stat().st_size, pf.metadata, g, "audio.bytes")
                   for g in range(pf.metadata.num_row_groups))
    with pytest.raises(ContainerError, match="decompression bomb"):
        list(parquet_items(path, "audio", ()))


def test_crafted_page_headers_raise_limit_errors_only():
    """Seeded byte flips over the pages and the first bytes of headers: LimitError or a reading,
    never another exception or a loop."""
    clean = written(pa.table({"s": [f"v{i}" for i in range(3000)], "l": [[i] * 3 for i in range(3000)]}),
                    compression="none")
    meta = pq.ParquetFile(io.BytesIO(clean)).metadata
    rng = random.Random(7)
    refused = 0
    for _ in range(400):
        data = bytearray(clean)
        for _ in range(rng.randint(1, 6)):
            data[rng.randrange(4, 2000)] = rng.randrange(256)  # the first chunk's headers and pages
        for g, c in itertools.product(range(meta.num_row_groups), range(meta.num_columns)):
            try:
                pages = chunk_pages(io.BytesIO(bytes(data)), len(data), meta, g, c)
                assert pages.largest >= 0
            except LimitError:
                refused += 1
    assert refused > 5  # the loop did reach the refusals


def _header_bytes(unknown_values: int, element: int = 12) -> bytes:
    """A page header (Thrift compact protocol) that holds, before its own fields, an unknown
    field 100: a list of `unknown_values` empty structs (`element` 12) or booleans (1), a byte each."""
    def varint(n: int) -> bytes:
        out = b""
        while n > 0x7F:
            out, n = out + bytes([n & 0x7F | 0x80]), n >> 7
        return out + bytes([n])

    def i32(field: int, value: int) -> bytes:  # long-form field header, zigzag value
        return b"\x05" + varint(field << 1) + varint(value << 1)

    filler = (b"\x09" + varint(100 << 1) + bytes([0xF0 | element]) + varint(unknown_values)
              + (b"\x00" if element == 12 else b"\x01") * unknown_values)
    return filler + i32(1, 0) + i32(2, 10) + i32(3, 10) + b"\x00"


def test_a_page_header_of_many_unknown_values_is_refused_before_it_is_walked():
    """pyarrow skips unknown header fields; a header of a million empty structs would cost mimi's
    Python reader seconds a megabyte, so one of more values than any writer puts there is refused."""
    from mimi_cli.formats.pages import MAX_HEADER_VALUES, _header

    for element in (12, 1):
        assert _header(_header_bytes(1000, element)).uncompressed == 10
        with pytest.raises(ValueError, match=f"over {MAX_HEADER_VALUES} Thrift values in one header"):
            _header(_header_bytes(1_000_000, element))


def _windows_bytes(path, column: str, rows: int) -> int:
    """The most bytes a batch of `rows` rows of `column` takes once read plain."""
    values = pq.read_table(path, columns=[column]).column(0).combine_chunks()
    return max(values.slice(i, rows).nbytes for i in range(0, len(values), rows))


@pytest.mark.parametrize("case", ["long distinct", "one long value", "one long value, hidden", "short"])
def test_a_batch_of_rows_holds_what_its_pages_allow_and_no_more(tmp_path, monkeypatch, case):
    """Rows are read in batches whose size the page headers bound: long distinct values, and one
    long value that a dictionary repeats in every row (named in the footer or hidden), make small
    batches; short values, whole slices."""
    from mimi_cli.formats import limits
    from mimi_cli.formats.limits import batch_rows, batches, open_parquet

    monkeypatch.setattr(limits, "BATCH_BYTES", 256 << 10)
    rng = random.Random(3)
    values = {"long distinct": [rng.randbytes(600).hex() for _ in range(3000)],
              "one long value": ["x" * (100 << 10)] * 3000, "one long value, hidden": ["x" * (100 << 10)] * 3000,
              "short": [f"{i}.wav" for i in range(3000)]}[case]
    path = tmp_path / "t.parquet"
    path.write_bytes(written(pa.table({"path": values}), compression="zstd"))
    if case.endswith("hidden"):
        path.write_bytes(hide_dictionaries(path.read_bytes()))
    with open(path, "rb") as f:
        pf = open_parquet(f, path.stat().st_size, ["path"], streamed=True)
        rows = batch_rows(pf, f, path.stat().st_size, 0, ["path"])
        assert _windows_bytes(path, "path", rows) <= limits.BATCH_BYTES
        assert (rows == limits.SLICE_ROWS) == (case == "short")
        if not case.startswith("one long"):  # those are past the expansion bound
            read = [v for _, _, t in batches(pf, f, path.stat().st_size, ["path"]) for v in t.column(0).to_pylist()]
            assert read == values


def test_a_page_of_text_past_the_cap_is_refused_audio_is_not(tmp_path, monkeypatch):
    from mimi_cli.formats import limits
    from mimi_cli.formats.manifests import ManifestError, ManifestOptions, read_manifest

    monkeypatch.setattr(limits, "MAX_TEXT_PAGE_BYTES", 64 << 10)
    blob = random.Random(1).randbytes(100 << 10)
    pq.write_table(pa.table({"path": ["a.wav", blob.hex()[:100_000]]}), tmp_path / "m.parquet")
    with pytest.raises(ManifestError, match="a page of column 'path' holds over 0 MiB of text"):
        next(read_manifest(tmp_path / "m.parquet", ManifestOptions()).chunks())
    audio = pa.StructArray.from_arrays([pa.array([blob, blob[:10]]), pa.array(["a.wav", "b.wav"])],
                                       names=["bytes", "path"])
    pq.write_table(pa.table({"audio": audio}), tmp_path / "a.parquet")
    assert [item.size for item in parquet_items(tmp_path / "a.parquet", "audio", ())] == [len(blob), 10]


def test_columns_inside_lists_past_what_is_read_at_once_are_refused(tmp_path, monkeypatch):
    """Text inside lists is read as a dictionary, which pyarrow builds whole for a row group, so
    its pages may take at most BATCH_BYTES once read; short lists of it are read as they were."""
    from mimi_cli.formats import limits
    from mimi_cli.formats.manifests import ManifestError, ManifestOptions, read_manifest

    monkeypatch.setattr(limits, "BATCH_BYTES", 256 << 10)
    rng = random.Random(5)
    tags = [[rng.randbytes(200).hex()] for _ in range(1000)]  # 400 kB of distinct text
    pq.write_table(pa.table({"path": [f"{i}.wav" for i in range(1000)], "tags": tags}), tmp_path / "m.parquet")
    with pytest.raises(ManifestError, match="its columns inside lists take 0 MiB once read, over the 0 MiB"):
        next(read_manifest(tmp_path / "m.parquet", ManifestOptions(keep_columns=("tags",))).chunks())
    assert read_manifest(tmp_path / "m.parquet", ManifestOptions()).paths[:2] == ["0.wav", "1.wav"]
    pq.write_table(pa.table({"path": ["a.wav"], "tags": [["x", "y"]]}), tmp_path / "s.parquet")
    assert read_manifest(tmp_path / "s.parquet", ManifestOptions(keep_columns=("tags",))).kept == {"tags": [["x", "y"]]}


def test_an_audio_page_that_packs_as_no_audio_does_is_refused(tmp_path, monkeypatch):
    """A cell's page is held whole while it is read: one over BATCH_BYTES that decompresses to over
    8 times what it takes in the file (silence, a bomb) is refused; noise of the same size is read."""
    from mimi_cli.formats import limits

    monkeypatch.setattr(limits, "BATCH_BYTES", 1 << 20)
    noise = random.Random(2).randbytes(4 << 20)
    for name, blob, refused in (("noise", noise, False), ("zeros", bytes(4 << 20), True)):
        audio = pa.StructArray.from_arrays([pa.array([noise[:2 << 20], blob]), pa.array(["a.wav", "b.wav"])],
                                           names=["bytes", "path"])
        pq.write_table(pa.table({"audio": audio}), tmp_path / f"{name}.parquet", compression="zstd",
                       use_dictionary=False, write_batch_size=1, data_page_size=1 << 16)  # a page a cell
        if refused:
            with pytest.raises(ContainerError, match="over 8 times what it takes in the file"):
                list(parquet_items(tmp_path / f"{name}.parquet", "audio", ()))
        else:
            assert [item.size for item in parquet_items(tmp_path / f"{name}.parquet", "audio", ())] == [
                2 << 20, 4 << 20]


def test_a_kept_map_of_text_is_read(tmp_path):
    audio = pa.StructArray.from_arrays([pa.array([b"x", b"y"]), pa.array(["a.wav", "b.wav"])], names=["bytes", "path"])
    tags = pa.array([[("k", "v")], [("k2", "v2"), ("k3", "v3")]], pa.map_(pa.string(), pa.string()))
    pq.write_table(pa.table({"audio": audio, "tags": tags}), tmp_path / "a.parquet")
    assert [item.fields["tags"] for item in parquet_items(tmp_path / "a.parquet", "audio", ("tags",))] == [
        [("k", "v")], [("k2", "v2"), ("k3", "v3")]]
