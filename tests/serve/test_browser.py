"""The page at `/` in a real browser: headless Chromium with a fake microphone playing a WAV
file records, streams to /v1/encode, draws the tokens and plays what /v1/decode makes of them."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import soundfile as sf

playwright = pytest.importorskip("playwright.sync_api", reason="the dev install has playwright")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is installed by .ci/run")


@pytest.mark.parametrize("sending", ["opus", "pcm"])
def test_the_page_streams_the_microphone_and_plays_the_decoded_audio(serve, tmp_path, sending):
    server = serve()
    t = np.arange(48000 * 6) / 48000
    voice = 0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t)) / 2
    sf.write(tmp_path / "mic.wav", voice.astype(np.float32), 48000, subtype="PCM_16")
    args = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream", f"--use-file-for-fake-audio-capture={tmp_path / 'mic.wav'}",
            "--autoplay-policy=no-user-gesture-required"]
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
        try:
            page = browser.new_page()
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"http://127.0.0.1:{server.port}/")
            page.select_option("#send", sending)
            page.click("#start")
            page.wait_for_function("window.mimiStats.frames >= 12 && window.mimiStats.playedSamples > 0 "
                                   "|| window.mimiStats.error", timeout=60000)
            stats = page.evaluate("window.mimiStats")
            page.click("#stop")
        finally:
            browser.close()
    assert not errors and stats["error"] is None, (errors, stats)
    assert stats["frames"] >= 12 and stats["decodedSamples"] > 0 and stats["playedSamples"] > 0
    assert stats["sending"] == sending
    seconds = stats["frames"] * 0.08
    if sending == "opus":  # MediaRecorder's WebM/Opus at 32 kbit/s, against 1.5 Mbit/s of float PCM
        assert stats["sentBytes"] < 12_000 * (seconds + 1), stats
    else:
        assert stats["sentBytes"] > 100_000 * seconds, stats
