"""The `mimi` command: a thin Typer shell over the library (flags, messages, exit codes).

Exit codes: 0 success; 1 some inputs failed (the rest was done); 2 usage errors (bad flags,
missing device, unreadable weights, an output that cannot be added to or written); 130 interrupted
by Ctrl-C, 143 by SIGTERM (complete work kept).
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import signal
import sys
import threading
from collections.abc import Callable
from enum import Enum
from functools import wraps
from pathlib import Path

import typer

from . import __version__
from .codec import DEFAULT_CODEBOOKS, DEFAULT_WEIGHTS, FRAME_RATE, MAX_CODEBOOKS, SAMPLE_RATE
from .errors import MimiError
from .formats.audio import DECODE_FACTOR, MAX_SECONDS
from .formats.pcm import MAX_RATE as MAX_INPUT_RATE
from .formats.pcm import SAMPLE_FORMATS, WRITTEN_FORMATS
from .formats.storage import as_location
from .serve.access import IDLE_TIMEOUT_S, MAX_MESSAGE_BYTES

app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, context_settings={"help_option_names": ["-h", "--help"]},
                  help=f"Kyutai's Mimi codec: audio to tokens ({FRAME_RATE} frames/s, up to {MAX_CODEBOOKS} "
                       "codebooks) and back.")
log = logging.getLogger("mimi_cli")


def _choices(name: str, *values: str) -> type[Enum]:
    """A choice option's values as a str Enum (what typer validates and lists in --help)."""
    return Enum(name, {v: v for v in values}, type=str)


Device = _choices("Device", "auto", "cpu", "cuda", "mps")
DType = _choices("DType", "float32", "bfloat16", "float16", "int8")
Channels = _choices("Channels", "mix", "each")
DatasetFormat = _choices("DatasetFormat", "parquet", "npy")
Engine = _choices("Engine", "local", "ray")
AudioFormat = _choices("AudioFormat", "wav", "flac")
TokenFormat = _choices("TokenFormat", "binary", "jsonl", "text")
ReadSampleFormat = _choices("ReadSampleFormat", *SAMPLE_FORMATS)
WrittenSampleFormat = _choices("WrittenSampleFormat", *WRITTEN_FORMATS)


WEIGHTS_HELP = ("Hub repo id (org/name[@revision]), local .safetensors file or directory (kyutai/mimi or moshi "
                "layout), or synthetic[:SEED] for offline trials (tokens are NOT Mimi's).")
Weights = typer.Option(DEFAULT_WEIGHTS, "--weights", envvar="MIMI_WEIGHTS", help=WEIGHTS_HELP, show_default=True)
DecodeWeights = typer.Option(DEFAULT_WEIGHTS, "--weights", envvar="MIMI_WEIGHTS", show_default="the recorded model",
                             help=WEIGHTS_HELP + " Default: the model the dataset records, if it is the released "
                                                 "model or synthetic weights (others are named here).")
NumCodebooks = typer.Option(DEFAULT_CODEBOOKS, "-q", "--num-codebooks", min=1, max=MAX_CODEBOOKS,
                            help="RVQ depth: codebooks per frame (1 semantic + acoustic; Moshi uses 8).")
DeviceOpt = typer.Option(Device.auto, "--device", envvar="MIMI_DEVICE", help="auto picks cuda, then mps, then cpu.")
AsJson = typer.Option(False, "--json", help="Print the summary as one JSON object on stdout.")
DTypeOpt = typer.Option(DType.float32, "--dtype", help="Model precision: float32 is exact to the reference; "
                                                       "int8 (CPU) runs the transformers on int8 weights, faster, "
                                                       "with codes that differ on some frames (mimi verify).")
Quiet = typer.Option(False, "--quiet", help="No progress bars or summaries (warnings and errors still shown).")
StreamThreads = typer.Option(None, "--threads", min=1, show_default="2, or 1 on a 1-CPU machine",
                             help="CPU threads for each frame. By default, on a machine of up to 4 CPUs, one "
                                  "thread while input is queued up (a file piped in as fast as it goes), so that "
                                  "both ends of stream-encode | stream-decode keep up; a number given here is "
                                  "used throughout.")


MAX_OUTPUT_RATE = 192000  # output sample rates a user may ask for (above it, a typo costs gigabytes)


