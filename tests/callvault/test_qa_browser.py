"""The QA app in a real browser (Playwright driving Debian's Chromium, headless) on a
recording the pipeline made from the scripted demo call (Whisper, redaction, the vault):
a QA reviewer signs in through the form, finds it, plays the redacted audio with the
waveform's redacted regions and the transcript's [LABEL] words, seeks by click and by
key, scores it, and is refused the original; a compliance officer states a reason and
plays the original under its banner. The access log must show each of those reads.

Cookies are Secure and __Host- prefixed, as deployed; the viewport is a laptop's."""

# ruff: noqa: F811  (the fixtures imported below are test parameters of the same name)

from __future__ import annotations

import os
import re
import time
import uuid
from pathlib import Path

from playwright.sync_api import Browser, BrowserContext, Page, Request, expect

from callvault.config import load_settings
from callvault.demo import make_sample
from recordings import pipeline
from tests.callvault.qa_fixture import PASSWORD, QaServer, qa_server_secure  # noqa: F401
from tests.recordings.pipeline_support import BackgroundWorker, runtime, status, wait_for

REPO = Path(__file__).resolve().parents[2]
VIEWPORT = {"width": 1366, "height": 768}
REASON = "QA dispute ticket QA-1234 review"
LABEL_WORD = re.compile(r"^\[[A-Z0-9_]+\]$")


