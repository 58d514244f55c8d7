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
    """A set of 16-byte digests as one sorted array."""

    def __init__(self) -> None:
        self.sorted = np.empty(0, "S16")

    def __len__(self) -> int:
        return len(self.sorted)

    def holds(self, found: np.ndarray) -> np.ndarray:
        """Which of `found` (an "S16" array) are in the set."""
        if not len(self.sorted) or not len(found):
            return np.zeros(len(found), bool)
        at = np.minimum(np.searchsorted(self.sorted, found), len(self.sorted) - 1)
        return self.sorted[at] == found

    def add(self, found: np.ndarray) -> None:
        # A stable sort merges the sorted run already there with the new one in linear time.
        self.sorted = np.sort(np.concatenate([self.sorted, found]), kind="stable")
