"""`mimi serve` against clients that would hold it: idle sockets, token guessing, huge messages,
an open port without a token, and what /health and /metrics tell a stranger."""
from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request

import pytest

from mimi_cli.serve.access import FailedTokens, reaches_other_machines

websockets = pytest.importorskip("websockets")
from tests.serve.test_serve import close_of, encode_client, speech  # noqa: E402


def test_idle_connections_are_closed_and_free_their_slots(serve):
    server = serve(max_streams=2, idle_timeout_s=0.5)

    async def main():
        async def silent():  # connects and sends nothing, answering pings as any client library does
            return await close_of(server.url("/v1/encode"))

        async def trickle():  # sends a byte at a time: never a whole frame
            async with websockets.connect(server.url("/v1/decode")) as ws:
                try:
                    for _ in range(100):
                        await ws.send(b"M")
                        await asyncio.sleep(0.05)
                except websockets.exceptions.ConnectionClosed:
                    pass
                return ws.close_code, ws.close_reason

        idle = await asyncio.wait_for(asyncio.gather(silent(), trickle()), 30)  # held open: a failure, not a hang
        after = await encode_client(server.url("/v1/encode"), speech(0.5, 0), 8, 1920)  # a slot is free again
        return idle, after

    (a, b), (codes, code) = asyncio.run(main())
    assert a[0] == 4408 and "idle" in a[1] and b[0] == 4408
    assert code == 1000 and codes.shape == (8, 7)


def test_a_client_that_keeps_sending_frames_is_not_idle(serve):
    server = serve(idle_timeout_s=0.3)  # the clip takes about 1 s to send, one frame each 80 ms
    codes, code = asyncio.run(encode_client(server.url("/v1/encode"), speech(1.0, 1), 8, 1920, pause_s=0.08))
    assert code == 1000 and codes.shape[1] == 13


def test_wrong_tokens_lock_the_address_out(serve):
    server = serve(token="s3cret")
    run = asyncio.run
    codes = [run(close_of(server.url("/v1/encode?token=guess")))[0] for _ in range(10)]
    assert codes == [4401] * 10
    code, reason = run(close_of(server.url("/v1/encode?token=s3cret")))  # locked out, even with the token
    assert code == 4429 and "try again in" in reason
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics?token=s3cret")
    assert refused.value.code == 429


def test_metrics_need_the_token_and_health_tells_strangers_nothing(serve):
    server = serve(token="s3cret")
    base = f"http://127.0.0.1:{server.port}"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{base}/metrics")
    assert refused.value.code == 401
    request = urllib.request.Request(f"{base}/metrics", headers={"Authorization": "Bearer s3cret"})
    assert "mimi_live_streams" in urllib.request.urlopen(request).read().decode()
    assert json.loads(urllib.request.urlopen(f"{base}/health").read()) == {"status": "ok"}
    full = json.loads(urllib.request.urlopen(f"{base}/health?token=s3cret").read())
    assert full["capacity"] == 64 and "model" in full


def test_a_message_over_the_limit_closes_with_1009(serve):
    server = serve(max_message_bytes=4096)
    code, _ = asyncio.run(close_of(server.url("/v1/encode"), [bytes(8192)]))
    assert code == 1009
    codes, code = asyncio.run(encode_client(server.url("/v1/encode"), speech(0.3, 2), 8, 960))  # 3840-byte messages
    assert code == 1000


def test_failed_tokens_count_within_a_window_and_forget_the_oldest():
    now = [0.0]
    failed = FailedTokens(limit=3, window_s=10, lockout_s=60, max_addresses=2, clock=lambda: now[0])
    for t in (0, 5, 11):  # the first has left the window by the third
        now[0] = t
        failed.failed("a")
    assert failed.wait_s("a") == 0
    failed.failed("a")
    assert failed.wait_s("a") == 60
    now[0] += 61
    assert failed.wait_s("a") == 0
    for address in ("b", "c", "d"):
        failed.failed(address)
    assert list(failed.failures) == ["c", "d"]


@pytest.mark.parametrize("host,other", [("127.0.0.1", False), ("localhost", False), ("::1", False),
                                        ("[::1]", False), ("0.0.0.0", True), ("::", True), ("10.0.0.5", True),
                                        ("example.org", True)])
def test_which_hosts_reach_other_machines(host, other):
    assert reaches_other_machines(host) is other