def artifacts_dir() -> Path:
    path = Path(os.environ.get("CALLVAULT_TEST_ARTIFACTS") or REPO / "build" / "test-artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


def pipeline_recording(server: QaServer, tmp_path: Path) -> uuid.UUID:
    """The demo call through the real pipeline: registered, then a worker until stored."""
    settings = load_settings(None, state_dir=tmp_path / "state")
    source = tmp_path / "pbx" / "call.wav"
    source.parent.mkdir(parents=True)
    make_sample(source)
    rt = runtime(server.vault, settings, tmp_path / "spool")
    reg = pipeline.register(rt, source, call_id="qa-browser-call", agent="agent7",
                            verdict={"verified": True, "method": "pin", "reason": None,
                                     "at": time.time()})
    with BackgroundWorker(rt) as worker:
        wait_for(lambda: status(server.dsn, reg.recording_id) in ("stored", "failed"), 300,
                 "the pipeline to store the recording")
    assert worker.error is None, worker.error
    assert status(server.dsn, reg.recording_id) == "stored"
    return reg.recording_id


def new_context(browser: Browser, server: QaServer) -> BrowserContext:
    return browser.new_context(base_url=server.base, viewport=VIEWPORT)  # type: ignore[arg-type]


def sign_in(page: Page, user: str) -> None:
    page.goto("/qa/recordings")
    expect(page).to_have_url(re.compile(r"/qa/sign-in"))
    page.fill("#user", user)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    expect(page).to_have_url(re.compile(r"/qa/recordings$"))
    cookies = {c["name"]: c for c in page.context.cookies()}
    session = cookies["__Host-callvault_session"]
    assert session["secure"] and session["httpOnly"] and session["sameSite"] == "Strict"


def no_horizontal_scroll(page: Page) -> None:
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= VIEWPORT["width"], f"the page is {width} px wide"


def audio_time(page: Page, selector: str = "#player") -> float:
    return float(page.eval_on_selector(selector, "a => a.currentTime"))


def wait_drawn(page: Page) -> None:
    """The script has fetched the waveform and transcript and drawn both."""
    expect(page.locator(".redacted-region").first).to_be_attached(timeout=15_000)
    expect(page.locator("#transcript .word").first).to_be_visible(timeout=15_000)
    page.wait_for_function("() => document.getElementById('player-status').textContent === ''",
                           timeout=15_000)


def quinn_reviews(browser: Browser, server: QaServer, rid: uuid.UUID) -> list[int]:
    """Quinn's review; returns where each of the player's audio requests started."""
    context = new_context(browser, server)
    page = context.new_page()
    starts: list[int] = []

    def audio_request(request: Request) -> None:
        if request.url.endswith(f"/api/recordings/{rid}/audio/redacted"):
            m = re.match(r"bytes=(\d+)-", request.all_headers().get("range", ""))
            starts.append(int(m.group(1)) if m else 0)

    page.on("request", audio_request)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    try:
        sign_in(page, "quinn")
        # the list: filter by agent
        page.fill("#agent", "agent7")
        page.click("#filters button[type=submit]")
        expect(page).to_have_url(re.compile(r"agent=agent7"))
        rows = page.locator("#recordings tbody tr")
        expect(rows).to_have_count(1)
        assert rows.first.get_attribute("data-recording-id") == str(rid)
        expect(rows.first).to_contain_text("agent7")
        expect(rows.first).to_contain_text("verified")
        no_horizontal_scroll(page)
        page.screenshot(path=str(artifacts_dir() / "qa-recordings.png"))

        # the player
        rows.first.get_by_role("link", name="Open player").click()
        expect(page).to_have_url(re.compile(rf"/qa/recordings/{rid}$"))
        assert page.title() == f"Recording {str(rid)[:8]} — callvault QA"
        wait_drawn(page)
        regions = page.locator(".redacted-region")
        labels = {regions.nth(i).get_attribute("data-label") for i in range(regions.count())}
        assert labels and all(lab and LABEL_WORD.match(f"[{lab}]") for lab in labels), labels
        for i in range(regions.count()):     # shaded, and labelled with what was removed
            region = regions.nth(i)
            expect(region).to_have_text(region.get_attribute("data-label") or "?")
            box = region.bounding_box()
            assert box is not None and box["width"] > 0 and box["height"] > 0
        expect(page.locator("#transcript .channel")).to_have_count(2)
        label_words = page.locator("#transcript .word.redacted-word")
        assert label_words.count() >= 1
        assert all(LABEL_WORD.match(t) for t in label_words.all_inner_texts())
        assert not any(d in page.content() for d in ("4820", "4111 1111", "0192"))
        no_horizontal_scroll(page)

        # play: the time advances and the current word is highlighted
        page.eval_on_selector("#player", "a => a.play()")
        page.wait_for_function("() => document.getElementById('player').currentTime > 0.5",
                               timeout=15_000)
        page.wait_for_function(
            "() => document.querySelector('#transcript .word.current') !== null || "
            "document.getElementById('player').currentTime > 8", timeout=15_000)
        page.eval_on_selector("#player", "a => a.pause()")

        # click a word late in the call: the audio seeks there
        words = page.locator("#transcript .word")
        word_starts = [float(s) for s in words.evaluate_all(
            "ws => ws.map(w => w.dataset.start)")]
        last = max(word_starts)       # a word at least 3 s before the last one, if any
        target = max(range(len(word_starts)),
                     key=lambda i: (word_starts[i] < last - 3, word_starts[i]))
        words.nth(target).click()
        page.wait_for_function(
            "t => Math.abs(document.getElementById('player').currentTime - t) < 0.3",
            arg=word_starts[target], timeout=5_000)

        # the keyboard: l forward 5 s (or to the end), j back 5 s, k plays
        before = audio_time(page)
        duration = float(page.eval_on_selector("#player", "a => a.duration"))
        page.keyboard.press("l")
        after = audio_time(page)
        assert abs(after - min(before + 5, duration)) < 0.3, (before, after, duration)
        page.keyboard.press("j")
        assert abs(audio_time(page) - max(after - 5, 0)) < 0.3
        page.keyboard.press("k")
        page.wait_for_function("() => !document.getElementById('player').paused", timeout=5_000)
        page.keyboard.press("k")
        page.wait_for_function("() => document.getElementById('player').paused", timeout=5_000)
        expect(page.locator(".shortcuts")).to_contain_text("forward 5 seconds")

        # a screenshot for the humans: waveform, regions and transcript drawn
        shot = artifacts_dir() / "qa-player.png"
        shot.unlink(missing_ok=True)
        page.screenshot(path=str(shot), full_page=True)
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000

        # typing in the notes does not drive the player
        at = audio_time(page)
        page.fill("#notes", "")
        page.locator("#notes").press_sequentially("lkj ok")
        assert abs(audio_time(page) - at) < 0.05

        # the scorecard
        selects = page.locator("#scorecard-form select")
        assert selects.count() >= 1
        for i in range(selects.count()):
            select = selects.nth(i)
            values = select.locator("option").evaluate_all("os => os.map(o => o.value)")
            select.select_option(values[-1] if i % 2 == 0 else values[1])
        page.fill("#notes", "Polite greeting; relied on the IVR verdict.")
        page.click("#scorecard-form button[type=submit]")
        expect(page).to_have_url(re.compile(r"\?saved=1$"))
        expect(page.locator("#notice")).to_have_text("Scorecard saved")
        expect(page.locator("#notes")).to_have_value("Polite greeting; relied on the IVR verdict.")

        # no original for QA: not rendered at all, and the API refuses it
        assert page.get_by_text("Play original").count() == 0
        assert page.locator("#original, #original-form, .banner-original").count() == 0
        raw = page.request.get(f"/api/recordings/{rid}/audio/raw")
        assert raw.status == 403
        assert errors == [], errors
        assert starts and starts[0] == 0, starts
        return starts
    finally:
        context.close()


def carol_plays_the_original(browser: Browser, server: QaServer, rid: uuid.UUID) -> None:
    context = new_context(browser, server)
    page = context.new_page()
    try:
        sign_in(page, "carol")
        page.goto(f"/qa/recordings/{rid}")
        wait_drawn(page)
        expect(page.get_by_role("button", name="Play original")).to_be_visible()
        assert page.locator("#original").count() == 0
        # no reason (and a too-short one): refused, nothing to play
        for reason in ("", "because"):
            page.fill("#reason", reason)
            page.get_by_role("button", name="Play original").click()
            expect(page.locator("#original-error")).to_contain_text("reason")
            assert page.locator("#original").count() == 0
            assert page.locator(".banner-original").count() == 0
        page.fill("#reason", REASON)
        page.get_by_role("button", name="Play original").click()
        expect(page).to_have_url(re.compile(rf"/qa/recordings/{rid}\?original=1$"))
        original = page.locator("audio#original")
        expect(original).to_be_visible()
        assert original.get_attribute("src") == f"/api/recordings/{rid}/audio/raw"
        banner = page.locator(".banner-original")
        expect(banner).to_be_visible()
        expect(banner).to_contain_text("ORIGINAL")
        wait_drawn(page)
        page.eval_on_selector("#original", "a => a.play()")
        page.wait_for_function("() => document.getElementById('original').currentTime > 0.5",
                               timeout=15_000)
        expect(banner).to_be_visible()
        assert page.eval_on_selector("#player", "a => a.paused")
        page.eval_on_selector("#original", "a => a.pause()")
        no_horizontal_scroll(page)
    finally:
        context.close()


def test_qa_review_and_original_playback_in_the_browser(
        browser: Browser, qa_server_secure: QaServer, tmp_path: Path) -> None:
    server = qa_server_secure
    rid = pipeline_recording(server, tmp_path)
    decoy = server.store(agent="agent1")       # the agent filter has something to drop

    started = time.monotonic()
    requested = quinn_reviews(browser, server, rid)
    rows = server.entries(recording_id=rid)
    quinn = [r for r in rows if r.actor == "quinn"]
    audio = [r for r in quinn if r.variant == "redacted" and (r.origin or "").startswith(
        "QA app") and not (r.origin or "").startswith("QA app player")]
    # and what the player itself reported: the plays and the seeks (a seek inside what
    # it has buffered makes no request, so only the player can tell)
    events = [r for r in quinn if (r.origin or "").startswith("QA app player")]
    assert {"play", "seek"} <= {r.action for r in events}, [(r.action, r.detail)
                                                            for r in events]
    assert all(r.variant == "redacted" and r.outcome == "ok" for r in events)
    # the player's first request is logged as a play; any later one (buffering on, or a
    # jump to a point not yet buffered) as a continue or a seek, at a byte it asked for
    assert any(r.action == "read" and r.outcome == "allowed" and r.origin.endswith(": play")
               for r in audio), [r.origin for r in quinn]
    for r in audio:
        assert r.action == "read" and r.outcome == "allowed", r
        m = re.search(r": (?:play|(?:continue at|seek to) ~[\d.]+ s \(byte (\d+)\))$",
                      r.origin or "")
        assert m is not None, r.origin
        assert m.group(1) is None or int(m.group(1)) in requested, (r.origin, requested)
    assert len(audio) <= len(requested)
    assert any(r.action == "read" and r.variant == "transcript" and r.outcome == "allowed"
               for r in quinn)
    assert any(r.variant == "redacted" and (r.origin or "").startswith("QA API")
               for r in quinn)                       # the waveform's peaks
    assert any(r.variant == "raw" and r.outcome == "denied" for r in quinn)
    assert not any(r.variant == "raw" and r.outcome == "allowed" for r in quinn)
    card = server.service.scorecards.get(rid, "quinn")
    assert card is not None and card.notes.startswith("Polite greeting")
    assert not [r for r in server.entries(recording_id=decoy)    # listed, never opened
                if r.actor in ("quinn", "carol")]

    carol_plays_the_original(browser, server, rid)
    raw = [r for r in server.entries(recording_id=rid)
           if r.actor == "carol" and r.variant == "raw"]
    allowed = [r for r in raw if r.outcome == "allowed"]
    assert len(allowed) >= 2, [(r.action, r.origin, r.detail) for r in raw]  # grant + play
    assert all(r.reason == REASON for r in allowed)
    assert any("play" in (r.origin or "") and "original" not in (r.origin or "")
               for r in allowed), [r.origin for r in allowed]
    assert sum(r.outcome == "denied" for r in raw) >= 2    # the empty and the short reason
    assert any(r.action == "play" and r.outcome == "ok" for r in raw)   # the player's report
    assert time.monotonic() - started < 120

