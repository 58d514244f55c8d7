"""A seeded fuzz of every container and manifest reader: valid files of each kind, mutated, read
the way `mimi encode` reads them (listing, then each item's audio). Only our own errors may come
out, each case within a time bound; the process reports its peak memory.

    python -m tests.formats.fuzz_readers CASES_PER_KIND [SEED]

Prints one line per failure and `peak_rss_mb N`; exits 1 if anything but our errors came out.
The readers are torch-free, so this runs without the model.
"""
from __future__ import annotations

import gzip
import io
import json
import random
import signal
import sys
import tarfile
import tempfile
import traceback
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import soundfile as sf

from mimi_cli.formats.audio import AudioError
from mimi_cli.formats.manifests import ManifestOptions
from mimi_cli.formats.sources import InputError, collect_sources

CASE_SECONDS = 20  # a case that takes longer is a failure (a hang, or work out of proportion)
MAX_SECONDS = 30.0  # --max-duration while fuzzing: a mutated header may claim hours


def clip(seed: int, fmt: str = "FLAC") -> bytes:
    buf = io.BytesIO()
    x = 0.1 * np.random.default_rng(seed).standard_normal(2400)
    sf.write(buf, x.astype(np.float32), 24000, format=fmt)
    return buf.getvalue()


# Containers FFmpeg reads (formats/media.py): (file name, PyAV muxer, encoder, sample rate, layout)
MEDIA = [("x.m4a", "ipod", "aac", 24000, "mono"), ("x.webm", "webm", "libopus", 48000, "mono"),
         ("x.aac", "adts", "aac", 16000, "mono"), ("x.wma", "asf", "wmav2", 22050, "mono"),
         ("x.amr", "amr", "libopencore_amrnb", 8000, "mono"), ("x71.m4a", "ipod", "aac", 48000, "7.1")]
STREAMS = [("stream.ogg", "ogg", "libopus", 48000, "mono"), ("stream.webm", "webm", "libopus", 48000, "stereo")]


