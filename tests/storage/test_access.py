"""The access policy as a full matrix, reason checks, and user accounts on real PostgreSQL."""

from __future__ import annotations

import itertools
from typing import Any, cast

import pytest
from argon2 import PasswordHasher

from storage.access import (
    ACTIONS,
    ROLES,
    SYSTEM,
    VARIANTS,
    Action,
    Principal,
    Role,
    Users,
    Variant,
    authorize,
    check_reason,
)
from storage.db import connect
from storage.errors import AccessDenied, NotFound, StorageError, StorageUnavailable
from tests.storage import pg_fixture

# Assigned, not imported, so ruff sees no shadowing; pytest finds fixtures either way.
pg_server = pg_fixture.pg_server
pg_dsn = pg_fixture.pg_dsn

FAST = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
PASSWORD = "correct horse battery"

# The policy, written out independently of storage/access.py: (role, action, variant)
# that are allowed, mapped to whether a reason is required.
_CONTENT: tuple[Action, ...] = ("read", "decrypt", "download")
EXPECTED: dict[tuple[str, str, str | None], bool] = {
    ("agent", "verdict", None): False,
    ("agent", "list", None): False,
    ("qa", "list", None): False,
    **{("qa", a, v): False for a in _CONTENT for v in ("redacted", "transcript")},
    ("compliance", "list", None): False,
    **{("compliance", a, "raw"): True for a in _CONTENT},
    **{("compliance", a, v): False for a in _CONTENT for v in ("redacted", "transcript")},
    ("compliance", "purge", None): True,
    ("compliance", "hold", None): True,
    **{("admin", a, None): False for a in ("list", "audit", "manage_users", "manage_keys")},
    **{("system", "store", v): False for v in (None, "raw", "redacted", "transcript")},
}
REASONS: dict[str, str | None] = {
    "none": None,
    "good": "Subpoena SR-2291 from the county court",
    "short": "because",
    "hostile": "routine review\u202e of fraud case",
}
MATRIX = list(itertools.product(ROLES, ACTIONS, (None, *VARIANTS), REASONS))


@pytest.mark.parametrize(("role", "action", "variant", "reason"), MATRIX)
def test_policy_matrix(role: Role, action: Action, variant: Variant | None, reason: str) -> None:
    """Every role x action x variant x reason is allowed exactly as the written policy says."""
    key = (role, action, variant)
    text = REASONS[reason]
    allowed = key in EXPECTED and reason in ("none", "good") and not (
        EXPECTED[key] and text is None)
    if allowed:
        authorize(Principal("someone", role), action, variant, text)
    else:
        with pytest.raises(AccessDenied):
            authorize(Principal("someone", role), action, variant, text)


def test_matrix_is_complete() -> None:
    """The matrix covers five roles, eleven actions, four variants and four reasons."""
    assert len(MATRIX) == 5 * 11 * 4 * 4
    assert set(EXPECTED) <= {(r, a, v) for r, a, v, _ in MATRIX}


def test_admin_never_touches_content() -> None:
    """Admin is refused every read, decrypt and download of every variant, reason or not."""
    for action, variant in itertools.product(_CONTENT, VARIANTS):
        with pytest.raises(AccessDenied, match="admin may not"):
            authorize(Principal("root", "admin"), action, variant, REASONS["good"])


def test_unknown_role_action_variant_denied() -> None:
    """Values outside the Literal types (from a form or a config file) are refused."""
    qa = Principal("q", "qa")
    cases: list[tuple[Principal, Any, Any]] = [
        (Principal("x", cast(Any, "superuser")), "list", None),
        (qa, "read_everything", None),
        (qa, "read", "RAW"),
        (qa, "read", "original"),
    ]
    for principal, action, variant in cases:
        with pytest.raises(AccessDenied):
            authorize(principal, action, variant)


def test_system_principal_only_stores() -> None:
    """The pipeline principal stores and is refused everything else."""
    assert SYSTEM.role == "system"
    authorize(SYSTEM, "store", "raw")
    for action in set(ACTIONS) - {"store"}:
        with pytest.raises(AccessDenied):
            authorize(SYSTEM, action, None)


def test_denials_say_why_without_echoing_reason() -> None:
    """Denial messages name the rule, never the reason text."""
    comp = Principal("c", "compliance")
    with pytest.raises(AccessDenied, match="needs a stated reason") as missing:
        authorize(comp, "read", "raw")
    with pytest.raises(AccessDenied, match="phone, account or card") as cpni:
        authorize(comp, "read", "raw", "caller at (555) 123-4567 disputes the bill")
    assert "555" not in str(cpni.value)
    assert "raw" in str(missing.value)
    with pytest.raises(AccessDenied, match="must name a variant"):
        authorize(comp, "read")


