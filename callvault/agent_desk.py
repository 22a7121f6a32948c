"""The agent desk: sign-in tokens for agents' desktops and the live screen-pop.

An agent signs in with their vault account (`POST /api/agent/session`) and gets a bearer
token, shown once; only its SHA-256 is kept (`agent_sessions`, migration 0004). The
desktop opens `GET /api/agent/events` as a WebSocket with that token, either in an
`Authorization: Bearer` header or, from a browser, as the subprotocol pair
`callvault.bearer, TOKEN`; the token is checked before the upgrade and never read from a
URL (URLs end up in proxy and browser logs, so a token seen in one is revoked).

When a call reaches an agent's phone, `publish(endpoint, ...)` sends the verdict to every
open socket of the user sitting at that endpoint (`agent_desks`): call id, verified or
not, how or why, when, and the banner. Never the account reference, a PIN or a number.
Publishing never waits for a socket: each has a small queue, and one that is full (a
client that stopped reading) is cut off. A socket is closed when its token expires, is
revoked (`DELETE /api/agent/session`), or its user is disabled or no longer an agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from aiohttp import web

from callvault.app import log_event
from callvault.throttle import FailureThrottle
from storage.access import Principal, Users, authorize
from storage.audit import AccessLog, AuditEvent
from storage.db import connect, translate_errors
from storage.errors import AccessDenied, StorageError
from telephony.commands import Verdict

logger = logging.getLogger(__name__)

SUBPROTOCOL = "callvault.bearer"
SESSION_PATH = "/api/agent/session"
EVENTS_PATH = "/api/agent/events"
CLOSE_SESSION_ENDED = 4001         # the application range of WebSocket close codes
_MAX_BODY = 4096
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{43}$")  # secrets.token_urlsafe(32)
_USER_NAME = re.compile(r"^[a-z][a-z0-9._-]{1,63}$")
_PRUNE_AFTER = timedelta(days=7)
_NO_STORE = {"Cache-Control": "no-store"}
_MAX_WAITING = 32                  # sign-ins queued for the password hasher, at most
USER_FAILURES = (5, 900.0)         # failed sign-ins per user name per 15 minutes
ADDRESS_FAILURES = (20, 900.0)     # and per client address


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _error(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": message}, status=status,
                             headers={**_NO_STORE, **headers})


def _unauthorized() -> web.Response:
    return _error(401, "sign in first", **{"WWW-Authenticate": "Bearer"})


def _unavailable() -> web.Response:
    return _error(503, "the vault database is unavailable; try again shortly")


def call_message(endpoint: str, call_id: str, verdict: Verdict) -> dict[str, object]:
    """The screen-pop of one call: exactly these keys, nothing from the account."""
    return {"type": "call", "call_id": call_id, "endpoint": endpoint,
            "verified": verdict.verified, "method": verdict.method, "reason": verdict.reason,
            "verdict_at": _iso(datetime.fromtimestamp(verdict.at, UTC)),
            "banner": verdict.agent_banner()}


@dataclass(frozen=True)
class _Session:
    user: str
    token_hash: bytes = field(repr=False)
    expires: float


@dataclass(eq=False)
class _Socket:
    """One open desktop connection."""

    session: _Session
    ws: web.WebSocketResponse
    request: web.Request
    queue: asyncio.Queue[str]
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    closer: asyncio.Task[object] | None = None   # the task sending the close frame

    def cancel_tasks(self) -> None:
        """Stop the sender and the watcher, except whichever is closing or running this."""
        for task in self.tasks:
            if task is not self.closer and task is not asyncio.current_task():
                task.cancel()

    def abort(self) -> None:
        """Cut the TCP connection: a peer that does not read cannot block a close frame."""
        self.cancel_tasks()
        transport = self.request.transport
        if transport is not None:
            transport.abort()


class AgentDesk:
    """Agents' sign-in tokens, their WebSockets, and the screen-pop publisher.

    `desks` maps agent endpoints to the user sitting at each. `users` defaults to the
    vault's accounts at `dsn` (tests pass one with a cheap hasher). `log`, when given,
    records sign-ins, refusals, sign-outs and each screen-pop. `heartbeat` is the ping
    interval (a peer silent for half of it more is dropped), `recheck_seconds` how often
    an open socket's session is looked up again (revoked elsewhere, user disabled), and
    `queue_size` how many messages may wait for a slow socket before it is cut off.
    """

    def __init__(self, dsn: str, desks: Mapping[str, str], *, session_seconds: float,
                 users: Users | None = None, log: AccessLog | None = None,
                 clock: Callable[[], float] = time.time, heartbeat: float = 20.0,
                 recheck_seconds: float = 30.0, queue_size: int = 32) -> None:
        if session_seconds <= 0 or heartbeat <= 0 or recheck_seconds <= 0 or queue_size < 1:
            raise ValueError("session_seconds, heartbeat, recheck_seconds and queue_size "
                             "must be positive")
        self._dsn = dsn
        self._desks = dict(desks)
        self._session_seconds = session_seconds
        self._users = users or Users(dsn)
        self._log = log
        self._clock = clock
        self._heartbeat = heartbeat
        self._recheck = recheck_seconds
        self._queue_size = queue_size
        self._sockets: dict[str, set[_Socket]] = {}
        # argon2id takes 64 MiB a check: a burst of sign-ins must not take the host's memory
        self._hashing = asyncio.Semaphore(4)
        self._waiting = 0
        self._by_user = FailureThrottle(*USER_FAILURES)
        self._by_address = FailureThrottle(*ADDRESS_FAILURES)

    def __repr__(self) -> str:
        return f"AgentDesk(desks={len(self._desks)}, sockets={self.open_sockets})"

    @property
    def open_sockets(self) -> int:
        return sum(len(s) for s in self._sockets.values())

    def endpoints_of(self, user: str) -> list[str]:
        """The endpoints where `user` sits, sorted."""
        return sorted(e for e, u in self._desks.items() if u == user)

    def add_routes(self, app: web.Application) -> None:
        """Add the session and events routes to `app`."""
        app.router.add_post(SESSION_PATH, self._sign_in)
        app.router.add_delete(SESSION_PATH, self._sign_out)
        app.router.add_get(EVENTS_PATH, self._events)
        app.on_shutdown.append(self._shutdown)

    # --- publishing -----------------------------------------------------------------------
    def _exists(self, name: str) -> bool:
        try:
            self._users.get(name)
        except StorageError:   # NotFound, or the database is down: say nothing
            return False
        except AccessDenied:   # disabled: still a user
            return True
        return True

    async def publish(self, endpoint: str, call_id: str, verdict: Verdict) -> int:
        """Queue the screen-pop for every open socket of the user at `endpoint`; return
        how many sockets it was queued for. Never waits for a socket."""
        user = self._desks.get(endpoint)
        if user is None:
            logger.debug("agent desk: endpoint %s has no desk; no screen-pop", endpoint)
            return 0
        text = json.dumps(call_message(endpoint, call_id, verdict), separators=(",", ":"))
        sent = 0
        for sock in list(self._sockets.get(user, ())):
            try:
                sock.queue.put_nowait(text)
                sent += 1
            except asyncio.QueueFull:
                logger.warning("agent desk: %s's desktop stopped reading; disconnected", user)
                self._forget(sock)
                sock.abort()
        await self._audit(AuditEvent(
            actor=user, role="agent", action="screen_pop", outcome="ok" if sent else "failed",
            origin=f"ivr call {call_id}",
            detail=f"endpoint {endpoint}: {sent} desktop(s)" if sent
            else f"endpoint {endpoint}: no desktop connected"))
        return sent

    # --- HTTP handlers ----------------------------------------------------------------------
    async def _sign_in(self, request: web.Request) -> web.Response:
        if request.content_type != "application/json":
            return _error(400, "send JSON: {\"user\": ..., \"password\": ...}")
        body = await _read_body(request)
        if body is None:
            return _error(413, f"request body over {_MAX_BODY} bytes")
        try:
            doc = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return _error(400, "the body is not JSON")
        if not isinstance(doc, dict) or not isinstance(doc.get("user"), str) \
                or not isinstance(doc.get("password"), str):
            return _error(400, "send JSON: {\"user\": ..., \"password\": ...}")
        name, password = doc["user"], doc["password"]
        remote = request.remote or "unknown"
        origin = f"agent desk {remote}"
        wait = max(self._by_user.wait(name[:64]), self._by_address.wait(remote))
        if wait > 0 or self._waiting >= _MAX_WAITING:
            # too many failures (guessing), or too many sign-ins queued for the hasher
            return _error(429, "too many sign-in attempts; try again later",
                          **{"Retry-After": str(max(1, round(wait or 1)))})
        self._waiting += 1
        try:
            async with self._hashing:
                principal: Principal = await asyncio.to_thread(
                    self._users.authenticate, name, password)
        except AccessDenied:
            self._by_user.failed(name[:64])
            self._by_address.failed(remote)
            # a password typed into the user field must not reach the log: name only
            # users that exist
            known = bool(_USER_NAME.match(name)) and await asyncio.to_thread(
                self._exists, name)
            shown = name if known else "(unknown user)"
            await self._audit(AuditEvent(actor=shown, role="unknown", action="sign_in",
                                         outcome="denied", origin=origin, detail="agent desk"))
            return _error(401, "sign-in failed")
        except StorageError:
            return _unavailable()
        finally:
            self._waiting -= 1
        self._by_user.succeeded(name[:64])
        try:
            authorize(principal, "verdict")   # the policy says who may see verdicts: agents
        except AccessDenied as exc:
            await self._audit(AuditEvent(actor=principal.name, role=principal.role,
                                         action="sign_in", outcome="denied", origin=origin,
                                         detail=f"agent desk: {exc}"))
            return _error(403, "only agents sign in to the agent desk")
        token = secrets.token_urlsafe(32)
        now = datetime.fromtimestamp(self._clock(), UTC)
        expires = now + timedelta(seconds=self._session_seconds)
        try:
            await asyncio.to_thread(self._store, principal.name, _digest(token), now, expires)
        except StorageError:
            return _unavailable()
        await self._audit(AuditEvent(actor=principal.name, role=principal.role,
                                     action="sign_in", outcome="allowed", origin=origin,
                                     detail="agent desk"))
        return web.json_response(
            {"token": token, "token_type": "Bearer", "user": principal.name,
             "expires_at": _iso(expires), "endpoints": self.endpoints_of(principal.name)},
            headers=_NO_STORE)

    async def _sign_out(self, request: web.Request) -> web.Response:
        token = _bearer_header(request)
        try:
            session = await self._lookup(token) if token is not None else None
            if session is not None:
                await asyncio.to_thread(self._revoke, session.token_hash)
        except StorageError:
            return _unavailable()
        if session is None:
            return _unauthorized()
        for sock in [s for s in self._sockets.get(session.user, ())
                     if s.session.token_hash == session.token_hash]:
            await self._close(sock, "signed out")
        await self._audit(AuditEvent(actor=session.user, role="agent", action="sign_out",
                                     outcome="ok", origin=f"agent desk {request.remote}"))
        return web.Response(status=204, headers=_NO_STORE)

    async def _events(self, request: web.Request) -> web.StreamResponse:
        await self._revoke_leaked(request)
        token, via_subprotocol = _bearer_header(request), False
        if token is None:
            token, via_subprotocol = _bearer_subprotocol(request), True
        try:
            session = await self._lookup(token) if token is not None else None
        except StorageError:
            return _unavailable()   # fail closed: no database, no new socket
        if session is None:
            return _unauthorized()
        ws = web.WebSocketResponse(protocols=(SUBPROTOCOL,) if via_subprotocol else (),
                                   heartbeat=self._heartbeat, max_msg_size=_MAX_BODY,
                                   writer_limit=16 * 1024)
        if not ws.can_prepare(request).ok:
            return _error(400, "a WebSocket upgrade is expected here")
        await ws.prepare(request)
        sock = _Socket(session, ws, request, asyncio.Queue(self._queue_size))
        self._sockets.setdefault(session.user, set()).add(sock)
        sock.queue.put_nowait(json.dumps({"type": "hello", "user": session.user,
                                          "endpoints": self.endpoints_of(session.user)}))
        sock.tasks = [asyncio.create_task(self._send(sock)),
                      asyncio.create_task(self._watch(sock))]
        try:
            async for _ in ws:   # the desktop has nothing to say; pings are answered inside
                pass
        finally:
            self._forget(sock)
            sock.cancel_tasks()
            await asyncio.gather(*sock.tasks, return_exceptions=True)
        return ws

    # --- per-socket tasks ---------------------------------------------------------------------
    async def _send(self, sock: _Socket) -> None:
        try:
            while True:
                await sock.ws.send_str(await sock.queue.get())
        except (ConnectionError, RuntimeError):  # the peer went away: the reader ends too
            sock.abort()

    async def _watch(self, sock: _Socket) -> None:
        """Close the socket when its token expires or its session ends elsewhere."""
        while True:
            left = sock.session.expires - self._clock()
            if left <= 0:
                await self._close(sock, "session expired")
                return
            await asyncio.sleep(min(left, self._recheck))
            if sock.session.expires <= self._clock():
                continue
            try:
                still = await self._lookup_hash(sock.session.token_hash)
            except StorageError:
                continue  # a database outage ends no session early; expiry still does
            if still is None:
                await self._close(sock, "session ended")
                return

    async def _close(self, sock: _Socket, why: str) -> None:
        self._forget(sock)
        sock.closer = asyncio.current_task()
        try:
            await asyncio.wait_for(sock.ws.close(code=CLOSE_SESSION_ENDED, message=why.encode()),
                                   timeout=5)
        except (TimeoutError, ConnectionError, RuntimeError):
            sock.abort()

    def _forget(self, sock: _Socket) -> None:
        mine = self._sockets.get(sock.session.user)
        if mine is not None:
            mine.discard(sock)
            if not mine:
                del self._sockets[sock.session.user]

    async def _shutdown(self, app: web.Application) -> None:
        for sock in [s for mine in self._sockets.values() for s in mine]:
            await self._close(sock, "server shutting down")

    # --- sessions in PostgreSQL ---------------------------------------------------------------
    async def _lookup(self, token: str) -> _Session | None:
        return await self._lookup_hash(_digest(token))

    async def _lookup_hash(self, token_hash: bytes) -> _Session | None:
        return await asyncio.to_thread(self._select, token_hash)

    def _select(self, token_hash: bytes) -> _Session | None:
        """The live session of this token hash whose user is still an enabled agent."""
        with connect(self._dsn) as conn, translate_errors():
            row = conn.execute(
                "SELECT s.user_name, s.expires_at FROM agent_sessions s"
                " JOIN users u ON u.name = s.user_name"
                " WHERE s.token_hash = %s AND s.revoked_at IS NULL"
                "   AND NOT u.disabled AND u.role = 'agent'", (token_hash,)).fetchone()
        if row is None:
            return None
        expires = float(row["expires_at"].timestamp())
        if expires <= self._clock():
            return None
        return _Session(row["user_name"], token_hash, expires)

    def _store(self, user: str, token_hash: bytes, now: datetime, expires: datetime) -> None:
        with connect(self._dsn) as conn, translate_errors():
            conn.execute("DELETE FROM agent_sessions WHERE expires_at < %s",
                         (now - _PRUNE_AFTER,))
            conn.execute("INSERT INTO agent_sessions (token_hash, user_name, created_at,"
                         " expires_at) VALUES (%s, %s, %s, %s)",
                         (token_hash, user, now, expires))

    def _revoke(self, token_hash: bytes) -> bool:
        with connect(self._dsn) as conn, translate_errors():
            cur = conn.execute("UPDATE agent_sessions SET revoked_at = %s"
                               " WHERE token_hash = %s AND revoked_at IS NULL",
                               (datetime.fromtimestamp(self._clock(), UTC), token_hash))
            return cur.rowcount == 1

    async def _revoke_leaked(self, request: web.Request) -> None:
        """A token put in a URL is in somebody's log by now: revoke it, never accept it.
        (One per request: unauthenticated requests must not cost many database writes.)"""
        for value in [v for v in request.query.values() if _TOKEN.match(v)][:1]:
            if _TOKEN.match(value):
                with contextlib.suppress(StorageError):
                    if await asyncio.to_thread(self._revoke, _digest(value)):
                        logger.warning("agent desk: a token was sent in a URL; revoked")

    async def _audit(self, event: AuditEvent) -> None:
        await log_event(self._log, event, __name__)


def _bearer_header(request: web.Request) -> str | None:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    value = value.strip()
    return value if scheme.lower() == "bearer" and _TOKEN.match(value) else None


def _bearer_subprotocol(request: web.Request) -> str | None:
    offered = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")]
    if SUBPROTOCOL not in offered:
        return None
    tokens = [p for p in offered if _TOKEN.match(p)]
    return tokens[0] if len(tokens) == 1 else None


async def _read_body(request: web.Request) -> bytes | None:
    """The body, or None if it is longer than `_MAX_BODY` (read no further than that)."""
    if request.content_length is not None and request.content_length > _MAX_BODY:
        return None
    data = bytearray()
    while chunk := await request.content.read(_MAX_BODY + 1 - len(data)):
        data += chunk
        if len(data) > _MAX_BODY:
            return None
    return bytes(data)
