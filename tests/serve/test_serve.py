"""`mimi serve` with real WebSocket clients: exact codes and audio with many clients joining and
leaving, the refusals and close codes, slow clients, health, metrics and SIGTERM."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import urllib.request

import numpy as np
import pytest
import torch

websockets = pytest.importorskip("websockets")
from websockets.exceptions import ConnectionClosed  # noqa: E402

from mimi_cli.formats.tokenstream import StreamHeader, binary_header  # noqa: E402


def speech(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 24000)) / 24000
    return (0.3 * np.sin(2 * np.pi * rng.uniform(100, 300) * t) + 0.05 * rng.standard_normal(t.size)).astype(
        np.float32)


def offline_codes(codec, audio: np.ndarray, k: int) -> np.ndarray:
    return codec.encode(torch.from_numpy(audio)[None, None], k)[0].numpy()


async def encode_client(url: str, audio: np.ndarray, k: int, chunk: int, delay_s: float = 0.0,
                        pause_s: float = 0.002, stop_after: int | None = None) -> tuple[np.ndarray, int | None]:
    """Streams `audio` (f32le, `chunk` samples a message); returns codes [K, n] and the close code."""
    await asyncio.sleep(delay_s)
    frames = []
    async with websockets.connect(f"{url}?format=f32le&num_codebooks={k}") as ws:
        header = await ws.recv()
        assert header[:4] == b"MIMI" and int.from_bytes(header[6:8], "little") == k

        async def reader():
            async for m in ws:
                frames.append(np.frombuffer(m, "<u2").astype(np.int64))

        task = asyncio.create_task(reader())
        for i in range(0, audio.size, chunk):
            if stop_after is not None and i >= stop_after:
                await ws.close()
                break
            await ws.send(audio[i:i + chunk].tobytes())
            await asyncio.sleep(pause_s)
        else:
            await ws.send(json.dumps({"type": "end"}))
        await task
        code = ws.close_code
    return (np.stack(frames, axis=1) if frames else np.zeros((k, 0), np.int64)), code


def test_concurrent_clients_get_the_codes_of_an_offline_encode(serve, tiny):
    """Clients of different lengths and K join at different times; one leaves mid-stream."""
    server = serve(max_streams=8)
    clips = [speech(s, i) for i, s in enumerate([2.0, 1.3, 3.1, 0.5, 2.6])]
    ks = [8, 4, 8, 2, 6]

    async def main():
        return await asyncio.gather(*[
            encode_client(server.url("/v1/encode"), clip, k, chunk, delay_s=0.1 * i)
            for i, (clip, k, chunk) in enumerate(zip(clips, ks, [960, 4000, 333, 1920, 12000]))],
            encode_client(server.url("/v1/encode"), speech(3.0, 9), 8, 960, stop_after=20000))

    *results, (left, left_code) = asyncio.run(main())
    for clip, k, (codes, code) in zip(clips, ks, results):
        assert code == 1000
        assert np.array_equal(codes, offline_codes(tiny, clip, k))
    assert left.shape[1] <= 20000 // 1920 + 1


def test_decode_streams_give_the_audio_of_an_offline_decode(serve, tiny):
    server = serve()
    codes = offline_codes(tiny, speech(1.5, 3), 8)
    expected = tiny.decode(torch.from_numpy(codes)[None])[0, 0].numpy()
    stream = binary_header(StreamHeader(8, 24000, 12.5, 64)) + codes.T.astype("<u2").tobytes()

    async def main(split: int, fmt: str):
        out = []
        async with websockets.connect(server.url(f"/v1/decode?format={fmt}")) as ws:
            for i in range(0, len(stream), split):
                await ws.send(stream[i:i + split])
            await ws.send(json.dumps({"type": "end"}))
            async for m in ws:
                out.append(m)
            return b"".join(out), ws.close_code, len(out)

    pcm, code, messages = asyncio.run(main(7, "f32le"))
    assert code == 1000 and messages == codes.shape[1]
    np.testing.assert_allclose(np.frombuffer(pcm, "<f4"), expected, atol=1e-6)
    pcm, _, _ = asyncio.run(main(1000, "s16le"))
    assert np.abs(np.frombuffer(pcm, "<i2") / 32767 - np.clip(expected, -1, 1)).max() <= 1 / 32767


async def close_of(url: str, send: list | None = None, **kwargs) -> tuple[int, str]:
    async with websockets.connect(url, **kwargs) as ws:
        try:
            for item in send or []:
                await ws.send(item)
            async for _ in ws:
                pass
        except ConnectionClosed:
            pass
        return ws.close_code, ws.close_reason


def test_refusals_and_malformed_streams_close_with_their_codes(serve):
    server = serve(max_streams=2)
    run = asyncio.run
    for query in ("rate=abc", "rate=5", "format=mp3", "num_codebooks=33", "channels=0"):
        code, reason = run(close_of(server.url(f"/v1/encode?{query}")))
        assert code == 1008 and reason, query
    assert run(close_of(server.url("/v1/decode"), [b"NOPE" + bytes(16)]))[0] == 1008
    assert run(close_of(server.url("/v1/decode"), [binary_header(StreamHeader(8, 24000, 12.5, 64)),
                                                  (4000).to_bytes(2, "little") * 8]))[0] == 1008
    code, reason = run(close_of(server.url("/v1/encode"), ["hello"]))
    assert code == 1008 and "end" in reason

    async def full():
        async with websockets.connect(server.url("/v1/encode")) as a, websockets.connect(server.url("/v1/decode")):
            await a.recv()
            return await close_of(server.url("/v1/encode"))

    assert run(full())[0] == 1013
    secured = serve(token="s3cret")
    assert run(close_of(secured.url("/v1/encode")))[0] == 4401
    assert run(close_of(secured.url("/v1/encode?token=wrong")))[0] == 4401
    code, _ = run(close_of(secured.url("/v1/encode?token=s3cret"), [json.dumps({"type": "end"})]))
    assert code == 1000
    code, _ = run(close_of(secured.url("/v1/decode"), [json.dumps({"type": "end"})],
                           additional_headers={"Authorization": "Bearer s3cret"}))
    assert code == 1000
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics").read().decode()
    assert 'mimi_refusals_total{reason="full"} 1' in metrics
    assert 'mimi_refusals_total{reason="bad request"} 5' in metrics


def test_a_client_that_does_not_read_is_disconnected_and_does_not_stall_others(serve, tiny):
    server = serve()
    codes = np.random.default_rng(0).integers(0, 64, (8, 1500))
    flood = binary_header(StreamHeader(8, 24000, 12.5, 64)) + codes.T.astype("<u2").tobytes()
    clip = speech(2.0, 5)
    metrics_url = f"http://127.0.0.1:{server.port}/metrics"

    def slow_clients_seen() -> bool:
        return 'mimi_errors_total{kind="slow client"} 1' in urllib.request.urlopen(metrics_url).read().decode()

    async def main():
        # max_queue=1: the client library stops reading the socket, as a stuck client would.
        ws = await websockets.connect(server.url("/v1/decode?format=f32le"), max_queue=1)

        async def flood_it():
            try:
                for i in range(0, len(flood), 4096):
                    await ws.send(flood[i:i + 4096])
            except ConnectionClosed:
                pass

        sender = asyncio.create_task(flood_it())
        await asyncio.sleep(0.3)
        good = await encode_client(server.url("/v1/encode"), clip, 8, 1920)  # while the slow one is stuck
        for _ in range(300):
            if await asyncio.to_thread(slow_clients_seen):
                break
            await asyncio.sleep(0.1)
        ws.transport.abort()
        sender.cancel()
        return good

    codes_out, good_code = asyncio.run(main())
    assert slow_clients_seen(), "the server did not disconnect the client that does not read"
    assert good_code == 1000 and np.array_equal(codes_out, offline_codes(tiny, clip, 8))


def test_health_and_metrics(serve):
    server = serve(max_streams=5)
    base = f"http://127.0.0.1:{server.port}"
    health = json.loads(urllib.request.urlopen(f"{base}/health").read())
    assert health["status"] == "ok" and health["capacity"] == 5 and health["live_streams"] == {"encode": 0,
                                                                                             "decode": 0}
    asyncio.run(encode_client(server.url("/v1/encode"), speech(1.0, 1), 8, 1920))
    metrics = urllib.request.urlopen(f"{base}/metrics").read().decode()
    assert 'mimi_stream_frames_total{direction="encode"} 13' in metrics
    assert 'mimi_step_seconds_count{direction="encode"}' in metrics and "# TYPE mimi_step_seconds histogram" in metrics
    page = urllib.request.urlopen(f"{base}/").read().decode()
    assert "getUserMedia" in page and "/v1/encode" in page


SERVER = """
import sys
from mimi_cli.codec import MimiConfig, load_codec
from mimi_cli.serve.app import ServeConfig, run_server
codec = load_codec("synthetic:3", device="cpu", config=MimiConfig.tiny())
print("ready", flush=True)
run_server(codec, ServeConfig(port=int(sys.argv[1])), "tiny")
"""


def test_sigterm_closes_streams_with_1001(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(port)], stdout=subprocess.PIPE, env=env)
    try:
        assert proc.stdout.readline().strip() == b"ready"

        async def main():
            for _ in range(100):
                try:
                    ws = await websockets.connect(f"ws://127.0.0.1:{port}/v1/encode")
                    break
                except OSError:
                    await asyncio.sleep(0.1)
            await ws.recv()
            await ws.send(speech(0.5, 0).tobytes()[:4000])
            proc.send_signal(signal.SIGTERM)
            try:
                async for _ in ws:
                    pass
            except ConnectionClosed:
                pass
            return ws.close_code

        assert asyncio.run(main()) == 1001
        assert proc.wait(30) == 0
    finally:
        proc.kill()
