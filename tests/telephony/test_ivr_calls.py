"""Whole calls through the real Asterisk sandbox: SIPp caller → callvault's IVR → SIPp agent,
the agent conversation recorded and carried into the vault (real PostgreSQL, SeaweedFS and
Whisper), and the call-back path through the call-back trunk."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import subprocess
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from callvault.calls import vault_sink
from callvault.config import Settings, load_settings
from ivr.driver import IvrDriver
from redaction.dtmf import detect_dtmf
from storage.db import connect
from storage.vault import Vault
from telephony.ari.adapter import AriProvider, parse_recording_name, recording_name
from telephony.ari.sandbox import (
    AGENT_PORT_OFFSET,
    CALLBACK_PORT_OFFSET,
    AsteriskSandbox,
    ari_password,
)
from telephony.commands import Verdict
from telephony.protocol import CallRecording, RecordingSink
from tests.ivr.test_driver import ACCOUNT, PIN, _customers, _until
from tests.recordings.pipeline_support import BackgroundWorker, runtime, status, wait_for
from tests.storage.vault_fixture import COMPLIANCE, QA
from tests.telephony.sandbox_fixture import free_port

SIPP_DIR = Path(__file__).resolve().parents[2] / "deploy" / "sipp"
CALLER = "+15551230002"
SPOKEN_ACCOUNT = "47193382"
AGENT_LINE = ("Thank you for holding, my name is Sam. I can see your account number is "
              "four seven one nine, three three eight two. How can I help you today?")
CALLER_LINE = "Hello Sam. I have a question about the roaming charges on my new phone."


def _speech(text: str, voice: str, dest: Path) -> Path:
    """`text` spoken by espeak-ng as an 8-bit µ-law 8 kHz WAV, what SIPp's rtp_stream plays."""
    for tool in ("espeak-ng", "sox"):
        assert shutil.which(tool), f"{tool} is not installed (make installs it)"
    wide = dest.with_suffix(".22k.wav")
    subprocess.run(["espeak-ng", "-v", voice, "-s", "150", "-w", str(wide), text],
                   check=True, capture_output=True)
    subprocess.run(["sox", str(wide), "-r", "8000", "-c", "1", "-e", "u-law", str(dest)],
                   check=True, capture_output=True)
    wide.unlink()
    return dest


async def _sipp_uac(s: Settings, scenario: str, workdir: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        "sipp", f"127.0.0.1:{s.sip_port}", "-sf", str(SIPP_DIR / scenario),
        "-s", "18005550100", "-key", "caller", CALLER, "-m", "1",
        "-mi", "127.0.0.1", "-i", "127.0.0.1",
        "-p", str(free_port(socket.SOCK_DGRAM)), "-mp", str(free_port(socket.SOCK_DGRAM)),
        "-nostdin", "-trace_err", "-timeout", "90s", "-timeout_error",
        cwd=workdir, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)


async def _sipp_uas(scenario: str, port: int, workdir: Path,
                    up_ms: int = 3000) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        "sipp", "-sf", str(SIPP_DIR / scenario), "-m", "1", "-d", str(up_ms),
        "-i", "127.0.0.1", "-mi", "127.0.0.1", "-p", str(port),
        "-mp", str(free_port(socket.SOCK_DGRAM)),
        "-nostdin", "-trace_err", "-timeout", "90s", "-timeout_error",
        cwd=workdir, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)


async def _done(proc: asyncio.subprocess.Process, timeout: float = 90) -> tuple[int, str]:
    async with asyncio.timeout(timeout):
        _, err = await proc.communicate()
    return proc.returncode or 0, err.decode(errors="replace")[-2000:]


async def _with_ivr(sandbox: AsteriskSandbox, customers: object, sink: RecordingSink | None,
                    body: Callable[[AriProvider, IvrDriver], Awaitable[None]],
                    drivers: list[IvrDriver] | None = None) -> None:
    """Run the IVR driver over a fresh provider while `body` places calls."""
    s = sandbox.settings
    ari = AriProvider.from_settings(s, ari_password(s), backoff_initial=0.2, backoff_max=1.0,
                                    agent_ring_timeout=6.0, recordings=sink,
                                    sweep_interval=0)
    async with ari:
        await asyncio.wait_for(ari.stream.connected.wait(), 10)
        driver = IvrDriver(ari, customers)  # type: ignore[arg-type]
        if drivers is not None:
            drivers.append(driver)
        runner = asyncio.create_task(driver.run())
        try:
            await body(ari, driver)
        finally:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner


async def _short_agent_call(s: Settings, workdir: Path) -> None:
    """A caller with the right PIN talks a few seconds with agent1; both hang up cleanly."""
    agent = await _sipp_uas("uas_agent_talk.xml", s.sip_port + AGENT_PORT_OFFSET, workdir,
                            up_ms=4000)
    caller = await _sipp_uac(s, "uac_pin_235789.xml", workdir)
    assert [(await _done(caller))[0], (await _done(agent))[0]] == [0, 0]


