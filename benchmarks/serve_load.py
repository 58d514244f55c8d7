"""Load generator for `mimi serve`: N clients on loopback, each sending real-time paced audio to
/v1/encode, and how long each frame's codes take to come back.

  python benchmarks/serve_load.py [--streams 1,2,4,8] [--seconds 10] [--weights synthetic] [--device cpu]
                                  [--url ws://127.0.0.1:PORT]   # an already running server instead
                                  [--processes]                 # N `mimi stream-encode` processes instead
                                  [--churn 600 --streams 4]     # memory over clients coming and going
                                  [--opus [--bitrate 24000]]    # clients send Ogg/Opus, as a browser does

For each N: p50 / p99 latency from the moment a frame's last sample is sent to the moment its
codes arrive, over all frames after the first second, and whether it kept up in real time: every
client got all its frames, its p99 latency stayed under --max-latency-ms (500) and its latency
did not grow (the median of its last quarter of frames within 1.5x + 40 ms of its second
quarter's). The largest N that keeps up is the live-stream capacity on this machine. Without
--url the script starts `mimi serve` itself (with the given weights and device) and stops it
after; with --processes each client is a `mimi stream-encode` process of its own, fed through a
pipe, for comparison. With --churn S, N clients come and go for S seconds (each stays 2-8 s and
sends its audio in real time, half of them leaving without "end") while the server's resident
memory is sampled every 10 s. With --opus each client sends its audio as Ogg/Opus (libopus, a
20 ms packet a page, --bitrate bit/s), each page when its last sample has been "recorded", and
latency counts from that moment too; the bytes each client sent per second are printed.
"""
import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import websockets

CHUNK_S = 0.02  # clients send 20 ms of audio a message, as a browser or arecord -F 20000 does
RATE = 24000
FRAME = 1920


