"""The agent desk over real HTTP and WebSockets on loopback, with sessions, users and the
access log in a real PostgreSQL: sign-in, the token rules, and the screen-pop."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from argon2 import PasswordHasher

from callvault.agent_desk import CLOSE_SESSION_ENDED, EVENTS_PATH, SESSION_PATH, AgentDesk
from storage.access import Users
from storage.audit import AccessLog, AuditRow
from storage.db import connect
from telephony.commands import Verdict
from tests.storage import pg_fixture

pg_server = pg_fixture.pg_server
pg_dsn = pg_fixture.pg_dsn

FAST = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
PASSWORD = "correct horse battery"
DESKS = {"agent1": "alice", "agent2": "alice", "agent3": "bob"}
ACCOUNT_REF = "7d1c6f0e-5b7a-4c55-9f44-3e2d1a0b9c88"
VERIFIED = Verdict(True, "pin", None, 1_750_000_000.25, ACCOUNT_REF)
NOT_VERIFIED = Verdict(False, None, "locked", 1_750_000_001.0, ACCOUNT_REF)
CALL_KEYS = {"type", "call_id", "endpoint", "verified", "method", "reason", "verdict_at",
             "banner"}


@pytest.fixture
def dsn(pg_dsn: str) -> str:
    """A database with agents alice and bob and the QA reviewer quinn."""
    users = Users(pg_dsn, FAST)
    users.add("alice", "agent", PASSWORD)
    users.add("bob", "agent", PASSWORD)
    users.add("quinn", "qa", PASSWORD)
    return pg_dsn


@dataclass
class Desk:
    desk: AgentDesk
    http: aiohttp.ClientSession
    base: str
    port: int
    log: AccessLog
    dsn: str

    async def sign_in(self, user: str, password: str = PASSWORD) -> aiohttp.ClientResponse:
        return await self.http.post(self.base + SESSION_PATH,
                                    json={"user": user, "password": password})

    async def token(self, user: str) -> str:
        resp = await self.sign_in(user)
        assert resp.status == 200
        return str((await resp.json())["token"])

    async def socket(self, token: str) -> aiohttp.ClientWebSocketResponse:
        ws = await self.http.ws_connect(self.base + EVENTS_PATH,
                                        headers={"Authorization": f"Bearer {token}"})
        hello = await ws.receive_json(timeout=5)
        assert hello["type"] == "hello"
        return ws

    async def refused(self, url: str, **kwargs: Any) -> int:
        with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
            await self.http.ws_connect(url, **kwargs)
        return caught.value.status

    def entries(self, action: str) -> list[AuditRow]:
        return [r for r in self.log.show(limit=1000) if r.action == action]


@contextlib.asynccontextmanager
async def running(dsn: str, *, log_screen_pops: bool = True,
                  **options: Any) -> AsyncIterator[Desk]:
    """An AgentDesk on a free loopback port, and a client session."""
    log = AccessLog(dsn, b"k" * 32)
    options.setdefault("session_seconds", 600.0)
    desk = AgentDesk(dsn, DESKS, users=Users(dsn, FAST),
                     log=log if log_screen_pops else None, **options)
    app = web.Application()
    desk.add_routes(app)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = int(runner.addresses[0][1])
    try:
        async with aiohttp.ClientSession() as http:
            yield Desk(desk, http, f"http://127.0.0.1:{port}", port, log, dsn)
    finally:
        await runner.cleanup()


def run(dsn: str, scenario: Callable[[Desk], Coroutine[Any, Any, None]],
        **options: Any) -> None:
    async def main() -> None:
        async with running(dsn, **options) as d:
            await asyncio.wait_for(scenario(d), timeout=30)
    asyncio.run(main())


async def no_message(ws: aiohttp.ClientWebSocketResponse, wait: float = 0.3) -> bool:
    with contextlib.suppress(TimeoutError):
        await ws.receive(timeout=wait)
        return False
    return True


# --- sign-in -----------------------------------------------------------------------------

def test_sign_in_returns_a_token_kept_only_as_its_hash(dsn: str) -> None:
    """An agent's sign-in answers a token and its expiry; the database holds only the
    token's SHA-256, and the access log an allowed sign_in."""
    async def scenario(d: Desk) -> None:
        resp = await d.sign_in("alice")
        assert resp.status == 200
        assert resp.headers["Cache-Control"] == "no-store"
        body = await resp.json()
        assert set(body) == {"token", "token_type", "user", "expires_at", "endpoints"}
        assert body["user"] == "alice" and body["endpoints"] == ["agent1", "agent2"]
        token = body["token"]
        with connect(d.dsn) as conn:
            rows = conn.execute("SELECT * FROM agent_sessions").fetchall()
        assert len(rows) == 1 and rows[0]["user_name"] == "alice"
        assert bytes(rows[0]["token_hash"]) == hashlib.sha256(token.encode()).digest()
        assert token not in repr(rows)
        assert abs((rows[0]["expires_at"] - rows[0]["created_at"]).total_seconds() - 600) < 1
        [entry] = d.entries("sign_in")
        assert (entry.actor, entry.role, entry.outcome) == ("alice", "agent", "allowed")
    run(dsn, scenario)