class _Fail(MimiError):
    """A refusal the CLI itself makes (flags that do not fit), with its exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.exit_code = code


class _Terminated(KeyboardInterrupt):
    """SIGTERM (scancel, preemption, `timeout`): unwinds like Ctrl-C, so complete work is kept."""


def _on_sigterm(signum, frame) -> None:
    raise _Terminated()


def _setup_logging(quiet: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("mimi: %(levelname)s: %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(logging.WARNING if quiet else logging.INFO)
    log.propagate = False


_CONTROL = {c: f"\\x{c:02x}" for c in (*range(32), 127) if c != 9}


def one_line(text: str, limit: int = 1000) -> str:
    """`text` as one line a dataset cannot forge more lines into: control characters written
    `\\xNN`, and at most `limit` characters."""
    text = text.translate(_CONTROL)
    return text if len(text) <= limit else text[:limit] + "..."


def command(fn: Callable) -> Callable:
    """Turns library errors into one line on stderr and the documented exit codes."""
    @wraps(fn)
    def wrapper(*args, **kwargs):
        _setup_logging(kwargs.get("quiet", False))
        main_thread = threading.current_thread() is threading.main_thread()  # signals go to the main thread only
        previous = signal.signal(signal.SIGTERM, _on_sigterm) if main_thread else None
        try:
            return fn(*args, **kwargs)
        except MimiError as e:  # every error of ours: one line, and the exit code it carries
            typer.echo(f"mimi: error: {one_line(str(e))}", err=True)
            raise typer.Exit(e.exit_code) from None
        except _Terminated:
            typer.echo("mimi: terminated (SIGTERM); complete output was kept", err=True)
            raise typer.Exit(143) from None
        except KeyboardInterrupt:
            typer.echo("mimi: interrupted; complete output was kept", err=True)
            raise typer.Exit(130) from None
        except BrokenPipeError:
            # The reader went away (e.g. `| head`): end quietly, without Python's epilogue.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            raise typer.Exit(0) from None
        except OSError as e:  # an output that cannot be written: a full disk, a file where a directory goes
            where = f": {e.filename}" if e.filename else ""
            typer.echo(f"mimi: error: {e.strerror or e}{where}", err=True)
            raise typer.Exit(2) from None
        finally:
            if main_thread:
                signal.signal(signal.SIGTERM, previous)
    return wrapper


def _load(weights: str, device: Device, dtype: DType):
    from .codec import load_codec

    return load_codec(weights, device=device.value, dtype=dtype.value)


class _PlainProgress:
    """Progress for a log file or a batch job's stderr: a plain line every `every_s`, no `\\r` frames."""

    def __init__(self, total: int | None, unit: str, every_s: float = 30.0) -> None:
        import time

        self.clock, self.total, self.unit, self.every_s = time.monotonic, total, unit, every_s
        self.done, self.postfix, self.last = 0, "", self.clock()

    def update(self, n: int = 1) -> None:
        self.done += n
        if self.clock() - self.last >= self.every_s:
            self.last = self.clock()
            self._line()

    def set_postfix_str(self, text: str) -> None:
        self.postfix = text

    def _line(self) -> None:
        extra = f", {self.postfix}" if self.postfix else ""
        of = f"/{self.total}" if self.total is not None else ""  # a listing in windows: no total until its end
        typer.echo(f"mimi: {self.done}{of} {self.unit}s{extra}", err=True)

    def close(self) -> None:
        pass


def _progress(quiet: bool, unit: str):
    """A progress bar on a terminal, periodic plain lines elsewhere, nothing with --quiet."""
    if quiet:
        return None
    from functools import partial

    if not sys.stderr.isatty():
        return partial(_PlainProgress, unit=unit)
    from tqdm import tqdm

    return partial(tqdm, unit=unit, file=sys.stderr, dynamic_ncols=True)


def _report(summary, done: str, target, items: str, quiet: bool, as_json: bool = False) -> None:
    """The one-line summary of a corpus job on stderr (with --json, an object on stdout too);
    exit 1 if some of its inputs failed."""
    if as_json:
        typer.echo(json.dumps({
            "output": str(target), "rows": summary.rows, "files": summary.files, "skipped": summary.skipped,
            "failed": summary.failures, "audio_seconds": round(summary.audio_seconds, 3),
            "wall_seconds": round(summary.wall_seconds, 3),
            "x_real_time": round(summary.audio_seconds / max(summary.wall_seconds, 1e-9), 2),
            "errors_path": str(summary.errors_path) if summary.failures else None}, indent=2))
    if not quiet:
        xrt = summary.audio_seconds / max(summary.wall_seconds, 1e-9)
        typer.echo(f"mimi: {done} ({summary.audio_seconds / 3600:.2f} h of audio, {xrt:.1f}x real time) into "
                   f"{target}; {summary.skipped} already there; {summary.failures} failed", err=True)
    if summary.failures:
        first = summary.failed[0]
        typer.echo(f"mimi: {summary.failures} {items} failed, listed in {summary.errors_path} "
                   f"(first: {one_line(f'{first.id}: {first.error}')})", err=True)
        raise typer.Exit(1)


