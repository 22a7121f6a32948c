"""Whole Twilio calls: the Twilio simulator places them at `serve`'s Twilio side (webhooks,
REST client, recording intake, as `callvault serve` builds it), the fake of Twilio's REST
API serves the recording and takes the call-back, and the real vault (PostgreSQL,
SeaweedFS, Whisper) stores what comes out."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiohttp import web

from callvault import twilio_wiring
from callvault.config import load_settings
from callvault.demo import make_sample
from storage.customers import Customers
from storage.db import connect
from storage.vault import Vault
from telephony.commands import Verdict
from tests.ivr.test_driver import ACCOUNT, PIN, _customers
from tests.recordings.pipeline_support import BackgroundWorker, runtime, status, wait_for
from tests.storage.vault_fixture import QA
from tests.telephony.sandbox_fixture import free_port
from tests.telephony.twilio_fake import FakeTwilioApi, encrypt_like_twilio, make_recording_key
from tests.telephony.twilio_sim import ACCOUNT as SID
from tests.telephony.twilio_sim import TOKEN, TwilioSimulator, serving

CALLER = "+15551230004"
AGENTS = {"agent1": "sip:agent1@agents.example.org"}
T = TypeVar("T")


@dataclass
class Side:
    """`serve`'s Twilio side on a loopback port, with its own event loop in a thread."""

    base: str
    fake: FakeTwilioApi
    side: twilio_wiring.TwilioSide
    customers: Customers
    loop: asyncio.AbstractEventLoop | None = None   # the server's, once it runs
    pops: list[tuple[str, str, Verdict]] = field(default_factory=list)

    def run(self, work: Coroutine[Any, Any, T]) -> T:
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(work, self.loop).result(120)


@pytest.fixture
def twilio(pg_dsn: str, vault: Vault, tmp_path: Path) -> Iterator[Side]:
    fake = FakeTwilioApi(SID, TOKEN).start()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    key_file = tmp_path / "recording-key.pem"
    pem, _ = make_recording_key()
    key_file.write_bytes(pem)
    settings = load_settings(
        state_dir=tmp_path / "state", twilio_account_sid=SID, twilio_auth_token=TOKEN,
        public_url=base, twilio_api_base_url=fake.base_url, twilio_agents=AGENTS,
        twilio_caller_id="+18005550100", twilio_recording_private_key=key_file)
    customers = _customers(pg_dsn, tmp_path)
    rt = runtime(vault, settings, tmp_path / "spool")
    app = web.Application()
    holder: list[Side] = []

    async def pop(call_id: str, agent: str, verdict: Verdict) -> None:
        holder[0].pops.append((call_id, agent, verdict))

    side = twilio_wiring.build(settings, pg_dsn, customers, vault.log, rt, app, pop)
    holder.append(Side(base, fake, side, customers))
    with serving(app, port) as served:
        holder[0].loop = served
        holder[0].recording_key = pem  # type: ignore[attr-defined]
        yield holder[0]
        holder[0].run(side.rest.close())
    side.webhooks.close()
    fake.stop()


def _intake_rows(dsn: str) -> list[dict[str, Any]]:
    with connect(dsn) as conn:
        return [dict(r) for r in conn.execute("SELECT * FROM twilio_recordings")]