def test_unknown_user_and_wrong_password_get_the_same_401(dsn: str) -> None:
    """Unknown user and wrong password: 401 with byte-identical bodies, both logged denied."""
    async def scenario(d: Desk) -> None:
        unknown = await d.sign_in("mallory")
        wrong = await d.sign_in("alice", "not the password at all")
        assert unknown.status == wrong.status == 401
        assert await unknown.read() == await wrong.read()
        denied = sorted((e.actor, e.outcome) for e in d.entries("sign_in"))
        # an unknown name is not logged: it may be a password typed in the wrong field
        assert denied == [("(unknown user)", "denied"), ("alice", "denied")]
        with connect(d.dsn) as conn:
            assert conn.execute("SELECT count(*) AS n FROM agent_sessions").fetchone() == \
                {"n": 0}
    run(dsn, scenario)


def test_other_roles_get_403_and_no_token(dsn: str) -> None:
    """A QA reviewer's right password is refused with 403, logged, and makes no session."""
    async def scenario(d: Desk) -> None:
        resp = await d.sign_in("quinn")
        assert resp.status == 403
        assert "token" not in await resp.json()
        [entry] = d.entries("sign_in")
        assert (entry.actor, entry.role, entry.outcome) == ("quinn", "qa", "denied")
        with connect(d.dsn) as conn:
            assert conn.execute("SELECT count(*) AS n FROM agent_sessions").fetchone() == \
                {"n": 0}
    run(dsn, scenario)


def test_bad_sign_in_requests_are_refused(dsn: str) -> None:
    """Not JSON (400), JSON of the wrong shape (400), a body over 4 KiB (413)."""
    async def scenario(d: Desk) -> None:
        url = d.base + SESSION_PATH
        form = await d.http.post(url, data={"user": "alice", "password": PASSWORD})
        assert form.status == 400
        garbage = await d.http.post(url, data=b"{not json",
                                    headers={"Content-Type": "application/json"})
        assert garbage.status == 400
        shape = await d.http.post(url, json=["alice", PASSWORD])
        assert shape.status == 400
        big = await d.http.post(url, json={"user": "alice", "password": "x" * 5000})
        assert big.status == 413
        assert d.entries("sign_in") == []
    run(dsn, scenario)


# --- the WebSocket's door ------------------------------------------------------------------