@app.command()
@command
def encode(
    inputs: list[str] = typer.Argument(..., metavar="INPUT... OUTPUT",
                                       help="Audio files, directories (recursive), globs, brace ranges, @list.txt "
                                            "or @- (a list on stdin), manifests, WebDataset .tar shards, Hugging "
                                            "Face audio Parquet, lhotse cuts; then the OUTPUT: a .parquet file, or "
                                            "a directory of shards."),
    weights: str = Weights, num_codebooks: int = NumCodebooks, device: Device = DeviceOpt, dtype: DType = DTypeOpt,
    channels: Channels = typer.Option(Channels.mix, "--channels",
                                      help="mix: average channels to mono; each: one row per channel."),
    fmt: DatasetFormat = typer.Option(DatasetFormat.parquet, "--format",
                                      help="parquet, or npy (one .npy per input + a manifest; OUTPUT must be a "
                                           "directory)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Start over instead of resuming."),
    shard_index: int = typer.Option(0, "--shard-index", min=0, help="This job's index, for N array jobs."),
    num_shards: int = typer.Option(1, "--num-shards", min=1, help="Split the inputs into N disjoint jobs."),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="Files of similar length encoded together."),
    engine: Engine = typer.Option(Engine.local, "--engine", help="local, or ray (Ray Data on a Ray cluster; "
                                                                 "pip install 'mimi-cli[ray]')."),
    ray_address: str = typer.Option(None, "--ray-address", help="Ray cluster to join (auto: the one this node "
                                                                "belongs to); default: start a local one."),
    workers: int = typer.Option(1, "--workers", min=1, help="Ray: model workers (each loads the model once)."),
    gpus_per_worker: float = typer.Option(0.0, "--gpus-per-worker", min=0.0, help="Ray: GPUs per model worker."),
    commit_seconds: float = typer.Option(30.0, "--commit-seconds", min=0.0,
                                         help="Finished rows are written as a complete shard at least this often, "
                                              "so a killed run loses at most this much work."),
    path_column: str = typer.Option(None, "--path-column", show_default="path, else audio, else audio_filepath",
                                    help="Manifests (.tsv, .csv, .jsonl, .parquet): the column naming each audio "
                                         "file."),
    audio_root: Path = typer.Option(None, "--audio-root", show_default="the manifest's directory",
                                    help="Manifests, lhotse cuts and audio Parquet: where the paths they hold "
                                         "start, and the folder those files must lie in (--audio-root / allows "
                                         "any)."),
    id_column: str = typer.Option(None, "--id-column", show_default="the audio file's path below --audio-root",
                                  help="Manifests and audio Parquet: the column to take each row's id from."),
    keep_columns: str = typer.Option(None, "--keep-columns", metavar="A,B",
                                     help="Copy these fields of each input into its rows, as their own Parquet "
                                          "columns with their types: manifest and Parquet columns, fields of a "
                                          "tar sample's .json (and .txt as txt), a cut's text / speaker."),
    audio_column: str = typer.Option(None, "--audio-column", show_default="the one {bytes, path} column",
                                     help="Hugging Face audio Parquet: the column holding the audio."),
    max_duration: float = typer.Option(MAX_SECONDS, "--max-duration", min=1.0, metavar="SECONDS",
                                       help="Longest input to encode (with --channels each, all its channels "
                                            "together); a longer one is an error row, as is one holding more "
                                            f"samples to decode than {DECODE_FACTOR} times this at 24 kHz mono "
                                            "(every channel at its own rate: at the default, an hour of 7.1 at "
                                            "48 kHz or of 192 kHz stereo). One over four minutes is "
                                            "encoded as it is read, never held whole (lhotse loads a "
                                            "cut whole; so does --engine ray)."),
    allow_network: bool = typer.Option(False, "--allow-network",
                                       help="Let lhotse fetch `url` audio sources of a manifest over the network "
                                            "(from whatever address the manifest gives)."),
    allow_commands: bool = typer.Option(False, "--allow-commands",
                                        help="Let lhotse run the shell commands of `command` audio sources of a "
                                             "manifest, as you: only for manifests you trust as you trust a "
                                             "script."),
    as_json: bool = AsJson,
    quiet: bool = Quiet,
) -> None:
    """Encode audio into a token dataset (one row of codes [K, frames] per file or item).

    Ids: a file's path relative to the directory INPUT it was found under; for a file named
    directly or by a glob, relative to the current directory; in an @list, relative to the
    list. Two inputs that would get one id are refused before any work.

    Corpora as they ship, read without extracting anything:

    \b
      mimi encode cv/train.tsv tokens/ --audio-root cv/clips --keep-columns sentence,client_id
      mimi encode 'shards/train-{000000..000099}.tar' tokens/ --keep-columns text   # WebDataset
      mimi encode hf_dataset_dir/ tokens/ --keep-columns text,speaker    # Parquet with an Audio column
      mimi encode cuts.jsonl.gz tokens/                                  # lhotse cuts or recordings

    A .tsv, .csv, .jsonl or .parquet of paths is a manifest: one audio file a row (--path-column,
    relative to --audio-root), its id from --id-column or the path. A tar sample's id is its key,
    a cut's its id, a Parquet row's its audio path (or FILE:ROW).

    Resumes by default: inputs already in OUTPUT (same id, size and mtime; items in a tar or
    Parquet file: same id and bytes) are skipped. Bad inputs
    are listed in an errors file beside the output; the exit code is then 1. One run writes an
    OUTPUT at a time (array jobs with --num-shards side by side); Ctrl-C and SIGTERM keep what is
    finished (exit 130, 143). Inputs are listed 20,000 at a time and encoded as they are listed, so
    a manifest of millions of items starts at once; its total shows when its listing ends.
    """
    from .encode import EncodeOptions, encode_dataset, output_lock
    from .formats.manifests import ManifestOptions

    if len(inputs) < 2:
        raise _Fail("give at least one INPUT and the OUTPUT (a .parquet file or a directory)", 2)
    if shard_index >= num_shards:
        raise _Fail(f"--shard-index {shard_index} must be below --num-shards {num_shards}", 2)
    run_engine = None
    if engine is Engine.ray:
        from .ray_engine import RayEngine, require_ray

        require_ray()
        logging.getLogger("ray.data").setLevel(logging.ERROR)  # Ray Data's plans and notices are not the user's
        run_engine = RayEngine(weights, device=device.value, dtype=dtype.value, address=ray_address,
                               workers=workers, gpus_per_worker=gpus_per_worker)
    *sources, output = inputs
    options = EncodeOptions(num_codebooks=num_codebooks, channels=channels.value, format=fmt.value, overwrite=overwrite,
                            shard_index=shard_index, num_shards=num_shards, max_batch=batch_size,
                            commit_seconds=commit_seconds, max_duration_s=max_duration,
                            manifest=ManifestOptions(path_column, id_column, audio_root, tuple(
                                c.strip() for c in (keep_columns or "").split(",") if c.strip()), audio_column,
                                allow_network, allow_commands))
    with output_lock(as_location(output), options):  # a busy OUTPUT is refused before the model loads
        codec = _load(weights, device, dtype)
        summary = encode_dataset(codec, sources, as_location(output), options, progress=_progress(quiet, "file"),
                                 engine=run_engine)
    _report(summary, f"encoded {summary.files} files, {summary.rows} rows", output, "inputs", quiet, as_json)


