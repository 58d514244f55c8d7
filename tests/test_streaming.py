"""The live-pipe library: frames leave one by one, before the audio after them is encoded; one
thread while input is backlogged."""
from __future__ import annotations

import io
import os

import numpy as np
import pytest
import torch

from mimi_cli.formats.pcm import PcmFormat
from mimi_cli.streaming import BacklogThreads, StreamEncoder, backlog_threads_useful
from tests.helpers import noise


def test_each_frame_leaves_before_the_next_frames_samples_go_in(tiny):
    threads = torch.get_num_threads()
    encoder = StreamEncoder(tiny, PcmFormat(rate=24000, channels=1, sample_format="f32le"), 8)
    audio = noise(1, 1920 * 3)[0, 0].numpy()
    frames = encoder.feed(audio[:1920 * 2 + 700].tobytes())  # two frames and a bit in one read
    first = next(frames)
    assert first.shape == (8, 1)
    assert encoder.state.samples_in_frame == 0 and encoder.state.transformer.offsets.item() == 2
    rest = list(frames)
    assert [c.shape for c in rest] == [(8, 1)]
    # Under three quarters of a frame: held back (downstream is busy with the frame just out) ...
    assert (encoder.state.samples_in_frame, encoder.held.size) == (0, 700)
    assert list(encoder.feed(audio[1920 * 2 + 700:1920 * 2 + 1500].tobytes())) == []
    # ... from then on, the SEANet front takes each piece as it comes.
    assert (encoder.state.samples_in_frame, encoder.held.size) == (1500, 0)
    assert torch.get_num_threads() == threads
    assert list(encoder.feed(audio[1920 * 2 + 1500:1920 * 2 + 1600].tobytes())) == []
    assert encoder.state.samples_in_frame == 1600
    last = list(encoder.finish())
    codes = np.concatenate([first, *rest, *last], axis=1)
    np.testing.assert_array_equal(codes, tiny.encode(noise(1, 1920 * 3)[..., :1920 * 2 + 1600], 8)[0].numpy())


def test_samples_held_back_are_not_lost_at_the_end(tiny):
    encoder = StreamEncoder(tiny, PcmFormat(rate=24000, channels=1, sample_format="f32le"), 8)
    audio = noise(1, 1920 + 500)
    assert len(list(encoder.feed(audio[0, 0].numpy().tobytes()))) == 1
    assert encoder.held.size == 500
    last = list(encoder.finish())
    assert len(last) == 1
    np.testing.assert_array_equal(last[0], tiny.encode(audio, 8)[0, :, 1:].numpy())


@pytest.fixture
def two_threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


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
