"""mimi_cli.data in training loops: TokenDataset over ranks and workers, collate, delay/undelay,
and token datasets read by the real clients (`datasets`, pandas) and after they rewrote them."""
from __future__ import annotations

import json
import os
import sys
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from torch.utils.data import DataLoader

from mimi_cli.data import PAD_ID, TokenDataset, collate, delay, undelay
from mimi_cli.formats.shards import Row, ShardWriter, SourceInfo

K = 8
META = {"tool": "mimi-cli", "model": {"source": "synthetic:0"}, "num_codebooks": K, "frame_rate": 12.5,
        "sample_rate": 24000, "codebook_size": 2048, "channels": "mix"}


@pytest.fixture
def run_cli(monkeypatch, tmp_path):
    """`mimi ARGS...` in-process on full-size synthetic weights (seed 0, loaded once per session)."""
    from typer.testing import CliRunner

    from mimi_cli import cli
    from tests.helpers import full_codec

    monkeypatch.setattr(cli, "_load", lambda weights, device, dtype: full_codec(0))
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    return lambda *args: runner.invoke(cli.app, [str(a) for a in args], catch_exceptions=False)


def make_dataset(directory, rows=60, rows_per_group=7, seed=0):
    """A shard directory of `rows` rows (ids r000...) in row groups of `rows_per_group`, 3 shards."""
    rng = np.random.default_rng(seed)
    expected = {}
    writer = ShardWriter(directory, META, sidecar=True)
    writer.keep_columns({"text": pa.string()})
    for i in range(rows):
        codes = rng.integers(0, 2048, (K, int(rng.integers(3, 40)))).astype(np.int16)
        expected[f"r{i:03d}"] = codes
        row = Row(f"r{i:03d}", -1, codes, codes.shape[1] * 1920, SourceInfo(24000, 1, 1, 1), {"text": f"t{i}"})
        writer.add(row)
        if len(writer.rows) == 20:
            writer.flush()
    writer.flush()
    for shard in directory.glob("part-*.parquet"):  # smaller row groups than mimi writes: more units to share
        table = pq.read_table(shard)
        pq.write_table(table, shard, row_group_size=rows_per_group)
    return expected


def test_items_are_the_stored_rows(tmp_path):
    expected = make_dataset(tmp_path / "ds")
    items = list(TokenDataset(tmp_path / "ds", columns=("text",)))
    assert sorted(it["id"] for it in items) == sorted(expected)
    for it in items:
        assert it["codes"].dtype == torch.int16 and np.array_equal(it["codes"].numpy(), expected[it["id"]])
        assert it["text"] == f"t{int(it['id'][1:])}"
    four = next(iter(TokenDataset(tmp_path / "ds", num_codebooks=4)))
    assert four["codes"].shape[0] == 4 and set(four) == {"id", "codes"}
    with pytest.raises(Exception, match="stores only 8"):
        TokenDataset(tmp_path / "ds", num_codebooks=9)
    with pytest.raises(Exception, match="no column 'speaker'"):
        TokenDataset(tmp_path / "ds", columns=("speaker",))


def test_rows_short_of_num_codebooks_are_skipped_with_a_warning(tmp_path):
    """docs/training.md: a dataset that records fewer codebooks is refused when it is made; in one
    without provenance (nothing says what its rows hold), rows short of `num_codebooks` are skipped."""
    make_dataset(tmp_path / "ds")
    table = pa.concat_tables([pq.read_table(f) for f in sorted((tmp_path / "ds").glob("part-*.parquet"))])
    short = table.slice(0, 3)
    four = pa.array([c[:4] for c in short.column("codes").to_pylist()], table.schema.field("codes").type)
    short = short.set_column(short.schema.get_field_index("codes"), "codes", four)
    short = short.set_column(short.schema.get_field_index("id"), "id", pa.array([f"short{i}" for i in range(3)]))
    (tmp_path / "mixed").mkdir()
    mixed = pa.concat_tables([table, short]).replace_schema_metadata(None)  # no footer, no sidecar
    pq.write_table(mixed, tmp_path / "mixed" / "part-00000.parquet")
    with pytest.warns(UserWarning, match="3 unusable rows skipped .*short0: it has 4 codebooks"):
        items = list(TokenDataset(tmp_path / "mixed", num_codebooks=K))
    assert len(items) == table.num_rows and not any(it["id"].startswith("short") for it in items)
    assert len(list(TokenDataset(tmp_path / "mixed", num_codebooks=4))) == table.num_rows + 3


def test_ranks_and_workers_read_every_row_exactly_once(tmp_path):
    expected = make_dataset(tmp_path / "ds")
    for shuffle in (False, True):
        seen = Counter()
        for rank in range(2):
            ds = TokenDataset(tmp_path / "ds", shuffle=shuffle, seed=3, rank=rank, world_size=2, buffer_size=8)
            for batch in DataLoader(ds, batch_size=4, num_workers=2, collate_fn=collate):
                seen.update(batch["id"])
        assert seen == Counter(expected.keys()), shuffle


