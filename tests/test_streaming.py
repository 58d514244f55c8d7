"""The live-pipe library: frames leave one by one, before the audio after them is encoded."""
from __future__ import annotations

import numpy as np

from mimi_cli.formats.pcm import PcmFormat
from mimi_cli.streaming import StreamEncoder
from tests.conftest import noise


def test_each_frame_leaves_before_the_next_frames_samples_go_in(tiny):
    fmt = PcmFormat(rate=24000, channels=1, sample_format="f32le")
    encoder = StreamEncoder(tiny, fmt, 8)
    audio = noise(1, 1920 * 2 + 700)[0, 0].numpy()
    frames = encoder.feed(audio.tobytes())  # two and a half frames in one read
    first = next(frames)
    assert first.shape == (8, 1)
    assert tiny.samples_in_frame(encoder.state) == 0 and encoder.state.transformer.offsets.item() == 2
    rest = list(frames)
    assert [c.shape for c in rest] == [(8, 1)]
    assert tiny.samples_in_frame(encoder.state) == 700
    last = list(encoder.finish())
    codes = np.concatenate([first, *rest, *last], axis=1)
    np.testing.assert_array_equal(codes, tiny.encode(noise(1, 1920 * 2 + 700), 8)[0].numpy())
