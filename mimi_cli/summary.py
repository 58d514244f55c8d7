"""What a corpus job (encode, decode) reports when it ends."""
from __future__ import annotations

from dataclasses import dataclass, field

from .formats.sources import Problem
from .formats.storage import Location


@dataclass
class Summary:
    """Counts of one run: rows written, inputs done and skipped (already there), and what failed."""

    output: Location
    rows: int = 0
    files: int = 0
    skipped: int = 0
    failed: list[Problem] = field(default_factory=list)
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0
    errors_path: Location | None = None