def test_shuffle_is_seeded_and_changes_with_the_epoch(tmp_path):
    make_dataset(tmp_path / "ds")

    def order(epoch, seed=0):
        ds = TokenDataset(tmp_path / "ds", shuffle=True, seed=seed, buffer_size=16)
        ds.set_epoch(epoch)
        return [it["id"] for it in ds]

    assert order(0) == order(0) and order(1) == order(1)
    assert order(0) != order(1) and order(0) != order(0, seed=1)
    assert sorted(order(0)) == sorted(order(1))
    assert [it["id"] for it in TokenDataset(tmp_path / "ds")] != order(0)



def test_persistent_workers_follow_set_epoch(tmp_path):
    # Workers kept across epochs hold their own copy of the dataset; the epoch must still reach them.
    make_dataset(tmp_path / "ds")
    ds = TokenDataset(tmp_path / "ds", shuffle=True, seed=0, buffer_size=16)
    loader = DataLoader(ds, batch_size=4, num_workers=2, collate_fn=collate, persistent_workers=True)

    def order(epoch):
        ds.set_epoch(epoch)
        return [i for batch in loader for i in batch["id"]]

    def fresh(epoch):
        d = TokenDataset(tmp_path / "ds", shuffle=True, seed=0, buffer_size=16)
        d.set_epoch(epoch)
        return [i for batch in DataLoader(d, batch_size=4, num_workers=2, collate_fn=collate) for i in batch["id"]]

    first, second = order(0), order(1)
    assert first == fresh(0) and second == fresh(1) and first != second

def test_max_frames_crops(tmp_path):
    expected = make_dataset(tmp_path / "ds")
    for crop in ("start", "random"):
        for it in TokenDataset(tmp_path / "ds", max_frames=10, crop=crop, seed=1):
            full = expected[it["id"]]
            got = it["codes"].numpy()
            assert got.shape[1] == min(10, full.shape[1])
            if crop == "start":
                assert np.array_equal(got, full[:, :10])
            else:  # a window of the row, somewhere
                starts = [s for s in range(full.shape[1] - got.shape[1] + 1)
                          if np.array_equal(full[:, s:s + got.shape[1]], got)]
                assert starts


def test_torch_distributed_ranks_are_taken_when_initialised(tmp_path):
    """Two real gloo processes, each with 2 DataLoader workers: every id once."""
    expected = make_dataset(tmp_path / "ds")
    import torch.multiprocessing as mp

    mp.spawn(_distributed_reader, args=(str(tmp_path),), nprocs=2, join=True)
    seen = Counter()
    for rank in range(2):
        seen.update(json.loads((tmp_path / f"ids-{rank}.json").read_text()))
    assert seen == Counter(expected.keys())