def test_events_refuse_a_missing_or_bogus_token_before_upgrading(dsn: str) -> None:
    """No token, a made-up token, a token under the wrong scheme: 401, no upgrade."""
    async def scenario(d: Desk) -> None:
        url = d.base + EVENTS_PATH
        assert await d.refused(url) == 401
        assert await d.refused(url, headers={"Authorization": "Bearer " + "A" * 43}) == 401
        token = await d.token("alice")
        assert await d.refused(url, headers={"Authorization": f"Basic {token}"}) == 401
        assert await d.refused(url, protocols=("callvault.bearer",)) == 401
        plain = await d.http.get(url)
        assert plain.status == 401
        assert plain.headers["WWW-Authenticate"] == "Bearer"
        assert d.desk.open_sockets == 0
    run(dsn, scenario)


def test_bearer_header_gets_the_hello(dsn: str) -> None:
    """With the bearer header the socket opens and says who is there and at which desks."""
    async def scenario(d: Desk) -> None:
        token = await d.token("alice")
        ws = await d.http.ws_connect(d.base + EVENTS_PATH,
                                     headers={"Authorization": f"Bearer {token}"})
        assert await ws.receive_json(timeout=5) == {
            "type": "hello", "user": "alice", "endpoints": ["agent1", "agent2"]}
        assert ws.protocol is None
        await ws.close()
    run(dsn, scenario)


def test_browser_subprotocol_gets_the_hello_and_the_protocol(dsn: str) -> None:
    """A browser's `callvault.bearer, TOKEN` subprotocol pair signs in; the server answers
    with `callvault.bearer` only, never echoing the token."""
    async def scenario(d: Desk) -> None:
        token = await d.token("bob")
        ws = await d.http.ws_connect(d.base + EVENTS_PATH,
                                     protocols=("callvault.bearer", token))
        assert ws.protocol == "callvault.bearer"
        assert await ws.receive_json(timeout=5) == {
            "type": "hello", "user": "bob", "endpoints": ["agent3"]}
        await ws.close()
    run(dsn, scenario)


def test_a_token_in_the_url_is_refused_and_revoked(dsn: str) -> None:
    """A token in the query string is not accepted, and is revoked: it has leaked."""
    async def scenario(d: Desk) -> None:
        token = await d.token("alice")
        assert await d.refused(d.base + EVENTS_PATH + f"?access_token={token}") == 401
        assert await d.refused(d.base + EVENTS_PATH,
                               headers={"Authorization": f"Bearer {token}"}) == 401
    run(dsn, scenario)


# --- the screen-pop ---------------------------------------------------------------------------

def test_publish_reaches_the_desk_user_only(dsn: str) -> None:
    """A verdict at alice's endpoint reaches both of alice's sockets, not bob's; bob's
    endpoint reaches bob; an endpoint without a desk reaches nobody."""
    async def scenario(d: Desk) -> None:
        alice1 = await d.socket(await d.token("alice"))
        alice2 = await d.socket(await d.token("alice"))
        bob = await d.socket(await d.token("bob"))
        assert await d.desk.publish("agent2", "call-1", VERIFIED) == 2
        for ws in (alice1, alice2):
            msg = await ws.receive_json(timeout=5)
            assert msg["call_id"] == "call-1" and msg["endpoint"] == "agent2"
        assert await no_message(bob)
        assert await d.desk.publish("agent3", "call-2", NOT_VERIFIED) == 1
        assert (await bob.receive_json(timeout=5))["call_id"] == "call-2"
        assert await no_message(alice1, 0.1)
        assert await d.desk.publish("agent9", "call-3", VERIFIED) == 0
        pops = sorted((e.actor, e.outcome, e.origin) for e in d.entries("screen_pop"))
        assert pops == [("alice", "ok", "ivr call call-1"), ("bob", "ok", "ivr call call-2")]
    run(dsn, scenario)


