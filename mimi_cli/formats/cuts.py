"""lhotse manifests (a CutSet or RecordingSet as `.jsonl` / `.jsonl.gz`) as inputs, read through
lhotse itself: one item per cut (its region and channels only) or per recording.

A manifest is untrusted, and lhotse runs what it says: a `command` source is a shell command, a
`url` source is fetched. So before lhotse sees a line, every audio source in it (a recording's, a
MixedCut track's, a transform's impulse response) is checked: `file` sources must lie inside the
audio root (`--audio-root`, else the manifest's folder) and are rewritten to the file they
resolve to; `url` sources are read only with `--allow-network`, `command` sources run only with
`--allow-commands`; any other kind is an error row.
"""
from __future__ import annotations

import contextlib
import functools
import io
import json
import logging
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from ..errors import MimiError
from ..spec import SAMPLE_RATE
from .audio import (
    BLOCK_FRAMES,
    MAX_CHANNELS,
    MAX_RATE,
    MAX_SECONDS,
    Audio24k,
    AudioError,
    check_duration,
    ffmpeg_reads_instead,
    file_ends,
    read_region,
)
from .containers import ContainerError, Item
from .limits import MAX_JSON_DEPTH, LimitError, parse_json, read_lines
from .manifests import ManifestOptions
from .paths import AudioRoot, UnsafePathError, missing_hint
from .storage import first_line

INSTALL_HINT = "lhotse manifests are read through lhotse: pip install 'mimi-cli[lhotse]'"
CUT_TYPES = {"MonoCut", "MultiCut", "MixedCut", "Cut"}
SUPERVISION_FIELDS = ("speaker", "language", "gender")  # kept from a cut's first supervision that has one
# What --allow-network lets lhotse fetch: addresses on the network, not `file://` or lhotse's `pipe:` commands.
NETWORK_URL = re.compile(r"^(https?|s3|gs|gcs|az|abfss?|hf)://", re.IGNORECASE)


log = logging.getLogger("mimi_cli.cuts")


class SourceRefused(MimiError, ValueError):
    """An audio source of a manifest entry that mimi will not read (outside the root, a command, a URL)."""


def is_lhotse(path: Path) -> bool:
    """Whether a `.jsonl(.gz)` file is a lhotse CutSet or RecordingSet (from its first line)."""
    try:
        first = parse_json(next(read_lines(path), b"null"))
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
    """A cut or recording as its (checked and rewritten) manifest line, loaded through lhotse
    when its batch comes; `channels`: the recording channels a cut selects, in the order lhotse
    loads them (None for a recording, read whole like a file, and for a MixedCut)."""

    line: str
    channels: tuple[int, ...] | None = None
    locality = ""

    def open(self, mix: bool, max_seconds: float = MAX_SECONDS) -> Audio24k:
        """Its audio at 24 kHz ([1, n] mixed to mono if `mix`, else [channels, n]), resampled a block
        at a time from what lhotse loads whole; AudioError if it lasts over `max_seconds` (told
        before lhotse reads it) or cannot be read."""
        obj = _lhotse()(json.loads(self.line))
        channels = int(getattr(obj, "num_channels", 1) or 1)
        try:
            duration, rate = float(obj.duration), int(obj.sampling_rate)
        except (OverflowError, ValueError, TypeError):
            raise AudioError(f"a duration of {obj.duration!r} s at {obj.sampling_rate!r} Hz") from None
        if not 1 <= rate <= MAX_RATE:
            raise AudioError(f"a sampling rate of {obj.sampling_rate} Hz")
        check_duration(duration * (1 if mix else channels), max_seconds)
        check_whole(duration * rate * channels, max_seconds)
        audio, rate = self.load(obj, max_seconds)
        blocks = (np.ascontiguousarray(audio[:, at:at + BLOCK_FRAMES].T)
                  for at in range(0, audio.shape[1], BLOCK_FRAMES))
        return Audio24k(blocks, rate, audio.shape[0], mix, max_seconds, audio.shape[1])

    def load(self, obj=None, max_seconds: float = MAX_SECONDS) -> tuple[np.ndarray, int]:
        """Its samples [channels, n] at its own rate, as lhotse reads them (through mimi's backend,
        `_our_backend`)."""
        obj = obj if obj is not None else _lhotse()(json.loads(self.line))
        if not 1 <= int(obj.sampling_rate) <= MAX_RATE:
            raise AudioError(f"a sampling rate of {obj.sampling_rate} Hz")
        try:
            with _our_backend(max_seconds):
                audio = np.asarray(obj.load_audio(), dtype=np.float32)
        except Exception as e:  # lhotse's backends raise their own types; the reason is what matters
            raise AudioError(f"lhotse could not load it: {lhotse_reason(e)}") from None
        audio = audio.reshape(-1, audio.shape[-1]) if audio.size else audio.reshape(1, 0)
        if audio.shape[1] == 0:
            raise AudioError("the cut holds no samples")
        if not np.isfinite(audio).all():
            raise AudioError("the audio holds NaN or infinite samples")
        return np.ascontiguousarray(audio), int(obj.sampling_rate)