def test_verified_call_recording_reaches_the_vault_once_and_leaves_twilio(
        twilio: Side, pg_dsn: str, vault: Vault, tmp_path: Path) -> None:
    """Right PIN → Dial with dual-channel recording → the agent answers (screen-pop) → the
    recording callback, delivered twice → one encrypted recording (Twilio's Voice
    Recording Encryption undone), registered with the verdict, redacted per channel, and
    deleted at Twilio only once the vault's encrypted raw copy is in S3."""
    twilio.customers.add(ACCOUNT, CALLER, PIN)
    sim = TwilioSimulator(twilio.base)
    call = sim.run(sim.new_call(CALLER, [PIN + "#"]))
    [dial] = call.dials
    [(call_id, agent, verdict)] = twilio.pops
    assert agent == "agent1" and verdict.verified and verdict.method == "pin"

    sample = tmp_path / "dual.wav"
    make_sample(sample)
    private_pem = twilio.recording_key  # type: ignore[attr-defined]
    from cryptography.hazmat.primitives import serialization
    public = serialization.load_pem_private_key(private_pem, None).public_key()
    media, details = encrypt_like_twilio(sample.read_bytes(), public)  # type: ignore[arg-type]
    recording_sid = "RE" + uuid.uuid4().hex
    twilio.fake.add_recording(recording_sid, media)
    callback = dial.get("recordingStatusCallback", "")
    params = sim.params(call, RecordingSid=recording_sid, RecordingStatus="completed",
                        RecordingChannels="2", RecordingDuration="37",
                        RecordingUrl=f"https://api.twilio.com/x/{recording_sid}",
                        EncryptionDetails=json.dumps(details))
    assert [sim.post(callback, params).status for _ in range(2)] == [204, 204]
    assert len(_intake_rows(pg_dsn)) == 1

    assert twilio.run(twilio.side.intake.once()) is True
    [row] = _intake_rows(pg_dsn)
    assert row["state"] == "registered" and row["recording_id"] is not None
    assert twilio.fake.deleted == [], "deleted at Twilio before the vault's S3 copy existed"
    rid = row["recording_id"]
    with connect(pg_dsn) as conn:
        rec = conn.execute("SELECT call_id, agent, channels, verdict FROM recordings"
                           " WHERE id = %s", (rid,)).fetchone()
    assert rec is not None and rec["call_id"] == call_id and rec["agent"] == "agent1"
    assert rec["channels"] == 2 and rec["verdict"]["method"] == "pin"

    with BackgroundWorker(runtime(vault, load_settings(state_dir=tmp_path / "w"),
                                  tmp_path / "spool")):
        wait_for(lambda: status(vault.dsn, rid) in ("stored", "failed"), 300, "the pipeline")
    assert status(vault.dsn, rid) == "stored"
    with connect(pg_dsn) as conn:  # due again now rather than in a few seconds
        conn.execute("UPDATE twilio_recordings SET lease_until = now()")
        conn.commit()
    assert twilio.run(twilio.side.intake.once()) is True
    [row] = _intake_rows(pg_dsn)
    assert row["state"] == "stored" and twilio.fake.deleted == [recording_sid]
    assert twilio.run(twilio.side.intake.once()) is False   # nothing else due

    # the same callback after all that: still one recording, nothing fetched again
    assert sim.post(callback, params).status == 204
    assert twilio.run(twilio.side.intake.once()) is False
    fetches = [r for r in twilio.fake.requests if r.path.endswith(".wav")]
    assert len(fetches) == 1
    doc = json.loads(vault.read_all(QA, rid, "transcript"))
    assert len(doc["channels"]) == 2 and "[" in " ".join(c["text"] for c in doc["channels"])


def test_forgot_pin_places_the_call_back_over_rest_and_pressing_1_verifies(
        twilio: Side) -> None:
    """2# → declined; Twilio is asked (REST) to call the number of record; the customer
    answers, presses 1 → verified by call-back → dialled to the agent."""
    twilio.customers.add(ACCOUNT, CALLER, PIN)
    sim = TwilioSimulator(twilio.base)
    sim.run(sim.new_call(CALLER, ["2#"], agent_answers=False))
    [create] = twilio.fake.calls
    assert create["To"] == CALLER and create["From"] == "+18005550100"
    assert create["Url"].startswith(f"{twilio.base}/twilio/callback?leg=")
    callee = sim.new_call(None, ["1"])
    callee.sid = twilio.fake.call_sids[0]
    sim.answer(callee, create["Url"], create["StatusCallback"])
    assert len(callee.dials) == 1
    [(_, agent, verdict)] = twilio.pops
    assert agent == "agent1" and verdict.verified and verdict.method == "callback"
    assert [kind for _, _, kind in twilio.customers.pending_notices()] == ["callback_requested"]


def test_a_recording_callback_for_a_call_we_do_not_know_is_refused(twilio: Side) -> None:
    sim = TwilioSimulator(twilio.base)
    call = sim.new_call(CALLER, [])
    url = f"{twilio.base}/twilio/recording?call={uuid.uuid4()}"
    params = sim.params(call, RecordingSid="RE" + uuid.uuid4().hex, RecordingStatus="completed")
    assert sim.post(url, params).status == 400
    assert twilio.fake.requests == []
