"""Who is asking, for the QA web app and its API: browser sessions, bearer tokens for
machine clients, CSRF protection, lockout after failed sign-ins, the compliance officer's
stated reason for playing an original, and the security headers of every response.

- A **browser session** is a random token in an HttpOnly, Secure, SameSite=Strict cookie
  (`__Host-` prefixed, so no subdomain can set or read it). It ends after `idle_seconds`
  without a request or at `absolute_seconds` after sign-in, whichever is first, or at
  sign-out. Each session has its own CSRF token: every form carries it and every
  state-changing request is refused without it (and from a foreign Origin). The sign-in
  form itself is protected by a double-submit token in its own cookie.
- A **bearer token** (`POST /api/tokens`) is for machine clients; it is sent in the
  `Authorization` header only (a token seen in a URL is revoked, never accepted) and
  needs no CSRF token, since a browser never attaches it on its own.
- Only the SHA-256 of either secret is stored (`web_sessions`, migration 0007).
- **Lockout**: the vault's rule (`Users.authenticate`: `lock_after` failed sign-ins
  within `lock_seconds` lock an account for `lock_seconds`, even against the right
  password) holds for the QA app, its API, the agent desk and the CLI alike, on every
  instance and across restarts. Names that belong to no account are locked in memory by
  the same rule, so a lockout and its Retry-After say nothing about whether a name
  exists; client addresses are throttled too (behind `trusted_proxies`, the address
  their X-Forwarded-For names). Attempts are counted before the password is checked,
  so a burst of parallel guesses gets no more than `lock_after` checks.
- Only roles the policy lets read redacted audio (qa, compliance) may sign in here.
- Every sign-in, refusal, lockout and sign-out is written to the access log.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import ipaddress
import logging
import math
import re
import secrets
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

from aiohttp import web

from callvault.app import log_event
from callvault.throttle import FailureThrottle
from storage.access import AccountLocked, Principal, Users, authorize, check_reason
from storage.audit import AccessLog, AuditEvent
from storage.db import connect, translate_errors
from storage.errors import AccessDenied, StorageError

logger = logging.getLogger(__name__)

Kind = Literal["browser", "api"]
TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{43}$")   # secrets.token_urlsafe(32)
USER_NAME_RE = re.compile(r"^[a-z][a-z0-9._-]{1,63}$")
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf"
REASON_HEADER = "X-Access-Reason"
_TOUCH_EVERY = 60.0          # seconds between writes of a session's last-seen time
_PRUNE_AFTER = timedelta(days=7)
_MAX_WAITING = 32            # sign-ins queued for the password hasher, at most
ADDRESS_FAILURES = (20, 900.0)

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "media-src 'self'; connect-src 'self'; font-src 'self'; form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'; object-src 'none'")


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class SignInRefused(Exception):
    """A sign-in that did not succeed: the HTTP status, a message safe to show, and how
    long to wait (429)."""

    def __init__(self, status: int, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after


@dataclass(frozen=True)
class WebSession:
    """A signed-in browser or machine client."""

    principal: Principal
    kind: Kind
    token_hash: bytes = field(repr=False)
    csrf: str | None = field(repr=False)
    expires: float

    @property
    def user(self) -> str:
        return self.principal.name

    @property
    def role(self) -> str:
        return self.principal.role


SESSION: web.RequestKey[WebSession] = web.RequestKey("web_session", WebSession)


class WebAuth:
    """Sessions, tokens, lockout and raw-audio grants over the database at `dsn`."""

    def __init__(self, dsn: str, *, users: Users | None = None, log: AccessLog | None = None,
                 idle_seconds: float = 1800.0, absolute_seconds: float = 8 * 3600.0,
                 api_token_seconds: float = 7 * 86400.0, grant_seconds: float = 1800.0,
                 secure_cookies: bool = True, trusted_proxies: Sequence[str] = (),
                 clock: Callable[[], float] = time.time) -> None:
        if min(idle_seconds, absolute_seconds, api_token_seconds, grant_seconds) <= 0:
            raise ValueError("session, token and grant times must be positive")
        self._dsn = dsn
        self._users = users or Users(dsn)   # its lockout rule is the one used here too
        self._log = log
        self.idle_seconds = idle_seconds
        self.absolute_seconds = absolute_seconds
        self.api_token_seconds = api_token_seconds
        self.grant_seconds = grant_seconds
        self.secure = secure_cookies
        self._clock = clock
        # argon2id takes 64 MiB and ~0.1 s of CPU a check: sign-ins get their own two
        # threads, so a burst of them neither takes the host's memory nor stalls the
        # threads that stream audio and look sessions up
        self._hash_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="sign-in")
        self._waiting = 0
        self._unknown = NameLockout(self._users.lock_after, self._users.lock_seconds,
                                    clock=clock)
        self._by_address = FailureThrottle(*ADDRESS_FAILURES, clock=clock)
        self._trusted = [ipaddress.ip_network(p, strict=False) for p in trusted_proxies]

    def __repr__(self) -> str:
        return f"WebAuth(secure={self.secure})"

    # --- cookies ----------------------------------------------------------------------------
    @property
    def cookie_name(self) -> str:
        return "__Host-callvault_session" if self.secure else "callvault_session"

    @property
    def signin_cookie_name(self) -> str:
        return "__Host-callvault_signin" if self.secure else "callvault_signin"

    def set_session_cookie(self, response: web.StreamResponse, token: str) -> None:
        # no max_age: a browser session cookie; the server ends the session anyway
        response.set_cookie(self.cookie_name, token, path="/", httponly=True,
                            secure=self.secure, samesite="Strict")

    def clear_session_cookie(self, response: web.StreamResponse) -> None:
        response.del_cookie(self.cookie_name, path="/", secure=self.secure, httponly=True,
                            samesite="Strict")

    def signin_csrf(self, request: web.Request, response: web.StreamResponse) -> str:
        """The token the sign-in form carries (double submit: the same value sits in an
        HttpOnly cookie, which another site can neither read nor set)."""
        current = request.cookies.get(self.signin_cookie_name, "")
        token = current if TOKEN_RE.match(current) else secrets.token_urlsafe(32)
        response.set_cookie(self.signin_cookie_name, token, path="/", httponly=True,
                            secure=self.secure, samesite="Strict")
        return token

    def signin_csrf_ok(self, request: web.Request, submitted: str | None) -> bool:
        cookie = request.cookies.get(self.signin_cookie_name, "")
        return (bool(TOKEN_RE.match(cookie)) and isinstance(submitted, str)
                and hmac.compare_digest(cookie, submitted) and same_origin(request))

    # --- signing in -------------------------------------------------------------------------
    async def sign_in(self, name: str, password: str, remote: str, origin: str
                      ) -> Principal:
        """The principal, or SignInRefused: 429 while locked out or throttled, 401 for
        any wrong user name or password (the same answer and work), 403 for a role the
        QA app does not serve, 503 when the database is down.

        Existing accounts are locked in the database by `Users.authenticate` (every way
        of signing in, every instance); names that exist nowhere are locked here, in
        memory, by the same rule, so a lockout and its Retry-After look the same either
        way and say nothing about whether a name exists."""
        key = name[:64]
        wait = max(self._by_address.wait(remote), self._unknown.attempt(key))
        if wait > 0:
            await self._refused(name, origin, "locked out or throttled")
            raise _locked(wait)
        if self._waiting >= _MAX_WAITING:
            self._unknown.forget(key)
            raise SignInRefused(429, "too many sign-ins at once; try again in a minute", 60)
        self._waiting += 1
        try:
            loop = asyncio.get_running_loop()
            principal: Principal = await loop.run_in_executor(
                self._hash_pool, self._users.authenticate, name, password)
        except AccountLocked as exc:
            self._unknown.forget(key)         # an account: the database keeps its count
            self._by_address.failed(remote)
            await self._refused(name, origin, "account locked")
            raise _locked(exc.retry_after) from None
        except AccessDenied:
            self._by_address.failed(remote)
            shown = await self._shown(name)
            if shown == name:
                self._unknown.forget(key)
                locked = await asyncio.to_thread(self._locked_now, name)
            else:
                locked = self._unknown.failed(key)
            await self._refused(name, origin, "wrong user name or password"
                                + ("; account locked" if locked else ""), shown)
            raise SignInRefused(401, "sign-in failed: wrong user name or password") from None
        except StorageError:
            self._unknown.forget(key)
            raise SignInRefused(503, "the vault database is unavailable; try again "
                                     "shortly") from None
        finally:
            self._waiting -= 1
        self._unknown.forget(key)
        try:
            authorize(principal, "read", "redacted")   # the policy says who replays audio
        except AccessDenied:
            await self._audit(AuditEvent(actor=principal.name, role=principal.role,
                                         action="sign_in", outcome="denied", origin=origin,
                                         detail="QA app: role may not replay recordings"))
            raise SignInRefused(403, "the QA app is for QA reviewers and compliance "
                                     "officers") from None
        return principal

    async def _refused(self, name: str, origin: str, why: str,
                       shown: str | None = None) -> None:
        await self._audit(AuditEvent(actor=shown or await self._shown(name), role="unknown",
                                     action="sign_in", outcome="denied", origin=origin,
                                     detail=why))

    async def _shown(self, name: str) -> str:
        """The name for the log: only names of existing users (a password typed into the
        user field must never reach the log)."""
        if not USER_NAME_RE.match(name):
            return "(unknown user)"
        try:
            await asyncio.to_thread(self._users.get, name)
        except AccessDenied:
            return name
        except StorageError:
            return "(unknown user)"
        return name

    def _locked_now(self, name: str) -> bool:
        try:
            return self._users.locked_for(name) > 0
        except StorageError:
            return False

    # --- sessions -----------------------------------------------------------------------------
    async def start(self, principal: Principal, kind: Kind, origin: str,
                    label: str | None = None) -> tuple[str, WebSession]:
        """A new session or token for a signed-in principal: (the secret, the session)."""
        token = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32) if kind == "browser" else None
        now = self._clock()
        life = self.absolute_seconds if kind == "browser" else self.api_token_seconds
        session = WebSession(principal, kind, digest(token), csrf, now + life)
        await asyncio.to_thread(self._insert, session, now, label)
        await self._audit(AuditEvent(actor=principal.name, role=principal.role,
                                     action="sign_in", outcome="allowed", origin=origin,
                                     detail="QA app (browser)" if kind == "browser"
                                     else "QA app (API token)"))
        return token, session

    def _insert(self, s: WebSession, now: float, label: str | None) -> None:
        at = datetime.fromtimestamp(now, UTC)
        with connect(self._dsn) as conn, translate_errors():
            conn.execute("DELETE FROM web_sessions WHERE expires_at < %s", (at - _PRUNE_AFTER,))
            conn.execute(
                "INSERT INTO web_sessions (token_hash, kind, user_name, csrf_token, label,"
                " created_at, last_seen_at, expires_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                (s.token_hash, s.kind, s.user, s.csrf, label, at, at,
                 datetime.fromtimestamp(s.expires, UTC)))

    async def session(self, request: web.Request) -> WebSession | None:
        """The live session of this request: a bearer token in the Authorization header
        (API clients) or the session cookie (browsers). None if neither is valid.
        Raises StorageError when the database is down (fail closed)."""
        await self._revoke_leaked(request)
        bearer = bearer_token(request)
        if bearer is not None:
            return await asyncio.to_thread(self._lookup, digest(bearer), "api")
        cookie = request.cookies.get(self.cookie_name, "")
        if TOKEN_RE.match(cookie):
            return await asyncio.to_thread(self._lookup, digest(cookie), "browser")
        return None

    def _lookup(self, token_hash: bytes, kind: Kind) -> WebSession | None:
        now = self._clock()
        with connect(self._dsn) as conn, translate_errors():
            row = conn.execute(
                "SELECT s.user_name, s.csrf_token, s.last_seen_at, s.expires_at, u.role"
                " FROM web_sessions s JOIN users u ON u.name = s.user_name"
                " WHERE s.token_hash = %s AND s.kind = %s AND s.revoked_at IS NULL"
                "   AND NOT u.disabled", (token_hash, kind)).fetchone()
            if row is None:
                return None
            expires = float(row["expires_at"].timestamp())
            seen = float(row["last_seen_at"].timestamp())
            if kind == "browser":
                expires = min(expires, seen + self.idle_seconds)
            if expires <= now:
                return None
            if now - seen >= _TOUCH_EVERY:
                conn.execute("UPDATE web_sessions SET last_seen_at = %s WHERE token_hash = %s",
                             (datetime.fromtimestamp(now, UTC), token_hash))
                if kind == "browser":
                    expires = min(float(row["expires_at"].timestamp()),
                                  now + self.idle_seconds)
        principal = Principal(row["user_name"], row["role"])
        try:
            authorize(principal, "read", "redacted")   # a role changed since sign-in
        except AccessDenied:
            return None
        return WebSession(principal, kind, token_hash, row["csrf_token"], expires)

    async def end(self, session: WebSession, origin: str) -> None:
        """Sign out: the session or token is revoked, with its raw-audio grants."""
        await asyncio.to_thread(self._revoke, session.token_hash)
        await self._audit(AuditEvent(actor=session.user, role=session.role,
                                     action="sign_out", outcome="ok", origin=origin,
                                     detail=f"QA app ({session.kind})"))

    def _revoke(self, token_hash: bytes) -> bool:
        with connect(self._dsn) as conn, translate_errors():
            conn.execute("DELETE FROM raw_grants WHERE token_hash = %s", (token_hash,))
            cur = conn.execute("UPDATE web_sessions SET revoked_at = %s"
                               " WHERE token_hash = %s AND revoked_at IS NULL",
                               (datetime.fromtimestamp(self._clock(), UTC), token_hash))
            return cur.rowcount == 1

    async def _revoke_leaked(self, request: web.Request) -> None:
        """A token put in a URL is in somebody's log by now: revoke it, never accept it."""
        for value in [v for v in request.query.values() if TOKEN_RE.match(v)][:1]:
            with contextlib.suppress(StorageError):
                if await asyncio.to_thread(self._revoke, digest(value)):
                    logger.warning("QA app: a session token was sent in a URL; revoked")

    # --- CSRF ---------------------------------------------------------------------------------
    def csrf_ok(self, request: web.Request, session: WebSession, submitted: str | None) -> bool:
        """Whether a state-changing request may go ahead: bearer clients always (no
        ambient credential); browser sessions only with their CSRF token and from this
        origin."""
        if session.kind == "api":
            return True
        token = submitted if submitted is not None else request.headers.get(CSRF_HEADER)
        return (session.csrf is not None and isinstance(token, str)
                and hmac.compare_digest(session.csrf, token) and same_origin(request))

    # --- play original ------------------------------------------------------------------------
    async def grant_raw(self, session: WebSession, recording_id: uuid.UUID, reason: str,
                        origin: str) -> str:
        """Let this browser session play one recording's original for `grant_seconds`
        after its compliance officer stated `reason`. The grant or the refusal is written
        to the access log; AccessDenied (a message safe to show) if the policy or the
        reason refuses. Returns the reason as logged."""
        try:
            authorize(session.principal, "read", "raw", reason)
            clean = check_reason(reason)
        except AccessDenied as exc:
            await self._audit(AuditEvent(actor=session.user, role=session.role, action="read",
                                         outcome="denied", recording_id=recording_id,
                                         variant="raw", origin=origin,
                                         detail=f"play original: {exc}"))
            raise
        now = self._clock()
        until = now + self.grant_seconds   # and never past the session: looked up through it
        await asyncio.to_thread(self._insert_grant, session.token_hash, recording_id, clean,
                                now, until)
        await self._audit(AuditEvent(actor=session.user, role=session.role, action="read",
                                     outcome="allowed", recording_id=recording_id,
                                     variant="raw", reason=clean, origin=origin,
                                     detail=f"play original granted for {round(until - now)} s"))
        return clean

    def _insert_grant(self, token_hash: bytes, recording_id: uuid.UUID, reason: str,
                      now: float, until: float) -> None:
        with connect(self._dsn) as conn, translate_errors():
            conn.execute(
                "INSERT INTO raw_grants (token_hash, recording_id, reason, granted_at,"
                " expires_at) VALUES (%s, %s, %s, %s, %s) ON CONFLICT (token_hash,"
                " recording_id) DO UPDATE SET reason = EXCLUDED.reason,"
                " granted_at = EXCLUDED.granted_at, expires_at = EXCLUDED.expires_at",
                (token_hash, recording_id, reason, datetime.fromtimestamp(now, UTC),
                 datetime.fromtimestamp(until, UTC)))

    async def raw_reason(self, session: WebSession, recording_id: uuid.UUID) -> str | None:
        """The reason this session gave to play this recording's original, while the
        grant lasts; None otherwise."""
        return await asyncio.to_thread(self._grant, session.token_hash, recording_id)

    def _grant(self, token_hash: bytes, recording_id: uuid.UUID) -> str | None:
        with connect(self._dsn) as conn, translate_errors():
            row = conn.execute("SELECT reason, expires_at FROM raw_grants"
                               " WHERE token_hash = %s AND recording_id = %s",
                               (token_hash, recording_id)).fetchone()
        if row is None or float(row["expires_at"].timestamp()) <= self._clock():
            return None
        return str(row["reason"])

    def client(self, request: web.Request) -> str:
        """The client's address: the peer, or, when the peer is a trusted proxy, the
        nearest address in X-Forwarded-For that is not one (behind a proxy every client
        would otherwise share the proxy's address, its throttle and its log lines)."""
        return client_address(request, self._trusted)

    def close(self) -> None:
        """Stop the sign-in thread pool (the application's cleanup)."""
        self._hash_pool.shutdown(wait=False, cancel_futures=True)

    async def _audit(self, event: AuditEvent) -> None:
        await log_event(self._log, event, __name__)


