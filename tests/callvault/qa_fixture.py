"""The QA web app on a free loopback port, over the real PostgreSQL, SeaweedFS and vault
(`tests.storage.vault_fixture`), with one user of each role and helpers to put recordings
in the vault the way the pipeline does (objects encrypted, the row `stored`).

`qa_server` serves from a thread with its own event loop, so synchronous tests (and
Playwright's sync API) can talk to it. Cookies are not Secure here: the aiohttp test
client would not send Secure cookies over http (Chromium would, on 127.0.0.1; the
browser tests use `secure=True`)."""

from __future__ import annotations

import io
import json
import math
import struct
import uuid
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web
from argon2 import PasswordHasher

from callvault import qa_app
from callvault.config import Settings
from callvault.qa_service import QaService
from storage.access import Users
from storage.audit import AuditRow
from storage.db import connect
from storage.vault import Vault
from tests.telephony.sandbox_fixture import free_port
from tests.telephony.twilio_sim import serving

FAST = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
PASSWORD = "correct horse battery"
USERS = {"quinn": "qa", "carol": "compliance", "adam": "admin", "alex": "agent"}
# A value that must never come out of the app: it is in the raw audio's "words" only.
SEEDED_ACCOUNT = "4716 2231 9087"


def tone_wav(seconds: float = 4.0, rate: int = 8000, channels: int = 1,
             muted: tuple[tuple[float, float], ...] = ()) -> bytes:
    """A 16-bit PCM WAV: a 440 Hz tone (per channel a different pitch), silent over
    `muted` spans (what a redacted copy looks like)."""
    frames = bytearray()
    for i in range(int(seconds * rate)):
        t = i / rate
        quiet = any(a <= t < b for a, b in muted)
        for c in range(channels):
            v = 0 if quiet else int(8000 * math.sin(2 * math.pi * (440 + 220 * c) * t))
            frames += struct.pack("<h", v)
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(bytes(frames))
    return buf.getvalue()


def transcript_doc(recording_id: uuid.UUID, seconds: float,
                   spans: list[tuple[int, float, float, str]],
                   words: dict[int, list[tuple[float, float, str]]]) -> dict[str, Any]:
    """A `callvault.transcript/1` document like the pipeline's."""
    channels = []
    for ch, ws in sorted(words.items()):
        channels.append({"channel": ch, "text": " ".join(w for _, _, w in ws),
                         "words": [{"start": a, "end": b, "text": w} for a, b, w in ws]})
    return {"schema": "callvault.transcript/1", "recording_id": str(recording_id),
            "duration_seconds": seconds, "channels": channels,
            "spans": [{"channel": c, "start": a, "end": b, "label": lab}
                      for c, a, b, lab in spans],
            "redacted_seconds": round(sum(b - a for _, a, b, _ in spans), 3)}


@dataclass
class QaServer:
    base: str
    port: int
    vault: Vault
    service: QaService
    dsn: str

    def store(self, *, agent: str = "agent1", seconds: float = 4.0, channels: int = 1,
              verified: bool | None = True, raw: bytes | None = None,
              call_id: str | None = None, source_name: str = "call.wav") -> uuid.UUID:
        """A stored recording with raw, redacted and transcript objects; the redacted
        audio is silent over one ACCOUNT_NUMBER span at 1.0-2.0 s."""
        rid = uuid.uuid4()
        verdict = None if verified is None else json.dumps(
            {"verified": verified, "method": "pin" if verified else None,
             "reason": None if verified else "wrong_pin", "at": 1_750_000_000.0})
        spans = [(c, 1.0, 2.0, "ACCOUNT_NUMBER") for c in range(channels)]
        with connect(self.dsn) as conn:
            conn.execute(
                "INSERT INTO recordings (id, call_id, agent, source_name, status,"
                " duration_seconds, channels, sample_rate, verdict, redaction)"
                " VALUES (%s, %s, %s, %s, 'processing', %s, %s, 8000, %s::jsonb,"
                " %s::jsonb)",
                (rid, call_id or f"call-{rid}", agent, source_name, seconds, channels, verdict,
                 json.dumps({"spans": [{"channel": c, "start": a, "end": b, "label": lab}
                                       for c, a, b, lab in spans]})))
            conn.commit()
        raw_audio = raw if raw is not None else tone_wav(seconds, channels=channels)
        red_audio = tone_wav(seconds, channels=channels, muted=((1.0, 2.0),))
        words = {c: [(0.2, 0.6, "my"), (0.6, 0.9, "account"), (1.0, 2.0, "[ACCOUNT_NUMBER]"),
                     (2.2, 2.6, "thanks")] for c in range(channels)}
        doc = json.dumps(transcript_doc(rid, seconds, spans, words)).encode()
        for variant, data in (("raw", raw_audio), ("redacted", red_audio),
                              ("transcript", doc)):
            self.vault.put_plaintext(rid, variant, io.BytesIO(data), len(data))  # type: ignore[arg-type]
        with connect(self.dsn) as conn:
            conn.execute("UPDATE recordings SET status = 'stored', stored_at = now()"
                         " WHERE id = %s", (rid,))
            conn.commit()
        return rid

    def entries(self, action: str | None = None, recording_id: uuid.UUID | None = None
                ) -> list[AuditRow]:
        rows = self.vault.log.show(recording_id=recording_id, limit=10_000)
        return [r for r in rows if action is None or r.action == action]


def settings_for_tests(**overrides: Any) -> Settings:
    values: dict[str, Any] = {"web_secure_cookies": False}
    values.update(overrides)
    return Settings(**values)


def _serve(vault: Vault, settings: Settings) -> Iterator[QaServer]:
    users = Users(vault.dsn, FAST)
    for name, role in USERS.items():
        users.add(name, role, PASSWORD)  # type: ignore[arg-type]
    service = qa_app.build(settings, vault, users=users)
    app = web.Application(client_max_size=1 << 20)
    qa_app.mount(app, service)
    port = free_port()
    with serving(app, port):
        yield QaServer(f"http://127.0.0.1:{port}", port, vault, service, vault.dsn)


@pytest.fixture
def qa_server(vault: Vault) -> Iterator[QaServer]:
    """The QA app (cookies not Secure: plain-http test clients)."""
    yield from _serve(vault, settings_for_tests())


@pytest.fixture
def qa_server_secure(vault: Vault) -> Iterator[QaServer]:
    """The QA app as deployed: Secure, __Host- cookies (Chromium accepts them on
    http://127.0.0.1, a potentially trustworthy origin)."""
    yield from _serve(vault, settings_for_tests(web_secure_cookies=True))
