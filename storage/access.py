"""Who may do what in the vault: users and their passwords, roles, and the access policy.

`authorize()` is the whole policy, a pure function over one table, so it is reviewed and
tested as a table. The roles mirror a contact centre's separation of duties:

- agent       sees call verification verdicts and lists recordings; never hears audio
- qa          replays redacted audio and reads redacted transcripts; never raw audio
- compliance  everything qa may do; raw audio only with a stated reason; purge and
              legal hold with a reason
- admin       manages users and keys, reads the access log, lists recordings; never
              reads, decrypts or downloads any audio or transcript
- system      the pipeline's own principal: it stores, nothing else; no user has it

`Users` keeps accounts in the `users` table with argon2id password hashes. Sign-in
failures are indistinguishable to the caller (same message, same work) whether the user
is unknown, disabled or gave the wrong password.
"""

from __future__ import annotations

import builtins
import re
import secrets
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal, get_args

import psycopg
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from storage.db import connect, translate_errors
from storage.errors import AccessDenied, NotFound, StorageError

UserRole = Literal["agent", "qa", "compliance", "admin"]
Role = Literal["agent", "qa", "compliance", "admin", "system"]
Variant = Literal["raw", "redacted", "transcript"]
Action = Literal["store", "read", "decrypt", "download", "purge", "hold", "list", "verdict",
                 "manage_users", "manage_keys", "audit"]
USER_ROLES: tuple[UserRole, ...] = get_args(UserRole)
ROLES: tuple[Role, ...] = get_args(Role)
VARIANTS: tuple[Variant, ...] = get_args(Variant)
ACTIONS: tuple[Action, ...] = get_args(Action)

REASON_MIN, REASON_MAX = 10, 500
PASSWORD_MIN, PASSWORD_MAX = 12, 1024
_NAME = re.compile(r"^[a-z][a-z0-9._-]{1,63}$")  # the users table's CHECK, for a clear error
_SPACES = re.compile(r"\s+")
# Ten or more digits in a row, allowing the separators people type in phone, account and
# card numbers. A reason is kept for years and read by admins: it must carry no CPNI.
_LONG_NUMBER = re.compile(r"\d(?:[\s().\-/]{0,2}\d){9,}")


@dataclass(frozen=True)
class Principal:
    """An authenticated identity: the name on every log line and the role the policy sees."""

    name: str
    role: Role


SYSTEM = Principal("callvault-pipeline", "system")


@dataclass(frozen=True)
class UserInfo:
    """One account as `Users.list` shows it; the password hash never leaves the table."""

    name: str
    role: UserRole
    disabled: bool
    created_at: datetime


@dataclass(frozen=True)
class _Grant:
    variants: frozenset[Variant | None]       # variants the action may name; None = none named
    reason_for: frozenset[Variant | None] = frozenset()   # of those, which need a reason


_NONE: frozenset[Variant | None] = frozenset({None})
_SHAREABLE: frozenset[Variant | None] = frozenset({"redacted", "transcript"})
_ANY: frozenset[Variant | None] = frozenset({"raw", "redacted", "transcript"})

_RAW_NEEDS_REASON = _Grant(_ANY, frozenset({"raw"}))
_ONLY = _Grant(_NONE)

POLICY: dict[Role, dict[Action, _Grant]] = {
    "agent": {"verdict": _ONLY, "list": _ONLY},
    "qa": {"list": _ONLY, "read": _Grant(_SHAREABLE), "decrypt": _Grant(_SHAREABLE),
           "download": _Grant(_SHAREABLE)},
    "compliance": {"list": _ONLY, "read": _RAW_NEEDS_REASON, "decrypt": _RAW_NEEDS_REASON,
                   "download": _RAW_NEEDS_REASON, "purge": _Grant(_NONE, _NONE),
                   "hold": _Grant(_NONE, _NONE)},
    "admin": {"list": _ONLY, "audit": _ONLY, "manage_users": _ONLY, "manage_keys": _ONLY},
    # The pipeline stores every variant of a recording, or a recording's metadata alone.
    "system": {"store": _Grant(_ANY | _NONE)},
}


