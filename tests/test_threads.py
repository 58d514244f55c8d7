"""Torch's CPU thread count: changed only inside `torch_threads` (every library entry point that
changes it puts it back), and the stream commands' policy (one thread while input is backlogged)."""
from __future__ import annotations

import io
import os

import numpy as np
import pytest
import soundfile as sf
import torch

from mimi_cli import bench, ray_engine
from mimi_cli.codec import MimiConfig
from mimi_cli.formats.pcm import StreamFormatError
from mimi_cli.formats.shards import SourceInfo
from mimi_cli.streaming import decode_stream, encode_stream
from mimi_cli.threads import BacklogThreads, ThreadPolicy, backlog_threads_useful, torch_threads
from tests.helpers import noise


@pytest.fixture
def two_threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


def counts_during(monkeypatch, owner, name: str) -> list[int]:
    """Wraps `owner.name` so that each call records torch's thread count; returns the record."""
    seen: list[int] = []
    original = getattr(owner, name)

    def recording(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return original(*args, **kwargs)
    monkeypatch.setattr(owner, name, recording)
    return seen


def test_torch_threads_puts_back_the_count_it_found(two_threads):
    with torch_threads(3):
        assert torch.get_num_threads() == 3
        torch.set_num_threads(1)  # changed again inside (as BacklogThreads does)
    assert torch.get_num_threads() == 2
    with pytest.raises(RuntimeError), torch_threads(1):
        raise RuntimeError("a step failed")
    assert torch.get_num_threads() == 2
    with torch_threads(None):
        assert torch.get_num_threads() == 2


def test_stream_encode_and_decode_use_their_policy_and_leave_the_count(tiny, two_threads, tmp_path, monkeypatch):
    path = tmp_path / "in.wav"
    sf.write(path, noise(1, 1920 * 6 + 500)[0, 0].numpy(), 24000, subtype="PCM_16")
    steps = counts_during(monkeypatch, tiny, "encode_step")
    tokens = io.BytesIO()
    with open(path, "rb", buffering=0) as stream:  # a whole file waiting: the input is backlogged
        stats = encode_stream(tiny, stream, tokens, 8, threads=ThreadPolicy(3, follow_backlog=True))
    assert stats.frames == 7
    assert set(steps) == {3, 1}  # its own count, one thread once backlogged (and for pieces of a frame)
    assert torch.get_num_threads() == 2

    steps = counts_during(monkeypatch, tiny, "decode_step")
    decode_stream(tiny, io.BytesIO(tokens.getvalue()), io.BytesIO(), threads=ThreadPolicy(3))
    assert set(steps) == {3} and torch.get_num_threads() == 2

    with pytest.raises(StreamFormatError):
        encode_stream(tiny, io.BytesIO(b"not a wav file at all, not even close" * 4), io.BytesIO(),
                      threads=ThreadPolicy(3))
    assert torch.get_num_threads() == 2


def test_run_bench_measures_on_its_threads_and_leaves_the_count(two_threads):
    settings = bench.BenchSettings(seconds=1.0, repeats=1, stream_frames=4, streams=(1,), num_codebooks=4)
    result = bench.run_bench("synthetic:3", device="cpu", threads=3, settings=settings, config=MimiConfig.tiny())
    assert result.threads == 3
    assert torch.get_num_threads() == 2


def test_ray_workers_encode_on_their_threads_and_leave_the_count(tiny, two_threads, monkeypatch):
    import mimi_cli.codec

    monkeypatch.setattr(mimi_cli.codec, "load_codec", lambda weights, device, dtype: tiny)
    worker = ray_engine._EncodeWorker("synthetic:3", "cpu", "float32", 8, threads=3)
    assert torch.get_num_threads() == 2
    steps = counts_during(monkeypatch, ray_engine, "encode_items")
    batch = {"id": np.array(["a"]), "path": np.array(["a.wav"]), "error": np.array([""]), "channel": np.array([0]),
             "pcm": [noise(1, 4000)[0, 0].numpy()],
             **{k: np.array([v if v is not None else ""]) for k, v in SourceInfo().columns().items()}}
    out = worker(batch)
    assert out["codes"][0].shape == (8, 3) and steps == [3]
    assert torch.get_num_threads() == 2


def test_backlogged_input_steps_on_one_thread_live_input_on_the_usual(two_threads):
    read_end, write_end = os.pipe()
    try:
        with os.fdopen(read_end, "rb", buffering=0) as stream:
            policy = BacklogThreads(stream, frame_bytes=3840, patience=2)
            os.write(write_end, b"\0" * 3839)  # less than a frame waiting: live
            policy.after_frame()
            policy.after_frame()
            assert torch.get_num_threads() == 2
            os.write(write_end, b"\0")  # a whole frame waiting
            policy.after_frame()
            assert torch.get_num_threads() == 2  # one frame behind is not yet a backlog
            policy.after_frame()
            assert torch.get_num_threads() == 1
            stream.read(3840)  # caught up
            policy.after_frame()
            assert torch.get_num_threads() == 1
            policy.after_frame()
            assert torch.get_num_threads() == 2
            os.write(write_end, b"\0" * 8000)
            policy.after_frame()
            policy.after_frame()
            assert torch.get_num_threads() == 1
            policy.close()  # the end of the stream puts the thread count back
            assert torch.get_num_threads() == 2
    finally:
        os.close(write_end)


def test_a_file_piped_in_whole_counts_as_backlogged(two_threads, tmp_path):
    path = tmp_path / "audio.raw"
    path.write_bytes(b"\0" * 10000)
    with open(path, "rb", buffering=0) as stream:
        policy = BacklogThreads(stream, frame_bytes=3840, patience=1)
        policy.after_frame()
        assert torch.get_num_threads() == 1
        stream.read(8000)  # what is left of the file: less than a frame
        policy.after_frame()
        assert torch.get_num_threads() == 2


def test_streams_without_a_descriptor_are_left_alone(two_threads):
    policy = BacklogThreads(io.BytesIO(b"\0" * 10000), frame_bytes=3840, patience=1)
    policy.after_frame()
    assert torch.get_num_threads() == 2


def test_adapting_only_where_two_processes_would_oversubscribe(monkeypatch):
    for cpus, threads, useful in [(2, 2, True), (4, 2, True), (5, 2, False), (16, 2, False), (2, 1, False)]:
        monkeypatch.setattr(os, "cpu_count", lambda cpus=cpus: cpus)
        assert backlog_threads_useful(threads) is useful, (cpus, threads)


def test_a_disabled_policy_never_changes_the_thread_count(two_threads, tmp_path):
    path = tmp_path / "audio.raw"
    path.write_bytes(b"\0" * 10000)
    with open(path, "rb", buffering=0) as stream, BacklogThreads(stream, 3840, patience=1, enabled=False) as policy:
        policy.after_frame()
        assert torch.get_num_threads() == 2