@pytest.mark.parametrize(("text", "expected"), [
    ("  Subpoena\tSR-2291 \n from court  ", "Subpoena SR-2291 from court"),
    ("fraud\x00 investigation\x1b[31m 7", "fraud investigation [31m 7"),
    ("Ticket INC0012345 review", "Ticket INC0012345 review"),
    ("Court order dated 2024-05-01", "Court order dated 2024-05-01"),
    ("a" * 500, "a" * 500),
])
def test_check_reason_normalises(text: str, expected: str) -> None:
    """Control characters become spaces, whitespace collapses, good reasons pass."""
    assert check_reason(text) == expected


@pytest.mark.parametrize(("text", "match"), [
    ("", "at least 10"),
    ("   \t\n   ", "at least 10"),
    ("short one", "at least 10"),
    ("1234567890 - / .", "at least 10"),
    ("\x00" * 20, "at least 10"),
    ("a" * 501, "at most 500"),
    ("a " * 2000, "at most 500"),
    ("review\u202eof the call", "invisible"),
    ("review\u200bof the call", "invisible"),
    ("private \ue000 use area", "invisible"),
    ("card 4111 1111 1111 1111 charged twice", "card numbers"),
    ("account 0012345678 closed", "card numbers"),
    ("call from 555.123.4567 escalated", "card numbers"),
])
def test_check_reason_refuses(text: str, match: str) -> None:
    """Blank, short, overlong, disguised or number-carrying reasons are refused."""
    with pytest.raises(AccessDenied, match=match):
        check_reason(text)


# --- Users on the real PostgreSQL -------------------------------------------------------


class CountingHasher(PasswordHasher):
    """A cheap argon2id hasher counting verifications that cost a full argon2id run."""

    def __init__(self) -> None:
        super().__init__(time_cost=1, memory_cost=8, parallelism=1)
        self.verifies = 0

    def verify(self, hash: str | bytes, password: str | bytes) -> Any:
        text = hash.decode() if isinstance(hash, bytes) else hash
        if text.startswith("$argon2id$") and not self.check_needs_rehash(text):
            self.verifies += 1
        return super().verify(hash, password)


def _hash_of(dsn: str, name: str) -> str:
    with connect(dsn) as conn:
        row = conn.execute("SELECT password_hash FROM users WHERE name = %s", (name,)).fetchone()
    assert row is not None
    return str(row["password_hash"])


def test_add_and_authenticate(pg_dsn: str) -> None:
    """A new user signs in with the right password and gets their role."""
    users = Users(pg_dsn, hasher=FAST)
    users.add("alice", "qa", PASSWORD)
    assert users.authenticate("alice", PASSWORD) == Principal("alice", "qa")
    assert users.get("alice") == Principal("alice", "qa")
    assert _hash_of(pg_dsn, "alice").startswith("$argon2id$")


@pytest.mark.parametrize("case", ["wrong password", "unknown user", "disabled user"])
def test_sign_in_failures_look_alike(pg_dsn: str, case: str) -> None:
    """Wrong password, unknown or disabled user: same message, one argon2 verification each."""
    hasher = CountingHasher()
    users = Users(pg_dsn, hasher=hasher)
    users.add("bob", "agent", PASSWORD)
    name, password = {"wrong password": ("bob", PASSWORD + "!"),
                      "unknown user": ("nobody", PASSWORD),
                      "disabled user": ("bob", PASSWORD)}[case]
    if case == "disabled user":
        users.disable("bob")
    with pytest.raises(AccessDenied) as err:
        users.authenticate(name, password)
    assert str(err.value) == "sign-in failed"
    assert hasher.verifies == 1


def test_disable_and_enable(pg_dsn: str) -> None:
    """A disabled user cannot be looked up or sign in until enabled again."""
    users = Users(pg_dsn, hasher=FAST)
    users.add("carol", "compliance", PASSWORD)
    users.disable("carol")
    with pytest.raises(AccessDenied, match="disabled"):
        users.get("carol")
    users.enable("carol")
    assert users.authenticate("carol", PASSWORD).role == "compliance"


def test_duplicate_user_refused(pg_dsn: str) -> None:
    """Adding an existing name is a clear StorageError and leaves the first account alone."""
    users = Users(pg_dsn, hasher=FAST)
    users.add("dave", "qa", PASSWORD)
    with pytest.raises(StorageError, match="'dave' already exists"):
        users.add("dave", "admin", "another long password")
    assert users.authenticate("dave", PASSWORD).role == "qa"


@pytest.mark.parametrize(("name", "password", "match"), [
    ("erin", "short pass", "at least 12"),
    ("erin", "x" * 1025, "at most 1024"),
    ("erin.longname", "Erin.Longname", "user name"),
    ("Erin", PASSWORD, "user name is"),
    ("e", PASSWORD, "user name is"),
    ("erin/../x", PASSWORD, "user name is"),
])
def test_bad_new_accounts_refused(pg_dsn: str, name: str, password: str, match: str) -> None:
    """Short, overlong or name-equal passwords and malformed names are refused, nothing stored."""
    users = Users(pg_dsn, hasher=FAST)
    with pytest.raises(StorageError, match=match):
        users.add(name, "qa", password)
    assert users.list() == []