def _recording_row(dsn: str, call_id: str) -> dict[str, object] | None:
    with connect(dsn) as conn:
        row = conn.execute("SELECT id, agent, verdict, status FROM recordings"
                           " WHERE call_id = %s", (call_id,)).fetchone()
    return dict(row) if row else None


def _stored_names(sandbox: AsteriskSandbox) -> list[str]:
    code, body = sandbox.ari_request("GET", "recordings/stored")
    assert code == 200, code
    return [str(r["name"]) for r in json.loads(body)]


def test_verified_caller_talks_to_an_agent_and_the_recording_reaches_the_vault_redacted(
        sandbox: AsteriskSandbox, pg_dsn: str, vault: Vault, tmp_path: Path) -> None:
    """Right PIN → agent1's UAS gets the call, both talk (the agent says an account number);
    after hang-up the recording is in S3 encrypted, its redacted copy has the number muted,
    no DTMF tone is in the raw copy, Asterisk's copy is deleted."""
    s = sandbox.settings
    settings = load_settings(state_dir=tmp_path / "state")
    customers = _customers(pg_dsn, tmp_path)
    customers.add(ACCOUNT, CALLER, PIN)
    _speech(AGENT_LINE, "en-us", tmp_path / "agent.wav")
    _speech(CALLER_LINE, "en-gb+f3", tmp_path / "caller.wav")
    rt = runtime(vault, settings, tmp_path / "spool")
    verdicts: dict[str, Verdict] = {}
    drivers: list[IvrDriver] = []
    sink = vault_sink(rt, lambda call_id: drivers[0].verdicts.get(call_id))  # noqa: PLW0108 (bound late)
    results: list[tuple[int, str]] = []

    async def calls(ari: AriProvider, driver: IvrDriver) -> None:
        agent = await _sipp_uas("uas_agent_talk.xml", s.sip_port + AGENT_PORT_OFFSET,
                                tmp_path, up_ms=22000)
        caller = await _sipp_uac(s, "uac_pin_235789_talk.xml", tmp_path)
        results.extend([await _done(caller), await _done(agent)])
        await _until(lambda: not driver.active_calls, 15)
        verdicts.update(driver.verdicts)
        await _until(lambda: bool(ari.collected), 20)

    asyncio.run(_with_ivr(sandbox, customers, sink, calls, drivers))
    assert [rc for rc, _ in results] == [0, 0], results
    [call_id] = verdicts
    assert verdicts[call_id].verified and verdicts[call_id].method == "pin"
    row = _recording_row(pg_dsn, call_id)
    assert row is not None and row["agent"] == "agent1"
    assert row["verdict"] == {"verified": True, "method": "pin", "reason": None,
                              "at": verdicts[call_id].at}
    assert not any(parse_recording_name(n) for n in _stored_names(sandbox)), \
        "Asterisk still holds the recording"
    assert not list((s.spool_dir / "incoming").glob("*.wav"))

    rid = row["id"]
    assert isinstance(rid, uuid.UUID)
    with BackgroundWorker(rt):
        wait_for(lambda: status(vault.dsn, rid) in ("stored", "failed"), 300,
                 "the recording to be stored")
    assert status(vault.dsn, rid) == "stored"

    # encrypted at rest: the S3 object is CVLT ciphertext, no WAV anywhere in it
    raw_key = vault.get_object(rid, "raw").s3_key
    stored = vault.store.get_range(raw_key, 0, (1 << 20) - 1)
    assert stored[:4] == b"CVLT" and b"RIFF" not in stored and b"WAVE" not in stored

    raw_path, red_path = tmp_path / "raw.wav", tmp_path / "red.wav"
    raw_path.write_bytes(vault.read_all(COMPLIANCE, rid, "raw",
                                        reason="end-to-end test checks the raw recording"))
    red_path.write_bytes(vault.read_all(QA, rid, "redacted"))
    raw, rate = sf.read(str(raw_path), dtype="float32")
    red, _ = sf.read(str(red_path), dtype="float32")
    assert rate == 8000 and raw.ndim == 1 and len(raw) == len(red)
    assert len(raw) / rate > 10, "the recording should hold the conversation"
    assert detect_dtmf(raw, rate) == [], "PIN tones reached the recording"
    assert detect_dtmf(red, rate) == []

    doc = json.loads(vault.read_all(QA, rid, "transcript"))
    text = " ".join(c["text"] for c in doc["channels"]).lower()
    assert "[account_number]" in text, text
    assert not any(d in text for d in ("4719", "3382", "four seven one nine")), text
    assert "holding" in text and ("roaming" in text or "phone" in text), \
        f"both sides should be heard: {text}"
    spans = [sp for sp in doc["spans"] if sp["label"] == "ACCOUNT_NUMBER"]
    assert spans, doc["spans"]
    for sp in spans:
        a, b = int(sp["start"] * rate), int(sp["end"] * rate)
        assert float(np.sqrt(np.mean(raw[a:b] ** 2))) > 0.01, "the raw copy has the number"
        assert float(np.max(np.abs(red[a:b]))) < 1e-3, "the number is muted"