def check_reason(text: str) -> str:
    """Normalise a stated reason (control characters out, whitespace collapsed) or raise
    AccessDenied if it is too short, too long, disguised or carries a long number."""
    if len(text) > 4 * REASON_MAX:
        raise AccessDenied(f"a reason is at most {REASON_MAX} characters")
    cats = {unicodedata.category(ch) for ch in text}
    # Format, surrogate, private-use and unassigned characters hide or reorder text
    # (bidi overrides, zero-width joiners): a reason must read as what it says.
    if cats & {"Cf", "Cs", "Co", "Cn"}:
        raise AccessDenied("a reason may not contain invisible or unassigned characters")
    clean = "".join(" " if unicodedata.category(ch) == "Cc" else ch for ch in text)
    clean = _SPACES.sub(" ", clean).strip()
    if len(clean) < REASON_MIN or not any(ch.isalpha() for ch in clean):
        raise AccessDenied(f"a reason of at least {REASON_MIN} characters, in words, is required")
    if len(clean) > REASON_MAX:
        raise AccessDenied(f"a reason is at most {REASON_MAX} characters")
    if _LONG_NUMBER.search(clean):
        raise AccessDenied("a reason may not contain phone, account or card numbers;"
                           " cite the ticket instead")
    return clean


def authorize(principal: Principal, action: Action, variant: Variant | None = None,
              reason: str | None = None) -> None:
    """Return if the policy allows it, else raise AccessDenied saying why. Anything not
    in the table, including an unknown role, action or variant, is refused; a reason, when
    given, must pass `check_reason` even where none is required. Log `check_reason(reason)`,
    not the raw text."""
    grant = POLICY.get(principal.role, {}).get(action)
    what = f"{action} {variant}" if variant else action
    if grant is None or variant not in grant.variants:
        if variant is None and grant is not None:
            raise AccessDenied(f"{action} must name a variant (raw, redacted or transcript)")
        raise AccessDenied(f"role {principal.role} may not {what}")
    if reason is not None:
        check_reason(reason)
    elif variant in grant.reason_for:
        raise AccessDenied(f"{what} needs a stated reason ({REASON_MIN}-{REASON_MAX} characters)")


def check_password(name: str, password: str) -> None:
    """Refuse a password that is too short, too long, or the user's own name."""
    if len(password) < PASSWORD_MIN:
        raise StorageError(f"a password needs at least {PASSWORD_MIN} characters")
    if len(password) > PASSWORD_MAX:
        raise StorageError(f"a password is at most {PASSWORD_MAX} characters")
    if password.strip().casefold() == name.casefold():
        raise StorageError("a password may not be the user name")


def _check_name(name: str) -> None:
    if not _NAME.match(name):
        raise StorageError("a user name is 2-64 characters: lowercase letters, digits, '.',"
                           " '_' or '-', starting with a letter")


def _check_role(role: str) -> UserRole:
    for r in USER_ROLES:
        if role == r:
            return r
    raise StorageError(f"role must be one of {', '.join(USER_ROLES)}")


_SIGN_IN_FAILED = "sign-in failed"

# One statement, so parallel attempts serialise on the row: end a lock or a window that
# has passed, count this attempt, and say how long the account stays locked (an attempt
# past `lock_after` in the window waits for the window to end). No row: no such user.
_COUNT_ATTEMPT = """
UPDATE users SET
  failed_sign_ins = CASE
    WHEN locked_until IS NOT NULL AND locked_until > now() THEN failed_sign_ins
    WHEN first_failure_at IS NULL OR first_failure_at < now() - %(window)s THEN 1
    ELSE failed_sign_ins + 1 END,
  first_failure_at = CASE
    WHEN locked_until IS NOT NULL AND locked_until > now() THEN first_failure_at
    WHEN first_failure_at IS NULL OR first_failure_at < now() - %(window)s THEN now()
    ELSE first_failure_at END,
  locked_until = CASE WHEN locked_until > now() THEN locked_until END
WHERE name = %(name)s
RETURNING role, password_hash, disabled, failed_sign_ins,
  CASE
    WHEN locked_until IS NOT NULL THEN extract(epoch FROM locked_until - now())
    WHEN failed_sign_ins > %(lock_after)s
      THEN extract(epoch FROM first_failure_at + %(window)s - now())
  END AS wait
"""