@app.command()
@command
def decode(
    ctx: typer.Context,
    tokens: str = typer.Argument(..., help="A token dataset: .parquet file, shard directory or npy directory "
                                           "(a path or a URI such as s3://bucket/tokens/)."),
    outdir: Path = typer.Argument(..., help="Directory for the audio files (named after each row's id)."),
    weights: str = DecodeWeights, device: Device = DeviceOpt, dtype: DType = DTypeOpt,
    num_codebooks: int = typer.Option(None, "-q", "--num-codebooks", min=1, max=32,
                                      help="Decode with only the first K codebooks (default: all stored)."),
    audio_format: AudioFormat = typer.Option(AudioFormat.wav, "--audio-format", help="wav or flac."),
    sample_format: WrittenSampleFormat = typer.Option(
        WrittenSampleFormat.s16le, "--sample-format",
        help="Samples: s16le, 16-bit PCM (what every player reads), s24le, s32le, or f32le (float WAV, unclipped). "
             "FLAC takes s16le and s24le."),
    sample_rate: int = typer.Option(SAMPLE_RATE, "--sample-rate", min=1000, max=MAX_OUTPUT_RATE,
                                    help="Resample the output to this rate."),
    ids: list[str] = typer.Option(None, "--id", help="Decode only this row id (repeatable)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace audio files that already exist."),
    force_weights: bool = typer.Option(False, "--force-weights",
                                       help="Decode with --weights even if they are not the weights the dataset "
                                            "records (its audio will then be noise)."),
    as_json: bool = AsJson,
    quiet: bool = Quiet,
) -> None:
    """Decode a token dataset back to audio, one file per row, trimmed to its original length.

    Files are named after each row's id inside OUTDIR; rows that cannot be decoded (or whose id
    would lead outside OUTDIR) are listed in OUTDIR.errors.jsonl beside it, and the exit code is 1.
    """
    from .decode import DecodeOptions, decode_dataset, recorded_weights

    if audio_format is AudioFormat.flac and sample_format.value not in ("s16le", "s24le"):
        raise _Fail(f"--sample-format {sample_format.value}: FLAC holds 16- or 24-bit samples (s16le, s24le)", 2)
    from .formats.shards import NoProvenanceError, read_metadata

    tokens = as_location(tokens)
    without_provenance = False
    given = getattr(ctx.get_parameter_source("weights"), "name", "DEFAULT") != "DEFAULT"  # flag or MIMI_WEIGHTS
    try:
        meta = read_metadata(tokens)  # a bad TOKENS path fails before the model loads
    except NoProvenanceError as e:
        if not given:
            raise _Fail(f"{e}; give --weights (the model that made these tokens) to decode it anyway", 2) from None
        typer.echo(f"mimi: warning: {tokens} has no provenance (no mimi footer or sidecar); decoding its codes "
                   f"with --weights {weights} as given", err=True)
        without_provenance = True
    else:
        if not given:  # the model the dataset was made with
            recorded = meta.get("model", {})
            weights = recorded_weights(recorded)
            if weights is None:
                raise _Fail(f"{tokens} was encoded with {recorded.get('source', 'an unnamed model')}; mimi loads "
                            "no weights a dataset names but the released model: give --weights with that file or "
                            "repo", 2)
    codec = _load(weights, device, dtype)
    options = DecodeOptions(num_codebooks=num_codebooks, sample_rate=sample_rate, audio_format=audio_format.value,
                            sample_format=sample_format.value, ids=tuple(ids) if ids else None, overwrite=overwrite,
                            without_provenance=without_provenance, force_weights=force_weights)
    summary = decode_dataset(codec, tokens, outdir, options, progress=_progress(quiet, "file"))
    _report(summary, f"decoded {summary.rows} rows", outdir, "rows", quiet, as_json)