def test_the_call_message_has_exactly_the_documented_keys(dsn: str) -> None:
    """Verified and unverified pops carry exactly the documented keys and values, and
    nothing of the account."""
    async def scenario(d: Desk) -> None:
        ws = await d.socket(await d.token("alice"))
        await d.desk.publish("agent1", "call-7", VERIFIED)
        await d.desk.publish("agent1", "call-8", NOT_VERIFIED)
        raw = [await ws.receive_str(timeout=5) for _ in range(2)]
        assert all(ACCOUNT_REF not in text for text in raw)
        verified, unverified = (json.loads(text) for text in raw)
        assert set(verified) == set(unverified) == CALL_KEYS
        assert verified == {
            "type": "call", "call_id": "call-7", "endpoint": "agent1", "verified": True,
            "method": "pin", "reason": None, "verdict_at": "2025-06-15T15:06:40.250Z",
            "banner": "VERIFIED (PIN)"}
        assert (unverified["verified"], unverified["method"], unverified["reason"]) == \
            (False, None, "locked")
        assert unverified["banner"].startswith("NOT VERIFIED")
    run(dsn, scenario)


def test_a_client_that_never_reads_does_not_block_the_others(dsn: str) -> None:
    """A desktop that stops reading is cut off once its queue fills; publishing never
    stalls and alice's other socket gets every message, in order."""
    async def scenario(d: Desk) -> None:
        token = await d.token("alice")
        loop = asyncio.get_running_loop()
        slow = socket.socket()
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.setblocking(False)
        await loop.sock_connect(slow, ("127.0.0.1", d.port))
        key = base64.b64encode(os.urandom(16)).decode()
        await loop.sock_sendall(slow, (
            f"GET {EVENTS_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {token}\r\n\r\n").encode())
        assert (await loop.sock_recv(slow, 256)).startswith(b"HTTP/1.1 101")
        fast = await d.socket(token)
        got: list[str] = []

        async def read_fast() -> None:
            while True:
                got.append((await fast.receive_json())["call_id"])

        reader = asyncio.create_task(read_fast())
        worst, sent, i = 0.0, [], 0
        try:
            while True:
                started = time.perf_counter()
                count = await d.desk.publish("agent1", f"c{i}", VERIFIED)
                worst = max(worst, time.perf_counter() - started)
                sent.append(f"c{i}")
                if count == 1:
                    break
                assert count == 2 and i < 300_000
                i += 1
                await asyncio.sleep(0)
            assert d.desk.open_sockets == 1
            while len(got) < len(sent):
                await asyncio.sleep(0.01)
            assert got == sent
            assert worst < 0.05
        finally:
            reader.cancel()
            slow.close()
    run(dsn, scenario, log_screen_pops=False, queue_size=8)


# --- the end of a session ------------------------------------------------------------------------

def test_sign_out_revokes_the_token_and_closes_its_sockets(dsn: str) -> None:
    """DELETE with the token closes its open socket (code 4001), refuses a new one, and
    leaves another token of the same agent working."""
    async def scenario(d: Desk) -> None:
        token, other = await d.token("alice"), await d.token("alice")
        ws, kept = await d.socket(token), await d.socket(other)
        resp = await d.http.delete(d.base + SESSION_PATH,
                                   headers={"Authorization": f"Bearer {token}"})
        assert resp.status == 204
        closing = await ws.receive(timeout=5)
        assert closing.type == aiohttp.WSMsgType.CLOSE
        assert closing.data == CLOSE_SESSION_ENDED
        assert await d.refused(d.base + EVENTS_PATH,
                               headers={"Authorization": f"Bearer {token}"}) == 401
        again = await d.http.delete(d.base + SESSION_PATH,
                                    headers={"Authorization": f"Bearer {token}"})
        assert again.status == 401
        assert await d.desk.publish("agent1", "call-9", VERIFIED) == 1
        assert (await kept.receive_json(timeout=5))["call_id"] == "call-9"
        [entry] = d.entries("sign_out")
        assert (entry.actor, entry.outcome) == ("alice", "ok")
    run(dsn, scenario)