class AccountLocked(AccessDenied):
    """Too many failed sign-ins: the account is locked for `retry_after` seconds."""

    def __init__(self, retry_after: float) -> None:
        super().__init__("too many failed sign-ins: the account is locked for now")
        self.retry_after = retry_after


class Users:
    """Accounts in the `users` table of the database at `dsn`.

    The default hasher is argon2id with argon2-cffi's defaults, RFC 9106's low-memory
    profile: time cost 3, 64 MiB, parallelism 4, 16-byte salt, 32-byte hash. Tests pass a
    cheaper `hasher`; a hash made with other parameters is upgraded at the next sign-in.
    """

    def __init__(self, dsn: str, hasher: PasswordHasher | None = None, *,
                 lock_after: int = 5, lock_seconds: float = 900.0) -> None:
        if lock_after < 1 or lock_seconds <= 0:
            raise ValueError("lock_after must be at least 1 and lock_seconds positive")
        self._dsn = dsn
        self._hasher = hasher or PasswordHasher()
        self._dummy: str | None = None
        self.lock_after = lock_after
        self.lock_seconds = lock_seconds
        self._window = timedelta(seconds=lock_seconds)

    def __repr__(self) -> str:
        return "Users(<dsn hidden>)"

    def _dummy_hash(self) -> str:
        # Made with the live hasher, so a miss costs exactly what a wrong password costs.
        if self._dummy is None:
            self._dummy = self._hasher.hash(secrets.token_urlsafe(24))
        return self._dummy

    def add(self, name: str, role: UserRole, password: str) -> None:
        """Create an enabled account; StorageError if the name is taken or a value is bad."""
        _check_name(name)
        checked = _check_role(role)
        check_password(name, password)
        hashed = self._hasher.hash(password)
        try:
            with connect(self._dsn) as conn, translate_errors():
                conn.execute("INSERT INTO users (name, role, password_hash) VALUES (%s, %s, %s)",
                             (name, checked, hashed))
        except psycopg.errors.UniqueViolation:
            raise StorageError(f"user {name!r} already exists") from None

    def _update(self, name: str, sql: str, value: object) -> None:
        with connect(self._dsn) as conn, translate_errors():
            cur = conn.execute(sql, (value, name))
            if cur.rowcount != 1:
                raise NotFound(f"no user {name!r}")

    def set_password(self, name: str, password: str) -> None:
        """Replace the password and end every session and token signed in with the old
        one (QA app, API, agent desk); NotFound if there is no such user."""
        check_password(name, password)
        hashed = self._hasher.hash(password)
        with connect(self._dsn) as conn, translate_errors():
            cur = conn.execute("UPDATE users SET password_hash = %s WHERE name = %s",
                               (hashed, name))
            if cur.rowcount != 1:
                raise NotFound(f"no user {name!r}")
            conn.execute("UPDATE web_sessions SET revoked_at = now() WHERE user_name = %s"
                         " AND revoked_at IS NULL", (name,))
            conn.execute("UPDATE agent_sessions SET revoked_at = now() WHERE user_name = %s"
                         " AND revoked_at IS NULL", (name,))

    def set_role(self, name: str, role: UserRole) -> None:
        """Change the role; the pipeline's `system` role cannot be given to a user."""
        self._update(name, "UPDATE users SET role = %s WHERE name = %s", _check_role(role))

    def disable(self, name: str) -> None:
        """Refuse all further sign-ins and lookups of this user; the row stays for the log."""
        self._update(name, "UPDATE users SET disabled = %s WHERE name = %s", True)

    def enable(self, name: str) -> None:
        """Undo `disable`."""
        self._update(name, "UPDATE users SET disabled = %s WHERE name = %s", False)

    def unlock(self, name: str) -> None:
        """End a sign-in lockout (the QA app's, after repeated failures) early."""
        self._update(name, "UPDATE users SET failed_sign_ins = 0, first_failure_at = NULL,"
                     " locked_until = %s WHERE name = %s", None)

    def get(self, name: str) -> Principal:
        """The principal for an enabled user: NotFound if unknown, AccessDenied if disabled,
        so a disabled user's session stops at its next lookup."""
        with connect(self._dsn) as conn, translate_errors():
            row = conn.execute("SELECT role, disabled FROM users WHERE name = %s",
                               (name,)).fetchone()
        if row is None:
            raise NotFound(f"no user {name!r}")
        if row["disabled"]:
            raise AccessDenied(f"user {name!r} is disabled")
        return Principal(name, _check_role(row["role"]))

    def authenticate(self, name: str, password: str) -> Principal:
        """The principal if the password is right, the user enabled and not locked out;
        otherwise AccessDenied('sign-in failed'), the same message and the same work
        every time, or AccountLocked while the account is locked.

        Lockout: `lock_after` failed sign-ins within `lock_seconds` lock the account for
        `lock_seconds`, for every way of signing in (QA app, API, agent desk, CLI) and
        every instance. An attempt is counted before the password is checked (and the
        count undone if it was right), so a burst of parallel guesses cannot get more
        than `lock_after` checks past the lock."""
        if len(password) > PASSWORD_MAX:
            raise AccessDenied(_SIGN_IN_FAILED)
        dummy = self._dummy_hash()  # first, so the first call's extra cost says nothing
        with connect(self._dsn) as conn, translate_errors():
            row = conn.execute(_COUNT_ATTEMPT, {"name": name, "window": self._window,
                                                "lock_after": self.lock_after}).fetchone()
        if row is not None and row["wait"] is not None and row["wait"] > 0:
            raise AccountLocked(float(row["wait"]))
        stored = dummy if row is None else row["password_hash"]
        try:
            self._hasher.verify(stored, password)
            ok = row is not None and not row["disabled"]
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            ok = False
        if row is None:
            raise AccessDenied(_SIGN_IN_FAILED)
        if not ok:
            if row["failed_sign_ins"] >= self.lock_after:
                with connect(self._dsn) as conn, translate_errors():
                    conn.execute("UPDATE users SET locked_until = now() + %s,"
                                 " failed_sign_ins = 0, first_failure_at = NULL"
                                 " WHERE name = %s", (self._window, name))
            raise AccessDenied(_SIGN_IN_FAILED)
        with connect(self._dsn) as conn, translate_errors():
            # the attempt was right: it is not a failure (nor are the others counted
            # in its window: a user who signs in has not been guessed at)
            conn.execute("UPDATE users SET failed_sign_ins = 0, first_failure_at = NULL,"
                         " locked_until = NULL WHERE name = %s", (name,))
        if self._hasher.check_needs_rehash(stored):
            # Only if nobody changed the password meanwhile; a lost race just waits for
            # the next sign-in.
            with connect(self._dsn) as conn, translate_errors():
                conn.execute("UPDATE users SET password_hash = %s"
                             " WHERE name = %s AND password_hash = %s",
                             (self._hasher.hash(password), name, stored))
        return Principal(name, _check_role(row["role"]))

    def locked_for(self, name: str) -> float:
        """Seconds until the account's lockout ends (0: not locked, or no such user)."""
        with connect(self._dsn) as conn, translate_errors():
            row = conn.execute("SELECT extract(epoch FROM locked_until - now()) AS wait"
                               " FROM users WHERE name = %s", (name,)).fetchone()
        return max(0.0, float(row["wait"])) if row and row["wait"] is not None else 0.0

    def list(self) -> builtins.list[UserInfo]:
        """Every account, by name."""
        with connect(self._dsn) as conn, translate_errors():
            rows = conn.execute(
                "SELECT name, role, disabled, created_at FROM users ORDER BY name").fetchall()
        return [UserInfo(r["name"], _check_role(r["role"]), r["disabled"], r["created_at"])
                for r in rows]
