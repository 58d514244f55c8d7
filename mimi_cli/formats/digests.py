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
    O(N log N) in all, where one array sorted again at every window would cost N squared. A run
    holds each digest as its first 8 bytes (an integer, searched) and its last 4 (compared where
    the first match), as numbers compare many times faster than byte strings."""

    def __init__(self) -> None:
        self.runs: list[tuple[np.ndarray, np.ndarray]] = []

    def __len__(self) -> int:
        return sum(len(head) for head, _ in self.runs)

    def holds(self, found: np.ndarray) -> np.ndarray:
        """Which of `found` (an array of DTYPE) are in the set."""
        head, tail = _split(found)
        order = np.argsort(head)  # keys in order: each search starts from the last, in cache
        head, tail = head[order], tail[order]
        hit = np.zeros(len(found), bool)
        for run_head, run_tail in self.runs:
            left, right = np.searchsorted(run_head, head, "left"), np.searchsorted(run_head, head, "right")
            one = right - left == 1
            hit[one] |= run_tail[left[one]] == tail[one]
            for i in np.flatnonzero(right - left > 1):  # digests sharing their first 8 bytes: rare
                hit[i] |= bool((run_tail[left[i]:right[i]] == tail[i]).any())
        hit[order] = hit.copy()
        return hit

    def add(self, found: np.ndarray) -> None:
        run = _sorted(*_split(found))
        while (self.runs and len(self.runs[-1][0]) <= 2 * len(run[0])
               and len(self.runs[-1][0]) + len(run[0]) <= MAX_MERGED):
            head, tail = self.runs.pop()
            run = _sorted(np.concatenate([head, run[0]]), np.concatenate([tail, run[1]]))
        self.runs.append(run)


def _split(found: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Digests as (their first 8 bytes as uint64, their last 4 as uint32)."""
    raw = np.ascontiguousarray(found, DTYPE).view(np.uint8).reshape(-1, SIZE)
    return raw[:, :8].copy().view(np.uint64).ravel(), raw[:, 8:].copy().view(np.uint32).ravel()


def _sorted(head: np.ndarray, tail: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(head, kind="stable")  # two sorted runs joined merge in one pass
    return head[order], tail[order]
