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


def auth_for(dsn: str, clock: Clock, *, lock_after: int = 5, lock_seconds: float = 900,
             **kw: Any) -> tuple[WebAuth, AccessLog]:
    log = AccessLog(dsn, b"k" * 32)
    users = Users(dsn, FAST, lock_after=lock_after, lock_seconds=lock_seconds)
    return WebAuth(dsn, users=users, log=log, clock=clock, **kw), log


def _end_lock(dsn: str, name: str) -> None:
    """Move the account's lock into the past (the database keeps time by its own clock)."""
    with connect(dsn) as conn:
        conn.execute("UPDATE users SET locked_until = now() - interval '1 second'"
                     " WHERE name = %s", (name,))
        conn.commit()


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
    _end_lock(dsn, "quinn")
    assert run(other.sign_in("quinn", PASSWORD, "10.9.9.9", "test")).name == "quinn"
    # and the count started again: two more failures do not lock
    for _ in range(2):
        with pytest.raises(SignInRefused) as refused:
            run(auth.sign_in("quinn", "wrong password!", "10.0.0.1", "test"))
        assert refused.value.status == 401


def test_an_unknown_name_is_locked_out_just_the_same(dsn: str) -> None:
    """The same statuses, message and Retry-After for a name that exists and one that
    does not: the lockout tells nobody which names are accounts."""
    clock = Clock()
    auth, _ = auth_for(dsn, clock, lock_after=3, lock_seconds=600)
    seen: dict[str, list[tuple[int, str, int | None]]] = {}
    for i, name in enumerate(("mallory", "quinn")):
        for _ in range(4):
            with pytest.raises(SignInRefused) as refused:
                run(auth.sign_in(name, "wrong password!", f"10.0.0.{i + 2}", "t"))
            r = refused.value
            seen.setdefault(name, []).append((r.status, r.message, r.retry_after))
    assert [s for s, _, _ in seen["mallory"]] == [401, 401, 401, 429]
    assert seen["mallory"] == seen["quinn"]
    assert seen["quinn"][-1][2] == 600
    clock.now += 601                   # the name's lock ends like the account's
    _end_lock(dsn, "quinn")
    for name in ("mallory", "quinn"):
        with pytest.raises(SignInRefused) as refused:
            run(auth.sign_in(name, "wrong password!", "10.0.0.9", "t"))
        assert refused.value.status == 401


def test_a_burst_of_parallel_guesses_gets_no_more_checks_than_the_limit(dsn: str) -> None:
    auth, _ = auth_for(dsn, Clock(), lock_after=3)

    async def burst() -> list[int]:
        async def one() -> int:
            try:
                await auth.sign_in("quinn", "wrong password!", "10.0.0.3", "t")
            except SignInRefused as exc:
                return exc.status
            return 200
        return list(await asyncio.gather(*(one() for _ in range(12))))

    statuses = run(burst())
    assert statuses.count(401) <= 3 and statuses.count(429) >= 9, statuses
    with pytest.raises(SignInRefused) as refused:   # and the account is locked now
        run(auth.sign_in("quinn", PASSWORD, "10.0.0.4", "t"))
    assert refused.value.status == 429


def test_the_lock_holds_for_every_way_of_signing_in(dsn: str) -> None:
    """The agent desk and the CLI go through Users.authenticate too: a locked account
    is refused there as well (as a plain failure), and an unlock ends it everywhere."""
    from storage.access import AccountLocked
    auth, _ = auth_for(dsn, Clock(), lock_after=2)
    for _ in range(2):
        with pytest.raises(SignInRefused):
            run(auth.sign_in("alex", "wrong password!", "10.0.0.1", "t"))
    users = Users(dsn, FAST, lock_after=2)
    with pytest.raises(AccountLocked) as locked:
        users.authenticate("alex", PASSWORD)
    assert locked.value.retry_after > 0
    assert isinstance(locked.value, AccessDenied)     # callers that know no lock: 401
    users.unlock("alex")
    assert users.authenticate("alex", PASSWORD).name == "alex"


def test_an_admin_unlocks_early_on_a_running_server(dsn: str) -> None:
    auth, _ = auth_for(dsn, Clock(), lock_after=2)
    for _ in range(2):
        with pytest.raises(SignInRefused):
            run(auth.sign_in("quinn", "wrong password!", "10.0.0.1", "test"))
    with pytest.raises(SignInRefused) as refused:
        run(auth.sign_in("quinn", PASSWORD, "10.0.0.1", "test"))
    assert refused.value.status == 429
    Users(dsn, FAST).unlock("quinn")               # `callvault users unlock`, elsewhere
    assert run(auth.sign_in("quinn", PASSWORD, "10.0.0.1", "test")).name == "quinn"


def test_a_new_password_ends_old_sessions_and_tokens(dsn: str) -> None:
    auth, _ = auth_for(dsn, Clock())
    browser, _ = _session(auth, "quinn", "qa")
    api, _ = _session(auth, "quinn", "qa", "api")
    Users(dsn, FAST).set_password("quinn", "another long password")
    assert _lookup(auth, browser) is None and _lookup(auth, api, "api") is None


class _Transport:
    def __init__(self, peer: str) -> None:
        self.peer = peer

    def get_extra_info(self, name: str, default: object = None) -> object:
        return (self.peer, 4242) if name == "peername" else default

    def is_closing(self) -> bool:
        return False


def test_the_client_address_behind_trusted_proxies() -> None:
    import ipaddress

    from callvault.web_auth import client_address
    proxies = [ipaddress.ip_network("10.1.0.0/16")]

    def addr(peer: str, xff: str | None, trusted: Any = proxies) -> str:
        headers = {"X-Forwarded-For": xff} if xff is not None else {}
        req = make_mocked_request("GET", "/", headers=headers, transport=_Transport(peer))
        return client_address(req, trusted)

    assert addr("10.1.2.3", "198.51.100.7") == "198.51.100.7"
    # a client's own X-Forwarded-For is the left part: the proxy's append is what counts
    assert addr("10.1.2.3", "203.0.113.9, 198.51.100.7") == "198.51.100.7"
    assert addr("10.1.2.3", "198.51.100.7, 10.1.9.9") == "198.51.100.7"
    assert addr("192.0.2.5", "198.51.100.7") == "192.0.2.5"     # not a proxy: ignored
    assert addr("10.1.2.3", None) == "10.1.2.3"
    assert addr("10.1.2.3", "not-an-address") == "10.1.2.3"
    assert addr("10.1.2.3", "198.51.100.7", []) == "10.1.2.3"   # no proxies configured


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