@app.command()
@command
def info(
    tokens: str = typer.Argument(..., help="A token dataset: .parquet file or shard directory (path or URI)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
    quiet: bool = Quiet,
) -> None:
    """What a token dataset holds: rows, hours, codebooks, model, shards, errors."""
    from .formats.info import dataset_info

    d = dataset_info(as_location(tokens))
    if as_json:
        typer.echo(json.dumps(d.as_dict(), indent=2))
        return
    m = d.metadata or {}
    model = m.get("model", {})
    typer.echo("\n".join([
        f"dataset      {d.path}",
        f"rows         {d.rows} ({d.inputs} inputs), {d.hours:.3f} h of audio, {d.frames} frames"
        + (f" ({d.implausible_rows} rows whose lengths do not add up are not counted)"
           if d.implausible_rows else ""),
        f"codebooks    {m.get('num_codebooks', '?')} of {m.get('codebook_size', '?')} entries, "
        f"{m.get('frame_rate', '?')} frames/s, "
        f"{m.get('sample_rate', '?')} Hz, channels: {m.get('channels', '?')}",
        f"model        {model.get('source', '?')}"
        + (f" @ {model['revision']}" if model.get("revision") else "")
        + (f" (sha256 {model['sha256'][:12]})" if model.get("sha256") else ""),
        f"shards       {d.shards} ({d.bytes / 2**20:.1f} MiB)",
        f"errors       {d.errors} inputs failed",
        f"written by   {m.get('tool', '?')} {m.get('tool_version', '?')}",
    ]))
    if "synthetic" in str(model.get("source", "")):
        typer.echo("note         synthetic weights: these tokens are NOT Mimi's", err=True)
    if d.metadata is None:
        typer.echo("note         no provenance (no mimi footer or sidecar): rewritten by another tool? Which "
                   "model made these tokens is not recorded", err=True)


def _open_in(path: str):
    """The input as a context manager: a file (closed after), or stdin (left open)."""
    if path == "-":
        return contextlib.nullcontext(sys.stdin.buffer.raw if hasattr(sys.stdin.buffer, "raw") else sys.stdin.buffer)
    try:
        return open(path, "rb", buffering=0)
    except OSError as e:
        raise _Fail(f"cannot read {path}: {e.strerror}", 2) from None


def _open_out(path: str):
    """The output as a context manager: a file (closed after), or stdout (left open)."""
    if path == "-":
        return contextlib.nullcontext(sys.stdout.buffer)
    try:
        return open(path, "wb")
    except OSError as e:
        raise _Fail(f"cannot write {path}: {e.strerror}", 2) from None


@app.command("stream-encode")
@command
def stream_encode(
    source: str = typer.Argument("-", metavar="[IN]", help="WAV (RIFF/RF64, streaming sizes too), a streamable "
                                                           "container (Ogg, WebM/Matroska, ADTS AAC, MP3, FLAC), told "
                                                           "from its first bytes, or raw PCM with --raw; - is stdin."),
    target: str = typer.Argument("-", metavar="[OUT]", help="Token stream; - is stdout."),
    weights: str = Weights, num_codebooks: int = NumCodebooks, device: Device = DeviceOpt, dtype: DType = DTypeOpt,
    output_format: TokenFormat = typer.Option(None, "--output-format", show_default=False,
                                              help="binary (default when stdout is not a terminal), jsonl (default "
                                                   "on a terminal) or text (one line of ints a frame)."),
    raw: bool = typer.Option(False, "--raw", help="Headerless PCM input (e.g. arecord -t raw)."),
    rate: int = typer.Option(None, "--rate", min=1, max=MAX_INPUT_RATE, help="Sample rate of raw input."),
    channels: int = typer.Option(1, "--channels", min=1, help="Channels of raw input (mixed to mono)."),
    sample_format: ReadSampleFormat = typer.Option(ReadSampleFormat.s16le, "--sample-format",
                                                   help="Sample format of raw input."),
    threads: int | None = StreamThreads,
    quiet: bool = Quiet,
) -> None:
    """Audio in, Mimi tokens out, live: each 80 ms frame's codes are written the moment they exist.

    arecord -F 20000 -f S16_LE -r 16000 | mimi stream-encode | mimi stream-decode | aplay

    (-F 20000: arecord writes every 20 ms; its default period, 125 ms, delays audio by up to that.)

    ffmpeg -i talk.webm -c:a copy -f webm - | mimi stream-encode > talk.mimi
    """
    from .formats.pcm import PcmFormat
    from .streaming import encode_stream
    from .threads import ThreadPolicy, set_default_threads

    fmt = output_format.value if output_format else "binary" if target != "-" or not sys.stdout.isatty() else "jsonl"
    raw_fmt = None
    if raw:
        if rate is None:
            raise _Fail("--raw needs --rate (the input's sample rate)", 2)
        raw_fmt = PcmFormat(rate, channels, sample_format.value)
    policy = ThreadPolicy.for_command(threads)
    set_default_threads(policy.threads)  # loading and warm-up too run on the stream's threads
    codec = _load(weights, device, dtype)
    with _open_in(source) as src, _open_out(target) as out:
        stats = encode_stream(codec, src, out, num_codebooks, fmt, raw_fmt, threads=policy)
    if not quiet:
        typer.echo(f"mimi: {stats.frames} frames ({stats.frames / codec.frame_rate:.1f} s of audio)", err=True)


@app.command("stream-decode")
@command
def stream_decode(
    source: str = typer.Argument("-", metavar="[IN]", help="Token stream (binary, jsonl or text: detected); "
                                                           "- is stdin."),
    target: str = typer.Argument("-", metavar="[OUT]", help="Audio; - is stdout."),
    weights: str = Weights, device: Device = DeviceOpt, dtype: DType = DTypeOpt,
    rate: int = typer.Option(SAMPLE_RATE, "--rate", min=1000, max=MAX_OUTPUT_RATE,
                             help="Output sample rate (streaming resample)."),
    raw: bool = typer.Option(False, "--raw", help="Headerless PCM output instead of WAV."),
    sample_format: WrittenSampleFormat = typer.Option(WrittenSampleFormat.s16le, "--sample-format",
                                                      help="Output samples."),
    threads: int | None = StreamThreads,
    quiet: bool = Quiet,
) -> None:
    """Mimi tokens in, audio out, live: WAV with a streaming header, flushed every frame (for aplay)."""
    from .streaming import decode_stream
    from .threads import ThreadPolicy, set_default_threads

    policy = ThreadPolicy.for_command(threads)
    set_default_threads(policy.threads)  # loading and warm-up too run on the stream's threads
    codec = _load(weights, device, dtype)
    with _open_in(source) as src, _open_out(target) as out:
        stats = decode_stream(codec, src, out, rate, sample_format.value, wav=not raw, threads=policy)
    if not quiet:
        typer.echo(f"mimi: {stats.frames} frames decoded ({stats.samples_out / rate:.1f} s of audio)", err=True)


@app.command()
@command
def bench(
    weights: str = typer.Option(DEFAULT_WEIGHTS, "--weights", envvar="MIMI_WEIGHTS", show_default=True,
                                help=WEIGHTS_HELP + " Speed does not depend on weight values: --weights synthetic "
                                                    "measures it without the real model."),
    num_codebooks: int = NumCodebooks, device: Device = DeviceOpt,
    dtype: str = typer.Option("float32", "--dtype", metavar="D[,D...]",
                              help="Precisions to measure, interleaved in one run (float32,int8): the later ones "
                                   "are reported against the first, speed and codes."),
    threads: int = typer.Option(None, "--threads", min=1, help="CPU threads (default: torch's choice)."),
    seconds: float = typer.Option(30.0, "--seconds", min=1.0, help="Length of the offline clip."),
    streams: str = typer.Option("1,4,16,64", "--streams", help="Batch sizes of live streams to measure."),
    repeats: int = typer.Option(3, "--repeats", min=1, help="Offline repeats (the median is reported)."),
    compare: str = typer.Option(None, "--compare", help="moshi: measure Kyutai's reference too, in the same run."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of the table."),
    quiet: bool = Quiet,
) -> None:
    """How fast Mimi runs here, and how many live 80 ms streams this machine carries in real time.

    It loads --weights as the other commands do (never synthetic weights on its own); without the
    real model, --weights synthetic measures the same architecture (speed does not depend on
    weight values), and the report says so.
    """
    from .bench import BenchSettings, format_report, parse_streams, run_bench
    from .codec.device import resolve_device
    from .codec.errors import WeightsError

    resolve_device(device.value)  # a missing device fails before anything is measured
    sizes = parse_streams(streams)
    settings = BenchSettings(seconds=seconds, repeats=repeats, streams=sizes, num_codebooks=num_codebooks)
    try:
        result = run_bench(weights, device.value, dtype, threads, settings, compare,
                           log=(lambda m: None) if quiet else (lambda m: typer.echo(f"mimi: {m}", err=True)))
    except WeightsError as e:
        raise _Fail(f"{e}; for a speed-only run without them: mimi bench --weights synthetic", e.exit_code) from None
    typer.echo(json.dumps(result.as_dict(), indent=2) if as_json else format_report(result))


@app.command()
@command
def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind; 127.0.0.1 takes local clients only "
                                                          "(docs/serve.md says what exposing it needs)."),
    port: int = typer.Option(8000, "--port", min=0, max=65535),
    max_streams: int = typer.Option(64, "--max-streams", min=1, help="Live streams at most; more are refused "
                                                                     "(close code 1013)."),
    token: str = typer.Option(None, "--token", envvar="MIMI_TOKEN", show_default=False,
                              help="Require this secret (Authorization: Bearer, or ?token=); env MIMI_TOKEN."),
    weights: str = Weights, num_codebooks: int = NumCodebooks, device: Device = DeviceOpt, dtype: DType = DTypeOpt,
    max_wait_ms: float = typer.Option(80.0, "--max-wait-ms", min=0.0,
                                      help="How long streams with a frame wait for the others to have one before "
                                           "they step without them."),
    threads: int = typer.Option(None, "--threads", min=1, show_default="torch's choice",
                                help="CPU threads of the batched step."),
    idle_timeout: float = typer.Option(IDLE_TIMEOUT_S, "--idle-timeout", min=0.1, metavar="SECONDS",
                                       help="Close a stream that sends no complete frame for this long (4408), so "
                                            "idle connections do not hold the slots."),
    max_message_bytes: int = typer.Option(MAX_MESSAGE_BYTES, "--max-message-bytes", min=1024,
                                          help="Close a connection that sends a larger message (1009)."),
    no_token: bool = typer.Option(False, "--no-token",
                                  help="Serve other machines (a --host that is not loopback) without --token, on "
                                       "purpose: anyone who can reach the port may use the server."),
    quiet: bool = Quiet,
) -> None:
    """Live encode and decode for many clients at once, over WebSockets, stepped as one batch.

    \b
      /v1/encode?rate=R&channels=C&format=s16le|f32le&num_codebooks=K   PCM in, codes out
      /v1/decode?rate=R&format=s16le|f32le                              codes in, PCM out
      /            a page that streams the microphone and plays the decoded audio
      /health      JSON    /metrics  Prometheus text

    Ctrl-C or SIGTERM closes every stream (1001) and exits. The protocol is in docs/serve.md.
    """
    try:
        from .serve.access import reaches_other_machines
        from .serve.app import ServeConfig, run_server
    except ImportError:
        raise _Fail("mimi serve needs aiohttp: pip install 'mimi-cli[serve]'", 2) from None
    if reaches_other_machines(host) and token is None:
        if not no_token:
            raise _Fail(f"--host {host} takes clients from other machines: give --token SECRET (or MIMI_TOKEN), or "
                        "--no-token if anyone who can reach the port may use the server", 2)
        log.warning("serving %s:%d without a token (--no-token): anyone who can reach this port can use the "
                    "server", host, port)
    if threads:
        from .threads import set_default_threads

        set_default_threads(threads)
    codec = _load(weights, device, dtype)
    config = ServeConfig(host, port, max_streams, token, num_codebooks, max_wait_ms / 1000, idle_timeout,
                         max_message_bytes)
    if not quiet:
        typer.echo(f"mimi: serving on http://{host}:{port}/ ({codec.device}, up to {max_streams} streams)", err=True)
    run_server(codec, config, weights)


