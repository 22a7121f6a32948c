"""The phone-call part of `make demo`: a real call through the Asterisk sandbox.

A SIPp caller with the customer's caller id enters the PIN, is verified, waits while the
agent's SIPp phone rings, and talks with the agent, who reads out the account number. The
agent's desk gets the screen-pop over the WebSocket; the conversation is recorded on the
bridge, fetched through ARI, and carried through the vault pipeline. The demo then prints
the verdict, the screen-pop, where the recording is, what QA reads, and the access log.

The sandbox runs with its own state folder under the demo's folder, on free loopback
ports, so it never collides with a sandbox the user started; the vault is the configured
one (embedded PostgreSQL and SeaweedFS by default).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import shutil
import socket
import subprocess
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from callvault.config import Settings
from redaction.errors import RedactionError

SIPP_DIR = Path(__file__).resolve().parents[1] / "deploy" / "sipp"
ACCOUNT = "97531864"           # the demo customer: fictitious account, phone and PIN
PHONE = "+15551230001"
PIN = "235789"                 # SIPp's digit pcaps only register keys in ascending order
AGENT_USER = "demo-agent"
AGENT_LINE = ("Thank you for holding, my name is Sam. I can see your account number is "
              "four seven one nine, three three eight two. How can I help you today?")
CALLER_LINE = "Hello Sam. I have a question about the roaming charges on my new phone."
TALK_MS = 22000                # the agent hangs up after this long


def _free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _speech(text: str, voice: str, dest: Path) -> None:
    """`text` as the 8-bit µ-law 8 kHz WAV that SIPp's rtp_stream plays."""
    espeak, sox = _tool("espeak-ng"), _tool("sox")
    wide = dest.with_suffix(".22k.wav")
    subprocess.run([espeak, "-v", voice, "-s", "150", "-w", str(wide), text],
                   check=True, capture_output=True)
    subprocess.run([sox, str(wide), "-r", "8000", "-c", "1", "-e", "u-law", str(dest)],
                   check=True, capture_output=True)
    wide.unlink()


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RedactionError(f"the demo call needs {name} (make installs it)")
    return path


async def _sipp(args: list[str], workdir: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        _tool("sipp"), *args, "-m", "1", "-i", "127.0.0.1", "-mi", "127.0.0.1",
        "-mp", str(_free_port(socket.SOCK_DGRAM)), "-nostdin", "-timeout", "90s",
        "-timeout_error", cwd=workdir, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL)


def run_call(settings: Settings, workdir: Path, console: Console) -> int:
    """Place the demo call; print what happened; return the exit code."""
    from telephony.ari.sandbox import AsteriskSandbox

    phones = workdir / "phones"
    phones.mkdir(parents=True, exist_ok=True)
    _speech(AGENT_LINE, "en-us", phones / "agent.wav")
    _speech(CALLER_LINE, "en-gb+f3", phones / "caller.wav")
    box_settings = settings.model_copy(update={
        "state_dir": workdir / "asterisk-state", "ari_url": f"http://127.0.0.1:{_free_port()}",
        "sip_port": _free_port(socket.SOCK_DGRAM), "agent_endpoints": ["agent1"],
        "agent_desks": {"agent1": AGENT_USER}})
    console.print("\n10. starting the Asterisk sandbox (Asterisk 22 in its chroot, loopback)",
                  markup=False, soft_wrap=True)
    box = AsteriskSandbox(box_settings.asterisk_root, box_settings)
    box.ensure_created()
    box.configure()
    status = box.start(timeout=60)
    console.print(f"    Asterisk {status.version} answering ARI at {box_settings.ari_url}",
                  markup=False, soft_wrap=True)
    try:
        return _call_through_vault(settings, box_settings, phones, console)
    finally:
        box.stop()


