"""lhotse manifests (a CutSet or RecordingSet as `.jsonl` / `.jsonl.gz`) as inputs, read through
lhotse itself: one item per cut (its region and channels only) or per recording."""
from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .audio import AudioError
from .containers import ContainerError, Item

INSTALL_HINT = "lhotse manifests are read through lhotse: pip install 'mimi-cli[lhotse]'"
CUT_TYPES = {"MonoCut", "MultiCut", "MixedCut", "Cut"}
SUPERVISION_FIELDS = ("speaker", "language", "gender")  # kept from a cut's first supervision that has one


def _lines(path: Path) -> Iterator[str]:
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield line


def is_lhotse(path: Path) -> bool:
    """Whether a `.jsonl(.gz)` file is a lhotse CutSet or RecordingSet (from its first line)."""
    try:
        first = json.loads(next(_lines(path), "null"))
    except (OSError, ValueError, EOFError, UnicodeDecodeError):
        return False
    return isinstance(first, dict) and ("sources" in first and "sampling_rate" in first
                                        or first.get("type") in CUT_TYPES)


def _lhotse():
    try:
        from lhotse.serialization import deserialize_item
    except ImportError:
        raise ContainerError(INSTALL_HINT) from None
    return deserialize_item


@dataclass(frozen=True)
class LhotseItem:
    """A cut or recording as its manifest line, loaded through lhotse when its batch comes."""

    line: str
    locality = ""

    def load(self) -> tuple[np.ndarray, int]:
        obj = _lhotse()(json.loads(self.line))
        try:
            audio = np.asarray(obj.load_audio(), dtype=np.float32)
        except Exception as e:  # lhotse's backends raise their own types; the reason is what matters
            reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise AudioError(f"lhotse could not load it: {reason}") from None
        audio = audio.reshape(-1, audio.shape[-1]) if audio.size else audio.reshape(1, 0)
        if audio.shape[1] == 0:
            raise AudioError("the cut holds no samples")
        if not np.isfinite(audio).all():
            raise AudioError("the audio holds NaN or infinite samples")
        return np.ascontiguousarray(audio), int(obj.sampling_rate)


def lhotse_items(path: Path) -> Iterator[tuple[Item, LhotseItem, str | None]]:
    """Each cut (or recording) of the manifest: its item (keyed by its id, with its duration, the
    fingerprint of its region and its fields), how to load it, and the audio file it reads."""
    deserialize = _lhotse()
    for n, line in enumerate(_lines(path)):
        try:
            obj = deserialize(json.loads(line))
        except Exception as e:  # a line lhotse cannot read is that item's error, not the run's
            yield Item(f"{path.name}:{n}", None, error=f"line {n} is no lhotse manifest entry: {e}"), None, None
            continue
        recording = getattr(obj, "recording", obj)
        files = [s.source for s in getattr(recording, "sources", []) if s.type == "file"]
        region = {"start": getattr(obj, "start", 0.0), "duration": obj.duration,
                  "channel": getattr(obj, "channel", None), "recording": getattr(recording, "id", None)}
        item = Item(obj.id, None, duration_s=float(obj.duration), fingerprint="lhotse:" + json.dumps(region),
                    fields=_fields(obj))
        yield item, LhotseItem(line), os.fspath(files[0]) if files else None


def _fields(obj) -> dict:
    """What `--keep-columns` can take from a cut: `text` (its supervisions' texts joined), their
    speaker / language / gender, and its `custom` fields."""
    supervisions = getattr(obj, "supervisions", None) or []
    fields = dict(getattr(obj, "custom", None) or {})
    if supervisions:
        fields["text"] = " ".join(s.text for s in supervisions if s.text)
        for name in SUPERVISION_FIELDS:
            fields[name] = next((getattr(s, name) for s in supervisions if getattr(s, name, None)), None)
    return fields
