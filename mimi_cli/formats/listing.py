"""Listing a corpus a window at a time, so that a manifest of millions of items is encoded as it
is read: memory holds one window of sources, and 24 bytes for each item listed before it.

Within a window, sources are deduplicated and their ids checked as `collect_sources` checks a
whole listing. Across windows, what was listed before is known only by digests (BLAKE2b, 12
bytes) of its ids and of what it reads: the same input named again is dropped, and an id that
names an earlier, different input is refused (InputError) when its window comes. A listing that
fits one window is checked whole before any work.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from .digests import Digests, digests
from .manifests import ManifestOptions
from .paths import RealPaths
from .sources import Problem, Source, list_sources, refuse_clashes, unique_sources

WINDOW = 20_000  # items (sources and problems) a window holds: a few seconds of listing, tens of MB


@dataclass(frozen=True)
class Window:
    """A window's sources (unique, not seen before) and problems; `last`: the listing ends here."""

    sources: list[Source]
    problems: list[Problem]
    last: bool


def windows(inputs: list[str], manifest: ManifestOptions | None = None, size: int = WINDOW,
            stdin: BinaryIO | None = None) -> Iterator[Window]:
    """The items named by `inputs` (as `collect_sources` lists them, in the same order), `size`
    items at a time. InputError for clashing ids when the window holding the second one comes."""
    seen_inputs, seen_ids = Digests(), Digests()
    real_paths = RealPaths()
    sources: list[Source] = []
    problems: list[Problem] = []
    for found, failed in list_sources(inputs, stdin, manifest):
        sources += found
        problems += failed
        if len(sources) + len(problems) >= size:
            yield _checked(sources, problems, seen_inputs, seen_ids, real_paths, last=False)
            sources, problems = [], []
    yield _checked(sources, problems, seen_inputs, seen_ids, real_paths, last=True)


def _checked(sources: list[Source], problems: list[Problem], seen_inputs: Digests, seen_ids: Digests,
             real_paths: RealPaths, last: bool) -> Window:
    unique = unique_sources(sources, real_paths)
    keys = digests(repr(key) for key in unique)
    new = ~seen_inputs.holds(keys)
    kept = [s for s, n in zip(unique.values(), new) if n]
    ids = digests(s.id for s in kept)
    earlier = {s.id for s, hit in zip(kept, seen_ids.holds(ids)) if hit}
    refuse_clashes(kept, earlier)
    seen_inputs.add(keys[new])
    seen_ids.add(ids)
    return Window(kept, problems, last)