async def paced(audio: np.ndarray, send, last_sample_sent: dict[int, float]) -> None:
    """Sends `audio` in real time, CHUNK_S a message, noting when each frame's last sample left."""
    chunk = int(CHUNK_S * RATE)
    t0 = time.perf_counter()
    for i, start in enumerate(range(0, audio.size, chunk)):
        await asyncio.sleep(max(0.0, t0 + i * CHUNK_S - time.perf_counter()))
        await send(audio[start:start + chunk].tobytes())
        sent = time.perf_counter()
        end = start + chunk
        for f in range(start // FRAME, end // FRAME):  # frames whose last sample this chunk holds
            if (f + 1) * FRAME <= end and f not in last_sample_sent:
                last_sample_sent[f] = sent


def ogg_opus_pages(audio: np.ndarray, bitrate: int) -> list[bytes]:
    """`audio` (24 kHz) as Ogg/Opus, one page per CHUNK_S of it (the headers ride on the first)."""
    from mimi_cli.formats.media import OggOpusWriter

    writer = OggOpusWriter(RATE, bitrate)
    chunk = int(CHUNK_S * RATE)
    pages = [writer(audio[i:i + chunk]) for i in range(0, audio.size, chunk)]
    pages[-1] += writer.close()
    return pages


SENT_BYTES: list[float] = []  # bytes a second each client sent, for the report


async def ws_client(url: str, audio: np.ndarray, pages: list[bytes] | None = None) -> list[float]:
    """Latencies (s) of each frame's codes, for one real-time WebSocket client; with `pages`, it
    sends those (Ogg/Opus, one a CHUNK_S) in place of the audio's PCM."""
    last_sample_sent: dict[int, float] = {}
    latencies: list[float] = []
    fmt = "opus" if pages is not None else "f32le"
    async with websockets.connect(f"{url}/v1/encode?format={fmt}") as ws:
        await ws.recv()

        async def reader():
            frame = 0
            async for _ in ws:
                if frame in last_sample_sent:
                    latencies.append(time.perf_counter() - last_sample_sent[frame])
                frame += 1

        task = asyncio.create_task(reader())
        sent = 0

        async def send(data: bytes) -> None:
            nonlocal sent
            if pages is not None:  # the page of the same 20 ms, in place of its PCM
                data = pages[sent_chunks.pop(0)] if sent_chunks else b""
            sent += len(data)
            if data:
                await ws.send(data)

        sent_chunks = list(range(len(pages))) if pages is not None else []
        await paced(audio, send, last_sample_sent)
        await ws.send(json.dumps({"type": "end"}))
        await task
    SENT_BYTES.append(sent / (audio.size / RATE))
    return latencies


async def process_client(args: list[str], audio: np.ndarray) -> list[float]:
    """The same for a `mimi stream-encode` process fed raw f32le on stdin, binary frames on stdout."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mimi_cli.cli", "stream-encode", "--raw", "--rate", str(RATE), "--sample-format",
        "f32le", "--output-format", "binary", "--quiet", *args,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    last_sample_sent: dict[int, float] = {}
    latencies: list[float] = []

    ready = asyncio.Event()

    async def reader():
        await proc.stdout.readexactly(20)  # written once the model is loaded and warm
        ready.set()
        frame = 0
        while True:
            try:
                await proc.stdout.readexactly(16)
            except asyncio.IncompleteReadError:
                return
            if frame in last_sample_sent:
                latencies.append(time.perf_counter() - last_sample_sent[frame])
            frame += 1

    async def send(data: bytes) -> None:
        proc.stdin.write(data)
        await proc.stdin.drain()

    task = asyncio.create_task(reader())
    await ready.wait()
    await asyncio.sleep(1.0)  # the other processes are still loading theirs
    await paced(audio, send, last_sample_sent)
    proc.stdin.close()
    await task
    await proc.wait()
    return latencies


async def churn(url: str, n: int, seconds: float, pid: int) -> None:
    """N clients that keep leaving and coming back for `seconds`; the server's RSS over time."""
    rng = np.random.default_rng(0)
    stop_at = time.perf_counter() + seconds
    sessions = 0

    async def one_client(i: int) -> None:
        nonlocal sessions
        while time.perf_counter() < stop_at:
            stay = float(rng.uniform(2, 8))
            audio = (0.1 * rng.standard_normal(int(stay * RATE))).astype(np.float32)
            async with websockets.connect(f"{url}/v1/encode?format=f32le") as ws:
                await ws.recv()
                reader = asyncio.create_task(_drain(ws))
                await paced(audio, ws.send, {})
                if sessions % 2:
                    await ws.send(json.dumps({"type": "end"}))
                    await reader
                else:
                    reader.cancel()
            sessions += 1

    async def sample() -> None:
        start = time.perf_counter()
        while time.perf_counter() < stop_at:
            print(f"  t={time.perf_counter() - start:5.0f} s  server RSS {rss_mb(pid):7.1f} MB  "
                  f"sessions so far {sessions}", flush=True)
            await asyncio.sleep(10)

    await asyncio.gather(sample(), *[one_client(i) for i in range(n)])
    print(f"  end: server RSS {rss_mb(pid):.1f} MB after {sessions} sessions")


async def _drain(ws) -> None:
    async for _ in ws:
        pass


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def keeps_up(latencies: list[float], expected: int, max_latency_s: float) -> bool:
    if len(latencies) < expected - 1 or np.percentile(latencies, 99) > max_latency_s:
        return False
    q = len(latencies) // 4
    return float(np.median(latencies[-q:])) <= 1.5 * float(np.median(latencies[q:2 * q])) + 0.04


async def load(n: int, seconds: float, one, max_latency_s: float, prepare=None) -> tuple[list[float], bool]:
    # Every client's input is made before any starts: encoding it later would stall the others.
    audios = [(0.1 * np.random.default_rng(i).standard_normal(int(seconds * RATE))).astype(np.float32)
              for i in range(n)]
    inputs = [prepare(a) for a in audios] if prepare else audios

    async def start(i: int):
        await asyncio.sleep(i * CHUNK_S / n)  # clients at different phases of a frame
        return await one(inputs[i])

    results = await asyncio.gather(*[start(i) for i in range(n)])
    expected = int(seconds / 0.08)
    warm = int(1 / 0.08)  # the first second warms up
    return [x for r in results for x in r[warm:]], all(keeps_up(r[warm:], expected - warm, max_latency_s)
                                                       for r in results)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--streams", default="1,2,4,8")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--weights", default="synthetic")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--url", default=None)
    ap.add_argument("--threads", type=int, default=None, help="the server's --threads")
    ap.add_argument("--processes", action="store_true")
    ap.add_argument("--churn", type=float, default=0.0, help="seconds of clients coming and going")
    ap.add_argument("--max-latency-ms", type=float, default=500.0, help="p99 above this is not live")
    ap.add_argument("--opus", action="store_true", help="clients send Ogg/Opus instead of float PCM")
    ap.add_argument("--bitrate", type=int, default=24000, help="the Opus clients' bit rate")
    a = ap.parse_args()
    proc = None
    url = a.url
    if a.processes:
        def one(audio):
            return process_client(["--weights", a.weights, "--device", a.device], audio)
    else:
        def one(given):
            return ws_client(url, *given) if a.opus else ws_client(url, given)
    if url is None and not a.processes:
        port = free_port()
        sizes = [int(n) for n in a.streams.split(",")]
        proc = subprocess.Popen([sys.executable, "-m", "mimi_cli.cli", "serve", "--weights", a.weights, "--device",
                                 a.device, "--port", str(port), "--max-streams", str(max(sizes) + 1), "--quiet",
                                 *(["--threads", str(a.threads)] if a.threads else [])],
                                env={**os.environ})
        url = f"ws://127.0.0.1:{port}"
        for _ in range(600):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.1)
    try:
        if a.churn:
            asyncio.run(churn(url, int(a.streams.split(",")[0]), a.churn, proc.pid))
            return
        capacity = 0
        what = "separate stream-encode processes" if a.processes else f"clients of mimi serve ({url})"
        print(f"{what}, {a.seconds:.0f} s each, real-time paced")
        print(f"{'streams':>8} {'p50 ms':>8} {'p99 ms':>8} {'frames':>8}  keeps up")
        for n in (int(x) for x in a.streams.split(",")):
            prepare = (lambda audio: (audio, ogg_opus_pages(audio, a.bitrate))) if a.opus and not a.processes else None
            lat, ok = asyncio.run(load(n, a.seconds, one, a.max_latency_ms / 1000, prepare))
            p50, p99 = (np.percentile(lat, [50, 99]) * 1000) if lat else (float("nan"), float("nan"))
            capacity = n if ok else capacity
            sent = f"  {np.mean(SENT_BYTES) * 8 / 1000:.1f} kbit/s sent a client" if SENT_BYTES else ""
            SENT_BYTES.clear()
            print(f"{n:8d} {p50:8.1f} {p99:8.1f} {len(lat):8d}  {'yes' if ok else 'no'}{sent}", flush=True)
        print(f"largest N that keeps up in real time: {capacity}")
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)


if __name__ == "__main__":
    main()
