"""The static streaming step: one graph for every frame under torch.compile, eager's codes.

The graphs are counted with a backend of our own (torch.compile's public hook for backends): it
is called once per graph dynamo makes, so a recompile shows as a second call. It runs the traced
graph as it is, so these tests check the trace, not a compiler's kernels (benchmarks/compile_step.py
measures inductor's, with its codes).
"""
from __future__ import annotations

import pytest
import torch

from mimi_cli.codec import concat_states, load_codec
from mimi_cli.codec.static import decode_frame, encode_frame, state_names, state_tensors
from tests.helpers import golden_input, noise

FRAME = 1920


class Counting:
    """A torch.compile backend that counts the graphs it is given and runs each as traced."""

    def __init__(self) -> None:
        self.graphs = 0

    def __call__(self, gm, example_inputs):
        self.graphs += 1
        return gm.forward


@pytest.fixture(scope="module")
def codec():
    """A full-size codec of its own: compile_steps changes how the shared ones would run."""
    return load_codec("synthetic:0", device="cpu")


@pytest.fixture
def compiled(codec):
    backend = Counting()
    codec.compile_steps(backend=backend)
    yield codec, backend
    codec.compiled = None


def frames_of(audio: torch.Tensor, n: int) -> list[torch.Tensor]:
    return [audio[..., i * FRAME:(i + 1) * FRAME] for i in range(n)]


def test_200_frames_make_one_graph_each_way_with_eager_codes_and_audio(codec, compiled):
    """The ring's write index and positions are tensors: frame 200 runs the graph frame 1 made."""
    _, backend = compiled
    n = 200
    audio = torch.cat([golden_input("long")] * 2, dim=-1)[..., :n * FRAME]
    codec.compiled, kept = None, codec.compiled
    eager = codec.encode(audio, 8)
    eager_audio = codec.decode(eager)
    codec.compiled = kept
    state = codec.init_encoder_state(1)
    codes = torch.cat([codec.encode_frames(state, f, 8) for f in frames_of(audio, n)], dim=-1)
    assert backend.graphs == 1
    assert torch.equal(codes, eager)  # every frame, every codebook
    dec = codec.init_decoder_state(1)
    audio_out = torch.cat([codec.decode_frames(dec, eager[..., i:i + 1]) for i in range(n)], dim=-1)
    assert backend.graphs == 2
    torch.testing.assert_close(audio_out, eager_audio, rtol=0, atol=1e-5)


def test_partial_frames_joins_leaves_and_resets_work_around_the_compiled_step(codec, compiled):
    """The state object stays the public face: pieces of frames go eager, whole frames compiled,
    and streams joined, dropped or restarted between frames keep their own codes."""
    a, b = noise(1, 12 * FRAME, seed=1), noise(1, 12 * FRAME, seed=2)
    codec.compiled, kept = None, codec.compiled
    alone_a, alone_b = codec.encode(a, 8), codec.encode(b, 8)
    codec.compiled = kept
    # Pieces that are not frames: the state carries the partial frame, then whole frames compile.
    state = codec.init_encoder_state(1)
    pieces = [a[..., :700], a[..., 700:FRAME * 3 + 5], a[..., FRAME * 3 + 5:FRAME * 4]]
    pieces += frames_of(a[..., FRAME * 4:], 8)
    codes = torch.cat([codec.encode_step(state, p[:, 0], 8) for p in pieces], dim=-1)
    assert torch.equal(codes, alone_a)
    # b joins a at frame 4 from a fresh state; a leaves at frame 8; b restarts at frame 10.
    sa, sb = codec.init_encoder_state(1), codec.init_encoder_state(1)
    first_a = torch.cat([codec.encode_frames(sa, f, 8) for f in frames_of(a, 4)], dim=-1)
    both = concat_states([sa, sb])
    pair = torch.cat([a[..., 4 * FRAME:], b[..., :8 * FRAME]], dim=0)
    joined = torch.cat([codec.encode_frames(both, f, 8) for f in frames_of(pair, 4)], dim=-1)
    assert torch.equal(torch.cat([first_a, joined[:1]], dim=-1), alone_a[..., :8])
    assert torch.equal(joined[1:], alone_b[..., :4])
    only_b = both.select([1])
    more_b = torch.cat([codec.encode_frames(only_b, f, 8) for f in frames_of(b[..., 4 * FRAME:], 2)], dim=-1)
    assert torch.equal(more_b, alone_b[..., 4:6])
    only_b.reset(0)
    again = torch.cat([codec.encode_frames(only_b, f, 8) for f in frames_of(b, 3)], dim=-1)
    assert torch.equal(again, alone_b[..., :3])


def test_the_functional_step_leaves_its_inputs_alone_and_names_its_state(codec):
    """What the exporter traces: `copy` steps return the next state and do not write the one given."""
    state = codec.init_encoder_state(2)
    tensors = [t.clone() for t in state_tensors(state)]
    before = [t.clone() for t in tensors]
    pcm = noise(2, FRAME, seed=3)[:, 0]
    with torch.inference_mode():
        out = encode_frame(codec, 4, pcm, *tensors, copy=True)
    assert all(torch.equal(t, b) for t, b in zip(tensors, before))
    assert out[0].shape == (2, 4) and len(out) == 1 + len(tensors)
    names = state_names(state)
    assert len(names) == len(tensors) == len(set(names))
    assert names[names.index("write_index")] and out[1 + names.index("write_index")].item() == 2
    with torch.inference_mode():
        again = encode_frame(codec, 4, noise(2, FRAME, seed=4)[:, 0], *out[1:], copy=True)
    dec = state_tensors(codec.init_decoder_state(2))
    with torch.inference_mode():
        audio = decode_frame(codec, again[0], *[t.clone() for t in dec], copy=True)
    assert audio[0].shape == (2, FRAME)
