"""QuietLoop: the event loop runs what was ready, then holds still for the length of a step."""
from __future__ import annotations

import asyncio
import threading
import time

from mimi_cli.serve.app import QuietLoop


def test_the_loop_runs_what_was_ready_then_holds_until_the_step_ends():
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        quiet, seen = QuietLoop(loop), []
        loop.call_soon_threadsafe(seen.append, "ready before")
        with quiet():
            assert seen == ["ready before"]  # its turn came first
            loop.call_soon_threadsafe(seen.append, "during")
            time.sleep(0.1)
            assert seen == ["ready before"]  # held while the step runs
        deadline = time.monotonic() + 5
        while "during" not in seen and time.monotonic() < deadline:
            time.sleep(0.005)
        assert seen == ["ready before", "during"]  # and free again after it
        for _ in range(20):  # steps back to back never leave the loop held between them
            with quiet():
                pass
        done = threading.Event()
        loop.call_soon_threadsafe(done.set)
        assert done.wait(1.0)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()
