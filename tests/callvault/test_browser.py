"""The browser toolchain the QA app's tests stand on: Playwright drives Debian's Chromium
headless against our aiohttp server, and an <audio> element plays a WAV served with
HTTP Range support (its time advances)."""

from __future__ import annotations

import io
import math
import struct
import wave
from pathlib import Path

from aiohttp import web
from playwright.sync_api import Browser

from tests.telephony.sandbox_fixture import free_port
from tests.telephony.twilio_sim import serving


def _tone(seconds: float = 3.0, rate: int = 8000) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"".join(
            struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i / rate)))
            for i in range(int(seconds * rate))))
    return buf.getvalue()


def test_headless_chromium_plays_audio_served_with_ranges(browser: Browser,
                                                          tmp_path: Path) -> None:
    wav = tmp_path / "tone.wav"
    wav.write_bytes(_tone())
    ranges: list[str] = []

    async def audio(request: web.Request) -> web.StreamResponse:
        ranges.append(request.headers.get("Range", ""))
        return web.FileResponse(wav, headers={"Content-Type": "audio/wav"})

    async def page(request: web.Request) -> web.Response:
        return web.Response(text="<!doctype html><title>player</title>"
                                 "<audio id=a src=/tone.wav preload=auto></audio>",
                            content_type="text/html")

    app = web.Application()
    app.router.add_get("/", page)
    app.router.add_get("/tone.wav", audio)
    port = free_port()
    with serving(app, port):
        tab = browser.new_page()
        try:
            tab.goto(f"http://127.0.0.1:{port}/")
            tab.eval_on_selector("#a", "a => a.play()")
            tab.wait_for_function("document.querySelector('#a').currentTime > 0.3",
                                  timeout=10_000)
            duration = tab.eval_on_selector("#a", "a => a.duration")
        finally:
            tab.close()
    assert abs(duration - 3.0) < 0.1
    assert any(r.startswith("bytes=") for r in ranges), ranges   # Chromium asks for ranges
