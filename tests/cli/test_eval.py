"""`mimi eval`: every source kind as encode reads it, sampling, depths, --compare, the report."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import soundfile as sf

from tests.helpers import CORPUS

DEPTHS = "1,2,4,8"


def evaluated(run, *args) -> dict:
    result = run("eval", *args, "--json", "--quiet")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_every_file_at_every_depth_against_itself_as_the_codec_saw_it(run, corpus):
    data = evaluated(run, corpus, "-q", DEPTHS)
    assert data["depths"] == [1, 2, 4, 8] and data["synthetic_weights"]
    assert data["bitrate_kbps"] == {str(k): pytest.approx(k * 6 * 12.5 / 1000) for k in (1, 2, 4, 8)}  # 64 entries
    assert data["sample"]["files"] == len(CORPUS) == len(data["ways"][0]["files"])
    seconds = sorted(f["seconds"] for f in data["ways"][0]["files"])
    assert seconds == pytest.approx(sorted(c[3] for c in CORPUS), abs=1e-3)
    for f in data["ways"][0]["files"]:
        assert set(f["depths"]) == {"1", "2", "4", "8"}
        for m in f["depths"].values():
            assert set(m) == {"si_sdr_db", "mel_distance", "stoi", "pesq_wb"}
            assert m["mel_distance"] > 0 and -1 <= m["stoi"] <= 1
    summary = data["ways"][0]["summary"]["8"]["mel_distance"]
    values = [f["depths"]["8"]["mel_distance"] for f in data["ways"][0]["files"]]
    assert summary["mean"] == pytest.approx(np.mean(values)) and summary["median"] == pytest.approx(np.median(values))
    assert summary["worst"] == max(values)  # lower is better: the worst is the largest


def test_a_seeded_sample_by_files_or_by_seconds(run, corpus):
    ids = lambda d: sorted(f["id"] for f in d["ways"][0]["files"])  # noqa: E731
    a = evaluated(run, corpus, "-q", "1", "--limit", "3", "--seed", "7")
    assert len(ids(a)) == 3 and ids(a) == ids(evaluated(run, corpus, "-q", "1", "--limit", "3", "--seed", "7"))
    assert {tuple(ids(evaluated(run, corpus, "-q", "1", "--limit", "3", "--seed", s))) for s in "0123"} != {
        tuple(ids(a))}
    b = evaluated(run, corpus, "-q", "1", "--seconds", "3", "--seed", "1")
    total = b["sample"]["seconds"]
    assert total >= 3 and total - min(f["seconds"] for f in b["ways"][0]["files"]) < 3  # stops once it has 3 s


def test_compare_puts_another_way_beside_the_reference(run, corpus, tiny, monkeypatch):
    from mimi_cli import cli
    from mimi_cli.codec import MimiConfig, load_codec

    int8 = load_codec("synthetic:3", device="cpu", config=MimiConfig.tiny(), dtype="int8")
    monkeypatch.setattr(cli, "_load", lambda weights, device, dtype: int8 if dtype.value == "int8" else tiny)
    data = evaluated(run, corpus, "-q", "1,8", "--limit", "2", "--compare", "dtype=int8")
    assert [w["name"] for w in data["ways"]] == ["reference", "dtype=int8"]
    assert [w["dtype"] for w in data["ways"]] == ["float32", "int8"]
    assert [f["id"] for f in data["ways"][0]["files"]] == [f["id"] for f in data["ways"][1]["files"]]


@pytest.mark.parametrize("args, says", [(["-q", "0,8"], "1..32"), (["-q", "x"], "1..32"),
                                        (["-q", "4,16"], "this model has 8 codebooks"),
                                        (["--compare", "int8", "--compare", "int8"], "each way once"),
                                        (["--compare", "colour=red"], "dtype=D"),
                                        (["--compare", "dtype=float64"], "dtype is one of")])
def test_usage_errors_are_one_line(run, corpus, args, says):
    result = run("eval", corpus, *args)
    assert result.exit_code == 2 and says in result.output and "Traceback" not in result.output


def test_an_unreadable_file_fails_alone_with_exit_1(run, corpus):
    (corpus / "a" / "broken.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk")
    result = run("eval", corpus, "-q", "1", "--json")
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["sample"]["files"] == len(CORPUS) and [f["id"] for f in data["failed"]] == ["a/broken.wav"]


def test_the_report_writes_its_files_and_replaces_a_planted_link(run, corpus, tmp_path):
    shutil.copy(corpus / "a" / "one.wav", corpus / "a" / "<img src=x onerror=alert(1)>.wav")
    out = tmp_path / "report"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    (out / "index.html").symlink_to(victim)
    result = run("eval", corpus, "-q", "1,4", "--report", out, "--players", "2", "--quiet")
    assert result.exit_code == 0, result.output
    assert victim.read_text() == "keep" and not (out / "index.html").is_symlink()
    data = json.loads((out / "eval.json").read_text())
    assert (out / "eval.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (out / "index.html").read_text()
    assert "synthetic weights" in page and "eval.png" in page
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(1)&gt;.wav" in page
    assert len(data["players"]) == 2
    for p in data["players"]:
        for src in [p["original"], *p["decodes"]["float32 on cpu"].values()]:
            assert f"src='{src}'" in page
            audio, rate = sf.read(out / src)
            assert rate == 24000 and len(audio) == pytest.approx(
                next(f["seconds"] for f in data["ways"][0]["files"] if f["id"] == p["id"]) * 24000, abs=1)


def test_without_pystoi_and_pesq_the_report_says_what_to_install(run, corpus, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "pystoi", None)
    monkeypatch.setitem(sys.modules, "pesq", None)
    data = evaluated(run, corpus, "-q", "1", "--limit", "1")
    assert set(data["skipped_metrics"]) == {"stoi", "pesq_wb"} and "mimi-cli[eval]" in data["skipped_metrics"]["stoi"]
    assert data["ways"][0]["summary"]["1"]["stoi"] is None


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is installed by .ci/run")
def test_every_player_of_the_report_plays_in_a_browser(run, corpus, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    out = tmp_path / "report"
    assert run("eval", corpus, "-q", "1,8", "--report", out, "--quiet").exit_code == 0
    with playwright.sync_playwright() as p:
        args = ["--no-sandbox", "--disable-gpu", "--autoplay-policy=no-user-gesture-required"]
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
        try:
            page = browser.new_page()
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto((out / "index.html").as_uri())
            players = page.evaluate("""async () => Promise.all([...document.querySelectorAll('audio')].map(async a => {
                a.muted = true;
                try { await a.play(); } catch (e) { return {src: a.src, error: String(e)}; }
                await new Promise(r => setTimeout(r, 300));
                return {src: a.src, error: a.error && a.error.code, duration: a.duration, time: a.currentTime};
            }))""")
            figure = page.evaluate("document.querySelector('img').naturalWidth")
        finally:
            browser.close()
    assert not errors
    assert len(players) == 3 * 3  # 3 files: the original and 2 depths each
    for player in players:
        assert player["error"] is None and player["duration"] > 0.5 and player["time"] > 0, player
    assert figure > 0


def test_manifests_and_tars_are_read_as_encode_reads_them(run, corpus, tmp_path):
    import tarfile

    (corpus / "list.tsv").write_text("path\ttext\n" + "".join(f"{c[0]}\tutterance\n" for c in CORPUS[:3]))
    with tarfile.open(tmp_path / "shard.tar", "w") as tar:
        for rel, *_ in CORPUS[3:5]:
            tar.add(corpus / rel, arcname=f"{rel.replace('/', '_').rsplit('.', 1)[0]}.{rel.rsplit('.', 1)[1]}")
    data = evaluated(run, corpus / "list.tsv", tmp_path / "shard.tar", "-q", "2")
    assert data["sample"]["files"] == 5 and not data["failed"]
    assert sorted(f["seconds"] for f in data["ways"][0]["files"]) == pytest.approx(
        sorted(c[3] for c in CORPUS[:5]), abs=1e-3)
