"""The token-shard reader: every malformed dataset is a DatasetError or an error row, never a crash."""
from __future__ import annotations

import json
import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mimi_cli.formats.info import dataset_info
from mimi_cli.formats.shards import (
    METADATA_KEY,
    DatasetError,
    Row,
    ShardWriter,
    SourceInfo,
    iter_rows,
    read_metadata,
    read_table,
)

META = {"tool": "mimi-cli", "model": {"source": "synthetic:0"}, "num_codebooks": 2, "codebook_size": 2048,
        "frame_rate": 12.5, "sample_rate": 24000, "channels": "mix"}


def good_rows(n=3):
    rng = np.random.default_rng(0)
    return [Row(f"r{i}.wav", -1, rng.integers(0, 2048, (2, 3 + i)).astype(np.int16), (3 + i) * 1920 - 5,
                SourceInfo(16000, 1, 100, 0)) for i in range(n)]


def write_good(directory):
    w = ShardWriter(directory, META)
    for r in good_rows():
        w.add(r)
    w.flush()
    return directory / "part-00000.parquet"


def table(columns: dict, meta=META) -> pa.Table:
    t = pa.table(columns)
    return t.replace_schema_metadata({METADATA_KEY: json.dumps(meta) if not isinstance(meta, bytes) else meta})


def base_columns(**over):
    cols = {"id": pa.array(["a.wav", "b.wav"]), "channel": pa.array([-1, -1], pa.int16()),
            "codes": pa.array([[[1, 2], [3, 4]], [[5, 6], [7, 8]]], pa.list_(pa.list_(pa.int16()))),
            "num_frames": pa.array([2, 2], pa.int32()), "num_samples": pa.array([3000, 3840], pa.int64())}
    cols.update(over)
    return {k: v for k, v in cols.items() if v is not None}


def test_good_rows_read_back(tmp_path):
    write_good(tmp_path)
    rows = list(iter_rows(tmp_path))
    for r, want in zip(rows, good_rows()):
        assert "error" not in r and r["id"] == want.id
        np.testing.assert_array_equal(r["codes"], want.codes)


@pytest.mark.parametrize("meta,message", [
    (b"not json", "not a JSON object"), ([1, 2], "not a JSON object"),
    ({**META, "num_codebooks": "8"}, "num_codebooks='8'"), ({**META, "num_codebooks": 0}, "num_codebooks=0"),
    ({k: v for k, v in META.items() if k != "codebook_size"}, "codebook_size=None"),
    ({**META, "model": "x"}, "'model' is not an object"),
])
def test_odd_metadata_is_one_error(tmp_path, meta, message):
    pq.write_table(table(base_columns(), meta if not isinstance(meta, list) else json.dumps(meta).encode()),
                   tmp_path / "t.parquet")
    with pytest.raises(DatasetError, match=message.replace("(", r"\(")):
        read_metadata(tmp_path / "t.parquet")


@pytest.mark.parametrize("over,message", [
    ({"codes": pa.array([[1, 2], [3]], pa.list_(pa.int16()))}, "column 'codes' is list<"),
    ({"codes": pa.array(["1 2", "3"])}, "column 'codes' is string"),
    ({"codes": None}, "no 'codes' column"),
    ({"id": None}, "no 'id' column"),
    ({"num_samples": pa.array(["x", "y"])}, "column 'num_samples' is string"),
])
def test_malformed_columns_are_one_error(tmp_path, over, message):
    pq.write_table(table(base_columns(**over)), tmp_path / "t.parquet")
    with pytest.raises(DatasetError, match=message):
        list(iter_rows(tmp_path / "t.parquet"))


