"""What crafted inputs of up to 10 MB cost `mimi encode` (and `mimi info`), against a normal run of
the same command: peak resident memory and wall time of each, in a process of its own.

    python benchmarks/hostile_inputs.py [--out benchmarks/results/hostile-inputs.json] [--only NAME ...]

Each input is built here (nothing crafted is committed). Synthetic weights; the CPU is named in
the output. docs/security.md quotes the figures.
"""
from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import platform
import signal
import struct
import subprocess
import sys
import tarfile
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.parquet_footer import hide_dictionaries  # noqa: E402  (rewrites footers as an attacker would)

MB = 1 << 20
CASE_TIMEOUT_S = 1800
# A case of millions of good items is a corpus of that size: it is stopped (SIGTERM) after STOP_S,
# and what it had committed by then is its answer.
STOP_S = 60
STOPPED = ["--commit-seconds", "10", "--stop-after", str(STOP_S)]


def clip(seconds: float = 1.0, seed: int = 0) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, (0.1 * np.random.default_rng(seed).standard_normal(int(24000 * seconds))).astype(np.float32),
             24000, format="FLAC")
    return buf.getvalue()


def recording(rid: str, source: str, kind: str = "file") -> dict:
    return {"id": rid, "sources": [{"type": kind, "channels": [0], "source": source}], "sampling_rate": 24000,
            "num_samples": 24000, "duration": 1.0}