def test_a_failed_sink_leaves_the_recording_in_asterisk_until_a_sweep_collects_it(
        sandbox: AsteriskSandbox, pg_dsn: str, tmp_path: Path) -> None:
    """The vault is down when the call ends → Asterisk keeps the file; the next sweep hands
    it over once and deletes it; nothing else of ours is left behind."""
    s = sandbox.settings
    customers = _customers(pg_dsn, tmp_path)
    customers.add(ACCOUNT, CALLER, PIN)
    _speech("This is a short agent line.", "en-us", tmp_path / "agent.wav")
    got: list[tuple[CallRecording, bytes]] = []
    fail = [True]

    async def sink(recording: CallRecording) -> None:
        if fail[0]:
            raise OSError("the vault is down")
        got.append((recording, recording.path.read_bytes()))
        recording.path.unlink()

    async def calls(ari: AriProvider, driver: IvrDriver) -> None:
        await _short_agent_call(s, tmp_path)
        await _until(lambda: not driver.active_calls, 15)
        await asyncio.sleep(1.0)  # the failed collection runs in the background
        [call_id] = driver.verdicts
        left = [n for n in _stored_names(sandbox) if parse_recording_name(n)]
        assert left == [recording_name(call_id, "agent1")]
        assert got == [] and not list((s.spool_dir / "incoming").glob("*"))
        fail[0] = False
        assert await ari._sweep() == 1
        assert await ari._sweep() == 0
        assert [r.call_id for r, _ in got] == [call_id] and got[0][0].agent == "agent1"

    asyncio.run(_with_ivr(sandbox, customers, sink, calls))
    audio = got[0][1]
    assert audio[:4] == b"RIFF" and len(audio) > 8000 * 2
    assert not any(parse_recording_name(n) for n in _stored_names(sandbox))


def test_a_sweep_meeting_a_collection_in_flight_still_gets_the_recording_if_it_fails(
        sandbox: AsteriskSandbox, pg_dsn: str, tmp_path: Path) -> None:
    """The race after Asterisk restarts: the call's own collection is still waiting on the
    old Asterisk when the sweep after reconnecting runs, so the sweep leaves that recording
    to it; when that collection then fails, the recording is collected again at once
    rather than waiting for the next periodic sweep (none runs here)."""
    s = sandbox.settings
    customers = _customers(pg_dsn, tmp_path)
    customers.add(ACCOUNT, CALLER, PIN)
    _speech("This is a short agent line.", "en-us", tmp_path / "agent.wav")
    got: list[CallRecording] = []
    entered, release = asyncio.Event(), asyncio.Event()

    async def sink(recording: CallRecording) -> None:
        if not entered.is_set():
            entered.set()
            await release.wait()
            raise OSError("the old Asterisk went away mid-collection")
        got.append(recording)
        recording.path.unlink()

    async def calls(ari: AriProvider, driver: IvrDriver) -> None:
        await _short_agent_call(s, tmp_path)
        await asyncio.wait_for(entered.wait(), 15)
        assert await ari._sweep() == 0, "the sweep leaves a collection in flight alone"
        release.set()
        await _until(lambda: bool(got) and not ari._collecting, 15)  # deleted too
        [call_id] = driver.verdicts
        assert [r.call_id for r in got] == [call_id]

    asyncio.run(_with_ivr(sandbox, customers, sink, calls))
    assert not any(parse_recording_name(n) for n in _stored_names(sandbox))


def test_caller_hanging_up_mid_ivr_records_nothing(
        sandbox: AsteriskSandbox, pg_dsn: str, tmp_path: Path) -> None:
    """No agent conversation → no recording is made, handed over or left in Asterisk."""
    s = sandbox.settings
    customers = _customers(pg_dsn, tmp_path)
    customers.add(ACCOUNT, CALLER, PIN)
    got: list[CallRecording] = []

    async def sink(recording: CallRecording) -> None:
        got.append(recording)

    async def calls(ari: AriProvider, driver: IvrDriver) -> None:
        caller = await _sipp_uac(s, "uac_hangup_early.xml", tmp_path)
        assert (await _done(caller))[0] == 0
        await _until(lambda: not driver.active_calls, 15)
        assert await ari._sweep() == 0

    asyncio.run(_with_ivr(sandbox, customers, sink, calls))
    assert got == []
    assert not any(parse_recording_name(n) for n in _stored_names(sandbox))


