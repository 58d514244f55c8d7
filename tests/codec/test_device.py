"""Device helpers that run anywhere: TF32 is off while the codec runs on CUDA, and put back after."""
from __future__ import annotations

import pytest
import torch

from mimi_cli.codec.device import ieee_float32, in_ieee_float32


@pytest.fixture
def tf32_on():
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def _flags() -> tuple[bool, bool]:
    return torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32


class _Codec:
    def __init__(self, device: str) -> None:
        self.device = torch.device(device)

    @in_ieee_float32
    def step(self, fail: bool = False) -> tuple[bool, bool]:
        if fail:
            raise ValueError("bad input")
        return _flags()


def test_tf32_off_inside_and_restored_after_on_cuda(tf32_on):
    # The flags are process settings: they can be read and set without a GPU.
    assert _Codec("cuda").step() == (False, False)
    assert _flags() == (True, True)
    with pytest.raises(ValueError):
        _Codec("cuda:0").step(fail=True)
    assert _flags() == (True, True)


def test_other_devices_leave_the_flags_alone(tf32_on):
    assert _Codec("cpu").step() == (True, True)
    with ieee_float32(torch.device("mps")):
        assert _flags() == (True, True)


class _Recorder:
    """Stands for audio or codes: the first thing a codec method does with it records the flags."""

    def __getattr__(self, name):
        raise _Seen(_flags())


class _Seen(Exception):
    pass


@pytest.mark.parametrize("call", [
    lambda c, enc, dec: c.encode_frames(enc, _Recorder(), 8),
    lambda c, enc, dec: c.encode_step(enc, _Recorder(), 8),
    lambda c, enc, dec: c.decode_frames(dec, _Recorder()),
], ids=["encode_frames", "encode_step", "decode_frames"])
def test_codec_entry_points_run_in_ieee_float32(tiny, monkeypatch, tf32_on, call):
    """Every path into the network (offline and streaming, both ways) turns TF32 off on CUDA."""
    from mimi_cli.codec.model import MimiCodec

    enc, dec = tiny.init_encoder_state(1), tiny.init_decoder_state(1)  # made on the CPU
    monkeypatch.setattr(MimiCodec, "device", property(lambda self: torch.device("cuda")))
    with pytest.raises(_Seen) as seen:
        call(tiny, enc, dec)
    assert seen.value.args[0] == (False, False)
    assert _flags() == (True, True)