def check_whole(samples: float, max_seconds: float) -> None:
    """AudioError unless a cut's samples, every channel at its own rate, fit half of what
    `max_seconds` of 24 kHz mono holds: lhotse loads a cut whole (an hour of eight channels at
    48 kHz would be 5.5 GB), and half keeps a hostile manifest within 0.5 GB of a normal run."""
    if samples > max_seconds * SAMPLE_RATE / 2:
        raise AudioError(f"lhotse loads a cut whole, and this one holds {samples / 1e6:.0f} M samples (its channels at "
                         f"its own rate), over the {max_seconds * SAMPLE_RATE / 2e6:.1f} M that --max-duration "
                         f"{max_seconds:g} s allows (half of it at 24 kHz mono); raise --max-duration, or cut it into "
                         "shorter cuts (lhotse's cut_into_windows)")


_reading = threading.local()  # max_seconds while this thread loads an item for mimi, else unset
_install_lock = threading.Lock()


@contextlib.contextmanager
def _our_backend(max_seconds: float) -> Iterator[None]:
    """lhotse reads audio inside as `mimi encode` reads files: libsndfile, then FFmpeg under
    media's allow-list, never past `max_seconds`. lhotse's own fallbacks run the `ffmpeg` command
    on the file (audioread), which probes every format FFmpeg has, playlists that fetch addresses
    included. mimi's backend wraps whatever backend is current and passes every other read to it:
    other threads, and the caller after this, read as they did."""
    from lhotse.audio.backend import get_current_audio_backend, set_current_audio_backend

    with _install_lock:
        current = get_current_audio_backend()
        if not isinstance(current, _backend_class()):
            set_current_audio_backend(_backend_class()(current))
    _reading.max_seconds = max_seconds
    try:
        yield
    finally:
        _reading.max_seconds = None


@functools.cache
def _backend_class() -> type:
    from lhotse.audio.backend import AudioBackend

    class MimiAudioBackend(AudioBackend):
        """Reads for mimi on a thread inside `_our_backend`; everything else goes to `previous`."""

        def __init__(self, previous) -> None:
            self.previous = previous

        def read_audio(self, path_or_fd, offset=0.0, duration=None, force_opus_sampling_rate=None):
            limit = getattr(_reading, "max_seconds", None)
            if limit is None:
                return self.previous.read_audio(path_or_fd, offset, duration, force_opus_sampling_rate)
            return _read_region(path_or_fd, offset, duration, limit)

        def info(self, path_or_fd, force_opus_sampling_rate=None):
            return self.previous.info(path_or_fd, force_opus_sampling_rate=force_opus_sampling_rate)

        def supports_info(self) -> bool:
            return self.previous.supports_info()

        def supports_save(self) -> bool:
            return self.previous.supports_save()

        def save_audio(self, *args, **kwargs):
            return self.previous.save_audio(*args, **kwargs)

    return MimiAudioBackend