def gzip_stream(path: Path, head: bytes, pattern: bytes, total: int) -> None:
    z = zlib.compressobj(9, zlib.DEFLATED, 31)
    with open(path, "wb") as f:
        f.write(z.compress(head))
        chunk = pattern * max(1, MB // len(pattern))
        for _ in range(total // len(chunk)):
            f.write(z.compress(chunk))
        f.write(z.flush())


def build(root: Path, wanted=lambda name: True) -> dict[str, list[str]]:
    """Each case: the mimi command line (after `mimi`) that reads it."""
    (root / "x.flac").write_bytes(clip())
    good = (json.dumps(recording("good", "x.flac")) + "\n").encode()
    cases = {"normal": ["encode", "x.flac", "out-normal"]}

    gzip_stream(root / "line.jsonl.gz", good, b"x", 1 << 30)
    cases["gzip: one 1 GiB line"] = ["encode", "line.jsonl.gz", "out-line"]
    gzip_stream(root / "newlines.jsonl.gz", good, b"\n", 1 << 30)
    cases["gzip: 1 GiB of newlines"] = ["encode", "newlines.jsonl.gz", "out-newlines"]

    with gzip.open(root / "cuts.jsonl.gz", "wb", compresslevel=9) as f:  # distinct, minimal, up to 10 MB
        i = 0
        while f.fileobj.tell() < 9 * MB:
            f.write("".join(json.dumps(recording(f"r{i + j:09d}", "x.flac")) + "\n" for j in range(10000)).encode())
            i += 10000
    cases["gzip: 10 MB of distinct recordings"] = ["encode", "cuts.jsonl.gz", "out-cuts", *STOPPED]
    with gzip.open(root / "commands.jsonl.gz", "wb", compresslevel=9) as f:  # every one an error row
        i = 0
        while f.fileobj.tell() < 9 * MB:
            f.write("".join(json.dumps(recording(f"r{i + j:09d}", "true", "command")) + "\n"
                            for j in range(10000)).encode())
            i += 10000
    cases["gzip: 10 MB of command sources"] = ["encode", "commands.jsonl.gz", "out-commands"]
    with open(root / "paths.tsv", "w") as f:  # distinct files that are not there
        f.write("path\n")
        i = 0
        while f.tell() < 10 * MB - 200_000:
            f.write("".join(f"{i + j:x}.wav\n" for j in range(10000)))
            i += 10000
    cases["TSV manifest: 10 MB of paths to missing files"] = ["encode", "paths.tsv", "out-paths"]

    (root / "deep.jsonl").write_bytes(b'{"path": ' + b"[" * (5 * MB) + b"]" * (5 * MB) + b"}\n")
    cases["JSONL manifest: 10 MB nested line"] = ["encode", "deep.jsonl", "out-deep"]

    data = clip(5.0)
    with tarfile.open(root / "cut.tar", "w") as tar:
        for i in range(10 * MB // len(data)):
            info = tarfile.TarInfo(f"k{i:05d}.flac")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    raw = (root / "cut.tar").read_bytes()
    (root / "cut.tar").write_bytes(raw[:len(raw) - len(data) // 2 - 1024])
    cases["tar: 10 MB cut inside its last member"] = ["encode", "cut.tar", "out-tar"]
    header = bytearray(raw[:512])
    header[124:136] = b"%011o\0" % (1_500_000_000)
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header)
    (root / "claims.tar").write_bytes(bytes(header) + raw[512:4 * MB])
    cases["tar: a header claiming 1.5 GB"] = ["encode", "claims.tar", "out-claims"]
    pax = bytearray(raw[:512])
    pax[0:100] = b"PaxHeader".ljust(100, b"\0")
    pax[124:136] = b"%011o\0" % (MB - 512)
    pax[156:157] = b"x"
    pax[148:156] = b" " * 8
    pax[148:156] = b"%06o\0 " % sum(pax)
    (root / "pax.tar").write_bytes(bytes(pax) + b"1" * (MB - 512) + raw[:4 * MB])
    cases["tar: a pax header of digits (CVE-2024-6232)"] = ["encode", "pax.tar", "out-pax"]

    blob = os.urandom(MB)
    n = 5000
    audio = pa.StructArray.from_arrays(
        [pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)), pa.array([blob], pa.binary())),
         pa.array(["x.wav"] * n)], names=["bytes", "path"])
    pq.write_table(pa.table({"audio": audio}), root / "dict.parquet", store_schema=False, compression="zstd")
    cases["audio Parquet: 1 MB repeated 5000 times"] = ["encode", "dict.parquet", "out-dict"]
    n = 1_500_000
    audio = pa.StructArray.from_arrays([pa.nulls(n, pa.binary()), pa.array([f"{i:x}.wav" for i in range(n)])],
                                       names=["bytes", "path"])
    pq.write_table(pa.table({"audio": audio}), root / "paths.parquet", compression="zstd")
    cases["audio Parquet: 1.5 million rows naming missing files (1.3 MB)"] = ["encode", "paths.parquet", "out-ppaths"]
    n = 12_000_000  # about as many rows of paths as 10 MB of Parquet holds
    names = pa.array([f"{i:x}.wav" for i in range(n)])
    audio = pa.StructArray.from_arrays([pa.nulls(n, pa.binary()), names], names=["bytes", "path"])
    pq.write_table(pa.table({"audio": audio}), root / "paths12m.parquet", compression="zstd")
    cases["audio Parquet: 12 million rows naming missing files (9.3 MB)"] = ["encode", "paths12m.parquet", "out-p12m"]
    pq.write_table(pa.table({"audio": audio}), root / "group12m.parquet", compression="zstd", row_group_size=n)
    cases["audio Parquet: 12 million rows in one row group (7.7 MB)"] = ["encode", "group12m.parquet", "out-g12m"]
    pq.write_table(pa.table({"path": names}), root / "manifest12m.parquet", compression="zstd")
    cases["Parquet manifest: 12 million paths to missing files (9.3 MB)"] = ["encode", "manifest12m.parquet",
                                                                             "out-m12m"]
    del names, audio
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (1_000_000, 8), dtype=np.uint8)
    long_paths = pa.array(["d/" * 130 + row.tobytes().hex() + ".wav" for row in noise])  # 280 bytes, distinct
    pq.write_table(pa.table({"path": long_paths}), root / "long.parquet", compression="zstd")
    cases["Parquet manifest: a million distinct 280-byte paths in one row group (9.9 MB)"] = [
        "encode", "long.parquet", "out-long"]
    del long_paths, noise
    n = 6000  # a 256 kB blob stored once, repeated in every row: 1.5 GB once copied out
    repeated = pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)), pa.array([os.urandom(1 << 18)]))
    audio = pa.StructArray.from_arrays([repeated, pa.array(["x.wav"] * n)], names=["bytes", "path"])
    sink = io.BytesIO()
    pq.write_table(pa.table({"audio": audio}), sink, compression="zstd", store_schema=False)
    (root / "hidden.parquet").write_bytes(hide_dictionaries(sink.getvalue()))
    cases["audio Parquet: a dictionary page its footer hides, repeated 6000 times"] = [
        "encode", "hidden.parquet", "out-hidden"]
    pq.write_table(pa.table({"path": ["p" * MB] * 2000}), root / "zstd.parquet", compression="zstd",
                   use_dictionary=False)
    cases["Parquet manifest: 2 GB of zstd zeros"] = ["encode", "zstd.parquet", "out-zstd"]
    frames = 20_000_000
    codes = pa.ListArray.from_arrays(pa.array([0, 1], pa.int32()), pa.ListArray.from_arrays(
        pa.array([0, frames], pa.int32()), pa.array(np.zeros(frames, np.int16))))
    table = pa.table({"id": ["x"], "channel": pa.array([-1], pa.int16()), "codes": codes,
                      "num_frames": pa.array([frames], pa.int32()), "num_samples": pa.array([1920], pa.int64())},
                     metadata={b"mimi_cli": b'{"num_codebooks": 1, "codebook_size": 2048, "model": {}}'})
    pq.write_table(table, root / "codes.parquet", compression="zstd")
    cases["token dataset: 20M codes run-length encoded (mimi info)"] = ["info", "codes.parquet"]

    silence = np.zeros(24000 * 3600 * 3, np.int16)  # 3 h of silence: a few MB of FLAC
    sf.write(root / "silence.flac", silence, 24000, subtype="PCM_16")
    cases["FLAC: 3 h of silence"] = ["encode", "silence.flac", "out-silence"]
    buf = io.BytesIO()
    sf.write(buf, np.zeros(24000 * 60, np.float32), 24000, subtype="PCM_16", format="WAV")
    short = bytearray(buf.getvalue())
    (root / "short.wav").write_bytes(bytes(short[:len(short) // 2]))
    cases["WAV: data half its header's size"] = ["encode", "short.wav", "out-short"]
    name = "FLAC: an hour of 8 channels at 384 kHz, no length stated (0.8 MB)"
    if wanted(name):  # a minute to build
        (root / "hirate.flac").write_bytes(flac_silence_unstated(384000, "7.1", 3600))
        cases[name] = ["encode", "hirate.flac", "out-hirate"]
    (root / "silence.aac").write_bytes(adts_silence(10 * MB))
    cases["ADTS AAC: 10 MB of silent frames (17 h, no length stated)"] = ["encode", "silence.aac", "out-adts"]
    hour = 8000 * 3590  # an 8 kHz unsigned 8-bit WAV of silence: 28.7 MB, which zstd packs to kilobytes
    wav = b"RIFF" + struct.pack("<I", 36 + hour) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 1, 8000, 8000, 1, 8)
    blob = wav + b"data" + struct.pack("<I", hour) + b"\x80" * hour
    audio = pa.StructArray.from_arrays([pa.array([blob] * 2, pa.binary()), pa.array(["a.wav", "b.wav"])],
                                       names=["bytes", "path"])
    pad = pa.array([os.urandom(MB) for _ in range(2)], pa.binary())  # room in the expansion bound for the items
    pq.write_table(pa.table({"audio": audio, "pad": pad}), root / "hours.parquet", compression="zstd",
                   use_dictionary=False)
    del blob, audio, pad
    cases["audio Parquet: two hour-long silent items (2 MB)"] = [
        "encode", "hours.parquet", "out-hours", "--stop-after", "120"]
    for path in root.iterdir():
        if path.is_file():
            assert path.stat().st_size <= 10 * MB + 4096, (path, path.stat().st_size)
    return cases


def flac_silence_unstated(rate: int, layout: str, seconds: int) -> bytes:
    """FLAC of silence in FLAC's longest frames (65,535 samples; about a minute to build), its
    STREAMINFO's total sample count zeroed, as FFmpeg writes a FLAC to a pipe."""
    import av

    buf, n = io.BytesIO(), 65535
    with av.open(buf, "w", format="flac") as out:
        stream = out.add_stream("flac", rate=rate)
        stream.layout = layout
        stream.codec_context.options = {"compression_level": "0", "frame_size": str(n)}
        zeros = np.zeros((1, n * stream.codec_context.layout.nb_channels), np.int16)
        for i in range(0, rate * seconds, n):
            frame = av.AudioFrame.from_ndarray(zeros, format="s16", layout=layout)
            frame.sample_rate, frame.pts = rate, i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    data = bytearray(buf.getvalue())
    assert data[:4] == b"fLaC"
    data[8 + 13] &= 0xF0  # the total's top 4 bits share a byte with the bits per sample
    data[8 + 14:8 + 18] = bytes(4)
    return bytes(data)


def adts_silence(size: int) -> bytes:
    """ADTS AAC of silence, `size` bytes: FFmpeg's encoder makes 64 ms frames of 11 bytes, and
    ADTS frames stand alone, so one is repeated (a stream that states no length anywhere)."""
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="adts") as out:
        stream = out.add_stream("aac", rate=16000)
        stream.layout, stream.bit_rate = "mono", 8000
        for i in range(0, 16000, 1024):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    data = buf.getvalue()
    first = ((data[3] & 3) << 11) | (data[4] << 3) | (data[5] >> 5)
    second = ((data[first + 3] & 3) << 11) | (data[first + 4] << 3) | (data[first + 5] >> 5)
    frame = data[first:first + second]
    return data[:first] + frame * ((size - first) // len(frame))


# VmHWM, not ru_maxrss: Linux carries a parent's peak into ru_maxrss across fork and exec.
RUNNER = ("import sys, time\nfrom mimi_cli.cli import main\nstart = time.perf_counter()\ncode = 0\n"
          "def peak():\n    status = open('/proc/self/status').read().split('VmHWM:')[1]\n"
          "    return int(status.split()[0]) // 1024\n"
          "try:\n    main()\nexcept SystemExit as e:\n    code = e.code or 0\n"
          "print('MEASURED', code, time.perf_counter() - start, "
          "peak(), file=sys.stderr)\n")


def measure(args: list[str], cwd: Path) -> dict:
    env = {**os.environ, "MIMI_WEIGHTS": "synthetic:0"}
    stop = None
    if "--stop-after" in args:
        at = args.index("--stop-after")
        stop, args = float(args[at + 1]), args[:at] + args[at + 2:]
    command = [sys.executable, "-c", RUNNER, *args, *(["-q", "2", "--quiet"] if args[0] == "encode" else [])]
    with subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True) as proc:
        try:
            _, stderr = proc.communicate(timeout=stop or CASE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            if stop is None:
                proc.kill()
                proc.communicate()
                return {"exit": None, "seconds": f"over {CASE_TIMEOUT_S}", "peak_rss_mb": None, "said": "stopped"}
            proc.send_signal(signal.SIGTERM)
            _, stderr = proc.communicate(timeout=CASE_TIMEOUT_S)
    if "MEASURED" not in stderr:
        return {"exit": proc.returncode, "seconds": None, "peak_rss_mb": None, "said": stderr[-300:]}
    code, seconds, rss = stderr.rsplit("MEASURED", 1)[1].split()
    lines = [ln for ln in stderr.splitlines() if ln.startswith("mimi: error") or "failed, listed" in ln]
    said = lines[-1][:300] if lines else ""
    if stop is not None:
        kept = _rows(cwd / args[2])
        said = f"stopped by SIGTERM after {stop:.0f} s: {kept} rows kept" + (f"; {said}" if said else "")
    return {"exit": int(code), "seconds": round(float(seconds), 2), "peak_rss_mb": int(rss), "said": said}


def _rows(output: Path) -> int:
    """Rows committed to a token dataset directory (0 if there is none)."""
    files = [p for p in output.glob("*.parquet")] if output.is_dir() else []
    return sum(pq.ParquetFile(p).metadata.num_rows for p in files)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=None)
    parser.add_argument("--only", nargs="*", default=None)
    a = parser.parse_args()
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")),
               platform.processor())
    results = {"cpu": cpu, "cases": {}}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cases = build(root, lambda name: not a.only or any(o in name for o in a.only))
        for name, args in cases.items():
            if a.only and name != "normal" and not any(o in name for o in a.only):
                continue
            r = measure(args, root)
            results["cases"][name] = r
            print(f"{name:55s} exit {r['exit']}  {r['seconds']} s  {r['peak_rss_mb']} MB  {r['said']}", flush=True)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