def test_an_expired_token_is_refused(dsn: str) -> None:
    """Past its lifetime (an injected clock) a token opens no socket and signs nothing out."""
    now = [1_750_000_000.0]

    async def scenario(d: Desk) -> None:
        token = await d.token("alice")
        await (await d.socket(token)).close()
        now[0] += 601
        assert await d.refused(d.base + EVENTS_PATH,
                               headers={"Authorization": f"Bearer {token}"}) == 401
        resp = await d.http.delete(d.base + SESSION_PATH,
                                   headers={"Authorization": f"Bearer {token}"})
        assert resp.status == 401
    run(dsn, scenario, clock=lambda: now[0])


def test_an_open_socket_closes_when_its_token_expires(dsn: str) -> None:
    """A socket whose token runs out is closed with code 4001 at expiry."""
    async def scenario(d: Desk) -> None:
        ws = await d.socket(await d.token("alice"))
        started = time.monotonic()
        closing = await ws.receive(timeout=5)
        assert closing.type == aiohttp.WSMsgType.CLOSE
        assert closing.data == CLOSE_SESSION_ENDED and closing.extra == "session expired"
        assert 0.5 < time.monotonic() - started < 3
    run(dsn, scenario, session_seconds=1.5)


def test_disabling_the_agent_closes_the_socket(dsn: str) -> None:
    """An agent disabled while connected is disconnected at the next session check."""
    async def scenario(d: Desk) -> None:
        ws = await d.socket(await d.token("alice"))
        await asyncio.to_thread(Users(d.dsn, FAST).disable, "alice")
        closing = await ws.receive(timeout=5)
        assert closing.type == aiohttp.WSMsgType.CLOSE
        assert closing.data == CLOSE_SESSION_ENDED
        assert d.desk.open_sockets == 0
    run(dsn, scenario, recheck_seconds=0.3)


def test_logs_never_show_the_token_or_password(dsn: str, caplog: pytest.LogCaptureFixture
                                               ) -> None:
    """Through sign-in, a pop, a leaked URL and sign-out, no log line or access-log entry
    carries the token, the password or the account reference."""
    caplog.set_level(logging.DEBUG)
    secrets_seen: list[str] = [PASSWORD, ACCOUNT_REF]

    async def scenario(d: Desk) -> None:
        token = await d.token("alice")
        secrets_seen.append(token)
        ws = await d.socket(token)
        await d.desk.publish("agent1", "call-1", VERIFIED)
        await d.desk.publish("agent7", "call-2", VERIFIED)
        await ws.receive_json(timeout=5)
        await d.refused(d.base + EVENTS_PATH + f"?token={token}")
        text = " ".join(repr(r) for r in d.log.show(limit=1000))
        assert all(s not in text for s in secrets_seen)
        assert "screen_pop" in text and "sign_in" in text
    run(dsn, scenario)
    assert "revoked" in caplog.text
    assert all(s not in caplog.text for s in secrets_seen)


def test_guessing_a_password_is_throttled_per_user(dsn: str) -> None:
    """Five wrong passwords for alice → 429 with Retry-After, even with the right one,
    without checking it; another user is not held up."""
    async def scenario(d: Desk) -> None:
        for _ in range(5):
            assert (await d.sign_in("alice", "a wrong password guess")).status == 401
        held = await d.sign_in("alice")
        assert held.status == 429 and int(held.headers["Retry-After"]) > 0
        assert (await d.sign_in("bob")).status in (200, 403)
        assert len(d.entries("sign_in")) == 6   # the throttled try never reached the hasher
    run(dsn, scenario)


def test_the_throttle_forgets_after_its_window() -> None:
    from callvault.throttle import FailureThrottle

    now = [0.0]
    t = FailureThrottle(2, 60.0, clock=lambda: now[0])
    t.failed("k")
    assert t.wait("k") == 0
    t.failed("k")
    assert t.wait("k") == 60.0
    now[0] = 59.0
    assert t.wait("k") == 1.0
    now[0] = 61.0
    assert t.wait("k") == 0
    t.failed("k")
    t.succeeded("k")
    assert t.wait("k") == 0
