"""The report of `mimi eval --report DIR`: eval.json, eval.png, index.html and the players' audio.

Every name under DIR is made here (audio/clip-N-original.wav, audio/clip-N-qK.wav), never taken
from the inputs, and every file is written whole to a temporary name and renamed, so a link
planted in DIR is replaced, not followed. File ids appear in the page escaped.
"""
from __future__ import annotations

import html
import io
import json
from pathlib import Path

import numpy as np
import soundfile as sf

from .evaluate import EvalResult
from .formats.storage import atomic_write, own_directory
from .metrics import HIGHER_IS_BETTER, METRICS

LABELS = {"si_sdr_db": "SI-SDR (dB)", "mel_distance": "mel distance", "stoi": "STOI", "pesq_wb": "PESQ (wideband)"}
SYNTHETIC_NOTE = "synthetic weights: these numbers say nothing about Mimi's quality"


def measured(data: dict) -> list[str]:
    """The metrics the run measured (those whose package was there), in report order."""
    return [n for n in METRICS if n not in data["skipped_metrics"]]


def title(result: dict) -> str:
    model = result["model"].get("source", "?")
    head = f"Mimi at {len(result['depths'])} RVQ depths on {result['sample']['files']} files ({model})"
    return f"{head}: {SYNTHETIC_NOTE}" if result["synthetic_weights"] else head


def write_report(result: EvalResult, out_dir: Path) -> dict:
    """Writes the report into `out_dir`; returns what eval.json holds."""
    data = result.as_dict()
    out_dir.mkdir(parents=True, exist_ok=True)  # the folder the user named, as they named it
    own_directory(out_dir / "audio")  # ours: a link planted there is replaced
    players = _write_audio(result, out_dir)
    data["players"] = players
    with atomic_write(out_dir / "eval.json") as f:
        f.write((json.dumps(data, indent=2) + "\n").encode())
    figure = plot(data)
    if figure is not None:
        with atomic_write(out_dir / "eval.png") as f:
            f.write(figure)
    with atomic_write(out_dir / "index.html") as f:
        f.write(page(data, figure is not None).encode())
    return data


def _wav(audio: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, np.clip(audio, -1, 1), 24000, subtype="PCM_16", format="WAV")
    return buffer.getvalue()


def _write_audio(result: EvalResult, out_dir: Path) -> list[dict]:
    players = []
    for n, (ident, original) in enumerate(result.originals.items()):
        entry = {"id": ident, "original": f"audio/clip-{n}-original.wav", "decodes": {}}
        with atomic_write(out_dir / entry["original"]) as f:
            f.write(_wav(original))
        for w, way in enumerate(result.ways):
            for depth, audio in sorted(way.clips.get(ident, {}).items()):
                name = f"audio/clip-{n}-q{depth}.wav" if w == 0 else f"audio/clip-{n}-way{w}-q{depth}.wav"
                with atomic_write(out_dir / name) as f:
                    f.write(_wav(audio))
                entry["decodes"].setdefault(way.name, {})[str(depth)] = name
        players.append(entry)
    return players


def _value(x) -> float:
    return float(x) if not isinstance(x, str) else (np.inf if x == "inf" else -np.inf)


