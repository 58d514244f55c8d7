"""Real `mimi encode` processes killed, terminated and racing each other: nothing lost or written twice."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest

from tests.helpers import write_corpus

MIMI = [sys.executable, "-m", "mimi_cli.cli"]
FILES = [(f"in/{i:02d}.wav", 24000, 1, 1.5, "WAV", "PCM_16") for i in range(16)]


def start(*args, cwd, stdin=None):
    env = {**os.environ, "MIMI_WEIGHTS": "synthetic", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([*MIMI, *map(str, args), "-q", "2", "--quiet"], cwd=cwd, env=env, stdin=stdin,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(condition, seconds=120.0):
    end = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.02)


def shards(out):
    return [p for p in out.glob("*.parquet") if not p.name.startswith(".")] if out.is_dir() else []


def rows(out):
    return {r["id"]: r["codes"] for p in shards(out) for r in pq.read_table(p, columns=["id", "codes"]).to_pylist()}


def ids(out):
    return sorted(r["id"] for p in shards(out) for r in pq.read_table(p, columns=["id"]).to_pylist())


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """The corpus, and the dataset an uninterrupted run makes of it."""
    root = tmp_path_factory.mktemp("interrupted")
    write_corpus(root, FILES)
    p = start("encode", "in", "ref", cwd=root)
    assert p.wait(timeout=300) == 0, p.stderr.read()
    return root


@pytest.mark.parametrize("sig,code", [(signal.SIGKILL, -9), (signal.SIGTERM, 143)])
def test_a_killed_run_keeps_finished_shards_and_resumes_exactly(work, sig, code):
    out = work / f"out-{sig.name}"
    p = start("encode", "in", out, "--batch-size", 2, "--commit-seconds", 0, cwd=work)
    wait_for(lambda: len(shards(out)) >= 2 or p.poll() is not None)
    p.send_signal(sig)
    assert p.wait(timeout=60) == code, p.stderr.read()
    if sig == signal.SIGTERM:
        assert "terminated" in p.stderr.read()
    kept = ids(out)
    assert 0 < len(kept) < len(FILES) and len(kept) == len(set(kept))
    assert not [f for f in out.iterdir() if f.name.endswith(".tmp")]
    p = start("encode", "in", out, cwd=work)
    assert p.wait(timeout=300) == 0, p.stderr.read()
    assert ids(out) == sorted(f"{i:02d}.wav" for i in range(len(FILES)))  # every input once
    assert rows(out) == rows(work / "ref")  # and the codes of an uninterrupted run


def test_a_second_writer_is_refused_at_once(work):
    holder = start("encode", "@-", "t.parquet", cwd=work, stdin=subprocess.PIPE)  # waits for its list
    wait_for(lambda: (work / ".t.parquet.lock").exists() and (work / ".t.parquet.lock").read_text())
    second = start("encode", "in", "t.parquet", cwd=work)
    assert second.wait(timeout=120) == 2
    message = second.stderr.read()
    assert "being written by another mimi encode" in message and f"pid {holder.pid}" in message
    holder.stdin.write("in/00.wav\nin/01.wav\n")
    holder.stdin.close()
    assert holder.wait(timeout=300) == 0, holder.stderr.read()
    assert not (work / ".t.parquet.lock").exists()
    assert pq.read_table(work / "t.parquet").num_rows == 2


def test_array_jobs_write_side_by_side_but_not_twice(work):
    out = work / "array"
    jobs = [start("encode", "@-", out, "--shard-index", i, "--num-shards", 2, cwd=work, stdin=subprocess.PIPE)
            for i in range(2)]
    wait_for(lambda: all((out / f".mimi.shard-{i:05d}.lock").exists() for i in range(2)))
    for args in (["--shard-index", "1", "--num-shards", "2"], []):
        refused = start("encode", "in", out, *args, cwd=work)
        assert refused.wait(timeout=120) == 2 and "being written by" in refused.stderr.read()
    for job in jobs:
        job.stdin.write("".join(f"in/{i:02d}.wav\n" for i in range(len(FILES))))
        job.stdin.close()
    for job in jobs:
        assert job.wait(timeout=300) == 0, job.stderr.read()
    assert ids(out) == sorted(f"in/{i:02d}.wav" for i in range(len(FILES)))
