"""Sets of names held as 16-byte digests (BLAKE2b): what a listing of millions of items keeps of
the items it has handed on, at 16 bytes each where a Python set of strings takes a hundred or more."""
from __future__ import annotations

import hashlib

import numpy as np


def digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def digests(texts) -> np.ndarray:
    """The digests of `texts` as an "S16" array."""
    return np.array([digest(t) for t in texts], "S16")


class Digests:
    """A set of 16-byte digests as a few sorted runs, each at least twice the size of the next
    (as a log-structured merge keeps them): adding N digests a window at a time sorts O(N log N)
    in all, where one array sorted again at every window would cost N squared over the window."""

    def __init__(self) -> None:
        self.runs: list[np.ndarray] = []

    def __len__(self) -> int:
        return sum(len(r) for r in self.runs)

    def holds(self, found: np.ndarray) -> np.ndarray:
        """Which of `found` (an "S16" array) are in the set."""
        hit = np.zeros(len(found), bool)
        for run in self.runs:
            if len(run) and len(found):
                at = np.minimum(np.searchsorted(run, found), len(run) - 1)
                hit |= run[at] == found
        return hit

    def add(self, found: np.ndarray) -> None:
        run = np.sort(found)
        while self.runs and len(self.runs[-1]) <= 2 * len(run):
            run = np.sort(np.concatenate([self.runs.pop(), run]), kind="stable")
        self.runs.append(run)