def _locked(wait: float) -> SignInRefused:
    minutes = max(1, math.ceil(wait / 60))
    return SignInRefused(429, "too many failed sign-ins: this account is locked; try again "
                              f"in {minutes} minute(s)", max(1, math.ceil(wait)))


class NameLockout:
    """The database's lockout rule (`Users.authenticate`), in memory, for names that
    belong to no account: `lock_after` failures within `lock_seconds` lock the name for
    `lock_seconds`; an attempt is counted before its password is checked."""

    def __init__(self, lock_after: int, lock_seconds: float, *,
                 clock: Callable[[], float] = time.monotonic, max_names: int = 100_000) -> None:
        self._after = lock_after
        self._seconds = lock_seconds
        self._clock = clock
        self._max = max_names
        self._names: dict[str, list[float]] = {}   # name -> [count, first, locked_until]

    def attempt(self, name: str) -> float:
        """Count an attempt; the seconds the name must wait (0: go ahead)."""
        now = self._clock()
        entry = self._names.get(name)
        if entry is not None and entry[2] > now:
            return entry[2] - now
        if entry is None or entry[2] or entry[1] < now - self._seconds:
            if entry is None and len(self._names) >= self._max:
                self._prune(now)
            entry = self._names[name] = [0.0, now, 0.0]
        entry[0] += 1
        if entry[0] > self._after:
            return entry[1] + self._seconds - now
        return 0.0

    def failed(self, name: str) -> bool:
        """The attempt failed; True if that locked the name."""
        entry = self._names.get(name)
        if entry is None or entry[0] < self._after:
            return False
        self._names[name] = [0.0, 0.0, self._clock() + self._seconds]
        return True

    def forget(self, name: str) -> None:
        self._names.pop(name, None)

    def _prune(self, now: float) -> None:
        for key in [k for k, (_, first, until) in self._names.items()
                    if until <= now and first < now - self._seconds]:
            del self._names[key]
        while len(self._names) >= self._max:
            del self._names[next(iter(self._names))]


