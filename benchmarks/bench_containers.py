"""`mimi encode` speed on the same short clips as loose files, one WebDataset tar and Hugging Face
audio Parquet, in one process, rounds interleaved.

  python benchmarks/bench_containers.py [--files 200] [--min-s 1] [--max-s 4] [--rounds 3] [--device cpu]

Every round encodes the three forms of the corpus one after the other (fresh output each time,
full-size synthetic weights, -q 8); the figures are each form's median seconds and its speed as
a share of the loose files' speed. The listing pass (hashing and probing each item) is included.
"""
import argparse
import io
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from mimi_cli.codec import load_codec
from mimi_cli.encode import EncodeOptions, encode_dataset


def write_tar(files: list[Path], root: Path, target: Path) -> None:
    """A WebDataset shard: `key.ext` members, with a `.json` per sample, as webdataset.TarWriter lays it out."""
    with tarfile.open(target, "w") as tar:
        for f in files:
            key = f.relative_to(root).with_suffix("").as_posix()
            for name, data in [(f"{key}{f.suffix}", f.read_bytes()), (f"{key}.json", b'{"text": "x"}')]:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def write_parquet(files: list[Path], root: Path, target: Path) -> None:
    """Audio Parquet as `datasets` writes it: a {bytes, path} struct column, 100 rows a row group."""
    struct = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    audio = pa.array([{"bytes": f.read_bytes(), "path": f.relative_to(root).as_posix()} for f in files], struct)
    pq.write_table(pa.table({"audio": audio, "text": ["x"] * len(files)}), target, row_group_size=100)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=200)
    ap.add_argument("--min-s", type=float, default=1.0)
    ap.add_argument("--max-s", type=float, default=4.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    work = Path(tempfile.mkdtemp(prefix="mimi-containers-"))
    audio = work / "audio"
    subprocess.run([sys.executable, str(Path(__file__).parents[1] / "scripts" / "make_audio.py"), str(audio),
                    "--files", str(a.files), "--min-s", str(a.min_s), "--max-s", str(a.max_s)], check=True)
    files = sorted(p for p in audio.rglob("*") if p.is_file())
    write_tar(files, audio, work / "corpus.tar")
    write_parquet(files, audio, work / "corpus.parquet")
    forms = {"loose files": str(audio), "WebDataset tar": str(work / "corpus.tar"),
             "HF Parquet": str(work / "corpus.parquet")}
    codec = load_codec("synthetic", device=a.device)
    codec.encode(0.1 * torch.randn(1, 1, 24000), 8)
    seconds: dict[str, list[float]] = {name: [] for name in forms}
    audio_s = 0.0
    for r in range(a.rounds):
        for name, source in forms.items():
            summary = encode_dataset(codec, [source], work / "tokens", EncodeOptions(overwrite=True))
            assert summary.files == len(files) and not summary.failed, (name, summary.failed[:3])
            seconds[name].append(summary.wall_seconds)
            audio_s = summary.audio_seconds
            print(f"round {r + 1}: {name}: {summary.wall_seconds:.2f} s", flush=True)
    base = statistics.median(seconds["loose files"])
    print(f"{len(files)} clips, {audio_s / 60:.1f} min of audio, {codec.device}, {a.threads} threads, "
          f"median of {a.rounds} rounds:")
    for name, values in seconds.items():
        m = statistics.median(values)
        print(f"  {name:15s} {m:6.2f} s  {audio_s / m:5.1f}x real time  {base / m:6.1%} of loose files' speed")


if __name__ == "__main__":
    main()