def _call_through_vault(settings: Settings, box_settings: Settings, phones: Path,
                        console: Console) -> int:
    from callvault import services
    from recordings import pipeline
    from storage.customers import Customers
    from storage.errors import StorageError

    with services.services(settings) as svc:
        customers = Customers(svc.db.dsn, svc.db.keys)
        ref = customers.find_by_account(ACCOUNT)
        if ref is None:
            customers.add(ACCOUNT, PHONE, PIN)
        else:
            customers.unlock(ref)  # an earlier demo may have left it locked
        password = secrets.token_urlsafe(18)
        try:
            svc.db.users.add(AGENT_USER, "agent", password)
        except StorageError:
            svc.db.users.set_password(AGENT_USER, password)
        console.print(f"11. customer provisioned (account, phone of record, argon2id PIN); "
                      f"agent user {AGENT_USER} sits at endpoint agent1", markup=False,
                      soft_wrap=True)
        rt = svc.runtime()
        started = datetime.now(UTC)
        console.print("12. SIPp caller dials in, enters the PIN; SIPp agent answers; they "
                      "talk for about 20 s ...", markup=False, soft_wrap=True)
        outcome = asyncio.run(_place_call(svc.db.dsn, svc.db.log, customers, rt,
                                          box_settings, phones, password))
        verdict, pop, call_id, phone_codes = outcome
        console.print(f"    caller exit {phone_codes[0]}, agent exit {phone_codes[1]}; "
                      f"verdict: {verdict}", markup=False, soft_wrap=True)
        console.print(f"13. the agent's screen-pop over /api/agent/events:\n    "
                      f"{json.dumps(pop)}", markup=False, soft_wrap=True)
        rid = _recording_of(svc.db.dsn, call_id)
        if rid is None:
            console.print("    no recording reached the vault", markup=False, soft_wrap=True)
            return 9
        console.print(f"14. recording {rid} registered; pipeline: upload raw, transcribe, "
                      "redact, verify, store ...", markup=False, soft_wrap=True)

        async def drain() -> None:
            app = pipeline.build_app(rt)
            async with app.open_async():
                await pipeline.run_worker(
                    rt, app, install_signal_handlers=False,
                    stop=lambda: pipeline.recording_state(rt.dsn, rid) in ("stored",
                                                                           "failed"))

        asyncio.run(drain())
        state = pipeline.recording_state(rt.dsn, rid)
        console.print(f"    recording {state}", markup=False, soft_wrap=True)
        if state != "stored":
            return 9
        vault = svc.vault
        for variant in ("raw", "redacted", "transcript"):
            obj = vault.get_object(rid, variant)
            console.print(f"    {variant:<10} s3://{settings.s3_bucket}/{obj.s3_key} "
                          "(encrypted)", markup=False, soft_wrap=True)
        qa = _principal(svc.db.users, "demo-qa")
        doc = json.loads(vault.read_all(qa, rid, "transcript", origin="demo"))
        for channel in doc["channels"]:
            console.print(f"15. QA reads: {channel['text']}", markup=False, soft_wrap=True)
        console.print("16. access log for this call:", markup=False, soft_wrap=True)
        for row in reversed(svc.db.log.show(since=started, limit=20)):
            console.print(f"    {row.at:%H:%M:%S} {row.actor:<14} {row.role:<7} "
                          f"{row.action:<10} {row.variant or '-':<10} {row.outcome:<7} "
                          f"{row.detail or ''}", markup=False, soft_wrap=True)
        svc.db.log.write_head(svc.store.put_bytes)
    return 0


def _principal(users: Any, name: str) -> Any:
    """The demo's QA user, made or given a fresh password."""
    from storage.errors import StorageError

    password = secrets.token_urlsafe(18)
    try:
        users.add(name, "qa", password)
    except StorageError:
        users.set_password(name, password)
    return users.authenticate(name, password)


def _recording_of(dsn: str, call_id: str | None) -> uuid.UUID | None:
    from storage.db import connect

    if call_id is None:
        return None
    with connect(dsn) as conn:
        row = conn.execute("SELECT id FROM recordings WHERE call_id = %s",
                           (call_id,)).fetchone()
    return None if row is None else uuid.UUID(str(row["id"]))


async def _place_call(dsn: str, log: Any, customers: Any, rt: Any, box: Settings,
                      phones: Path, password: str
                      ) -> tuple[str, dict[str, Any], str | None, tuple[int, int]]:
    import aiohttp

    from callvault import app as http
    from callvault.agent_desk import AgentDesk
    from callvault.calls import vault_sink
    from ivr.driver import IvrDriver, describe
    from telephony.ari.adapter import AriProvider
    from telephony.ari.sandbox import AGENT_PORT_OFFSET, ari_password
    from telephony.commands import Verdict

    desk = AgentDesk(dsn, box.agent_desks, session_seconds=600, log=log)
    web_app = http.build_app({})
    desk.add_routes(web_app)
    port = _free_port()
    runner = await http.start(web_app, "127.0.0.1", port)
    drivers: list[IvrDriver] = []

    def verdict_of(call_id: str) -> Verdict | None:
        return drivers[0].verdicts.get(call_id) if drivers else None

    async def pop(call_id: str, agent: str, verdict: Verdict) -> None:
        await desk.publish(agent, call_id, verdict)

    ari = AriProvider.from_settings(box, ari_password(box), recordings=vault_sink(rt, verdict_of),
                                    sweep_interval=0)
    try:
        async with aiohttp.ClientSession() as client, ari:
            async with client.post(f"http://127.0.0.1:{port}/api/agent/session",
                                   json={"user": AGENT_USER, "password": password}) as resp:
                token = (await resp.json())["token"]
            async with client.ws_connect(f"http://127.0.0.1:{port}/api/agent/events",
                                         headers={"Authorization": f"Bearer {token}"}) as ws:
                await ws.receive_json(timeout=10)  # hello
                await asyncio.wait_for(ari.stream.connected.wait(), 15)
                driver = IvrDriver(ari, customers, log=log, on_agent=pop)
                drivers.append(driver)
                task = asyncio.create_task(driver.run())
                try:
                    agent = await _sipp(["-sf", str(SIPP_DIR / "uas_agent_talk.xml"), "-d",
                                         str(TALK_MS), "-p",
                                         str(box.sip_port + AGENT_PORT_OFFSET)], phones)
                    caller = await _sipp([f"127.0.0.1:{box.sip_port}", "-sf",
                                          str(SIPP_DIR / "uac_pin_235789_talk.xml"), "-s",
                                          "18005550100", "-key", "caller", PHONE, "-p",
                                          str(_free_port(socket.SOCK_DGRAM))], phones)
                    popped: dict[str, Any] = await ws.receive_json(timeout=60)
                    codes = (await caller.wait(), await agent.wait())
                    deadline = time.monotonic() + 30
                    while not ari.collected and time.monotonic() < deadline:
                        await asyncio.sleep(0.2)
                finally:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
        call_id = next(iter(driver.verdicts), None)
        shown = describe(driver.verdicts[call_id]) if call_id else "none"
        return shown, popped, call_id, codes
    finally:
        await runner.cleanup()
