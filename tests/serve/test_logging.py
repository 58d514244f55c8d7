"""The server logs under the CLI's logger, so `mimi serve` shows its messages as the other commands' are."""
from __future__ import annotations

import logging

from mimi_cli.serve import app, batcher


def test_server_messages_reach_the_cli_logger():
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    cli_log = logging.getLogger("mimi_cli")  # what mimi_cli.cli sets up
    cli_log.addHandler(handler)
    try:
        for module in (app, batcher):
            module.log.error("a step failed")
    finally:
        cli_log.removeHandler(handler)
    assert [r.name for r in records] == ["mimi_cli.serve", "mimi_cli.serve"]
