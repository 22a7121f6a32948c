"""WebAuth, the QA app's sign-in, sessions, lockout and raw-audio grants, on the real
PostgreSQL with a clock the tests move."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Coroutine
from datetime import UTC, datetime
from typing import Any, TypeVar

import pytest
from aiohttp.test_utils import make_mocked_request
from argon2 import PasswordHasher

from callvault.web_auth import (
    CSP,
    SignInRefused,
    WebAuth,
    WebSession,
    digest,
    same_origin,
)
from storage.access import Principal, Users
from storage.audit import AccessLog
from storage.db import connect
from storage.errors import AccessDenied
from tests.storage.vault_fixture import new_recording

FAST = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
PASSWORD = "correct horse battery"
T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC).timestamp()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def dsn(pg_dsn: str) -> str:
    users = Users(pg_dsn, FAST)
    for name, role in {"quinn": "qa", "carol": "compliance", "adam": "admin",
                       "alex": "agent"}.items():
        users.add(name, role, PASSWORD)  # type: ignore[arg-type]
    return pg_dsn


def auth_for(dsn: str, clock: Clock, **kw: Any) -> tuple[WebAuth, AccessLog]:
    log = AccessLog(dsn, b"k" * 32)
    return WebAuth(dsn, users=Users(dsn, FAST), log=log, clock=clock, **kw), log


def test_qa_and_compliance_sign_in_other_roles_and_bad_passwords_do_not(dsn: str) -> None:
    auth, log = auth_for(dsn, Clock())
    assert run(auth.sign_in("quinn", PASSWORD, "10.0.0.1", "test")).role == "qa"
    assert run(auth.sign_in("carol", PASSWORD, "10.0.0.1", "test")).role == "compliance"
    for name in ("adam", "alex"):
        with pytest.raises(SignInRefused) as refused:
            run(auth.sign_in(name, PASSWORD, "10.0.0.1", "test"))
        assert refused.value.status == 403
    answers = set()
    for name, password in (("quinn", "wrong password!"), ("nobody", PASSWORD)):
        with pytest.raises(SignInRefused) as refused:
            run(auth.sign_in(name, password, "10.0.0.1", "test"))
        answers.add((refused.value.status, refused.value.message))
    assert answers == {(401, "sign-in failed: wrong user name or password")}
    denied = [r for r in log.show(limit=100) if r.action == "sign_in" and r.outcome == "denied"]
    assert {r.actor for r in denied} == {"adam", "alex", "quinn", "(unknown user)"}


def test_a_password_typed_as_the_user_name_never_reaches_the_log(dsn: str) -> None:
    auth, log = auth_for(dsn, Clock())
    with pytest.raises(SignInRefused):
        run(auth.sign_in("hunter2hunter2", "x", "10.0.0.1", "test"))
    assert all("hunter2" not in repr(r) for r in log.show(limit=100))


def test_repeated_failures_lock_the_account_everywhere_until_it_ends(dsn: str) -> None:
    clock = Clock()
    auth, log = auth_for(dsn, clock, lock_after=3, lock_seconds=600)
    for _ in range(3):
        with pytest.raises(SignInRefused) as refused:
            run(auth.sign_in("quinn", "wrong password!", "10.0.0.1", "test"))
        assert refused.value.status == 401
    # locked: the right password is refused too, by this instance and by another one
    # (a second process sharing the database), from another address
    other, _ = auth_for(dsn, clock, lock_after=3, lock_seconds=600)
    for instance in (auth, other):
        with pytest.raises(SignInRefused) as refused:
            run(instance.sign_in("quinn", PASSWORD, "10.9.9.9", "test"))
        assert refused.value.status == 429 and refused.value.retry_after
        assert "locked" in refused.value.message
    with connect(dsn) as conn:
        row = conn.execute("SELECT locked_until FROM users WHERE name = 'quinn'").fetchone()
    assert row is not None and row["locked_until"] is not None
    assert any(r.detail and "account locked" in r.detail for r in log.show(limit=100))
    # carol is not affected
    assert run(other.sign_in("carol", PASSWORD, "10.9.9.9", "test")).name == "carol"
    clock.now += 601
    assert run(other.sign_in("quinn", PASSWORD, "10.9.9.9", "test")).name == "quinn"


def test_an_unknown_name_is_locked_out_just_the_same(dsn: str) -> None:
    auth, _ = auth_for(dsn, Clock(), lock_after=3)
    statuses = []
    for _ in range(4):
        with pytest.raises(SignInRefused) as refused:
            run(auth.sign_in("mallory", "wrong password!", "10.0.0.2", "test"))
        statuses.append(refused.value.status)
    assert statuses == [401, 401, 401, 429]


def test_an_admin_unlocks_early(dsn: str) -> None:
    clock = Clock()
    auth, _ = auth_for(dsn, clock, lock_after=2)
    for _ in range(2):
        with pytest.raises(SignInRefused):
            run(auth.sign_in("quinn", "wrong password!", "10.0.0.1", "test"))
    Users(dsn, FAST).unlock("quinn")
    fresh, _ = auth_for(dsn, clock, lock_after=2)   # another instance: no memory of it
    assert run(fresh.sign_in("quinn", PASSWORD, "10.0.0.1", "test")).name == "quinn"


def _session(auth: WebAuth, name: str, role: str, kind: str = "browser"
             ) -> tuple[str, WebSession]:
    return run(auth.start(Principal(name, role), kind, "test"))  # type: ignore[arg-type]


def _lookup(auth: WebAuth, token: str, kind: str = "browser") -> WebSession | None:
    return auth._lookup(digest(token), kind)  # type: ignore[arg-type]


def test_sessions_end_when_idle_at_their_limit_or_at_sign_out(dsn: str) -> None:
    clock = Clock()
    auth, log = auth_for(dsn, clock, idle_seconds=600, absolute_seconds=3600)
    token, _ = _session(auth, "quinn", "qa")
    with connect(dsn) as conn:
        row = conn.execute("SELECT token_hash, csrf_token FROM web_sessions").fetchone()
    assert row is not None and bytes(row["token_hash"]) == digest(token)
    assert token not in str(row)                      # only the hash is kept
    assert _lookup(auth, token) is not None
    clock.now += 599                                  # active within the idle limit ...
    assert _lookup(auth, token) is not None
    clock.now += 599
    assert _lookup(auth, token) is not None           # ... keeps it alive,
    clock.now += 601                                  # idleness ends it
    assert _lookup(auth, token) is None
    token2, _ = _session(auth, "quinn", "qa")
    for _ in range(8):                                # busy, but the absolute end comes
        clock.now += 500
        _lookup(auth, token2)
    assert _lookup(auth, token2) is None
    token3, s3 = _session(auth, "quinn", "qa")
    assert _lookup(auth, token3, "api") is None       # a cookie is not a bearer token
    run(auth.end(s3, "test"))
    assert _lookup(auth, token3) is None
    assert any(r.action == "sign_out" for r in log.show(limit=100))


def test_a_disabled_user_or_changed_role_ends_the_session(dsn: str) -> None:
    auth, _ = auth_for(dsn, Clock())
    token, _ = _session(auth, "quinn", "qa", "api")
    assert _lookup(auth, token, "api") is not None
    Users(dsn, FAST).set_role("quinn", "admin")
    assert _lookup(auth, token, "api") is None
    Users(dsn, FAST).set_role("quinn", "qa")
    Users(dsn, FAST).disable("quinn")
    assert _lookup(auth, token, "api") is None


def test_raw_grants_need_compliance_and_a_reason_and_expire(dsn: str) -> None:
    clock = Clock()
    auth, log = auth_for(dsn, clock, grant_seconds=300)
    rid = new_recording(dsn, status="stored")
    _, quinn = _session(auth, "quinn", "qa")
    _, carol = _session(auth, "carol", "compliance")
    with pytest.raises(AccessDenied):
        run(auth.grant_raw(quinn, rid, "I would like to hear it all", "test"))
    for bad in ("short", "call back 555 867 5309 12 now please", "x" * 600):
        with pytest.raises(AccessDenied):
            run(auth.grant_raw(carol, rid, bad, "test"))
    assert run(auth.raw_reason(carol, rid)) is None
    given = run(auth.grant_raw(carol, rid, "  dispute   ticket QA-1234 review ", "test"))
    assert given == "dispute ticket QA-1234 review"
    assert run(auth.raw_reason(carol, rid)) == given
    assert run(auth.raw_reason(carol, uuid.uuid4())) is None   # that recording only
    clock.now += 301
    assert run(auth.raw_reason(carol, rid)) is None
    rows = [r for r in log.show(recording_id=rid, limit=100) if r.variant == "raw"]
    assert {(r.actor, r.outcome) for r in rows} == {("quinn", "denied"), ("carol", "denied"),
                                                    ("carol", "allowed")}


def _request(method: str, headers: dict[str, str]) -> Any:
    return make_mocked_request(method, "/qa/x", headers={"Host": "qa.example", **headers})


def test_csrf_needs_the_session_token_and_this_origin(dsn: str) -> None:
    auth, _ = auth_for(dsn, Clock())
    _, browser = _session(auth, "quinn", "qa")
    _, api = _session(auth, "quinn", "qa", "api")
    assert browser.csrf and api.csrf is None
    good = {"X-CSRF-Token": browser.csrf}
    assert auth.csrf_ok(_request("POST", good), browser, None)
    assert auth.csrf_ok(_request("POST", {}), browser, browser.csrf)
    assert not auth.csrf_ok(_request("POST", {}), browser, None)
    assert not auth.csrf_ok(_request("POST", {"X-CSRF-Token": "x" * 43}), browser, None)
    assert not auth.csrf_ok(_request("POST", {**good, "Origin": "https://evil.example"}),
                            browser, None)
    assert not auth.csrf_ok(_request("POST", {**good, "Sec-Fetch-Site": "cross-site"}),
                            browser, None)
    assert auth.csrf_ok(_request("POST", {**good, "Origin": "https://qa.example"}),
                        browser, None)
    assert auth.csrf_ok(_request("PUT", {}), api, None)   # bearer: no ambient credential
    assert same_origin(_request("GET", {"Sec-Fetch-Site": "none"}))


def test_the_policy_is_strict() -> None:
    for directive in ("default-src 'none'", "script-src 'self'", "frame-ancestors 'none'",
                      "form-action 'self'", "base-uri 'none'", "object-src 'none'"):
        assert directive in CSP
    assert "unsafe-inline" not in CSP and "unsafe-eval" not in CSP