def _read_region(path_or_fd, offset: float, duration: float | None, max_seconds: float) -> tuple[np.ndarray, int]:
    """[channels, n] float32 at the file's own rate, `duration` seconds from `offset` (to the end,
    at most `max_seconds` past `offset`, if None): lhotse's own reading for what libsndfile reads
    as it is, else FFmpeg's under media's allow-list."""
    from lhotse.audio.backend import soundfile_load
    from lhotse.utils import compute_num_samples

    source = path_or_fd if hasattr(path_or_fd, "read") else os.fspath(path_or_fd)
    span = duration if duration is not None else max_seconds + 1  # a file longer than stated ends here
    demuxer = _misread(source)
    if demuxer is not None:
        return read_region(source, offset, span, None, compute_num_samples, demuxer)
    try:
        return soundfile_load(source, offset, span)
    except (sf.LibsndfileError, RuntimeError) as e:
        return read_region(source, offset, span, e, compute_num_samples)


def _misread(source: str | io.BytesIO) -> str | None:
    """FFmpeg's demuxer where libsndfile would misread the file (`ffmpeg_reads_instead`), else
    None (and None where libsndfile cannot open it: lhotse's reading says why)."""
    if hasattr(source, "read") and not isinstance(source, io.BytesIO):
        return None
    try:
        try:
            head = file_ends(source)[0]
            f = sf.SoundFile(source if isinstance(source, io.BytesIO) else os.fsencode(source))
        except (sf.LibsndfileError, RuntimeError, OSError, ValueError, AudioError):
            return None
        with f:
            return ffmpeg_reads_instead(f, source, head)
    finally:
        if isinstance(source, io.BytesIO):
            source.seek(0)


