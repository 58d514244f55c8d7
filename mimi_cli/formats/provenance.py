"""A token dataset's provenance (tool, model, K, rates): JSON in every shard's Parquet footer, and
the same JSON in a sidecar file, which survives tools that rewrite the Parquet and drop footers
(pandas, polars, DuckDB, `datasets`).

The sidecar is `.mimi.json` inside a shard directory (a hidden name, which pyarrow, pandas and
`datasets.load_dataset("parquet", data_dir=...)` all skip; `_mimi.json` would trip `datasets`)
and `NAME.mimi.json` beside a single `NAME.parquet` file.
"""
from __future__ import annotations

import json

from ..errors import MimiError
from ..spec import MAX_CODEBOOKS
from .storage import Location, atomic_write

METADATA_KEY = b"mimi_cli"
SIDECAR = ".mimi.json"
MAX_SIDECAR_BYTES = 1 << 20


class ProvenanceError(MimiError):
    """Provenance that is there but unusable (not JSON, impossible K ...)."""


def sidecar_path(dataset: Location) -> Location:
    """Where a dataset's sidecar lives: in its directory, or beside its single file."""
    if dataset.suffix == ".parquet" and not dataset.is_dir():
        return dataset.with_name(f"{dataset.stem}.mimi.json")
    return dataset / SIDECAR


def write_sidecar(dataset: Location, metadata: dict) -> None:
    with atomic_write(sidecar_path(dataset)) as f:
        f.write((json.dumps(metadata, indent=1) + "\n").encode())


def find(dataset: Location, footer: dict | None) -> tuple[dict, str] | None:
    """The dataset's provenance and where it was found ("footer" or "sidecar"), checked; None if it has none."""
    if footer and METADATA_KEY in footer:
        return checked(footer[METADATA_KEY], dataset, "its 'mimi_cli' metadata"), "footer"
    side = sidecar_path(dataset)
    if side.is_file():
        if side.stat().st_size > MAX_SIDECAR_BYTES:
            raise ProvenanceError(f"{side}: over {MAX_SIDECAR_BYTES >> 20} MiB, not a mimi sidecar")
        return checked(side.read_bytes(), dataset, side.name), "sidecar"
    return None


def checked(raw: bytes | str, dataset: Location, what: str) -> dict:
    """The provenance JSON, if usable: an object with K in 1..32 and an int16-sized codebook."""
    try:
        info = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        info = None
    if not isinstance(info, dict):
        raise ProvenanceError(f"{dataset}: {what} is not a JSON object")
    k, size = info.get("num_codebooks"), info.get("codebook_size")
    if not is_int(k) or not 1 <= k <= MAX_CODEBOOKS:
        raise ProvenanceError(f"{dataset}: {what} gives num_codebooks={k!r}, not 1..{MAX_CODEBOOKS}")
    if not is_int(size) or not 1 <= size <= 1 << 15:
        raise ProvenanceError(f"{dataset}: {what} gives codebook_size={size!r}, not 1..32768 (int16 codes)")
    if not isinstance(info.get("model", {}), dict):
        raise ProvenanceError(f"{dataset}: {what}'s 'model' is not an object")
    return info


def is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)