def client_address(request: web.Request,
                   trusted: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> str:
    """The peer address, or behind trusted proxies the first untrusted hop of
    X-Forwarded-For read from the right (the left part is whatever the client sent)."""
    peer = request.remote or "unknown"

    def is_trusted(text: str) -> bool:
        try:
            addr = ipaddress.ip_address(text)
        except ValueError:
            return False
        return any(addr in net for net in trusted)

    if not trusted or not is_trusted(peer):
        return peer
    hops = [h.strip() for h in request.headers.get("X-Forwarded-For", "").split(",")]
    for hop in reversed([h for h in hops if h]):
        if not is_trusted(hop):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return peer          # garbage: it may not name an address
    return peer


def bearer_token(request: web.Request) -> str | None:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    value = value.strip()
    return value if scheme.lower() == "bearer" and TOKEN_RE.match(value) else None


def same_origin(request: web.Request) -> bool:
    """False when the browser says the request comes from another site: the Origin
    header names another host, or Sec-Fetch-Site says cross-site."""
    if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
        return False
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    if origin == "null":   # privacy settings hide it; the browser's own fetch metadata
        return request.method == "GET" or request.headers.get("Sec-Fetch-Site") == \
            "same-origin"
    _, _, host = origin.partition("://")
    return host == request.host


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """The same strict headers on every response, streamed and error ones included
    (an `on_response_prepare` hook)."""
    h = response.headers
    h.setdefault("Content-Security-Policy", CSP)
    h.setdefault("X-Content-Type-Options", "nosniff")
    # same-origin, not no-referrer: with no-referrer Chromium sends `Origin: null` on
    # every POST, which the CSRF check must then refuse; other sites still get nothing
    h.setdefault("Referrer-Policy", "same-origin")
    h.setdefault("X-Frame-Options", "DENY")
    h.setdefault("Cross-Origin-Opener-Policy", "same-origin")
    h.setdefault("Cross-Origin-Resource-Policy", "same-origin")
    h.setdefault("Permissions-Policy", "camera=(), microphone=(), geolocation=()")
    h.setdefault("Cache-Control", "no-store")