@pytest.mark.parametrize("over,message", [
    ({"id": pa.array([None, "b.wav"])}, "no id"),
    ({"codes": pa.array([[[1, 2], [3]], [[5, 6], [7, 8]]], pa.list_(pa.list_(pa.int16())))}, "ragged"),
    ({"codes": pa.array([None, [[5, 6], [7, 8]]], pa.list_(pa.list_(pa.int16())))}, "no codes"),
    ({"codes": pa.array([[[1, None], [3, 4]], [[5, 6], [7, 8]]], pa.list_(pa.list_(pa.int16())))}, "nulls"),
    ({"codes": pa.array([[[1, 2], [3, 9999]], [[5, 6], [7, 8]]], pa.list_(pa.list_(pa.int64())))}, "out of range"),
    ({"codes": pa.array([[[1, 2], [3, -1]], [[5, 6], [7, 8]]], pa.list_(pa.list_(pa.int16())))}, "out of range"),
    ({"num_samples": pa.array([999999, 3840], pa.int64())}, "does not fit"),
    ({"num_samples": pa.array([None, 3840], pa.int64())}, "does not fit"),
    ({"channel": pa.array([-7, -1], pa.int16())}, "channel -7"),
])
def test_a_malformed_row_is_an_error_row_and_the_others_are_read(tmp_path, over, message):
    pq.write_table(table(base_columns(**over)), tmp_path / "t.parquet")
    first, second = list(iter_rows(tmp_path / "t.parquet"))
    assert message in first["error"]
    assert "error" not in second and second["codes"].tolist() == [[5, 6], [7, 8]]


@pytest.mark.parametrize("large", [False, True])
def test_bad_rows_anywhere_in_a_big_group_are_the_ones_reported(tmp_path, large):
    # Codes are checked in bulk per batch of rows: bad rows at batch edges, in a slice past the
    # first batch and next to empty ones must still be the ones named, and good rows keep their codes.
    rng = np.random.default_rng(1)
    n, bad = 2600, {0: "nulls", 1023: "ragged", 1024: "out of range", 1500: "no codes", 2047: "nulls",
                    2048: "codebooks, not 1..", 2599: "out of range"}
    codes, want = [], {}
    for i in range(n):
        k, frames = int(rng.integers(1, 4)), int(rng.integers(0, 5))
        rows = rng.integers(0, 2048, (k, frames)).tolist()
        kind = bad.get(i)
        if kind == "nulls":
            rows = [[None] + r for r in rows] if i else [None] + rows
        elif kind == "ragged":
            rows = [[1, 2, 3], [4]]
        elif kind == "out of range":
            rows = [[2048] + r for r in rows] if i == 1024 else [[5], [-3]]
        elif kind == "no codes":
            rows = None
        elif kind == "codebooks, not 1..":
            rows = []
        else:
            want[i] = rows
        codes.append(rows)
    inner = pa.large_list(pa.int64()) if large else pa.list_(pa.int16())
    cols = {"id": pa.array([f"r{i}" for i in range(n)]), "channel": pa.array([-1] * n, pa.int16()),
            "codes": pa.array(codes, pa.large_list(inner) if large else pa.list_(inner)),
            "num_frames": pa.array([0] * n, pa.int32()), "num_samples": pa.array([0] * n, pa.int64())}
    pq.write_table(table(cols), tmp_path / "t.parquet", row_group_size=n)
    rows = list(iter_rows(tmp_path / "t.parquet"))
    assert len(rows) == n
    for i, r in enumerate(rows):
        if i in bad:
            assert bad[i] in r["error"], (i, r)
        else:
            assert "error" not in r and r["codes"].dtype == np.int16 and r["codes"].tolist() == want[i], i


