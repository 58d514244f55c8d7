"""What a corpus job (encode, decode) reports when it ends."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from .formats.output import ErrorsFile
from .formats.sources import Problem
from .formats.storage import Location

FIRST_FAILURES = 1000  # failures a summary holds; the errors file has every one


@dataclass
class Summary:
    """Counts of one run: rows written, inputs done and skipped (already there), and what failed
    (`failures` of them; the first FIRST_FAILURES in `failed`, every one in the errors file)."""

    output: Location
    rows: int = 0
    files: int = 0
    skipped: int = 0
    failed: list[Problem] = field(default_factory=list)
    failures: int = 0
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0
    errors_path: Location | None = None
    errors: ErrorsFile | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.errors is None and self.errors_path is not None:
            self.errors = ErrorsFile(self.errors_path)

    def fail(self, problems: Iterable[Problem]) -> None:
        """Counts failures, keeps the first ones, and writes each to the errors file."""
        for p in problems:
            self.failures += 1
            if len(self.failed) < FIRST_FAILURES:
                self.failed.append(p)
            if self.errors is not None:
                self.errors.add(p)

    def close_errors(self) -> None:
        """Puts the errors file in place (or removes an old one when nothing failed)."""
        if self.errors is not None:
            self.errors.close()