def test_forgot_pin_calls_the_number_of_record_back_and_pressing_1_verifies_by_callback(
        sandbox: AsteriskSandbox, pg_dsn: str, tmp_path: Path) -> None:
    """2# → the first call ends declined; the trunk's UAS (the customer's phone) is rung,
    answers and presses 1 → verified by call-back → bridged to agent1."""
    s = sandbox.settings
    customers = _customers(pg_dsn, tmp_path)
    ref = customers.add(ACCOUNT, CALLER, PIN)
    results: dict[str, tuple[int, str]] = {}

    async def calls(ari: AriProvider, driver: IvrDriver) -> None:
        phone = await _sipp_uas("uas_callback_confirm.xml", s.sip_port + CALLBACK_PORT_OFFSET,
                                tmp_path)
        agent = await _sipp_uas("uas_agent.xml", s.sip_port + AGENT_PORT_OFFSET, tmp_path,
                                up_ms=2000)
        caller = await _sipp_uac(s, "uac_forgot_pin.xml", tmp_path)
        results["caller"] = await _done(caller)
        results["phone"] = await _done(phone)
        results["agent"] = await _done(agent)
        await _until(lambda: not driver.active_calls, 15)
        verdicts.update(driver.verdicts)

    verdicts: dict[str, Verdict] = {}
    asyncio.run(_with_ivr(sandbox, customers, None, calls))
    assert {k: rc for k, (rc, _) in results.items()} == {"caller": 0, "phone": 0, "agent": 0}, \
        results
    by_reason = sorted((v.method or v.reason or "") for v in verdicts.values())
    assert by_reason == ["callback", "declined"], verdicts
    callback = next(v for v in verdicts.values() if v.verified)
    assert callback.account_ref == str(ref)
    assert [kind for _, _, kind in customers.pending_notices()] == ["callback_requested"]


def test_dial_refuses_numbers_that_are_not_e164(sandbox: AsteriskSandbox) -> None:
    s = sandbox.settings
    provider = AriProvider.from_settings(s, ari_password(s))

    async def run() -> None:
        from telephony.errors import ProviderRejected
        try:
            with pytest.raises(ProviderRejected, match=r"E\.164"):
                await provider.dial("leg-1", "5551234")
            assert provider._calls == {}
        finally:
            await provider.close()

    asyncio.run(run())


def test_asterisk_restarting_mid_conversation_loses_no_recording(
        sandbox: AsteriskSandbox, pg_dsn: str, tmp_path: Path) -> None:
    """Asterisk restarts while caller and agent talk: the cut call's recording is still
    handed over once (at the call's end or by the sweep after reconnecting) as a readable
    WAV, and Asterisk keeps no copy. (Runs last: it restarts the module's sandbox.)"""
    s = sandbox.settings
    customers = _customers(pg_dsn, tmp_path)
    customers.add(ACCOUNT, CALLER, PIN)
    _speech(AGENT_LINE, "en-us", tmp_path / "agent.wav")
    _speech(CALLER_LINE, "en-gb+f3", tmp_path / "caller.wav")
    got: list[tuple[CallRecording, Path]] = []

    async def sink(recording: CallRecording) -> None:
        kept = tmp_path / f"got-{len(got)}.wav"
        shutil.move(recording.path, kept)
        got.append((recording, kept))

    async def calls(ari: AriProvider, driver: IvrDriver) -> None:
        agent = await _sipp_uas("uas_agent_talk.xml", s.sip_port + AGENT_PORT_OFFSET,
                                tmp_path, up_ms=30000)
        caller = await _sipp_uac(s, "uac_pin_235789_talk.xml", tmp_path)
        try:
            await _until(lambda: any(c.recording for c in ari._calls.values()), 40)
            await asyncio.sleep(4.0)  # some conversation on the recording
            await asyncio.to_thread(sandbox.restart)
            await asyncio.wait_for(ari.stream.connected.wait(), 30)
            await _until(lambda: bool(ari.collected), 30)
            await _until(lambda: not driver.active_calls, 15)
            await _until(lambda: not ari._legs and not ari._calls, 10)
            assert ari._busy() == set(), "the cut call's agent is free again"
        finally:
            for proc in (caller, agent):
                if proc.returncode is None:
                    proc.kill()  # their Asterisk went away: no BYE will come
                await proc.wait()

    asyncio.run(_with_ivr(sandbox, customers, sink, calls))
    assert len(got) == 1 and got[0][0].agent == "agent1"
    info = sf.info(str(got[0][1]))
    assert info.samplerate == 8000 and info.duration > 3.0, info
    assert not any(parse_recording_name(n) for n in _stored_names(sandbox))
