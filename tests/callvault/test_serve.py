"""`callvault serve` as a process: it runs the pipeline for recordings registered by
another process, writes the access log's chain head to S3, and stops cleanly on SIGTERM."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

from callvault.demo import make_sample
from storage.db import EmbeddedPostgres, connect
from storage.s3 import EmbeddedSeaweed
from tests.storage.pg_fixture import fresh_database
from tests.storage.seaweed_fixture import drop_bucket, raw_client

CLI = [sys.executable, "-c", "from callvault.cli import main; main()"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(tmp_path: Path, dsn: str, seaweed: EmbeddedSeaweed, bucket: str) -> dict[str, str]:
    access, secret = seaweed.credentials
    env = {**os.environ,
           "CALLVAULT_STATE_DIR": str(tmp_path / "state"),
           "CALLVAULT_DATABASE_URL": dsn,
           "CALLVAULT_S3_ENDPOINT_URL": seaweed.endpoint_url,
           "CALLVAULT_S3_ACCESS_KEY_ID": access,
           "CALLVAULT_S3_SECRET_ACCESS_KEY": secret,
           "CALLVAULT_S3_BUCKET": bucket,
           "CALLVAULT_AUDIT_HEAD_INTERVAL_SECONDS": "1"}
    env.pop("CALLVAULT_CONFIG", None)
    return env


def test_serve_runs_jobs_writes_heads_and_stops(tmp_path: Path, pg_server: EmbeddedPostgres,
                                                seaweed: EmbeddedSeaweed) -> None:
    """A recording ingested with --no-wait is stored by a running `serve`; /healthz says
    ok; the chain head reaches S3; SIGTERM ends `serve` with exit 0."""
    dsn = fresh_database(pg_server)
    bucket = f"serve-{uuid.uuid4().hex[:10]}"
    env = _env(tmp_path, dsn, seaweed, bucket)
    call = tmp_path / "call.wav"
    make_sample(call)
    ingest = subprocess.run([*CLI, "ingest", str(call), "--no-wait", "--call-id", "s-1"],
                            env=env, capture_output=True, text=True, timeout=300, check=False)
    assert ingest.returncode == 0, ingest.stderr
    rid = uuid.UUID(ingest.stdout.split()[0])
    assert ingest.stdout.split()[1] == "queued"
    log = (tmp_path / "serve.log").open("wb")
    port = _free_port()
    proc = subprocess.Popen([*CLI, "serve", "--port", str(port)], env=env, stdout=log,
                            stderr=log)
    try:
        deadline = time.monotonic() + 300
        state = None
        while time.monotonic() < deadline:
            with connect(dsn) as conn:
                row = conn.execute("SELECT status FROM recordings WHERE id = %s",
                                   (rid,)).fetchone()
            state = row["status"] if row else None
            if state in ("stored", "failed"):
                break
            time.sleep(0.5)
        assert state == "stored"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
            health = json.loads(resp.read())
        assert health == {"status": "ok", "parts": {"database": True}}
        time.sleep(2.5)  # at least one head interval
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    client = raw_client(seaweed)
    try:
        heads = client.list_objects_v2(Bucket=bucket, Prefix="audit/heads/")
    finally:
        client.close()
    assert heads.get("KeyCount", 0) >= 1
    verify = subprocess.run([*CLI, "audit", "verify"], env=env, capture_output=True,
                            text=True, timeout=300, check=False)
    drop_bucket(seaweed, bucket)
    assert verify.returncode == 0, verify.stderr
    assert "intact" in verify.stdout


def test_serve_answers_calls_with_the_ivr(tmp_path: Path, pg_server: EmbeddedPostgres,
                                          seaweed: EmbeddedSeaweed) -> None:
    """With telephony = "asterisk", `serve` runs it all on the sandbox: a SIPp caller with
    the right PIN is verified (on the access log, without numbers), agent1's SIPp phone
    gets the call while alice's desk gets the screen-pop over the WebSocket, and the
    agent conversation is recorded, fetched and stored by serve's own pipeline worker."""
    import asyncio

    import aiohttp

    from storage.access import Users
    from storage.customers import Customers
    from storage.db import migrate
    from storage.keys import LocalKeyring
    from telephony.ari.sandbox import AGENT_PORT_OFFSET
    from tests.telephony.sandbox_fixture import free_port, start_sandbox
    from tests.telephony.test_ari_adapter import CALLER, SIPP_DIR
    from tests.telephony.test_ivr_calls import AGENT_LINE, CALLER_LINE, _speech

    box = start_sandbox(tmp_path / "state")
    settings = box.settings
    dsn = fresh_database(pg_server)
    bucket = f"ivr-{uuid.uuid4().hex[:10]}"
    http_port = _free_port()
    env = {**_env(tmp_path, dsn, seaweed, bucket), "CALLVAULT_TELEPHONY": "asterisk",
           "CALLVAULT_ARI_URL": settings.ari_url, "CALLVAULT_SIP_PORT": str(settings.sip_port),
           "CALLVAULT_AGENT_DESKS": json.dumps({"agent1": "alice"})}
    migrate(dsn)
    customers = Customers(dsn, LocalKeyring(settings.keyring_path))
    customers.add("97531864", CALLER, "235789")
    Users(dsn).add("alice", "agent", "alice's long desk password")
    _speech(AGENT_LINE, "en-us", tmp_path / "agent.wav")
    _speech(CALLER_LINE, "en-gb+f3", tmp_path / "caller.wav")
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen([*CLI, "serve", "--port", str(http_port)], env=env,
                            stdout=log, stderr=log)
    base = f"http://127.0.0.1:{http_port}"

    def sipp(scenario: str, *args: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            ["sipp", *args, "-sf", str(SIPP_DIR / scenario), "-m", "1", "-mi", "127.0.0.1",
             "-i", "127.0.0.1", "-mp", str(free_port(socket.SOCK_DGRAM)), "-nostdin",
             "-timeout", "90s", "-timeout_error"],
            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    async def desk_and_call() -> list[dict[str, object]]:
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{base}/api/agent/session", json={
                    "user": "alice", "password": "alice's long desk password"}) as resp:
                assert resp.status == 200, await resp.text()
                token = (await resp.json())["token"]
            async with http.ws_connect(f"{base}/api/agent/events",
                                       headers={"Authorization": f"Bearer {token}"}) as ws:
                hello = await ws.receive_json(timeout=10)
                assert hello["type"] == "hello" and hello["endpoints"] == ["agent1"]
                agent = sipp("uas_agent_talk.xml", "-d", "22000",
                             "-p", str(settings.sip_port + AGENT_PORT_OFFSET))
                caller = sipp("uac_pin_235789_talk.xml", f"127.0.0.1:{settings.sip_port}",
                              "-s", "18005550100", "-key", "caller", CALLER,
                              "-p", str(free_port(socket.SOCK_DGRAM)))
                pops = [await ws.receive_json(timeout=40)]
                for phone in (caller, agent):
                    _, err = await asyncio.to_thread(phone.communicate, None, 90)
                    assert phone.returncode == 0, err[-2000:]
                return pops

    try:
        deadline = time.monotonic() + 60
        while b"IVR on ARI" not in (tmp_path / "serve.log").read_bytes():
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.2)
        time.sleep(2.0)  # the events WebSocket subscribes
        pops = asyncio.run(desk_and_call())
        assert len(pops) == 1 and pops[0]["type"] == "call"
        pop = pops[0]
        assert (pop["verified"], pop["method"], pop["banner"]) == (True, "pin", "VERIFIED (PIN)")
        assert pop["endpoint"] == "agent1" and set(pop) == {
            "type", "call_id", "endpoint", "verified", "method", "reason", "verdict_at",
            "banner"}
        call_id = pop["call_id"]
        verdicts: list[str | None] = []
        row = None
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            with connect(dsn) as conn:
                verdicts = [r["detail"] for r in conn.execute(
                    "SELECT detail FROM access_log WHERE action = 'verdict'")]
                row = conn.execute("SELECT agent, status, verdict FROM recordings"
                                   " WHERE call_id = %s", (call_id,)).fetchone()
            if row is not None and row["status"] in ("stored", "failed"):
                break
            time.sleep(0.5)
        assert verdicts == ["verified pin"]
        assert row is not None and row["status"] == "stored", row
        assert row["agent"] == "agent1" and row["verdict"]["method"] == "pin"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
        box.stop()
        with contextlib.suppress(Exception):  # serve may have failed before making it
            drop_bucket(seaweed, bucket)
    text = (tmp_path / "serve.log").read_text(errors="replace")
    for secret in ("235789", "97531864", CALLER, "4719", "3382"):
        assert secret not in text