def _distributed_reader(rank: int, root: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    sys.path.insert(0, os.getcwd())
    dist.init_process_group("gloo", init_method=f"file://{root}/rendezvous", rank=rank, world_size=2)
    try:
        ds = TokenDataset(f"{root}/ds", shuffle=True)
        ids = [i for batch in DataLoader(ds, batch_size=5, num_workers=2, collate_fn=collate) for i in batch["id"]]
        with open(f"{root}/ids-{rank}.json", "w") as f:
            json.dump(ids, f)
    finally:
        dist.destroy_process_group()


def test_collate_pads_with_an_id_outside_the_codebook():
    a = {"id": "a", "codes": torch.arange(6, dtype=torch.int16).reshape(2, 3), "text": "x"}
    b = {"id": "b", "codes": torch.ones(2, 1, dtype=torch.int16), "text": "y"}
    batch = collate([a, b])
    assert batch["id"] == ["a", "b"] and batch["text"] == ["x", "y"] and batch["lengths"].tolist() == [3, 1]
    assert batch["codes"].dtype == torch.long and batch["codes"].shape == (2, 2, 3)
    assert batch["codes"][1].tolist() == [[1, PAD_ID, PAD_ID], [1, PAD_ID, PAD_ID]] and PAD_ID == 2048
    with pytest.raises(ValueError, match="different numbers of codebooks"):
        collate([a, {"id": "c", "codes": torch.ones(3, 1, dtype=torch.int16)}])


def test_delay_shifts_each_codebook_and_undelay_inverts_it():
    codes = torch.arange(12).reshape(3, 4)
    delayed = delay(codes, [0, 1, 2], pad_id=-1)
    assert delayed.tolist() == [[0, 1, 2, 3, -1, -1], [-1, 4, 5, 6, 7, -1], [-1, -1, 8, 9, 10, 11]]
    batch = torch.randint(0, 2048, (2, 8, 17))
    for delays in ([0] * 8, list(range(8)), [0] + [2] * 7):
        d = delay(batch, delays)
        assert d.shape == (2, 8, 17 + max(delays)) and torch.equal(undelay(d, delays), batch)
    with pytest.raises(ValueError, match="one delay per codebook"):
        delay(batch, [0, 1])


def test_real_clients_read_the_dataset(tmp_path):
    """`datasets` with_format("torch") and pandas read the shards as they are."""
    expected = make_dataset(tmp_path / "ds")
    from datasets import load_dataset

    ds = load_dataset("parquet", data_dir=str(tmp_path / "ds"), split="train").with_format("torch")
    assert len(ds) == len(expected)
    row = ds[0]
    assert torch.equal(row["codes"].to(torch.int16), torch.from_numpy(expected[row["id"]]))
    import pandas as pd

    frame = pd.read_parquet(tmp_path / "ds")
    assert sorted(frame["id"]) == sorted(expected)


def test_datasets_rewritten_by_other_tools_are_still_read(run_cli, tmp_path):
    """pandas drops the Parquet footer metadata on a rewrite; the sidecar still says what the data is."""
    import pandas as pd

    expected = make_dataset(tmp_path / "ds")
    assert json.loads((tmp_path / "ds" / ".mimi.json").read_text())["num_codebooks"] == K
    out = tmp_path / "rewritten"
    out.mkdir()
    pd.read_parquet(tmp_path / "ds").to_parquet(out / "part-00000.parquet")  # no mimi_cli footer now
    (out / ".mimi.json").write_text((tmp_path / "ds" / ".mimi.json").read_text())
    info = run_cli("info", out, "--json")
    assert info.exit_code == 0 and json.loads(info.stdout)["rows"] == len(expected)
    assert sorted(it["id"] for it in TokenDataset(out)) == sorted(expected)
    (out / ".mimi.json").unlink()  # no provenance at all
    assert sorted(it["id"] for it in TokenDataset(out)) == sorted(expected)
    refused = run_cli("decode", out, tmp_path / "wav", "--id", "r001")
    assert refused.exit_code == 2 and "--weights" in refused.output, refused.output
    accepted = run_cli("decode", out, tmp_path / "wav", "--id", "r001", "--weights", "synthetic:0")
    assert accepted.exit_code == 0, accepted.output
    assert "no provenance" in accepted.output and (tmp_path / "wav" / "r001.wav").exists()


def test_npy_datasets_single_files_and_uris_are_read(tmp_path, tiny, monkeypatch):
    """What `mimi encode` writes as npy and as one .parquet, by path and by file:// URI."""
    from typer.testing import CliRunner

    from mimi_cli import cli
    from tests.helpers import write_corpus

    write_corpus(tmp_path / "corpus")
    monkeypatch.setattr(cli, "_load", lambda weights, device, dtype: tiny)
    runner = CliRunner()
    for out, extra in [("npy", ["--format", "npy"]), ("one.parquet", [])]:
        result = runner.invoke(cli.app, ["encode", str(tmp_path / "corpus"), str(tmp_path / out), "-q", "4", *extra])
        assert result.exit_code == 0, result.output
    stored = {r["id"]: np.asarray(r["codes"]) for r in pq.read_table(tmp_path / "one.parquet").to_pylist()}
    for source in (tmp_path / "npy", tmp_path / "one.parquet", f"file://{tmp_path}/npy", f"file://{tmp_path}/one.parquet"):
        items = {it["id"]: it["codes"].numpy() for it in TokenDataset(source)}
        assert items.keys() == stored.keys(), source
        assert all(np.array_equal(items[i], stored[i]) for i in items), source


def test_a_batch_crosses_processes_with_its_values_and_types():
    # Batches leave DataLoader workers by value, int64 tensors narrowed when they fit: what
    # arrives must be what was sent, whatever the values and sizes.
    import pickle
    from multiprocessing.reduction import ForkingPickler

    items = [{"id": "a", "codes": torch.tensor([[1, 2, 3]], dtype=torch.int16), "text": "x"},
             {"id": "b", "codes": torch.tensor([[4]], dtype=torch.int16), "text": None}]
    batch = collate(items)
    batch["wide"] = torch.tensor([1 << 40, -5])                     # int64 that does not fit int16
    batch["float"] = torch.rand(2, 3)
    batch["big"] = torch.arange(300_000)                            # over the by-value size
    back = pickle.loads(ForkingPickler.dumps(batch))
    half = collate(items)
    half["bf16"] = torch.rand(2, 3).bfloat16()                      # a dtype numpy cannot hold
    half_back = pickle.loads(ForkingPickler.dumps(half))
    assert half_back["bf16"].dtype == torch.bfloat16 and torch.equal(half_back["bf16"], half["bf16"])
    assert torch.equal(half_back["codes"], half["codes"])
    assert list(back) == list(batch)
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            assert back[key].dtype == value.dtype and torch.equal(back[key], value), key
        else:
            assert back[key] == value
    assert back["codes"].tolist() == [[[1, 2, 3]], [[4, PAD_ID, PAD_ID]]]
