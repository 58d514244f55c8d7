"""`mimi export`: ONNX graphs that onnxruntime runs to `mimi encode`'s codes, without torch.

The graphs come from the real command on full-size synthetic weights; onnxruntime runs them as an
app would, and examples/onnx_stream.py runs in a process where `import torch` fails.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from mimi_cli import cli
from tests.helpers import full_codec

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from mimi_cli.export import ExportError, export_onnx, run_steps, speech_like  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FRAME = 1920


def export(out: Path, *args: str) -> dict:
    result = CliRunner().invoke(cli.app, ["export", str(out), "--weights", "synthetic:0", "--quiet", *args],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads((out / "mimi.json").read_text())


@pytest.fixture(scope="module")
def float32_export(tmp_path_factory):
    """K=8, one stream, float32; exported over a link planted at encoder.onnx (it is replaced, not
    followed) and checked by the export itself on 2 s of audio."""
    out = tmp_path_factory.mktemp("onnx32")
    victim = out.parent / "victim.txt"
    victim.write_text("keep")
    (out / "encoder.onnx").symlink_to(victim)
    manifest = export(out, "-q", "8", "--check-seconds", "2", "--overwrite")
    assert victim.read_text() == "keep" and not (out / "encoder.onnx").is_symlink()
    assert sorted(p.name for p in out.iterdir()) == ["decoder.onnx", "encoder.onnx", "mimi.json"]
    return out, manifest


@pytest.fixture(scope="module")
def float16_export(tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx16")
    return out, export(out, "-q", "4", "--batch-size", "2", "--dtype", "float16", "--check-seconds", "0")


def snr_db(reference: np.ndarray, other: np.ndarray) -> float:
    noise = float(np.sum((reference - other) ** 2))
    return math.inf if noise == 0 else 10 * math.log10(float(np.sum(reference ** 2)) / noise)


def test_the_torch_free_example_gives_the_codes_of_mimi_encode_on_every_frame(float32_export, tmp_path):
    """20 s of speech-like audio through examples/onnx_stream.py in a process without torch: every
    frame's codes are the codec's, and the audio is its decode within float rounding."""
    model_dir, manifest = float32_export
    audio = speech_like(20.0, seed=5)
    sf.write(tmp_path / "in.wav", audio, 24000, subtype="FLOAT")
    script = ("import runpy, sys; sys.modules['torch'] = None; sys.argv = sys.argv[1:]; "
              "runpy.run_path(sys.argv[0], run_name='__main__')")
    done = subprocess.run([sys.executable, "-c", script, str(ROOT / "examples" / "onnx_stream.py"), str(model_dir),
                           str(tmp_path / "in.wav"), "--codes", str(tmp_path / "codes.npy"),
                           "--audio", str(tmp_path / "out.wav")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    codec = full_codec(0)
    expected = codec.encode(torch.from_numpy(audio)[None, None], 8)[0].numpy()
    codes = np.load(tmp_path / "codes.npy")
    assert codes.dtype == np.int64 and codes.shape == expected.shape == (8, 250)
    assert np.array_equal(codes, expected), f"{np.mean(codes == expected):.4f} of codes equal"
    decoded, rate = sf.read(tmp_path / "out.wav", dtype="float32")
    reference = codec.decode(torch.from_numpy(expected)[None])[0, 0].numpy()
    assert rate == 24000 and decoded.shape == reference.shape
    snr = snr_db(reference, decoded)
    assert snr > 60, f"decoded audio SNR {snr:.1f} dB against mimi decode's"


def test_the_manifest_names_every_input_and_output_as_the_graphs_have_them(float32_export):
    model_dir, manifest = float32_export
    assert manifest["opset"] == 18 and manifest["frame_samples"] == FRAME and manifest["num_codebooks"] == 8
    assert manifest["model"]["source"] == "synthetic:0"
    onnx_types = {"tensor(float)": "float32", "tensor(int64)": "int64", "tensor(float16)": "float16"}
    for side in ("encoder", "decoder"):
        graph = manifest[side]
        session = ort.InferenceSession(str(model_dir / graph["file"]), providers=["CPUExecutionProvider"])
        for described, actual in ((graph["inputs"], session.get_inputs()), (graph["outputs"], session.get_outputs())):
            assert [d["name"] for d in described] == [a.name for a in actual]
            assert [d["shape"] for d in described] == [list(a.shape) for a in actual]
            assert [d["dtype"] for d in described] == [onnx_types[a.type] for a in actual]
        state = [d["name"] for d in graph["inputs"][1:]]
        assert [d["name"] for d in graph["outputs"][1:]] == [f"next_{n}" for n in state]
        assert {d["initial"] for d in graph["inputs"][1:]} == {"zeros", "fill:-1"}


def test_float16_in_a_batch_of_two_keeps_each_streams_codes_and_audio_close(float16_export):
    """Two streams step together in one float16 graph; each is measured against the float32 codec
    alone. float16 changes a few codes (the decoder transformer stays float32)."""
    model_dir, manifest = float16_export
    assert manifest["dtype"] == "float16" and manifest["float32_parts"] == ["decoder_transformer"]
    audio = np.stack([speech_like(8.0, seed=11), speech_like(8.0, seed=12)])
    frames = audio.shape[1] // FRAME
    codes = np.stack(run_steps(ort, model_dir, manifest, "encoder",
                               [audio[:, i * FRAME:(i + 1) * FRAME] for i in range(frames)]), -1)
    codec = full_codec(0)
    for row in range(2):
        expected = codec.encode(torch.from_numpy(audio[row])[None, None], 4)[0].numpy()
        assert np.mean(codes[row] == expected) > 0.95
        assert np.mean(codes[row, 0] == expected[0]) > 0.97  # the semantic codebook
    eager = codec.encode(torch.from_numpy(audio)[:, None], 4).numpy()
    decoded = np.concatenate(run_steps(ort, model_dir, manifest, "decoder",
                                       [eager[..., i] for i in range(frames)]), -1)
    reference = codec.decode(torch.from_numpy(eager))[:, 0].numpy()
    for row in range(2):
        assert snr_db(reference[row], decoded[row]) > 30


def test_the_export_records_its_own_check_against_the_float32_codec(float32_export):
    check = float32_export[1]["check"]
    assert check["seconds"] == pytest.approx(2.0, abs=0.1)
    assert check["codes_equal"] == 1.0 and check["frames_all_codes_equal"] == 1.0
    assert check["decode_snr_db"] == "identical" or check["decode_snr_db"] > 60


def test_usage_errors_are_one_line_before_any_work(tmp_path, monkeypatch):
    (tmp_path / "encoder.onnx").write_bytes(b"earlier")
    runner = CliRunner()
    result = runner.invoke(cli.app, ["export", str(tmp_path), "--weights", "synthetic"])
    assert result.exit_code == 2 and "--overwrite" in result.output
    assert (tmp_path / "encoder.onnx").read_bytes() == b"earlier"
    result = runner.invoke(cli.app, ["export", str(tmp_path / "new"), "--format", "tflite"])
    assert result.exit_code == 2 and "onnx" in result.output
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    with pytest.raises(ExportError, match=r"mimi-cli\[export\]"):
        export_onnx(full_codec(0), tmp_path / "x")
