"""`mimi encode --engine ray`: the same job on a Ray cluster, through Ray Data.

Two stages: reading + resampling (`Source.read`, CPU tasks) feeds a pool of model workers
(`encode_items` in an actor that loads the codec once). Rows stream back to the driver, which
writes them with the same shard writer as the local engine: same schema, metadata, atomic
shards, errors file and resume. Nothing here schedules work itself; Ray Data does.
"""
from __future__ import annotations

import pickle
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from .codec import MimiError
from .encode import Batch, EncodeOptions, encode_items
from .formats.audio import AudioError
from .formats.shards import Row, SourceInfo
from .formats.sources import AudioItem, Problem, Source
from .threads import torch_threads

INSTALL_HINT = "the Ray engine needs Ray Data: pip install 'mimi-cli[ray]'"


def require_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise MimiError(INSTALL_HINT) from None
    return ray


def _read(record: dict, channels: str, max_seconds: float) -> list[dict]:
    """Ray stage 1 (CPU): one source -> its items, or one error record."""
    source: Source = pickle.loads(record["source"])  # a file, or an item inside a container
    try:
        items = source.read(channels, max_seconds)
    except AudioError as e:
        return [{"id": source.id, "path": record["path"], "error": str(e), "channel": -1,
                 "pcm": np.zeros(0, np.float32), **_columns(SourceInfo())}]
    return [{"id": it.id, "path": record["path"], "error": "", "channel": it.channel, "pcm": it.pcm,
             **_columns(it.source)} for it in items]


def _columns(info: SourceInfo) -> dict:
    """The `source_*` values with no nulls (a missing fingerprint travels as ''), so every Ray
    block has one schema."""
    return {k: "" if v is None else v for k, v in info.columns().items()}


class _EncodeWorker:
    """Ray stage 2 (model): a codec loaded once per worker, applied to batches of items."""

    def __init__(self, weights: str, device: str, dtype: str, num_codebooks: int, threads: int | None) -> None:
        from .codec import load_codec

        self.threads = threads or None  # torch's ops run on this many during each call (None: as they are)
        with torch_threads(self.threads):
            self.codec = load_codec(weights, device=device, dtype=dtype)
        self.k = num_codebooks

    def __call__(self, batch: dict) -> dict:
        with torch_threads(self.threads):
            return self._encode(batch)

    def _encode(self, batch: dict) -> dict:
        ok = [i for i, e in enumerate(batch["error"]) if not e]
        items = [AudioItem(batch["id"][i], int(batch["channel"][i]), np.asarray(batch["pcm"][i], np.float32),
                           SourceInfo.from_columns(batch, i)) for i in ok]
        rows = {i: r for i, r in zip(ok, encode_items(self.codec, items, self.k))}
        n = len(batch["id"])
        return {
            "id": list(batch["id"]), "path": list(batch["path"]), "error": list(batch["error"]),
            "channel": [int(c) for c in batch["channel"]],
            "codes": [rows[i].codes if i in rows else np.zeros((self.k, 0), np.int16) for i in range(n)],
            "num_samples": [rows[i].num_samples if i in rows else 0 for i in range(n)],
            **{k: list(batch[k]) for k in SourceInfo.COLUMNS},
        }


@dataclass(frozen=True)
class RayEngine:
    """Runs the encode on Ray; pass it to `encode_dataset(..., engine=RayEngine(...))`."""

    weights: str
    device: str = "auto"
    dtype: str = "float32"
    address: str | None = None
    workers: int = 1
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0
    threads_per_worker: int | None = None
    read_cpus: float = 1.0  # per read task; the model workers must leave CPUs for these, or nothing is read

    def __call__(self, todo: list[tuple[Source, float]], o: EncodeOptions) -> Iterator[Batch]:
        ray = require_ray()
        if not ray.is_initialized():
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False,
                     ignore_reinit_error=True)
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True  # sorted by length: neighbours batch well
        ctx.enable_progress_bars = False
        ordered = sorted(todo, key=lambda sd: (sd[0].locality, sd[1]))
        if not ordered:
            return
        ds = ray.data.from_items([{"path": str(s.path), "id": s.id, "source": pickle.dumps(s)} for s, _ in ordered])
        ds = ds.flat_map(_read, fn_kwargs={"channels": o.channels, "max_seconds": o.max_duration_s},
                         num_cpus=self.read_cpus)
        ds = ds.map_batches(
            _EncodeWorker, batch_size=o.max_batch, batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=self.workers),
            num_gpus=self.gpus_per_worker, num_cpus=self.cpus_per_worker,
            fn_constructor_kwargs={"weights": self.weights, "device": self.device, "dtype": self.dtype,
                                   "num_codebooks": o.num_codebooks, "threads": self.threads_per_worker})
        for out in ds.iter_batches(batch_size=o.max_batch, batch_format="numpy"):
            rows, failed = [], []
            for i in range(len(out["id"])):
                if out["error"][i]:
                    failed.append(Problem(str(out["id"][i]), str(out["path"][i]), str(out["error"][i])))
                    continue
                codes = np.asarray(out["codes"][i], dtype=np.int16).reshape(o.num_codebooks, -1)
                rows.append(Row(str(out["id"][i]), int(out["channel"][i]), codes, int(out["num_samples"][i]),
                                SourceInfo.from_columns(out, i)))
            yield Batch(rows, failed, len({r.id for r in rows} | {p.id for p in failed}))