@app.command()
@command
def verify(
    inputs: list[str] = typer.Argument(..., metavar="AUDIO...", help="Audio files, directories, globs, @lists, "
                                                                      "as `mimi encode` takes them."),
    weights: str = Weights, num_codebooks: int = NumCodebooks, device: Device = typer.Option(
        Device.auto, "--device", envvar="MIMI_DEVICE",
        help="Device of the way under test, as the other commands pick it (auto: cuda, then mps, then cpu); "
             "the reference runs on the CPU."),
    dtype: DType = typer.Option(DType.float32, "--dtype", help="Precision of the way under test."),
    chunk_samples: int = typer.Option(None, "--chunk-samples", min=1, show_default=False,
                                      help="Stream each file in pieces of this many samples (24 kHz), as live "
                                           "pipes and the server do."),
    batch_size: int = typer.Option(1, "--batch-size", min=1, help="Encode and decode files this many at a time."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of the table."),
    quiet: bool = Quiet,
) -> None:
    """How far a way of running Mimi is from the reference, on your audio.

    The reference: float32, offline, one file at a time, on the CPU. The way under test: the
    given --dtype, --device, --chunk-samples or --batch-size. Prints, per codebook, the share of
    frames whose code equals the reference's, the share equal in all K, and the SNR of the
    decoded audio against the reference decode.
    """
    from .codec.device import resolve_device
    from .verify import Way, load_audio
    from .verify import verify as run_verify

    if chunk_samples and batch_size > 1:
        raise _Fail("--chunk-samples streams one file at a time: give it or --batch-size, not both", 2)
    way_device = resolve_device(device.value)  # a missing device fails before any audio is read
    audios, failed = load_audio(inputs)
    if not audios:
        raise _Fail("no audio to verify on", 1 if failed else 2)
    reference = _load(weights, Device.cpu, DType.float32)
    same = way_device.type == "cpu" and dtype is DType.float32
    way_codec = reference if same else _load(weights, device, dtype)
    report = run_verify(reference, way_codec, audios, num_codebooks, Way(chunk_samples, batch_size))
    if as_json:
        typer.echo(json.dumps({"way": {"device": str(way_codec.device), "dtype": dtype.value,
                                       "chunk_samples": chunk_samples, "batch_size": batch_size},
                               **report.as_dict()}, indent=2))
    else:
        how = (f"streamed in pieces of {chunk_samples} samples" if chunk_samples
               else f"batches of {batch_size}" if batch_size > 1 else "offline, one file at a time")
        lines = [f"{report.files} files, {report.frames} frames, K={report.num_codebooks}; way: {dtype.value} on "
                 f"{way_codec.device}, {how}; reference: float32 on cpu, offline, one file at a time",
                 "codebook   frames equal to the reference"]
        lines += [f"{k:8d}   {share:8.2%}" for k, share in enumerate(report.per_codebook)]
        lines.append(f"all {report.num_codebooks:<4d}   {report.all_codebooks:8.2%}")
        snr = "identical" if math.isinf(report.snr_db) else f"{report.snr_db:.1f} dB"
        worst = "identical" if math.isinf(report.worst_file_snr_db) else f"{report.worst_file_snr_db:.1f} dB"
        lines.append(f"decoded audio against the reference decode: SNR {snr} (worst file: {worst})")
        typer.echo("\n".join(lines))
    if failed:
        raise typer.Exit(1)


def _ways_to_compare(compare: list[str], weights: str, device: Device, dtype: DType) -> list[tuple[str, dict]]:
    """--compare KEY=VALUE[,KEY=VALUE] (dtype, device, weights; a bare dtype name is a dtype) as the
    name and settings of each way beside the first."""
    ways = []
    for spec in compare:
        settings = {"weights": weights, "device": device.value, "dtype": dtype.value}
        for part in (p.strip() for p in spec.split(",") if p.strip()):
            key, _, value = part.partition("=")
            if not value and key in DType.__members__:
                key, value = "dtype", key
            if key not in settings or not value:
                raise _Fail(f"--compare {spec!r}: give dtype=D, device=D or weights=W (comma-separated)", 2)
            settings[key] = value
        if settings["dtype"] not in DType.__members__ or settings["device"] not in Device.__members__:
            raise _Fail(f"--compare {spec!r}: dtype is one of {', '.join(DType.__members__)}, device one of "
                        f"{', '.join(Device.__members__)}", 2)
        if any(spec == name for name, _ in ways) or not spec.strip():
            raise _Fail(f"--compare {spec!r}: each way once, and not empty", 2)
        ways.append((spec, settings))
    return ways


def _depths(text: str) -> tuple[int, ...]:
    try:
        depths = tuple(sorted({int(x) for x in text.split(",") if x.strip()}))
    except ValueError:
        depths = ()
    if not depths or any(not 1 <= d <= MAX_CODEBOOKS for d in depths):
        raise _Fail(f"-q {text!r}: give depths in 1..{MAX_CODEBOOKS}, comma-separated (1,2,4,8,16,32)", 2)
    return depths


@app.command("eval")
@command
def eval_(
    inputs: list[str] = typer.Argument(..., metavar="INPUT...", help="Audio as `mimi encode` takes it: files, "
                                                                      "directories, globs, @lists, tars, Parquet, "
                                                                      "manifests, lhotse cuts."),
    num_codebooks: str = typer.Option("1,2,4,8,16,32", "-q", "--num-codebooks", metavar="K[,K...]",
                                      help="RVQ depths to measure: encoded once at the largest, decoded at each."),
    report: Path = typer.Option(None, "--report", metavar="DIR",
                                help="Write eval.json, eval.png and index.html (tables, and players for a few "
                                     "files) into DIR."),
    limit: int = typer.Option(None, "--limit", min=1, help="Measure a seeded random sample of this many files."),
    seconds: float = typer.Option(None, "--seconds", min=1.0,
                                  help="Measure a seeded random sample of files adding up to this much audio."),
    seed: int = typer.Option(0, "--seed", help="Seed of the --limit / --seconds sample."),
    players: int = typer.Option(3, "--players", min=0, help="Files whose decodes the report lets you hear."),
    compare: list[str] = typer.Option([], "--compare", metavar="KEY=VALUE",
                                      help="Another way of running the codec, side by side: dtype=bfloat16, "
                                           "int8, device=cuda, weights=W (comma-separated; may repeat)."),
    weights: str = Weights, device: Device = DeviceOpt, dtype: DType = DTypeOpt,
    as_json: bool = typer.Option(False, "--json", help="Print eval.json on stdout instead of the table."),
    quiet: bool = Quiet,
) -> None:
    """What each RVQ depth buys on your audio: SI-SDR, mel distance, STOI and PESQ against bitrate.

    Each file is measured against itself as the codec saw it (24 kHz mono). STOI needs
    `mimi-cli[eval]`, PESQ `mimi-cli[pesq]`; without them those columns are left out and the
    report says so. With synthetic weights the numbers say nothing about Mimi's quality.
    """
    from .codec.device import resolve_device
    from .eval_report import measured, summary_rows, title, write_report
    from .evaluate import EvalOptions, evaluate

    depths = _depths(num_codebooks)
    others = _ways_to_compare(compare, weights, device, dtype)
    resolve_device(device.value)
    for _, s in others:
        resolve_device(s["device"])  # a missing device fails before any audio is read
    codec = _load(weights, device, dtype)
    ways = [(f"{dtype.value} on {codec.device}" if not others else "reference", codec)]
    ways += [(name, _load(s["weights"], Device(s["device"]), DType(s["dtype"]))) for name, s in others]
    options = EvalOptions(depths=depths, limit=limit, seconds=seconds, seed=seed, players=players if report else 0)
    result = evaluate(ways, inputs, options, progress=_progress(quiet, "file"))
    if not result.sample["files"]:
        raise _Fail("no audio to measure" + (f" ({len(result.failed)} inputs failed)" if result.failed else ""),
                    1 if result.failed else 2)
    data = write_report(result, report) if report else result.as_dict()
    if as_json:
        typer.echo(json.dumps(data, indent=2))
    else:
        names = measured(data)
        lines = [title(data), "mean / median / worst file"]
        for way in data["ways"]:
            table = [["K", "kbit/s", *names], *summary_rows(data, way)]
            widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
            lines.append(f"{way['name']}:")
            lines += ["  " + "  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in table]
        for name, hint in data["skipped_metrics"].items():
            lines.append(f"{name} not measured: {hint}")
        if report:
            lines.append(f"report: {report / 'index.html'}")
        typer.echo("\n".join(lines))
    if result.failed:
        first = result.failed[0]
        typer.echo(f"mimi: {len(result.failed)} inputs failed (first: {one_line(f'{first.id}: {first.error}')})",
                   err=True)
        raise typer.Exit(1)


ExportDType = _choices("ExportDType", "float32", "float16")


@app.command()
@command
def export(
    output: Path = typer.Argument(..., metavar="DIR", help="Folder for encoder.onnx, decoder.onnx and mimi.json."),
    format: str = typer.Option("onnx", "--format", help="Graph format: onnx."),
    weights: str = Weights, num_codebooks: int = NumCodebooks,
    batch_size: int = typer.Option(1, "--batch-size", min=1, help="Streams each graph steps at once (fixed in "
                                                                  "the graphs)."),
    dtype: ExportDType = typer.Option(ExportDType.float32, "--dtype",
                                      help="float32 gives the codes of `mimi encode`; float16 halves the weights "
                                           "and keeps the decoder transformer in float32 (mimi.json says how far "
                                           "its codes are)."),
    check_seconds: float = typer.Option(10.0, "--check-seconds", min=0.0,
                                        help="Run the graphs in onnxruntime on this much audio made here and "
                                             "record how far they are from the float32 codec (0: no check)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the files of an earlier export in DIR."),
    as_json: bool = typer.Option(False, "--json", help="Print mimi.json on stdout."),
    quiet: bool = Quiet,
) -> None:
    """The streaming codec as ONNX graphs with explicit state, for apps outside Python.

    Writes encoder.onnx (80 ms of 24 kHz audio and the state -> codes and the next state),
    decoder.onnx (codes -> audio) and mimi.json (names, shapes, the initial state, the model's
    sha256, and the check against the float32 codec). examples/onnx_stream.py runs them without
    torch; docs/export.md explains the state.
    """
    from .export import MANIFEST, ExportOptions, describe_check, export_onnx

    if format != "onnx":
        raise _Fail(f"--format {format}: the export writes onnx", 2)
    if output.exists() and not output.is_dir():
        raise _Fail(f"{output} is not a folder", 2)
    earlier = [n for n in ("encoder.onnx", "decoder.onnx", MANIFEST) if os.path.lexists(output / n)]
    if earlier and not overwrite:
        raise _Fail(f"{output} already holds an export ({', '.join(earlier)}); give --overwrite to replace it", 2)
    codec = _load(weights, Device.cpu, DType.float32)
    options = ExportOptions(num_codebooks, batch_size, dtype.value, check_seconds)
    manifest = export_onnx(codec, output, options,
                           log=(lambda m: None) if quiet else (lambda m: typer.echo(f"mimi: {m}", err=True)))
    if as_json:
        typer.echo(json.dumps(manifest, indent=2))
    elif not quiet:
        said = describe_check(manifest.get("check"))
        typer.echo(f"mimi: wrote {output}/encoder.onnx, decoder.onnx and {MANIFEST} (K={num_codebooks}, batch "
                   f"{batch_size}, {dtype.value}); {said}", err=True)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mimi-cli {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                              help="Print the version and exit.")) -> None:
    """Kyutai's Mimi codec: audio to tokens (12.5 frames/s, up to 32 codebooks) and back."""


def main() -> None:
    app()


if __name__ == "__main__":
    main()
