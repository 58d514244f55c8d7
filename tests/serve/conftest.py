"""A `mimi serve` server on the tiny codec, in a thread of the test process, on a free port."""
from __future__ import annotations

import asyncio
import threading

import pytest
from aiohttp import web

from mimi_cli.serve.app import ServeConfig, Server


class Running:
    def __init__(self, codec, config: ServeConfig) -> None:
        self.server = Server(codec, config, "synthetic:3 (tiny)")
        self.loop = asyncio.new_event_loop()
        self.started = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.started.wait(30), "the server did not start"

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.runner = web.AppRunner(self.server.app(), handle_signals=False)
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.port = self.runner.addresses[0][1]
        self.started.set()
        self.loop.run_forever()

    def url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        if not self.thread.is_alive():
            self.loop.close()  # its sockets with it: left to the collector, they warn in a later test


@pytest.fixture
def serve(tiny):
    """Starts servers with the given ServeConfig fields; all are stopped after the test."""
    running = []

    def start(**config) -> Running:
        r = Running(tiny, ServeConfig(port=0, **config))
        running.append(r)
        return r

    yield start
    for r in running:
        r.stop()