def test_system_role_not_assignable(pg_dsn: str) -> None:
    """No user may be given the pipeline's system role, on add or later."""
    users = Users(pg_dsn, hasher=FAST)
    with pytest.raises(StorageError, match="role must be one of"):
        users.add("pipe", cast(Any, "system"), PASSWORD)
    users.add("pipe", "agent", PASSWORD)
    with pytest.raises(StorageError, match="role must be one of"):
        users.set_role("pipe", cast(Any, "system"))
    assert users.get("pipe").role == "agent"


def test_set_password_and_role(pg_dsn: str) -> None:
    """A new password replaces the old one; a new role takes effect at once."""
    users = Users(pg_dsn, hasher=FAST)
    users.add("frank", "qa", PASSWORD)
    users.set_password("frank", "a different passphrase")
    with pytest.raises(AccessDenied):
        users.authenticate("frank", PASSWORD)
    users.set_role("frank", "compliance")
    assert users.authenticate("frank", "a different passphrase") == Principal(
        "frank", "compliance")


def test_unknown_user_not_found(pg_dsn: str) -> None:
    """get, set_password, set_role and disable on an unknown user raise NotFound."""
    users = Users(pg_dsn, hasher=FAST)
    with pytest.raises(NotFound):
        users.get("ghost")
    with pytest.raises(NotFound):
        users.set_password("ghost", PASSWORD)
    with pytest.raises(NotFound):
        users.set_role("ghost", "qa")
    with pytest.raises(NotFound):
        users.disable("ghost")


def test_rehash_on_sign_in(pg_dsn: str) -> None:
    """A hash with outdated parameters is upgraded at the next successful sign-in only."""
    Users(pg_dsn, hasher=FAST).add("gina", "qa", PASSWORD)
    old = _hash_of(pg_dsn, "gina")
    stronger = Users(pg_dsn, hasher=PasswordHasher(time_cost=2, memory_cost=16, parallelism=1))
    with pytest.raises(AccessDenied):
        stronger.authenticate("gina", "wrong password!!")
    assert _hash_of(pg_dsn, "gina") == old
    stronger.authenticate("gina", PASSWORD)
    new = _hash_of(pg_dsn, "gina")
    assert "m=8,t=1" in old and "m=16,t=2" in new
    assert stronger.authenticate("gina", PASSWORD).name == "gina"


def test_default_hasher_is_rfc9106_low_memory(pg_dsn: str) -> None:
    """Without a test hasher, passwords get argon2id at t=3, 64 MiB, p=4."""
    Users(pg_dsn).add("hank", "admin", PASSWORD)
    assert _hash_of(pg_dsn, "hank").startswith("$argon2id$v=19$m=65536,t=3,p=4$")


def test_list_users(pg_dsn: str) -> None:
    """list shows every account by name with role and state."""
    users = Users(pg_dsn, hasher=FAST)
    users.add("zoe", "agent", PASSWORD)
    users.add("amy", "admin", PASSWORD)
    users.disable("zoe")
    listed = [(u.name, u.role, u.disabled) for u in users.list()]
    assert listed == [("amy", "admin", False), ("zoe", "agent", True)]


def test_nothing_prints_password_or_hash(pg_dsn: str) -> None:
    """repr of users, principals, listings and every error leaks no password or hash."""
    users = Users(pg_dsn, hasher=FAST)
    users.add("ivan", "qa", PASSWORD)
    stored = _hash_of(pg_dsn, "ivan")
    shown = [repr(users), repr(users.list()), repr(users.get("ivan")),
             repr(users.authenticate("ivan", PASSWORD))]
    for attempt in (lambda: users.authenticate("ivan", PASSWORD + "x"),
                    lambda: users.add("ivan", "qa", PASSWORD),
                    lambda: users.add("jill", "qa", "ivan's pass"),
                    lambda: users.set_password("nobody", PASSWORD)):
        with pytest.raises(StorageError) as err:
            attempt()
        shown += [str(err.value), repr(err.value)]
    text = "\n".join(shown)
    assert PASSWORD not in text and "ivan's pass" not in text
    assert stored not in text and "$argon2" not in text


def test_database_down_is_unavailable() -> None:
    """With PostgreSQL unreachable, sign-in raises StorageUnavailable, not a driver error."""
    users = Users("postgresql://nobody@/nodb?host=/nonexistent-socket-dir", hasher=FAST)
    with pytest.raises(StorageUnavailable):
        users.authenticate("alice", PASSWORD)