def media_clip(muxer: str, encoder: str, rate: int, layout: str, seconds: float = 0.5) -> bytes:
    """A short clip in a container FFmpeg reads, written by FFmpeg's own muxer and encoder."""
    import av

    buf = io.BytesIO()
    channels = av.AudioLayout(layout).nb_channels
    x = (0.1 * np.random.default_rng(rate).standard_normal((1, int(rate * seconds) * channels)) * 32767)
    x = x.astype(np.int16)
    with av.open(buf, "w", format=muxer) as out:
        stream = out.add_stream(encoder, rate=rate)
        stream.layout, stream.bit_rate = layout, 12200 if encoder == "libopencore_amrnb" else 32000 * channels
        step = 160 if encoder == "libopencore_amrnb" else 1024
        for i in range(0, x.shape[1] // channels, step):
            frame = av.AudioFrame.from_ndarray(x[:, i * channels:(i + step) * channels], format="s16", layout=layout)
            frame.sample_rate, frame.pts = rate, i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return buf.getvalue()


def read_piped(data: bytes) -> None:
    """A stream as `mimi stream-encode` takes it from a pipe: read live, with no seeking."""
    from mimi_cli.formats.media import MediaReader, stream_demuxer_for
    from mimi_cli.formats.pcm import Prefixed

    demuxer = stream_demuxer_for(data[:12])
    if demuxer is None:
        return
    try:
        with MediaReader(Prefixed(data[:12], io.BytesIO(data[12:])), demuxer, live=True) as media:
            for _ in media.blocks(0):
                pass
    except AudioError:
        pass


def read_pushed(data: bytes, rng: random.Random) -> None:
    """A stream as `mimi serve` takes it: pushed in pieces of random sizes, then closed."""
    from mimi_cli.formats.media import PushedStream

    stream = PushedStream()
    try:
        at = 0
        while at < len(data):
            n = rng.randint(1, 2000)
            stream.push(data[at:at + n])
            at += n
        stream.close()
    except AudioError:
        stream.abort()


def valid_files(root: Path) -> dict[str, Path]:
    """One valid file of each kind the readers take, its audio beside it."""
    (root / "clips").mkdir()
    for i in range(3):
        (root / "clips" / f"c{i}.flac").write_bytes(clip(i))
    files = {}
    files["tar"] = root / "shard.tar"
    with tarfile.open(files["tar"], "w", format=tarfile.PAX_FORMAT) as tar:
        for i in range(3):
            for name, data in [(f"k{i}.flac", clip(i)), (f"k{i}.json", json.dumps({"text": f"t{i}"}).encode()),
                               (f"k{i}.txt", b"hello")]:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    struct = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    audio = pa.array([{"bytes": clip(i), "path": f"c{i}.flac"} for i in range(2)]
                     + [{"bytes": None, "path": "clips/c2.flac"}], struct)
    files["hf"] = root / "hf.parquet"
    pq.write_table(pa.table({"audio": audio, "text": ["a", "b", "c"]}), files["hf"], row_group_size=2)
    recs = [{"id": f"r{i}", "sources": [{"type": "file", "channels": [0], "source": f"clips/c{i}.flac"}],
             "sampling_rate": 24000, "num_samples": 2400, "duration": 0.1} for i in range(3)]
    cuts = [{"id": f"cut{i}", "type": "MonoCut", "start": 0.0, "duration": 0.05, "channel": 0, "recording": r,
             "supervisions": [{"id": f"s{i}", "recording_id": r["id"], "start": 0, "duration": 0.05,
                               "text": "hi", "speaker": "x"}]} for i, r in enumerate(recs)]
    files["lhotse"] = root / "recs.jsonl"
    files["lhotse"].write_text("".join(json.dumps(r) + "\n" for r in recs))
    files["lhotse_gz"] = root / "cuts.jsonl.gz"
    files["lhotse_gz"].write_bytes(gzip.compress("".join(json.dumps(c) + "\n" for c in cuts).encode()))
    files["tsv"] = root / "train.tsv"
    files["tsv"].write_text("path\tsentence\tn\n" + "".join(f"clips/c{i}.flac\tsay {i}\t{i}\n" for i in range(3)))
    files["csv"] = root / "list.csv"
    files["csv"].write_text("audio_filepath,text\n" + "".join(f'clips/c{i}.flac,"t, {i}"\n' for i in range(3)))
    files["jsonl"] = root / "nemo.jsonl"
    files["jsonl"].write_text("".join(json.dumps({"audio_filepath": f"clips/c{i}.flac", "duration": 0.1,
                                                  "text": "x"}) + "\n" for i in range(3)))
    files["parquet_manifest"] = root / "paths.parquet"
    pq.write_table(pa.table({"path": [f"clips/c{i}.flac" for i in range(3)], "speaker": [1, 2, 3]}),
                   files["parquet_manifest"])
    for name, muxer, encoder, rate, layout in MEDIA + STREAMS:
        files[name] = root / name
        files[name].write_bytes(media_clip(muxer, encoder, rate, layout))
    return files


NASTY = [b"\0" * 16, b"\xff" * 16, b"77777777777\0", b"[" * 300, b"{" * 300, b'"' * 50, b"\n" * 50,
         b"9" * 400, b"-1", b"NaN", b"\xc3\x28", b"../../../../etc/passwd", b"/etc/hostname",
         b'{"type": "command", "channels": [0], "source": "touch /tmp/mimi-fuzz-pwned"}',
         b"pipe:touch /tmp/mimi-fuzz-pwned", b"OggS", b"RIFF\xff\xff\xff\xffWAVE", b"fLaC"]


def mutate(data: bytes, rng: random.Random) -> bytes:
    """`data` with one to four random edits: flips, cuts, insertions, copies, hostile tokens."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        at = rng.randrange(len(out) + 1)
        kind = rng.randrange(6)
        if kind == 0 and out:
            for _ in range(rng.randint(1, 8)):
                out[rng.randrange(len(out))] = rng.randrange(256)
        elif kind == 1:
            del out[at:]
        elif kind == 2:
            out[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
        elif kind == 3 and out:
            start = rng.randrange(len(out))
            out[at:at] = out[start:start + rng.randint(1, 4096)]
        elif kind == 4:
            token = rng.choice(NASTY)
            out[at:at + len(token)] = token
        else:
            token = rng.choice(NASTY)
            out[at:at] = token
        if not out:
            break
    return bytes(out)


def read_like_encode(path: Path, options: ManifestOptions) -> None:
    """Lists `path` as `mimi encode` does, then reads each item's audio; only our errors may leave."""
    try:
        sources, _ = collect_sources([str(path)], manifest=options)
    except InputError:
        return
    for source in sources[:8]:
        try:
            with source.open("mix", MAX_SECONDS) as audio:
                audio.whole()
        except AudioError:
            pass


def _alarm(signum, frame):
    raise TimeoutError(f"a case took over {CASE_SECONDS} s")


def main(cases: int, seed: int = 0) -> int:
    signal.signal(signal.SIGALRM, _alarm)
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        files = valid_files(root)
        originals = {kind: path.read_bytes() for kind, path in files.items()}
        for kind, path in files.items():
            rng = random.Random(f"{seed}:{kind}")
            for case in range(cases):
                data = originals[kind] if case == 0 else mutate(originals[kind], rng)
                if kind == "lhotse_gz" and case % 2:  # also mutate inside the compression
                    data = gzip.compress(mutate(gzip.decompress(originals[kind]), rng))
                path.write_bytes(data)
                signal.alarm(CASE_SECONDS)
                try:
                    if kind.startswith("stream.") and case % 2:
                        read_piped(data)
                    elif kind.startswith("stream."):
                        read_pushed(data, rng)
                    else:
                        read_like_encode(path, ManifestOptions())
                except Exception:
                    failures += 1
                    print(f"FAIL {kind} seed {seed} case {case}:\n{traceback.format_exc()}", flush=True)
                finally:
                    signal.alarm(0)
            path.write_bytes(originals[kind])
    if Path("/tmp/mimi-fuzz-pwned").exists():
        failures += 1
        print("FAIL a command from a fuzzed manifest ran", flush=True)
    # VmHWM, not ru_maxrss: Linux carries a parent's peak into ru_maxrss across fork and exec.
    peak_kb = int(Path("/proc/self/status").read_text().split("VmHWM:")[1].split()[0])
    print(f"peak_rss_mb {peak_kb // 1024}", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 0))
