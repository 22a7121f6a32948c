"""Twilio's webhooks against the real PostgreSQL, driven by the Twilio simulator
(`twilio_sim.py`): the IVR over TwiML, signatures, replays, lockout shared with Asterisk."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from pydantic import SecretStr

from storage.audit import AccessLog
from storage.customers import Customers
from storage.db import connect
from telephony.commands import Verdict
from telephony.twilio.ivr import TwilioIvr
from telephony.twilio.webhooks import TwilioWebhooks
from tests.ivr.test_driver import ACCOUNT, PIN, WRONG_PIN, _customers
from tests.telephony.sandbox_fixture import free_port
from tests.telephony.twilio_sim import ACCOUNT as SID
from tests.telephony.twilio_sim import TOKEN, TwilioSimulator, serving

CALLER = "+15551230003"
AGENTS = {"agent1": "sip:agent1@agents.example.org", "agent2": "client:agent2"}


@dataclass
class Server:
    base: str
    customers: Customers
    dsn: str
    pops: list[tuple[str, str, Verdict]] = field(default_factory=list)
    verdicts: list[tuple[str, Verdict]] = field(default_factory=list)
    recordings: list[tuple[str, str]] = field(default_factory=list)


@pytest.fixture
def server(pg_dsn: str, tmp_path: Path) -> Iterator[Server]:
    """The webhooks on a loopback port, served from a thread with its own event loop."""
    customers = _customers(pg_dsn, tmp_path)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    srv = Server(base, customers, pg_dsn)
    ivr = TwilioIvr(pg_dsn, customers, base, AGENTS, agent_ring_seconds=15)

    async def on_recording(call: str, recording: str, params: dict[str, str]) -> None:
        srv.recordings.append((call, recording))

    hooks = TwilioWebhooks(ivr, SID, SecretStr(TOKEN), base,
                           access_log=AccessLog(pg_dsn, b"k" * 32),
                           on_verdict=lambda c, v: srv.verdicts.append((c, v)),
                           on_agent=lambda c, a, v: srv.pops.append((c, a, v)),
                           on_recording=on_recording)
    app = web.Application()
    hooks.add_routes(app)
    with serving(app, port):
        yield srv
    hooks.close()


def _rows(dsn: str) -> list[dict[str, Any]]:
    with connect(dsn) as conn:
        return [dict(r) for r in conn.execute("SELECT * FROM twilio_calls")]


def _failures(dsn: str) -> int:
    with connect(dsn) as conn:
        row = conn.execute("SELECT count(*) AS n FROM pin_failures").fetchone()
    return int(row["n"]) if row else 0


def test_right_pin_dials_the_agents_with_dual_channel_recording_and_pops_the_screen(
        server: Server) -> None:
    server.customers.add(ACCOUNT, CALLER, PIN)
    sim = TwilioSimulator(server.base)
    call = sim.run(sim.new_call(CALLER, [PIN + "#"]))
    assert len(call.dials) == 1
    dial = call.dials[0]
    assert dial.get("record") == "record-from-answer-dual"
    assert dial.get("recordingStatusCallback", "").startswith(f"{server.base}/twilio/recording")
    assert [n.tag for n in dial] == ["Sip", "Client"]
    assert [n.text for n in dial] == ["sip:agent1@agents.example.org", "agent2"]
    [(call_id, verdict)] = server.verdicts
    assert verdict.verified and verdict.method == "pin"
    assert server.pops == [(call_id, "agent1", verdict)]
    joined = " ".join(call.twiml)
    assert PIN not in joined and CALLER not in joined and ACCOUNT not in joined
    [row] = _rows(server.dsn)
    assert row["agent"] == "agent1" and row["machine"]["state"] == "done"
    assert PIN not in str(row) and CALLER not in str(row)


def test_unknown_caller_types_the_account_number_then_the_pin(server: Server) -> None:
    server.customers.add(ACCOUNT, CALLER, PIN)
    sim = TwilioSimulator(server.base)
    sim.run(sim.new_call("+15550000000", [ACCOUNT + "#", PIN + "#"]))
    [(_, verdict)] = server.verdicts
    assert verdict.verified and verdict.method == "pin"


def test_three_wrong_pins_lock_the_account_for_both_platforms(server: Server) -> None:
    """Three wrong PINs over Twilio lock the account; the right PIN then is refused over
    Twilio and by the same Customers store the Asterisk path uses; a notice is queued."""
    ref = server.customers.add(ACCOUNT, CALLER, PIN)
    sim = TwilioSimulator(server.base)
    sim.run(sim.new_call(CALLER, [WRONG_PIN + "#"] * 3, agent_answers=False))
    assert [v.reason for _, v in server.verdicts] == ["locked"]
    assert [kind for _, _, kind in server.customers.pending_notices()] == ["account_locked"]
    sim.run(sim.new_call(CALLER, [PIN + "#"], agent_answers=False))
    assert [v.reason for _, v in server.verdicts] == ["locked", "locked"]
    assert server.customers.check_pin(ref, PIN).locked  # the Asterisk driver's own check


def test_silence_reprompts_and_ends_unverified(server: Server) -> None:
    server.customers.add(ACCOUNT, CALLER, PIN)
    sim = TwilioSimulator(server.base)
    call = sim.run(sim.new_call(CALLER, [None, None, None], agent_answers=False))
    assert [v.reason for _, v in server.verdicts] == ["failed"]
    assert sum("PIN" in s for s in call.said) >= 3


def test_forged_unsigned_other_account_and_malformed_requests_change_nothing(
        server: Server) -> None:
    server.customers.add(ACCOUNT, CALLER, PIN)
    sim = TwilioSimulator(server.base)
    call = sim.new_call(CALLER, [])
    voice = f"{server.base}/twilio/voice"
    params = sim.params(call)
    assert sim.post(voice, params, sign=False).status == 403
    assert sim.post(voice, params, signature="Zm9yZ2Vk").status == 403
    forged = TwilioSimulator(server.base, token="not-the-token")
    assert forged.post(voice, params).status == 403
    other = TwilioSimulator(server.base, account="AC" + "f" * 32)
    assert other.post(voice, {**params, "AccountSid": "AC" + "f" * 32}).status == 403
    assert sim.post(voice, {**params, "CallSid": "not-a-sid"}).status == 400
    step = f"{server.base}/twilio/step?call={uuid.uuid4()}&seq=1&ev=nonsense"
    assert sim.post(step, params).status == 400
    tampered = sim.params(call)
    signature = sim._validator.compute_signature(voice, tampered)
    assert sim.post(voice, {**tampered, "From": "+15559999999"},
                    signature=signature).status == 403
    assert _rows(server.dsn) == [] and server.verdicts == []
    with connect(server.dsn) as conn:
        denied = conn.execute("SELECT count(*) AS n FROM access_log WHERE action = 'webhook'"
                              " AND outcome = 'denied'").fetchone()
    assert denied is not None and denied["n"] == 7  # every refusal above, logged


def test_a_replayed_or_late_webhook_is_answered_as_before_and_counts_nothing(
        server: Server) -> None:
    """Twilio retries the PIN's Gather action: the same TwiML comes back and the wrong PIN
    counts once; an older step arriving late changes nothing either."""
    server.customers.add(ACCOUNT, CALLER, PIN)
    sim = TwilioSimulator(server.base)
    call = sim.new_call(CALLER, [])
    first = sim.post(f"{server.base}/twilio/voice", sim.params(call))
    again = sim.post(f"{server.base}/twilio/voice", sim.params(call))
    assert first.status == again.status == 200 and first.body == again.body
    action = first.body.split('action="')[1].split('"')[0].replace("&amp;", "&")
    wrong = sim.post(action, sim.params(call, Digits=WRONG_PIN))
    retry = sim.post(action, sim.params(call, Digits=WRONG_PIN))
    assert wrong.body == retry.body and _failures(server.dsn) == 1
    late = sim.post(action, sim.params(call, Digits=PIN))  # the old step, a different entry
    assert late.body == wrong.body and server.verdicts == []
    assert len(_rows(server.dsn)) == 1


def test_two_instances_behind_a_load_balancer_serve_one_call_between_them(
        pg_dsn: str, tmp_path: Path) -> None:
    """Each webhook of a call goes to the other instance (signatures over the public URL
    of the balancer): the call flows as on one instance, with one verdict."""
    customers = _customers(pg_dsn, tmp_path)
    customers.add(ACCOUNT, CALLER, PIN)
    public = "http://lb.callvault.test"
    verdicts: list[tuple[str, Verdict]] = []
    ports = [free_port(), free_port()]
    apps = []
    hooks = []
    for _ in ports:
        app = web.Application()
        hooks.append(TwilioWebhooks(TwilioIvr(pg_dsn, customers, public, AGENTS), SID,
                                    SecretStr(TOKEN), public,
                                    on_verdict=lambda c, v: verdicts.append((c, v))))
        hooks[-1].add_routes(app)
        apps.append(app)
    hits: list[int] = []

    def balance(url: str) -> str:
        port = ports[len(hits) % 2]
        hits.append(port)
        return url.replace(public, f"http://127.0.0.1:{port}")

    with serving(apps[0], ports[0]), serving(apps[1], ports[1]):
        sim = TwilioSimulator(public, route=balance)
        call = sim.run(sim.new_call(CALLER, [WRONG_PIN + "#", PIN + "#"]))
    for hook in hooks:
        hook.close()
    assert len(call.dials) == 1 and set(hits) == set(ports) and len(hits) >= 5
    assert [(v.verified, v.method) for _, v in verdicts] == [(True, "pin")]
    assert any("not valid" in said for said in call.said)  # the wrong PIN was refused
