"""How the codec's entry points run, anywhere: in inference mode, with TF32 off on CUDA (restored
after), handing back ordinary tensors."""
from __future__ import annotations

import pytest
import torch

from mimi_cli.codec.device import ieee_float32
from tests.helpers import noise


@pytest.fixture
def tf32_on():
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def _flags() -> tuple[bool, bool]:
    return torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32


def test_tf32_off_inside_and_restored_after_on_cuda(tf32_on):
    # The flags are process settings: they can be read and set without a GPU.
    with ieee_float32(torch.device("cuda")):
        assert _flags() == (False, False)
    assert _flags() == (True, True)
    with pytest.raises(ValueError), ieee_float32(torch.device("cuda:0")):
        raise ValueError("bad input")
    assert _flags() == (True, True)


def test_other_devices_leave_the_flags_alone(tf32_on):
    for device in ("cpu", "mps"):
        with ieee_float32(torch.device(device)):
            assert _flags() == (True, True)


class _Recorder:
    """Stands for audio or codes: the first thing a codec method does with it records how it runs."""

    def __getattr__(self, name):
        raise _Seen(_flags(), torch.is_inference_mode_enabled())


class _Seen(Exception):
    pass


ENTRY_POINTS = {
    "encode_frames": lambda c, enc, dec: c.encode_frames(enc, _Recorder(), 8),
    "encode_step": lambda c, enc, dec: c.encode_step(enc, _Recorder(), 8),
    "decode_frames": lambda c, enc, dec: c.decode_frames(dec, _Recorder()),
}


@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_entry_points_run_in_inference_mode_without_tf32_on_cuda(tiny, monkeypatch, tf32_on, name):
    """Every way into the network (offline and streaming, both ways), as a CUDA codec runs it."""
    from mimi_cli.codec.model import MimiCodec

    enc, dec = tiny.init_encoder_state(1), tiny.init_decoder_state(1)  # made on the CPU
    monkeypatch.setattr(MimiCodec, "device", property(lambda self: torch.device("cuda")))
    with pytest.raises(_Seen) as seen:
        ENTRY_POINTS[name](tiny, enc, dec)
    assert seen.value.args == ((False, False), True)
    assert _flags() == (True, True) and not torch.is_inference_mode_enabled()


def test_results_are_ordinary_tensors_and_states_stay_usable(tiny):
    """What the codec returns works with autograd and in place; a stepped state can be reset,
    selected and stepped again outside inference mode."""
    audio = noise(2, 1920 * 3)
    weight = torch.ones(1, requires_grad=True)
    state = tiny.init_encoder_state(2)
    step_codes = tiny.encode_step(state, audio)
    codes = tiny.encode(audio)
    decoded = tiny.decode(codes)
    dstate = tiny.init_decoder_state(2)
    step_audio = tiny.decode_step(dstate, codes)
    for t in (step_codes, codes, decoded, step_audio):
        assert not t.is_inference()
    (decoded * weight).sum().backward()  # would fail on an inference tensor
    assert weight.grad is not None
    codes += 0  # in place
    state.reset(1)
    dstate.reset(0)
    torch.testing.assert_close(tiny.encode_step(state.select([1]), audio[1:, :, :1920]), codes[1:, :, :1])
