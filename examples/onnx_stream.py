"""Streams a WAV file through a `mimi export` model with onnxruntime alone (no torch).

    python examples/onnx_stream.py MODEL_DIR IN.wav --codes OUT.npy --audio OUT.wav

OUT.npy holds the codes as int64 [K, frames]; OUT.wav the audio decoded from them. Each 80 ms
frame goes through encoder.onnx then decoder.onnx, feeding every next_<name> output back in as
<name>: that is all a streaming app does. Needs: onnxruntime, numpy, soundfile.
"""
import argparse
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import soundfile as sf


class Step:
    """One graph and its state: call it with a frame's input, get its first output."""

    def __init__(self, model_dir: Path, graph: dict) -> None:
        self.session = ort.InferenceSession(str(model_dir / graph["file"]), providers=["CPUExecutionProvider"])
        self.first = graph["inputs"][0]
        self.names = [d["name"] for d in graph["inputs"][1:]]
        self.state = {d["name"]: np.full(d["shape"], -1 if d["initial"] == "fill:-1" else 0, d["dtype"])
                      for d in graph["inputs"][1:]}

    def __call__(self, x: np.ndarray) -> np.ndarray:
        batch = np.zeros(self.first["shape"], self.first["dtype"])
        batch[0] = x  # this file is stream 0 of the graph's batch
        out = self.session.run(None, {self.first["name"]: batch, **self.state})
        self.state = dict(zip(self.names, out[1:]))
        return out[0][0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model_dir", type=Path)
    p.add_argument("wav")
    p.add_argument("--codes", required=True, help="where to write the codes, [K, frames] int64 .npy")
    p.add_argument("--audio", help="where to write the decoded audio (24 kHz WAV)")
    a = p.parse_args()
    manifest = json.loads((a.model_dir / "mimi.json").read_text())
    audio, rate = sf.read(a.wav, dtype="float32", always_2d=True)
    if rate != manifest["sample_rate"]:
        raise SystemExit(f"{a.wav} is {rate} Hz: resample it to {manifest['sample_rate']} first")
    audio = audio.mean(axis=1)
    n = manifest["frame_samples"]
    audio = np.pad(audio, (0, -len(audio) % n))  # the last frame padded with silence, as `mimi encode` does
    encode, decode = Step(a.model_dir, manifest["encoder"]), Step(a.model_dir, manifest["decoder"])
    codes, out = [], []
    for start in range(0, len(audio), n):
        codes.append(encode(audio[start:start + n]))
        out.append(decode(codes[-1]))
    np.save(a.codes, np.stack(codes, axis=-1) if codes else np.zeros((manifest["num_codebooks"], 0), np.int64))
    if a.audio:
        sf.write(a.audio, np.concatenate(out) if out else np.zeros(0, np.float32), manifest["sample_rate"])


if __name__ == "__main__":
    main()
