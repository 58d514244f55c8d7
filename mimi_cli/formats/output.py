"""Where a token dataset is written: a single `.parquet` file (staged as shards beside it) or a
directory of shards, its errors file, and what an earlier run already put there."""
from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .provenance import sidecar_path, write_sidecar
from .shards import COMMIT_SECONDS, DatasetError, ShardWriter, read_metadata, read_table, write_parquet_atomic
from .sources import Problem
from .storage import Location, atomic_write, own_directory, rmtree


@dataclass(frozen=True)
class OutputLayout:
    """How the dataset is laid out: shard format, and this job's place among array jobs."""

    format: str = "parquet"  # or "npy"
    shard_index: int = 0
    num_shards: int = 1


def errors_path(output: Location, shard_index: int = 0, num_shards: int = 1) -> Location:
    """Where the inputs or rows that failed are listed: beside OUTPUT, never in it, so readers of a
    shard directory see only shards (`out.errors.jsonl`; array job i: `out.errors-0000i.jsonl`)."""
    named = output if output.name else output.resolve()
    suffix = f"-{shard_index:05d}" if num_shards > 1 else ""
    return named.with_name(f"{_stem(named)}.errors{suffix}.jsonl")


def recorded_errors(output: Location) -> list[Location]:
    """Every errors file of a dataset (all array jobs')."""
    return list(output.parent.glob(f"{_stem(output)}.errors*.jsonl"))


class ErrorsFile:
    """A run's errors file at `path`, one JSON line per failed input or row, written as failures
    come: spooled to an unnamed temporary file (memory stays bounded however many fail) and put
    in place whole by `close`, as atomic_write puts any file; none when nothing failed."""

    SPOOL_BYTES = 1 << 20  # kept in memory up to this, then on disk

    def __init__(self, path: Location) -> None:
        self.path = path
        self._spool = tempfile.SpooledTemporaryFile(max_size=self.SPOOL_BYTES)

    def add(self, problem: Problem) -> None:
        self._spool.write((json.dumps({"id": problem.id, "path": problem.path, "error": problem.error}) + "\n"
                           ).encode())

    def close(self) -> None:
        """The errors file in place with every failure added (removed if there were none)."""
        try:
            if not self._spool.tell():  # nothing added (Summary.failures is the count)
                self.path.unlink(missing_ok=True)
                return
            self._spool.seek(0)
            with atomic_write(self.path) as f:
                shutil.copyfileobj(self._spool, f, 1 << 20)
        finally:
            self._spool.close()


def _stem(output: Location) -> str:
    """What errors files are named after: `out` for `out.parquet` and for a directory `out/`."""
    return output.stem if output.suffix == ".parquet" else output.name


def same_model(a: dict, b: dict) -> bool:
    """Whether two datasets' `model` records name the same weights (by sha256 where both have it)."""
    if a.get("sha256") and b.get("sha256"):
        return a["sha256"] == b["sha256"]
    return a.get("source") == b.get("source")


class DatasetOutput:
    """Where rows go: a single .parquet file (staged in shards beside it) or a shard directory."""

    def __init__(self, path: Location, metadata: dict, layout: OutputLayout, overwrite: bool = False,
                 commit_seconds: float = COMMIT_SECONDS) -> None:
        self.path, self.metadata = path, metadata
        self.single_file = path.suffix == ".parquet"
        if self.single_file and layout.format == "npy":
            raise DatasetError("--format npy writes one file per input: give a directory as OUTPUT, not a .parquet")
        if self.single_file and layout.num_shards > 1:
            raise DatasetError("array jobs (--num-shards) write side by side into a directory: give a directory "
                               "as OUTPUT, not a .parquet")
        if self.single_file:
            self.directory = path.with_name(f".{path.name}.parts")
            if isinstance(self.directory, Path):
                own_directory(self.directory)
        else:
            self.directory = path
        self.errors_path = errors_path(path, layout.shard_index, layout.num_shards)
        if overwrite:
            self._remove_existing()
        self.existing = self._existing_rows()
        prefix = "manifest" if layout.format == "npy" else "part"
        if layout.num_shards > 1:
            prefix += f"-{layout.shard_index:05d}"
        self.writer = ShardWriter(self.directory, metadata, prefix, commit_seconds=commit_seconds,
                                  npy_root=self.directory if layout.format == "npy" else None,
                                  sidecar=not self.single_file)

    def _remove_existing(self) -> None:
        if self.single_file:
            self.path.unlink(missing_ok=True)
            rmtree(self.directory)
        elif self.path.is_dir():
            for p in [*self.path.glob("*.parquet"), *recorded_errors(self.path)]:
                p.unlink()
        sidecar_path(self.path).unlink(missing_ok=True)
        self.errors_path.unlink(missing_ok=True)

    def _datasets(self) -> list[Location]:
        found = [self.path] if self.single_file and self.path.is_file() else []
        if self.directory.is_dir() and any(self.directory.glob("*.parquet")):
            found.append(self.directory)
        return found

    def _existing_rows(self) -> dict[str, tuple[int, int, str | None]]:
        """id -> (bytes, mtime, fingerprint) of what is already encoded; refuses a different model or K."""
        existing: dict[str, tuple[int, int, str | None]] = {}
        for ds in self._datasets():
            meta = read_metadata(ds)
            if not same_model(meta.get("model", {}), self.metadata["model"]):
                other = meta.get("model", {}).get("source")
                raise DatasetError(f"{self.path} holds tokens of another model ({other}); "
                                   "use another OUTPUT, or --overwrite to start over")
            for key in ("num_codebooks", "channels"):
                if meta.get(key) != self.metadata[key]:
                    raise DatasetError(f"{self.path} holds tokens with {key}={meta.get(key)}, this run asks for "
                                       f"{self.metadata[key]}; use another OUTPUT, or --overwrite to start over")
            columns = ["id", "source_bytes", "source_mtime_ns", "source_fingerprint"]
            table = read_table(ds, columns=columns, optional=("source_fingerprint",))  # older shards lack it
            for i, b, m, f in zip(*(table.column(c).to_pylist() for c in columns)):
                existing[i] = (b, m, f)
        return existing

    def finish(self) -> None:
        """Writes the last shard; a single-file output is then assembled and its staging removed.

        Staged rows already in the file are left out, so a crash between writing the file and
        removing the staging (a rerun finds both) cannot duplicate rows.
        """
        self.writer.flush()
        if not self.single_file:
            return
        import pyarrow as pa
        import pyarrow.compute as pc

        parts = []
        if self.path.is_file():
            parts.append(read_table(self.path))
        if self.directory.is_dir() and any(self.directory.glob("*.parquet")):
            staged = read_table(self.directory)
            if parts:
                staged = staged.filter(pc.invert(pc.is_in(staged.column("id"),
                                                          value_set=parts[0].column("id").combine_chunks())))
            parts.append(staged)
        if parts:
            table = pa.concat_tables(parts, promote_options="default").replace_schema_metadata(
                {b"mimi_cli": json.dumps(self.metadata)})
            write_parquet_atomic(self.path, table)
            write_sidecar(self.path, self.metadata)
        rmtree(self.directory)