def test_serve_answers_twilio_webhooks(tmp_path: Path, pg_server: EmbeddedPostgres,
                                       seaweed: EmbeddedSeaweed) -> None:
    """With telephony = "twilio", `serve` answers the simulator's signed webhooks: the right
    PIN gets the Dial; a forged request gets 403; without the account settings `serve`
    refuses to start, naming them."""
    from storage.customers import Customers
    from storage.db import migrate
    from storage.keys import LocalKeyring
    from tests.telephony.twilio_sim import ACCOUNT, TOKEN, TwilioSimulator

    dsn = fresh_database(pg_server)
    bucket = f"tw-{uuid.uuid4().hex[:10]}"
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**_env(tmp_path, dsn, seaweed, bucket), "CALLVAULT_TELEPHONY": "twilio"}
    missing = subprocess.run([*CLI, "serve", "--port", str(port)], env=env,
                             capture_output=True, text=True, timeout=120, check=False)
    assert missing.returncode == 12
    assert "twilio_account_sid, twilio_auth_token, public_url" in missing.stderr
    env |= {"CALLVAULT_TWILIO_ACCOUNT_SID": ACCOUNT, "CALLVAULT_TWILIO_AUTH_TOKEN": TOKEN,
            "CALLVAULT_PUBLIC_URL": base,
            "CALLVAULT_TWILIO_AGENTS": json.dumps({"agent1": "client:agent1"})}
    migrate(dsn)
    Customers(dsn, LocalKeyring(tmp_path / "state" / "keys" / "keyring.json")).add(
        "97531864", "+15551230005", "235789")
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen([*CLI, "serve", "--port", str(port)], env=env, stdout=log,
                            stderr=log)
    try:
        deadline = time.monotonic() + 120
        while b"HTTP on" not in (tmp_path / "serve.log").read_bytes():
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.2)
        sim = TwilioSimulator(base)
        call = sim.run(sim.new_call("+15551230005", ["235789#"]))
        assert len(call.dials) == 1 and call.dials[0].get("record") == "record-from-answer-dual"
        forged = TwilioSimulator(base, token="wrong-token")
        assert forged.post(f"{base}/twilio/voice", forged.params(
            forged.new_call("+15551230005", []))).status == 403
        with connect(dsn) as conn:
            verdicts = [r["detail"] for r in conn.execute(
                "SELECT detail FROM access_log WHERE action = 'verdict'")]
        assert verdicts == ["verified pin"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
        with contextlib.suppress(Exception):
            drop_bucket(seaweed, bucket)
    text = (tmp_path / "serve.log").read_text(errors="replace")
    for secret in ("235789", "97531864", "+15551230005", TOKEN):
        assert secret not in text