def plot(data: dict) -> bytes | None:
    """Quality against bitrate, a panel per metric, a curve per way, each depth marked; PNG bytes
    (None without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    names = measured(data)
    from matplotlib.ticker import NullFormatter

    cols = 2 if len(names) > 1 else 1
    rows = (len(names) + cols - 1) // cols
    fig, grid = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.6 * rows + 0.6), squeeze=False)
    axes = [list(grid.flat)]
    for ax in axes[0][len(names):]:
        ax.set_visible(False)
    depths = data["depths"]
    rates = [data["bitrate_kbps"][str(d)] for d in depths]
    for ax, name in zip(axes[0], names):
        for way in data["ways"]:
            means = [way["summary"][str(d)][name]["mean"] if way["summary"][str(d)][name] else None for d in depths]
            points = [(r, _value(m), d) for r, m, d in zip(rates, means, depths) if m is not None]
            points = [p for p in points if np.isfinite(p[1])]
            if not points:
                continue
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=way["name"])
            for r, m, d in points:
                ax.annotate(f"{d}", (r, m), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.set_xscale("log")
        ax.set_xticks(rates, [f"{r:.3g}" for r in rates])  # a tick at each depth's bitrate
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("bitrate (kbit/s)")
        ax.set_title(LABELS[name] + (" (higher is better)" if HIGHER_IS_BETTER[name] else " (lower is better)"),
                     fontsize=10)
        ax.grid(True, alpha=0.3)
    if len(data["ways"]) > 1:
        axes[0][0].legend(fontsize=8)
    fig.suptitle(title(data), fontsize=10)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()


def _fmt(x) -> str:
    if x is None:
        return "-"
    if isinstance(x, str):
        return "identical" if x == "inf" else x
    return f"{x:.3f}" if abs(x) < 10 else f"{x:.1f}"


def summary_rows(data: dict, way: dict) -> list[list[str]]:
    """Per depth: K, kbit/s, then mean / median / worst of each metric measured."""
    names = measured(data)
    rows = []
    for d in data["depths"]:
        s = way["summary"][str(d)]
        rows.append([str(d), f"{data['bitrate_kbps'][str(d)]:.2f}"]
                    + [" / ".join(_fmt(s[n][k]) if s[n] else "-" for k in ("mean", "median", "worst")) for n in names])
    return rows


def page(data: dict, with_figure: bool) -> str:
    e = html.escape
    names = measured(data)
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title(data))}</title>",
             "<style>body{font-family:sans-serif;margin:2em;max-width:80em}table{border-collapse:collapse;"
             "margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:right}"
             "td:first-child,th:first-child{text-align:left}.warn{color:#a00;font-weight:bold}</style></head><body>",
             f"<h1>{e(title(data))}</h1>"]
    if data["synthetic_weights"]:
        parts.append(f"<p class='warn'>{e(SYNTHETIC_NOTE)}.</p>")
    s = data["sample"]
    parts.append(f"<p>{s['files']} files, {s['seconds']:.1f} s of audio, each against the input as the codec "
                 f"saw it (24 kHz mono). Encoded once at K={max(data['depths'])}, decoded from the first K codes. "
                 f"Bitrate: K &times; 11 bits &times; 12.5 frames/s.</p>")
    for name, hint in data["skipped_metrics"].items():
        parts.append(f"<p>{e(LABELS[name])} not measured: {e(hint)}</p>")
    if with_figure:
        parts.append("<img src='eval.png' alt='quality against bitrate' style='max-width:100%'>")
    for way in data["ways"]:
        parts.append(f"<h2>{e(way['name'])} ({e(way['dtype'])} on {e(way['device'])})</h2>"
                     "<p>mean / median / worst file</p><table><tr><th>K</th><th>kbit/s</th>"
                     + "".join(f"<th>{e(LABELS[n])}</th>" for n in names) + "</tr>")
        for row in summary_rows(data, way):
            parts.append("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>")
        parts.append("</table>")
    if data["players"]:
        parts.append("<h2>Listen</h2>")
        for p in data["players"]:
            parts.append(f"<h3>{e(p['id'])}</h3><table><tr><td>original</td><td><audio controls preload='metadata' "
                         f"src='{e(p['original'])}'></audio></td></tr>")
            for way_name, decodes in p["decodes"].items():
                for depth, src in decodes.items():
                    parts.append(f"<tr><td>{e(way_name)}, K={e(depth)} ({data['bitrate_kbps'][depth]:.2f} kbit/s)"
                                 f"</td><td><audio controls preload='metadata' src='{e(src)}'></audio></td></tr>")
            parts.append("</table>")
    first = data["ways"][0]
    parts.append(f"<h2>Per file ({e(first['name'])})</h2><table><tr><th>file</th><th>s</th><th>K</th>"
                 + "".join(f"<th>{e(LABELS[n])}</th>" for n in names) + "</tr>")
    for f in first["files"]:
        for d in data["depths"]:
            m = f["depths"][str(d)]
            parts.append(f"<tr><td>{e(f['id'])}</td><td>{f['seconds']:.1f}</td><td>{d}</td>"
                         + "".join(f"<td>{e(_fmt(m[n]))}</td>" for n in names) + "</tr>")
    parts.append("</table></body></html>\n")
    return "\n".join(parts)
