"""The ARI adapter against the real Asterisk sandbox, with SIPp as the caller."""

from __future__ import annotations

import asyncio
import base64
import logging
import shutil
import signal
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from callvault.config import Settings
from ivr.machine import PROMPTS
from telephony.ari.adapter import SOUNDS, AriProvider
from telephony.ari.client import AriClient
from telephony.ari.events import AriEventStream
from telephony.ari.sandbox import AsteriskSandbox, ari_password
from telephony.commands import Answer, CollectDigits, Hangup, Play
from telephony.errors import CallGone, ProviderRejected, ProviderUnavailable
from telephony.events import CallEnded, CallStarted, Digits, Event, PromptDone
from tests.telephony.sandbox_fixture import free_port, sandbox_settings

SIPP_DIR = Path(__file__).resolve().parents[2] / "deploy" / "sipp"
CALLER = "+15551230001"


def _provider(settings: Settings, password: SecretStr | None = None) -> AriProvider:
    return AriProvider.from_settings(settings, password or ari_password(settings),
                                     backoff_initial=0.2, backoff_max=1.0,
                                     agent_ring_timeout=3.0)


async def _sipp(settings: Settings, scenario: str, workdir: Path) -> asyncio.subprocess.Process:
    assert shutil.which("sipp"), "sip-tester is not installed (make installs it)"
    return await asyncio.create_subprocess_exec(
        "sipp", f"127.0.0.1:{settings.sip_port}", "-sf", str(SIPP_DIR / scenario),
        "-s", "18005550100", "-key", "caller", CALLER, "-m", "1",
        "-mi", "127.0.0.1", "-i", "127.0.0.1",
        "-p", str(free_port(socket.SOCK_DGRAM)), "-mp", str(free_port(socket.SOCK_DGRAM)),
        "-nostdin", "-trace_err", "-timeout", "30s", "-timeout_error",
        cwd=workdir, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)


async def _finish(sipp: asyncio.subprocess.Process) -> tuple[int, str]:
    async with asyncio.timeout(30):
        _, err = await sipp.communicate()
    return sipp.returncode or 0, err.decode(errors="replace")


async def _next(events: AsyncIterator[Event], kind: type[Event],
                timeout: float) -> tuple[Event, float]:
    """The next event of type `kind` and when it came; other events are skipped."""
    async with asyncio.timeout(timeout):
        async for event in events:
            if isinstance(event, kind):
                return event, time.monotonic()
    raise AssertionError("the events ended")


def test_every_prompt_has_sounds_that_exist_in_the_chroot(sandbox: AsteriskSandbox) -> None:
    """SOUNDS covers exactly ivr.machine.PROMPTS, and every file is in sounds/en as GSM."""
    assert set(SOUNDS) == set(PROMPTS)
    en = sandbox.root / "usr/share/asterisk/sounds/en_US_f_Allison"
    missing = [f for files in SOUNDS.values() for f in files if not (en / f"{f}.gsm").is_file()]
    assert missing == []


def test_raw_events_map_to_neutral_ones_without_provider_ids() -> None:
    """StasisStart → CallStarted under our own id (bad caller id → None); one CallEnded per call."""
    provider = AriProvider(AriClient("http://127.0.0.1:9", "u", SecretStr("p")),
                           AriEventStream("http://127.0.0.1:9", "u", SecretStr("p"), "app"),
                           clock=lambda: 42.0)
    start = {"type": "StasisStart", "channel": {"id": "1733.7", "caller": {"number": "sipp"}}}
    [started] = provider._translate(start)
    assert isinstance(started, CallStarted) and started.caller_id is None and started.at == 42.0
    assert "1733.7" not in started.call_id and provider._translate(start) == []
    dtmf = {"type": "ChannelDtmfReceived", "digit": "5", "channel": {"id": "1733.7"}}
    assert provider._translate(dtmf) == [Digits(started.call_id, "5", at=42.0)]
    ends = [provider._translate({"type": t, "channel": {"id": "1733.7"}})
            for t in ("ChannelHangupRequest", "StasisEnd", "ChannelDestroyed")]
    assert ends == [[CallEnded(started.call_id, "caller-hangup", at=42.0)], [], []]


