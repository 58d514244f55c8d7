"""What a token dataset holds, read from its shards and provenance without decoding a row."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import pyarrow as pa

from ..spec import FRAME_RATE, FRAME_SAMPLES, SAMPLE_RATE
from .output import recorded_errors
from .shards import DatasetError, NoProvenanceError, open_shard, read_metadata, read_table, shard_files
from .storage import Location

MAX_ROW_FRAMES = int(10 * 24 * 3600 * FRAME_RATE)  # ten days: a row claiming more is not counted


@dataclass(frozen=True)
class DatasetInfo:
    """A token dataset's size and provenance (`metadata` None: it has none, rewritten by another tool)."""

    path: str
    rows: int
    inputs: int  # distinct ids: a file, a cut, a tar sample (one per channel with --channels each)
    hours: float  # audio counted only from rows whose lengths add up
    frames: int
    implausible_rows: int  # rows whose num_frames / num_samples cannot be true, left out of hours and frames
    shards: int
    bytes: int
    errors: int  # inputs the errors files list as failed
    metadata: dict | None

    def as_dict(self) -> dict:
        return asdict(self)


def dataset_info(tokens: Location) -> DatasetInfo:
    """What the token dataset at `tokens` holds; DatasetError if it is not one."""
    import pyarrow.compute as pc

    shards = shard_files(tokens)
    try:
        meta = read_metadata(tokens)
    except NoProvenanceError as e:  # rewritten by another tool: described if its columns are a token dataset's
        try:
            open_shard(shards[0])
        except DatasetError:
            raise e from None
        meta = None
    table = read_table(tokens, columns=["id", "num_frames", "num_samples"])
    errors = sum(p.read_bytes().count(b"\n") for p in recorded_errors(tokens))
    try:
        frames = pc.cast(pc.fill_null(table.column("num_frames"), -1), pa.int64())
        samples = pc.cast(pc.fill_null(table.column("num_samples"), -1), pa.int64())
    except (pa.ArrowException, TypeError):
        raise DatasetError(f"{tokens}: columns num_frames and num_samples do not hold numbers") from None
    # A row's lengths count only where they add up (a crafted row may claim any number of hours).
    plausible = pc.and_(pc.and_(pc.greater_equal(frames, 0), pc.less_equal(frames, MAX_ROW_FRAMES)),
                        pc.and_(pc.greater_equal(samples, 0),
                                pc.less_equal(samples, pc.multiply(frames, FRAME_SAMPLES))))
    counted = int(pc.sum(pc.cast(plausible, pa.int64())).as_py() or 0)

    def total(column) -> int:
        return int(pc.sum(pc.filter(column, plausible)).as_py() or 0)

    return DatasetInfo(path=str(tokens), rows=table.num_rows, inputs=pc.count_distinct(table.column("id")).as_py(),
                       hours=total(samples) / SAMPLE_RATE / 3600, frames=total(frames),
                       implausible_rows=table.num_rows - counted, shards=len(shards),
                       bytes=sum(p.stat().st_size for p in shards), errors=errors, metadata=meta)
