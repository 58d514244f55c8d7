"""The seeded fuzz of every container and manifest reader (tests/formats/fuzz_readers.py), in a
process of its own so that its memory is its own: only our errors, each case bounded in time,
the whole within a few hundred MB."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]


@pytest.mark.parametrize("seed", [0, 1])
def test_mutated_containers_and_manifests_raise_only_our_errors(seed):
    done = subprocess.run([sys.executable, "-m", "tests.formats.fuzz_readers", "400", str(seed)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-2000:]
    peak = int(done.stdout.rsplit("peak_rss_mb ", 1)[1])
    assert peak < 600, f"the fuzz took {peak} MB"