def lhotse_reason(e: Exception) -> str:
    """Why lhotse could not read audio, in one line: the reasons its backends gave, without the
    "Reading audio from ... failed. Details:" preamble and the class names around them."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    causes = [re.sub(r"^Exception #\d+ \(.*?\): (<class '[^']*'>: )?", "", line) for line in lines
              if line.startswith("Exception #")]
    return "; ".join(dict.fromkeys(causes))[:300] if causes else first_line(e)


def lhotse_items(path: Path, options: ManifestOptions | None = None
                 ) -> Iterator[tuple[Item, LhotseItem | None, str | None]]:
    """Each cut (or recording) of the manifest: its item (keyed by its id, with its duration, the
    fingerprint of its region and its fields), how to load it, and the audio file it reads. A
    line that cannot be read is an error item; a manifest that goes past a bound (docs/security.md)
    ends with one, after the items before it."""
    options = options or ManifestOptions()
    deserialize = _lhotse()
    root = AudioRoot(options.audio_root or path.parent)
    n, hinted = -1, False
    try:
        for n, raw in enumerate(read_lines(path)):
            try:
                data = parse_json(raw, f"line {n}", checked=False)  # checked_sources walks it, depth and all
                if not isinstance(data, dict):
                    raise ValueError("not a JSON object")
            except (ValueError, UnicodeDecodeError) as e:
                yield Item(f"{path.name}:{n}", None, error=f"line {n} is no lhotse manifest entry: {e}"), None, None
                continue
            key = data["id"] if isinstance(data.get("id"), str) and data["id"] else f"{path.name}:{n}"
            try:
                files = checked_sources(data, root, options)
                line = json.dumps(data)
                obj = deserialize(data)
                duration = float(obj.duration)
                channels = int(getattr(obj, "num_channels", 1) or 1)
                if not 0 < duration < float("inf") or not 1 <= channels <= MAX_CHANNELS:
                    raise ValueError(f"a duration of {duration} s over {channels} channels")
            except SourceRefused as e:
                yield Item(key, None, error=str(e)), None, None
                continue
            except Exception as e:  # a line lhotse cannot read is that item's error, not the run's
                yield Item(key, None, error=f"line {n} is no lhotse manifest entry: {first_line(e)}"), None, None
                continue
            recording = getattr(obj, "recording", obj)
            region = {"start": getattr(obj, "start", 0.0), "duration": duration,
                      "channel": getattr(obj, "channel", None), "recording": getattr(recording, "id", None)}
            item = Item(obj.id, None, duration_s=duration, fingerprint="lhotse:" + json.dumps(region),
                        fields=_fields(obj))
            if files and not hinted and not os.path.lexists(files[0][1]):  # the first missing file: a wrong root?
                hinted = True
                hint = missing_hint(files[0][0], root.root)
                if hint:
                    log.warning("%s names %s, which is not there%s", path, files[0][0], hint)
            yield item, LhotseItem(line, selected_channels(obj)), files[0][1] if files else None
    except LimitError as e:
        yield Item(f"{path.name}:<after line {n}>", None, error=f"stopped reading {path.name}: {e}"), None, None


def selected_channels(obj) -> tuple[int, ...] | None:
    """The recording channels a MonoCut or MultiCut reads, in the order lhotse loads them (the
    recording's); None for anything else."""
    from lhotse.cut import MonoCut, MultiCut

    if isinstance(obj, MonoCut):
        return (int(obj.channel),)
    if isinstance(obj, MultiCut):
        wanted = {int(c) for c in obj.channel}
        return tuple(int(c) for c in obj.recording.channel_ids if int(c) in wanted)
    return None


def checked_sources(entry: dict, root: AudioRoot, options: ManifestOptions) -> list[tuple[str, str]]:
    """The audio files a manifest entry reads (as it names them, and as resolved inside `root`),
    each rewritten in `entry` to the file it resolves to; SourceRefused for a source mimi will not
    read."""
    files = []
    pending: list[tuple[object, int]] = [(entry, 1)]
    while pending:
        value, depth = pending.pop()
        if depth > MAX_JSON_DEPTH:
            raise SourceRefused(f"the entry is nested over {MAX_JSON_DEPTH} deep")
        if isinstance(value, list):
            pending.extend((v, depth + 1) for v in value if isinstance(v, dict | list))
            continue
        if not isinstance(value, dict):
            continue
        if isinstance(value.get("type"), str) and "source" in value:  # an AudioSource
            given = value["source"]
            value["source"] = _checked_source(value["type"], given, root, options)
            if value["type"] == "file":
                files.append((given, value["source"]))
            continue
        pending.extend((v, depth + 1) for v in value.values() if isinstance(v, dict | list))
    return files


def _checked_source(kind: str, source: object, root: AudioRoot, options: ManifestOptions) -> object:
    shown = repr(source)[:120]
    if kind == "file":
        if not isinstance(source, str) or not source:
            raise SourceRefused(f"a file source that names no file ({shown})")
        try:
            real = root.resolve(source)
        except UnsafePathError as e:
            raise SourceRefused(f"its audio file is refused: {e}") from None
        return str(real)
    if kind == "url":
        if options.allow_network:
            if isinstance(source, str) and NETWORK_URL.match(source):
                return source
            raise SourceRefused(f"its url source {shown} is no network address (http, https, s3, gs, az, hf): "
                                "lhotse would read a local file or run a pipe: command for it")
        raise SourceRefused(f"its audio is fetched from {shown}: mimi reads nothing over the network unless you "
                            "pass --allow-network")
    if kind == "command":
        if options.allow_commands:
            return source
        raise SourceRefused(f"its audio comes from running the shell command {shown}: mimi runs no command from "
                            "a manifest unless you pass --allow-commands")
    raise SourceRefused(f"its audio source is of type {kind!r}: mimi reads file sources (and url or command "
                        "sources when allowed) from a manifest")


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


def stat_or_zero(path: str) -> tuple[int, int]:
    """(size, mtime_ns) of an audio file, or zeros where it cannot be read (reading it says why)."""
    try:
        st = os.stat(path)
    except OSError:
        return 0, 0
    return st.st_size, st.st_mtime_ns
