"""The live-pipe library: frames leave one by one, before the audio after them is encoded
(thread counts: tests/test_threads.py)."""
from __future__ import annotations

import numpy as np
import torch

from mimi_cli.formats.pcm import PcmFormat
from mimi_cli.streaming import StreamEncoder
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
