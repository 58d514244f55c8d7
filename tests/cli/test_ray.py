"""`mimi encode --engine ray` on a local Ray cluster: the same rows as the local engine."""
from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from mimi_cli import ray_engine

ray = pytest.importorskip("ray", reason="the [ray] extra is part of the dev install (make test)")

K = 4


@pytest.fixture(scope="module")
def local_cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture
def real_run():
    """The CLI with its real loader: Ray workers are other processes and load the model themselves."""
    from typer.testing import CliRunner

    from mimi_cli import cli

    runner = CliRunner()
    return lambda *args: runner.invoke(cli.app, [str(a) for a in args], catch_exceptions=False)


def _rows(path):
    return {(r["id"], r["channel"]): r for r in pq.read_table(path).to_pylist()}


def test_ray_engine_gives_the_local_engine_rows(real_run, corpus, tmp_path, local_cluster):
    """Full-size synthetic weights in both engines; a bad file becomes an error row; a rerun adds nothing."""
    run = real_run
    bad = corpus / "z" / "broken.wav"
    bad.parent.mkdir()
    bad.write_text("not audio")
    local = tmp_path / "local.parquet"
    assert run("encode", corpus, local, "-q", K, "--weights", "synthetic:3").exit_code == 1
    distributed = tmp_path / "ray"
    # URIs on the Ray side (file:// here; object stores go through the same pyarrow filesystems).
    result = run("encode", f"file://{corpus}", f"file://{distributed}", "-q", K, "--engine", "ray", "--workers", 1,
                 "--batch-size", 3, "--weights", "synthetic:3")
    assert result.exit_code == 1, result.output
    a, b = _rows(local), _rows(distributed)
    assert a.keys() == b.keys() and len(a) == 8
    for key in a:
        ra, rb = a[key], b[key]
        np.testing.assert_array_equal(np.asarray(ra["codes"]), np.asarray(rb["codes"]))
        assert {k: v for k, v in ra.items() if k != "codes"} == {k: v for k, v in rb.items() if k != "codes"}
    errors = [json.loads(x) for x in (tmp_path / "ray.errors.jsonl").read_text().splitlines()]
    assert [e["id"] for e in errors] == ["z/broken.wav"]
    again = run("encode", f"file://{corpus}", f"file://{distributed}", "-q", K, "--engine", "ray",
                "--weights", "synthetic:3")
    assert "encoded 0 files" in again.output and pq.read_table(distributed).num_rows == 8


def test_without_ray_installed_says_how(run, corpus, tmp_path, monkeypatch):
    def missing():
        raise ray_engine.MimiError(ray_engine.INSTALL_HINT)

    monkeypatch.setattr(ray_engine, "require_ray", missing)
    result = run("encode", corpus, tmp_path / "o", "--engine", "ray")
    assert result.exit_code == 2 and "pip install 'mimi-cli[ray]'" in result.output


def test_ray_engine_reads_manifests_and_keeps_their_columns(real_run, corpus, tmp_path, local_cluster):
    (corpus / "list.tsv").write_text("path\tspeaker\na/one.wav\tann\nc/opus.ogg\tbob\n")
    local, distributed = tmp_path / "local.parquet", tmp_path / "ray.parquet"
    for out, engine in ((local, "local"), (distributed, "ray")):
        result = real_run("encode", corpus / "list.tsv", out, "-q", K, "--engine", engine, "--keep-columns", "speaker",
                          "--weights", "synthetic:3")
        assert result.exit_code == 0, result.output
    a, b = _rows(local), _rows(distributed)
    assert a == b and {k[0]: r["speaker"] for k, r in a.items()} == {"a/one.wav": "ann", "c/opus.ogg": "bob"}


def test_ray_engine_reads_containers_as_the_local_engine_does(real_run, tmp_path, local_cluster):
    """WebDataset and Hugging Face Parquet items through Ray: same codes and fingerprints."""
    from tests.cli.test_containers import CLIPS, hf_parquet, webdataset_shards
    from tests.helpers import write_corpus

    write_corpus(tmp_path, CLIPS)
    (tmp_path / "shards").mkdir()
    webdataset_shards(tmp_path, "shards/%d.tar", [["s0", "s2"]])
    hf_parquet(tmp_path, tmp_path / "hf.parquet", ["clips/s3.ogg", "clips/s4.flac"])
    args = (tmp_path / "shards/0.tar", tmp_path / "hf.parquet", "-q", K, "--weights", "synthetic:3")
    assert real_run("encode", *args, tmp_path / "local").exit_code == 0
    result = real_run("encode", *args, tmp_path / "ray", "--engine", "ray", "--batch-size", 2)
    assert result.exit_code == 0, result.output
    local, distributed = (_rows(tmp_path / "local"), _rows(tmp_path / "ray"))
    assert local.keys() == distributed.keys() and {i for i, _ in local} == {"spk/s0", "spk/s2", "s3.ogg", "s4.flac"}
    for key in local:
        assert local[key] == distributed[key]