def test_a_caller_is_answered_prompted_and_hung_up_with_digits_in_order(
        sandbox: AsteriskSandbox, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """SIPp's call → CallStarted with its number; a prompt ends; 2 5 8 # barge in; Hangup ends."""
    s = sandbox.settings
    caplog.set_level(logging.DEBUG)

    async def run() -> tuple[list[Event], float, int, str]:
        async with _provider(s) as ari:
            await asyncio.wait_for(ari.stream.connected.wait(), 10)
            assert ari.health().healthy
            events = ari.events()
            sipp = await _sipp(s, "uac_dtmf.xml", tmp_path)
            seen: list[Event] = []
            try:
                started, _ = await _next(events, CallStarted, 15)
                assert isinstance(started, CallStarted)
                seen.append(started)
                call = started.call_id
                await ari.commands(call, [Answer(), Play("goodbye", allow_digits=False)])
                seen.append((await _next(events, PromptDone, 10))[0])
                await ari.commands(call, [Play("enter-pin", allow_digits=True),
                                          CollectDigits(8, "#", 5.0)])
                played = time.monotonic()
                barged = 0.0
                async with asyncio.timeout(20):
                    async for event in events:
                        seen.append(event)
                        if isinstance(event, PromptDone):
                            barged = time.monotonic() - played
                        if isinstance(event, Digits) and event.digits == "#":
                            break
                await ari.commands(call, [Hangup("done")])
                seen.append((await _next(events, CallEnded, 10))[0])
                with pytest.raises(CallGone):
                    await ari.commands(call, [Answer()])
            finally:
                rc, err = await _finish(sipp)
                await events.aclose()  # type: ignore[attr-defined]
        return seen, barged, rc, err

    seen, barged, rc, err = asyncio.run(run())
    call = seen[0].call_id
    assert isinstance(seen[0], CallStarted) and seen[0].caller_id == CALLER
    assert all(e.call_id == call for e in seen)
    shapes = [(type(e).__name__, getattr(e, "prompt", None) or getattr(e, "digits", None))
              for e in seen[1:]]
    assert shapes == [("PromptDone", "goodbye"), ("Digits", "2"), ("PromptDone", "enter-pin"),
                      ("Digits", "5"), ("Digits", "8"), ("Digits", "#"), ("CallEnded", None)], \
        shapes
    assert 0 < barged < 5.0, barged  # enter-pin alone lasts 6.6 s: the 2 stopped it
    assert seen[-1] == CallEnded(call, "hangup", at=seen[-1].at)
    assert rc == 0, err[-2000:]
    secret = ari_password(s).get_secret_value()
    assert secret not in caplog.text and CALLER not in caplog.text


def test_dialling_an_id_in_use_is_refused_and_unknown_calls_are_gone(
        sandbox: AsteriskSandbox) -> None:
    """dial() under a live call's id raises ProviderRejected; commands on unknown calls
    raise CallGone."""
    provider = _provider(sandbox.settings)
    provider._translate({"type": "StasisStart", "channel": {"id": "x.1", "caller": {}}})
    [call] = provider._calls

    async def run() -> None:
        try:
            with pytest.raises(ProviderRejected, match="already in use"):
                await provider.dial(call, CALLER)
            with pytest.raises(CallGone):
                await provider.commands("no-such-call", [Answer()])
        finally:
            await provider.close()

    asyncio.run(run())


def test_wrong_password_is_refused_at_start_quickly_and_never_shown(
        sandbox: AsteriskSandbox) -> None:
    """start() with a wrong ARI password raises ProviderRejected within 3 s, password absent."""
    bad = SecretStr("wrong-" + ari_password(sandbox.settings).get_secret_value()[:8])
    provider = _provider(sandbox.settings, bad)
    began = time.monotonic()
    with pytest.raises(ProviderRejected) as caught:
        asyncio.run(provider.start())
    assert time.monotonic() - began < 3.0
    text = str(caught.value) + repr(caught.value) + repr(provider) + repr(provider.client)
    assert "ARI credentials refused" in text
    token = base64.b64encode(f"{sandbox.settings.ari_user}:{bad.get_secret_value()}".encode())
    assert bad.get_secret_value() not in text and token.decode() not in text
    assert not provider.health().healthy


def test_events_stream_with_wrong_password_backs_off_and_reports_unhealthy(
        sandbox: AsteriskSandbox) -> None:
    """The events WebSocket refused (401) retries on a capped backoff, unhealthy, no tight loop."""
    s = sandbox.settings
    bad = SecretStr("not-the-password")

    async def run() -> tuple[int, str | None, bool, str]:
        stream = AriEventStream(s.ari_url, s.ari_user, bad, s.ari_app, backoff_initial=0.2,
                                backoff_max=0.8, rng=lambda: 1.0)
        stream.start()
        await asyncio.sleep(2.5)  # delays 0.2, 0.4, 0.8, 0.8 ...: about 5 attempts
        st = stream.status
        await stream.close()
        return st.attempts, st.last_error, st.healthy, repr(stream) + repr(st)

    attempts, error, healthy, text = asyncio.run(run())
    assert not healthy
    assert 3 <= attempts <= 7, attempts
    assert error is not None and "ARI credentials refused" in error
    assert "not-the-password" not in text + error


def test_unreachable_ari_is_provider_unavailable(tmp_path: Path) -> None:
    """start() against a port nobody listens on raises ProviderUnavailable naming the URL."""
    settings = sandbox_settings(tmp_path)
    provider = AriProvider.from_settings(settings, SecretStr("whatever-pw"))
    with pytest.raises(ProviderUnavailable, match=r"cannot reach http://127\.0\.0\.1:"):
        asyncio.run(provider.start())


def test_events_reconnect_after_asterisk_restarts_and_the_next_call_arrives(
        sandbox: AsteriskSandbox, tmp_path: Path) -> None:
    """restart(): stream unhealthy, the cut call ends, it reconnects, and the next call comes."""
    s = sandbox.settings

    async def run() -> tuple[bool, int, list[Event], int, str]:
        async with _provider(s) as ari:
            await asyncio.wait_for(ari.stream.connected.wait(), 10)
            events = ari.events()
            first = await _sipp(s, "uac_answered.xml", tmp_path)
            try:
                cut, _ = await _next(events, CallStarted, 15)
                await ari.commands(cut.call_id, [Answer()])
                restart = asyncio.create_task(asyncio.to_thread(sandbox.restart))
                went_down = False
                async with asyncio.timeout(30):
                    while not went_down:
                        went_down = not ari.health().healthy
                        await asyncio.sleep(0.02)
                    await restart
                    await ari.stream.connected.wait()
                cut_end, _ = await _next(events, CallEnded, 10)
            finally:
                if first.returncode is None:
                    first.kill()  # its Asterisk is gone: no BYE will come
                await first.wait()
            connections = ari.health().connections
            second = await _sipp(s, "uac_answered.xml", tmp_path)
            try:
                started, _ = await _next(events, CallStarted, 15)
                await ari.commands(started.call_id, [Answer(), Hangup("done")])
                ended, _ = await _next(events, CallEnded, 10)
            finally:
                rc, err = await _finish(second)
                await events.aclose()  # type: ignore[attr-defined]
        return went_down, connections, [cut, cut_end, started, ended], rc, err

    went_down, connections, (cut, cut_end, started, ended), rc, err = asyncio.run(run())
    assert went_down and connections == 2
    assert cut_end.call_id == cut.call_id != started.call_id == ended.call_id
    assert rc == 0, err[-2000:]


def _crash_and_start(sandbox: AsteriskSandbox) -> None:
    """Kill Asterisk outright (it hangs nothing up, sends no event), then start it again."""
    assert sandbox.stop(sig=signal.SIGKILL)
    sandbox.start()


def test_a_call_cut_by_a_crash_ends_even_when_the_first_look_after_reconnecting_fails(
        sandbox: AsteriskSandbox, tmp_path: Path) -> None:
    """Asterisk dies mid-call without a word, and the first look at the cut call's channel
    after reconnecting fails (ARI still waking up): the call is still ended at once, not
    left open, its agent busy, until some later reconnection. (Runs last: it kills the
    module's sandbox.)"""
    s = sandbox.settings
    looked: list[tuple[int, str]] = []   # (events connection, channel) of each lookup

    async def run() -> tuple[Event, Event]:
        async with _provider(s) as ari:
            await asyncio.wait_for(ari.stream.connected.wait(), 10)
            real = ari.client.get_channel

            async def waking(channel_id: str) -> dict[str, object]:
                looked.append((ari.health().connections, channel_id))
                if len(looked) == 1:
                    raise ProviderUnavailable("ARI answered 503 (injected)")
                return await real(channel_id)

            ari.client.get_channel = waking  # type: ignore[method-assign]
            events = ari.events()
            caller = await _sipp(s, "uac_answered.xml", tmp_path)
            try:
                cut, _ = await _next(events, CallStarted, 15)
                await ari.commands(cut.call_id, [Answer()])
                await asyncio.to_thread(_crash_and_start, sandbox)
                ended, _ = await _next(events, CallEnded, 15)
            finally:
                if caller.returncode is None:
                    caller.kill()  # its Asterisk died: no BYE will come
                await caller.wait()
                await events.aclose()  # type: ignore[attr-defined]
            assert not ari._calls and not ari._by_channel
        return cut, ended

    cut, ended = asyncio.run(run())
    # looked again within the same subscription, not only after another reconnection
    assert len(looked) >= 2 and len(set(looked)) == 1, looked
    assert isinstance(ended, CallEnded) and isinstance(cut, CallStarted)
    assert ended.call_id == cut.call_id and ended.cause == "provider-lost"
