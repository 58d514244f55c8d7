"""CLI fixtures: the small corpus written out, and the CLI run in-process on the tiny codec."""
from __future__ import annotations

import pytest
from typer.testing import CliRunner

from mimi_cli import cli
from tests.helpers import write_corpus


@pytest.fixture(autouse=True)
def _keep_thread_count():
    """Commands may set torch's thread count (stream commands default to 1); restore it."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def corpus(tmp_path):
    """CORPUS (tests/helpers.py) written under tmp_path/corpus."""
    return write_corpus(tmp_path / "corpus")


@pytest.fixture
def run(monkeypatch, tiny, tmp_path):
    """Runs `mimi ARGS...` in-process on the tiny codec, from tmp_path; returns the click Result."""
    monkeypatch.setattr(cli, "_load", lambda weights, device, dtype: tiny)
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()

    def invoke(*args: str, input: bytes | None = None):
        return runner.invoke(cli.app, [str(a) for a in args], input=input, catch_exceptions=False)
    return invoke
