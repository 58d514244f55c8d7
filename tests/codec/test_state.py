"""Streaming equals offline; streams in a batch are independent; state stays bounded."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mimi_cli.codec import FRAME_SAMPLES, StreamError, concat_states
from tests.helpers import noise

K = 8


def stream_encode(codec, audio, chunk_sizes, num_codebooks=K):
    """Encodes [B, 1, T] by feeding chunks of the given sizes in turn (cycled), then flushing."""
    state = codec.init_encoder_state(audio.shape[0])
    out, pos, i = [], 0, 0
    while pos < audio.shape[-1]:
        n = chunk_sizes[i % len(chunk_sizes)]
        out.append(codec.encode_step(state, audio[..., pos:pos + n], num_codebooks))
        pos, i = pos + n, i + 1
    out.append(codec.encode_flush(state, num_codebooks))
    return torch.cat(out, dim=-1)


@pytest.mark.parametrize("chunks", [[1920], [1], [480], [1921], [7, 1913, 3000, 1], [5000]])
def test_streaming_encode_equals_offline(tiny, chunks):
    samples = 1920 * 9 + 700 if chunks != [1] else 1920 * 3 + 5  # 1-sample steps are slow: keep short
    audio = noise(2, samples)
    offline = tiny.encode(audio, K)
    assert offline.shape == (2, K, math.ceil(samples / FRAME_SAMPLES))
    assert torch.equal(stream_encode(tiny, audio, chunks), offline)


def test_codes_leave_as_soon_as_the_frame_completes(tiny):
    state = tiny.init_encoder_state(1)
    audio = noise(1, 1920 * 2)
    assert tiny.encode_step(state, audio[..., :1919]).shape[-1] == 0
    assert tiny.encode_step(state, audio[..., 1919:1920]).shape[-1] == 1
    assert tiny.encode_step(state, audio[..., 1920:]).shape[-1] == 1
    assert tiny.encode_flush(state).shape[-1] == 0  # nothing pending: nothing to pad


def test_offline_chunking_does_not_change_codes(tiny):
    audio = noise(1, 1920 * 30)
    assert torch.equal(tiny.encode(audio, K, chunk_frames=1), tiny.encode(audio, K, chunk_frames=1000))
    codes = tiny.encode(audio, K)
    torch.testing.assert_close(tiny.decode(codes, chunk_frames=1), tiny.decode(codes, chunk_frames=7),
                               rtol=0, atol=1e-6)  # float sums in another order


def test_streaming_decode_equals_offline(tiny):
    codes = tiny.encode(noise(2, 1920 * 12), K)
    state = tiny.init_decoder_state(2)
    frames = [tiny.decode_step(state, codes[..., f:f + 1]) for f in range(codes.shape[-1])]
    assert all(f.shape == (2, 1, FRAME_SAMPLES) for f in frames)
    torch.testing.assert_close(torch.cat(frames, -1), tiny.decode(codes), rtol=0, atol=1e-6)


def test_batched_streams_equal_single_streams(tiny):
    audio = noise(3, 1920 * 10)
    batched = stream_encode(tiny, audio, [1920])
    for b in range(3):
        assert torch.equal(batched[b:b + 1], stream_encode(tiny, audio[b:b + 1], [1920]))


def test_reset_one_stream_leaves_the_others(tiny):
    a, b, c = noise(1, 1920 * 12, 1), noise(1, 1920 * 12, 2), noise(1, 1920 * 5, 3)
    state = tiny.init_encoder_state(2)
    first = tiny.encode_step(state, torch.cat([a[..., :1920 * 7], b[..., :1920 * 7]]))
    state.reset(1)  # stream 1 ends; a new stream `c` takes its row
    rest = tiny.encode_step(state, torch.cat([a[..., 1920 * 7:], c]))
    assert torch.equal(torch.cat([first[:1], rest[:1]], -1), tiny.encode(a, K))
    assert torch.equal(rest[1:], tiny.encode(c, K))


@pytest.mark.parametrize("samples", [100, 500])  # short of one front hop; front outputs held
def test_reset_mid_frame_is_refused(tiny, samples):
    state = tiny.init_encoder_state(2)
    tiny.encode_step(state, noise(2, samples)[:, 0])
    with pytest.raises(StreamError, match=rf"frame boundary \({samples} samples of the current frame"):
        state.reset(0)


def test_front_runs_on_samples_as_they_arrive(tiny, monkeypatch):
    """When a frame's last samples arrive, the SEANet front runs on those alone (the earlier
    ones went through it when they came), so only the rest of the network is left to run."""
    assert tiny.encoder.front_hop == 120
    seen = []
    front = tiny.encoder.front
    monkeypatch.setattr(tiny.encoder, "front", lambda x, ctx: seen.append(x.shape[1]) or front(x, ctx))
    audio = noise(1, 1920 * 2)
    state = tiny.init_encoder_state(1)
    bounds = [0, 50, 120, 1800, 1919, 1920, 3840]
    codes = [tiny.encode_step(state, audio[..., a:b]) for a, b in zip(bounds, bounds[1:])]
    assert seen == [120, 1680, 120, 1920]  # whole hops, each sample once
    assert [c.shape[-1] for c in codes] == [0, 0, 0, 0, 1, 1]
    assert state.samples_in_frame == 0
    assert torch.equal(torch.cat(codes, -1), tiny.encode(audio, K))


def test_flush_pads_a_frame_held_as_front_outputs(tiny):
    audio = noise(1, 960)  # exactly 8 hops: nothing waits as samples, all as front outputs
    state = tiny.init_encoder_state(1)
    assert tiny.encode_step(state, audio).shape[-1] == 0
    assert (state.pending.shape[-1], state.latents.shape[1], state.samples_in_frame) == (0, 8, 960)
    assert torch.equal(tiny.encode_flush(state), tiny.encode(audio, K))


def test_concat_refuses_streams_at_different_points_of_a_frame(tiny):
    a, b = tiny.init_encoder_state(1), tiny.init_encoder_state(1)
    tiny.encode_step(a, noise(1, 500)[:, 0])
    tiny.encode_step(b, noise(1, 620)[:, 0])  # the same 20 samples short of a hop, one hop more
    with pytest.raises(StreamError, match="different points of a frame"):
        concat_states([a, b])


def test_select_and_concat_streams(tiny):
    a, b, c = (noise(1, 1920 * 10, s) for s in (1, 2, 3))
    state = tiny.init_encoder_state(2)
    head = tiny.encode_step(state, torch.cat([a, b])[..., :1920 * 4])
    # Drop stream 0, then add a new stream `c` beside the remaining one.
    joined = concat_states([state.select([1]), tiny.init_encoder_state(1)])
    tail = tiny.encode_step(joined, torch.cat([b[..., 1920 * 4:], c[..., :1920 * 6]]))
    assert torch.equal(torch.cat([head[1:], tail[:1]], -1), tiny.encode(b, K))
    assert torch.equal(tail[1:], tiny.encode(c[..., :1920 * 6], K))


def test_clone_is_independent(tiny):
    audio = noise(1, 1920 * 8)
    state = tiny.init_encoder_state(1)
    tiny.encode_step(state, audio[..., :1920 * 4])
    snapshot = state.clone()
    x = tiny.encode_step(state, audio[..., 1920 * 4:])
    y = tiny.encode_step(snapshot, audio[..., 1920 * 4:])
    assert torch.equal(x, y)


def test_decoder_reset_one_stream(tiny):
    codes = tiny.encode(noise(2, 1920 * 9), K)
    state = tiny.init_decoder_state(2)
    tiny.decode_step(state, codes[..., :4])
    state.reset(0)
    out = tiny.decode_step(state, codes[..., 4:])
    torch.testing.assert_close(out[:1], tiny.decode(codes[:1, :, 4:]), rtol=0, atol=1e-6)
    torch.testing.assert_close(out[1:], tiny.decode(codes[1:])[..., 4 * 1920:], rtol=0, atol=1e-6)


def test_state_memory_is_constant_in_stream_length(tiny):
    state = tiny.init_encoder_state(1)
    dstate = tiny.init_decoder_state(1)
    size, dsize = state.nbytes(), dstate.nbytes()
    for _ in range(3 * tiny.config.context):  # well past the attention window
        codes = tiny.encode_step(state, noise(1, 1920)[:, 0])
        tiny.decode_step(dstate, codes)
    assert state.nbytes() == size and dstate.nbytes() == dsize


def _dense_transformer(transformer, x):
    """Reference: the whole sequence at once with an explicit banded causal mask."""
    from mimi_cli.codec.transformer import apply_rope, rope_angles

    c = transformer.config
    B, T, D = x.shape
    pos = torch.arange(T)[None].expand(B, T)
    rope = rope_angles(pos, D // c.num_heads, c.max_period)
    i, j = torch.arange(T)[:, None], torch.arange(T)[None]
    mask = (j <= i) & (i - j < c.context)
    for layer in transformer.layers:
        q, k, v = layer.attn_in(layer.norm_attn(x)).view(B, T, 3, c.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        w = (q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])).masked_fill(~mask, float("-inf")).softmax(-1)
        x = x + layer.scale_attn * layer.attn_out((w @ v).transpose(1, 2).reshape(B, T, D))
        x = x + layer.scale_ff * layer.ff_out(F.gelu(layer.ff_in(layer.norm_ff(x))))
    return x


@pytest.mark.parametrize("step", [1, 2, 5, 40])
def test_ring_kv_cache_equals_dense_windowed_attention(tiny, step):
    """Past the context (6 steps in the tiny config) the ring cache keeps exactly the window."""
    tr = tiny.encoder_transformer
    x = torch.randn(2, 40, tiny.config.dimension)
    with torch.no_grad():
        expected = _dense_transformer(tr, x)
        state = tr.init_state(2, x.device, x.dtype)
        got = torch.cat([tr(x[:, i:i + step], state) for i in range(0, 40, step)], 1)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_long_offline_chunk_uses_query_blocks(tiny, monkeypatch):
    from mimi_cli.codec import transformer

    tr = tiny.encoder_transformer
    x = torch.randn(1, 50, tiny.config.dimension)
    monkeypatch.setattr(transformer, "QUERY_BLOCK", 8)
    with torch.no_grad():
        got = tr(x, tr.init_state(1, x.device, x.dtype))
        expected = _dense_transformer(tr, x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_bad_inputs_are_clear(tiny):
    state = tiny.init_encoder_state(2)
    with pytest.raises(StreamError, match=r"expected audio of shape \[2, samples\]"):
        tiny.encode_step(state, torch.zeros(3, 100))
    with pytest.raises(ValueError, match="num_codebooks must be in 1..8"):
        tiny.encode(torch.zeros(1, 1, 1920), num_codebooks=9)
    with pytest.raises(ValueError, match="codes must be in 0..63"):
        tiny.decode(torch.full((1, 2, 3), 64))
    assert tiny.encode(torch.zeros(1, 1, 0), K).shape == (1, K, 0)