def test_codes_of_digital_silence_are_written_so_that_they_read_back(tmp_path):
    """Three hours of one code per codebook pack into a few kB with zstd, past the expansion a
    downloaded dataset may have: mimi writes its own shard so that its readers take it, and keeps
    the packed form for shards that fit."""
    frames = 140_000  # 32 x 140k codes: 18 MB once read, over the 16 MB any file may expand to
    silent = Row("silence.wav", -1, np.tile(np.arange(32, dtype=np.int16)[:, None], (1, frames)), frames * 1920,
                 SourceInfo(24000, 1, 100, 0))
    for directory, rows in (("silent", [silent]), ("speech", good_rows())):
        w = ShardWriter(tmp_path / directory, META)
        for r in rows:
            w.add(r)
        w.flush()
    read = list(iter_rows(tmp_path / "silent"))
    assert "error" not in read[0] and np.array_equal(read[0]["codes"], silent.codes)
    assert read_table(tmp_path / "silent", ["id"]).column("id").to_pylist() == ["silence.wav"]
    codecs = {d: pq.ParquetFile(tmp_path / d / "part-00000.parquet").metadata.row_group(0).column(2).compression
              for d in ("silent", "speech")}
    assert codecs == {"silent": "UNCOMPRESSED", "speech": "ZSTD"}


def test_npy_paths_stay_inside_the_dataset_and_read_only_regular_files(tmp_path):
    import os

    ds = tmp_path / "ds"
    ds.mkdir()
    np.save(ds / "ok.npy", np.ones((2, 2), np.int16))
    np.save(tmp_path / "secret.npy", np.ones((2, 2), np.int16))
    os.mkfifo(ds / "fifo.npy")
    os.symlink(tmp_path / "secret.npy", ds / "link.npy")
    (ds / "pickle.npy").write_bytes(b"\x93NUMPY garbage")
    names = ["ok.npy", "../secret.npy", str(tmp_path / "secret.npy"), "fifo.npy", "link.npy", "pickle.npy", ""]
    n = len(names)
    cols = {"id": pa.array([f"r{i}" for i in range(n)]), "channel": pa.array([-1] * n, pa.int16()),
            "num_frames": pa.array([2] * n, pa.int32()), "num_samples": pa.array([100] * n, pa.int64()),
            "npy_path": pa.array(names)}
    pq.write_table(table(cols), ds / "manifest-00000.parquet")
    rows = list(iter_rows(ds))  # a FIFO would hang here if it were opened
    assert "error" not in rows[0] and rows[0]["codes"].tolist() == [[1, 1], [1, 1]]
    for r in rows[1:]:
        assert "npy_path" in r["error"], r


def test_info_counts_with_nulls_and_refuses_text(tmp_path):
    pq.write_table(table(base_columns(num_samples=pa.array([None, 3840], pa.int64()))), tmp_path / "t.parquet")
    assert dataset_info(tmp_path / "t.parquet").rows == 2
    pq.write_table(table(base_columns(num_frames=pa.array(["2", "2"]))), tmp_path / "u.parquet")
    with pytest.raises(DatasetError, match="num_frames"):
        dataset_info(tmp_path / "u.parquet")


def test_fuzzed_shards_raise_only_dataset_errors(tmp_path):
    """Seeded byte flips over a real shard: our own error type or error rows, never anything else."""
    clean = write_good(tmp_path / "clean").read_bytes()
    rng = random.Random(1234)
    outcomes = {"error": 0, "rows": 0}
    for trial in range(300):
        data = bytearray(clean)
        for _ in range(rng.randint(1, 8)):
            if rng.random() < 0.5:  # the footer, where the schema and metadata live, is the interesting part
                data[rng.randrange(max(0, len(data) - 600), len(data))] = rng.randrange(256)
            else:
                data[rng.randrange(len(data))] = rng.randrange(256)
        if rng.random() < 0.1:
            data = data[:rng.randrange(len(data))]
        path = tmp_path / f"f{trial % 4}.parquet"
        path.write_bytes(bytes(data))
        try:
            read_metadata(path)
            rows = list(iter_rows(path))
            dataset_info(path)
            outcomes["rows"] += 1
            assert all(("error" in r) or r["codes"].dtype == np.int16 for r in rows)
        except DatasetError as e:
            assert "\n" not in str(e)
            outcomes["error"] += 1
    assert outcomes["error"] > 50  # the loop did reach the error paths
