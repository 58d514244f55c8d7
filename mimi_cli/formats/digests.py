"""Sets of names held as 12-byte digests (BLAKE2b): what a listing of millions of items keeps of
the items it has handed on, at 12 bytes each where a Python set of strings takes a hundred or more.
Two different names share a digest with a chance of about N^2 / 2^97 among N: 10^-15 at ten million."""
from __future__ import annotations

import hashlib

import numpy as np

SIZE = 12
DTYPE = f"S{SIZE}"
MAX_MERGED = 1 << 20  # runs are merged up to this many digests: a larger merge would double memory for a moment


def digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=SIZE).digest()


def digests(texts) -> np.ndarray:
    """The digests of `texts` as an array of DTYPE."""
    return np.array([digest(t) for t in texts], DTYPE)


class Digests:
    """A set of digests as a few sorted runs, each at least twice the size of the next up to
    MAX_MERGED (as a log-structured merge keeps them): adding N digests a window at a time sorts
    O(N log N) in all, where one array sorted again at every window would cost N squared."""

    def __init__(self) -> None:
        self.runs: list[np.ndarray] = []

    def __len__(self) -> int:
        return sum(len(r) for r in self.runs)

    def holds(self, found: np.ndarray) -> np.ndarray:
        """Which of `found` (an array of DTYPE) are in the set."""
        hit = np.zeros(len(found), bool)
        for run in self.runs:
            if len(run) and len(found):
                at = np.minimum(np.searchsorted(run, found), len(run) - 1)
                hit |= run[at] == found
        return hit

    def add(self, found: np.ndarray) -> None:
        run = np.sort(found)
        while self.runs and len(self.runs[-1]) <= 2 * len(run) and len(self.runs[-1]) + len(run) <= MAX_MERGED:
            run = np.sort(np.concatenate([self.runs.pop(), run]), kind="stable")
        self.runs.append(run)
