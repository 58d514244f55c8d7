"""The one batch step every job uses: an item gets the same codes and audio in a batch as alone."""
import math

import numpy as np
import pytest
import torch

from mimi_cli.codec.batch import decode_batch, encode_batch, encode_blocks, pad, plan_batches
from mimi_cli.spec import FRAME_SAMPLES

K = 8


def clips(lengths, seed=0):
    rng = np.random.default_rng(seed)
    return [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in lengths]


def test_an_item_gets_the_same_codes_in_a_batch_as_alone(tiny):
    lengths = [FRAME_SAMPLES * 7 + 300, FRAME_SAMPLES * 3, FRAME_SAMPLES * 5 + 1, 17]
    audio = clips(lengths)
    together = encode_batch(tiny, audio, K)
    for pcm, codes, n in zip(audio, together, lengths):
        alone = tiny.encode(torch.from_numpy(pcm)[None, None], K)[0].numpy()
        assert codes.shape == (K, math.ceil(n / FRAME_SAMPLES))
        assert np.array_equal(codes, alone)


def test_an_item_gets_the_same_audio_in_a_batch_as_alone(tiny):
    codes = encode_batch(tiny, clips([FRAME_SAMPLES * 9, FRAME_SAMPLES * 2 + 5, FRAME_SAMPLES * 4], seed=1), K)
    wanted = [FRAME_SAMPLES * 9 - 10, FRAME_SAMPLES * 2 + 5, FRAME_SAMPLES * 4]
    together = decode_batch(tiny, codes, wanted)
    for c, audio, n in zip(codes, together, wanted):
        alone = decode_batch(tiny, [c])[0]
        assert alone.shape == (c.shape[1] * FRAME_SAMPLES,)
        assert audio.shape == (n,)
        np.testing.assert_allclose(audio, alone[:n], rtol=0, atol=1e-6)


def test_an_empty_batch_is_no_work(tiny):
    assert encode_batch(tiny, [], K) == [] and decode_batch(tiny, []) == []


def test_pad_fills_on_the_right_and_writes_into_a_given_buffer():
    a, b = np.array([[1, 2, 3]]), np.array([[4]])
    assert pad([a, b], 9).tolist() == [[[1, 2, 3]], [[4, 9, 9]]]
    out = np.zeros((2, 1, 3), np.int64)
    assert pad([a, b], -1, out=out) is out and out.tolist() == [[[1, 2, 3]], [[4, -1, -1]]]
    with pytest.raises(ValueError):
        pad([a, b], 0, out=np.zeros((2, 1, 2)))


def test_plan_batches_keeps_lengths_together_within_the_budget():
    items = [(name, length) for name, length in [("a", 10), ("b", 1), ("c", 9), ("d", 2), ("e", 1)]]
    batches = plan_batches(items, budget=20, max_batch=3)
    assert batches == [["b", "e", "d"], ["c", "a"]]
    assert all(len(b) <= 3 for b in batches)
    by_group = plan_batches([("x1", 1), ("y1", 1), ("x2", 1)], budget=100, max_batch=8, group=lambda n: n[0])
    assert by_group == [["x1", "x2"], ["y1"]]


@pytest.mark.parametrize("rows", [1, 2])
def test_audio_that_arrives_in_blocks_gets_the_codes_of_the_whole(tiny, rows):
    """encode_blocks takes blocks of any length as a file's reader gives them and never holds the
    item whole; its codes are encode_batch's of the rows whole, on every frame."""
    n = FRAME_SAMPLES * 150 + 777  # past two of the offline chunks, a partial frame at the end
    audio = np.stack(clips([n] * rows, seed=2))
    cuts = [0, 1, 5000, 5001, 70000, 122880, 300000, n]
    blocks = [audio[:, a:b] for a, b in zip(cuts, cuts[1:])]
    codes, samples = encode_blocks(tiny, iter(blocks), rows, K)
    assert samples == n
    whole = encode_batch(tiny, list(audio), K)
    for got, want in zip(codes, whole, strict=True):
        assert got.dtype == np.int16 and np.array_equal(got, want)
