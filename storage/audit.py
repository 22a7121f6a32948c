"""The tamper-evident access log: who touched which recording, when, why, and the outcome.

Every entry is hash-chained to the one before it and MACed with the audit key, in the
`access_log` table (migration 0002), whose triggers refuse UPDATE, DELETE and TRUNCATE.
What the triggers cannot stop (a superuser switching them off) `verify()` detects: a gap
in `seq`, a broken link, a recomputed hash that differs, or a MAC that fails. Cutting
entries off the end leaves a shorter chain that is still valid, so the chain's tip is
also published outside the database (`write_head`, to object storage) and later checked
against it (`check_against_head`).

The entry hash is SHA-256 over a length-prefixed encoding of every field, so no two
different entries share an encoding; the MAC is HMAC-SHA256(audit key, entry hash). An
append runs in its own transaction, so a refusal is recorded even when the caller's own
work is rolled back; if PostgreSQL is down it raises `StorageUnavailable` and the caller
must fail closed: no access without a log line.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import unicodedata
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, get_args

import psycopg
from psycopg import IsolationLevel

from storage.db import Connection, connect, translate_errors
from storage.errors import AuditChainBroken, StorageError

Outcome = Literal["allowed", "denied", "ok", "failed"]
OUTCOMES: frozenset[str] = frozenset(get_args(Outcome))

GENESIS = bytes(32)  # prev_hash of entry 1
HEAD_PREFIX = "audit/heads/"
_MIN_KEY = 32
_DOMAIN = b"callvault.access_log.v1\x00"
# Caps on free text, in characters; the reason cap matches the policy's (access.py).
_CAPS = {"actor": 64, "role": 32, "action": 32, "variant": 32, "origin": 200,
         "reason": 500, "detail": 200}
_INSERT = (
    "INSERT INTO access_log (seq, at, actor, role, action, recording_id, variant, reason,"
    " origin, outcome, detail, prev_hash, entry_hash, mac) VALUES (%(seq)s, %(at)s, %(actor)s,"
    " %(role)s, %(action)s, %(recording_id)s, %(variant)s, %(reason)s, %(origin)s,"
    " %(outcome)s, %(detail)s, %(prev_hash)s, %(entry_hash)s, %(mac)s)")
_SELECT_ALL = (
    "SELECT seq, at, actor, role, action, recording_id, variant, reason, origin, outcome,"
    " detail, prev_hash, entry_hash, mac FROM access_log ORDER BY seq")
_SPACES = re.compile(r"\s+")


def _clean(value: str | None, cap: int) -> str | None:
    """Control and format characters become spaces (a log line must not forge another or
    hide text behind bidi overrides), as do lone surrogates (they cannot be encoded, and
    an entry that cannot be written is an access that cannot happen); whitespace
    collapses; the result is capped."""
    if value is None:
        return None
    text = "".join(" " if unicodedata.category(ch) in ("Cc", "Cf", "Cs") else ch
                   for ch in value)
    text = _SPACES.sub(" ", text).strip()[:cap]
    return text or None


@dataclass(frozen=True)
class AuditEvent:
    """One thing to log. Free text is sanitised and capped on construction, never refused:
    logging must not fail because of what a caller typed. Keeping CPNI out of `reason`
    and `detail` is the caller's job (access.check_reason refuses long digit runs)."""

    actor: str
    role: str
    action: str
    outcome: Outcome
    recording_id: uuid.UUID | None = None
    variant: str | None = None
    reason: str | None = None
    origin: str | None = None
    detail: str | None = None

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {sorted(OUTCOMES)}")
        if self.recording_id is not None and not isinstance(self.recording_id, uuid.UUID):
            raise TypeError("recording_id must be a uuid.UUID")
        for name, cap in _CAPS.items():
            object.__setattr__(self, name, _clean(getattr(self, name), cap))
        for name in ("actor", "role", "action"):
            if getattr(self, name) is None:
                raise ValueError(f"an audit event needs a non-blank {name}")


@dataclass(frozen=True)
class AuditRow:
    """One stored entry, as `show` returns it."""

    seq: int
    at: datetime
    actor: str
    role: str
    action: str
    outcome: str
    recording_id: uuid.UUID | None
    variant: str | None
    reason: str | None
    origin: str | None
    detail: str | None


@dataclass(frozen=True)
class VerifyResult:
    """The outcome of walking the chain; `first_bad_seq` names the first entry at fault."""

    ok: bool
    checked: int
    first_bad_seq: int | None = None
    problem: str | None = None

    def raise_if_broken(self) -> None:
        """AuditChainBroken (exit code 27) carrying `problem`, if the chain did not verify."""
        if not self.ok:
            raise AuditChainBroken(self.problem or "the access log does not verify")


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _entry_hash(row: Mapping[str, Any]) -> bytes:
    """SHA-256 of the canonical encoding: each field tagged (absent or present) and
    length-prefixed, in a fixed order, so field boundaries can never be shifted."""
    rid = row["recording_id"]
    fields: list[bytes | None] = [
        row["seq"].to_bytes(8, "big"), _iso(row["at"]).encode()]
    fields += [None if row[k] is None else str(row[k]).encode()
               for k in ("actor", "role", "action")]
    fields.append(None if rid is None else str(rid).encode())
    fields += [None if row[k] is None else row[k].encode()
               for k in ("variant", "reason", "origin", "outcome", "detail")]
    fields.append(bytes(row["prev_hash"]))
    out = hashlib.sha256(_DOMAIN)
    for f in fields:
        out.update(b"\x00" if f is None else b"\x01" + len(f).to_bytes(4, "big") + f)
    return out.digest()


class AccessLog:
    """Append to, read and verify the access log in the database at `dsn`."""

    def __init__(self, dsn: str, audit_key: bytes) -> None:
        if len(audit_key) < _MIN_KEY:
            raise StorageError(f"the audit key must be at least {_MIN_KEY} bytes")
        self._dsn = dsn
        self._key = audit_key

    def __repr__(self) -> str:
        return "AccessLog(<dsn and key hidden>)"

    def _mac(self, entry_hash: bytes) -> bytes:
        return hmac.new(self._key, entry_hash, hashlib.sha256).digest()

    @contextmanager
    def _session(self) -> Iterator[Connection]:
        """A connection whose every driver error becomes one of ours: unreachable or lost
        is StorageUnavailable (callers fail closed), anything else StorageError."""
        try:
            with connect(self._dsn) as conn, translate_errors():
                yield conn
        except psycopg.Error as exc:
            raise StorageError(f"access log query failed ({type(exc).__name__})") from None

    def append(self, event: AuditEvent) -> int:
        """Write one entry in its own transaction; return its seq."""
        with self._session() as conn, conn.transaction():
            # A stuck appender must not hang every access forever: the lock wait is
            # bounded, and a timeout surfaces as StorageUnavailable (fail closed).
            conn.execute("SET LOCAL lock_timeout = '10s'")
            head = conn.execute(
                "SELECT seq, entry_hash FROM access_log_head FOR UPDATE").fetchone()
            if head is None:
                raise AuditChainBroken("the access log's head row is missing")
            # The database's clock, read after the lock: one clock for every writer,
            # so `at` never runs backwards along the chain; microseconds round-trip.
            now = conn.execute("SELECT clock_timestamp() AS now").fetchone()
            assert now is not None
            row: dict[str, Any] = {
                "seq": head["seq"] + 1, "at": now["now"].astimezone(UTC),
                "actor": event.actor, "role": event.role, "action": event.action,
                "recording_id": event.recording_id, "variant": event.variant,
                "reason": event.reason, "origin": event.origin,
                "outcome": event.outcome, "detail": event.detail,
                "prev_hash": bytes(head["entry_hash"])}
            row["entry_hash"] = _entry_hash(row)
            row["mac"] = self._mac(row["entry_hash"])
            conn.execute(_INSERT, row)
            conn.execute("UPDATE access_log_head SET seq = %s, entry_hash = %s",
                         (row["seq"], row["entry_hash"]))
            return int(row["seq"])

    def verify(self) -> VerifyResult:
        """Walk the whole chain in seq order with constant memory; stop at the first fault."""
        with self._session() as conn:
            # One snapshot for the head and every row, so concurrent appends are invisible.
            conn.isolation_level = IsolationLevel.REPEATABLE_READ
            conn.read_only = True
            head = conn.execute("SELECT seq, entry_hash FROM access_log_head").fetchone()
            prev, expected = GENESIS, 1
            with conn.cursor(name="access_log_verify") as cur:
                cur.itersize = 2000
                cur.execute(_SELECT_ALL)
                for row in cur:
                    problem = self._check(row, expected, prev)
                    if problem is not None:
                        return VerifyResult(False, expected - 1, expected, problem)
                    prev, expected = bytes(row["entry_hash"]), expected + 1
            last = expected - 1
            if head is None:
                return VerifyResult(False, last, last + 1, "the access log's head row is missing")
            if head["seq"] != last or bytes(head["entry_hash"]) != prev:
                return VerifyResult(
                    False, last, last + 1,
                    f"the chain ends at entry {last} but its head records entry {head['seq']}:"
                    " entries were removed or the head was rewritten")
            return VerifyResult(True, last)

    def _check(self, row: Mapping[str, Any], expected: int, prev: bytes) -> str | None:
        seq = row["seq"]
        if seq != expected:
            return (f"entry {expected} is missing (the next entry is {seq}):"
                    " entries were deleted")
        if bytes(row["prev_hash"]) != prev:
            return f"entry {seq} does not link to entry {seq - 1}"
        entry_hash = bytes(row["entry_hash"])
        if _entry_hash(row) != entry_hash:
            return f"entry {seq} was altered: its contents do not match its hash"
        if not hmac.compare_digest(self._mac(entry_hash), bytes(row["mac"])):
            return f"entry {seq} fails its MAC: forged, or the audit key is wrong"
        return None

    def show(self, user: str | None = None, recording_id: uuid.UUID | None = None,
             since: datetime | None = None, until: datetime | None = None,
             limit: int = 100) -> list[AuditRow]:
        """Entries matching every given filter, newest first; `until` is exclusive."""
        if not 1 <= limit <= 10_000:
            raise StorageError("limit must be between 1 and 10000")
        for bound in (since, until):
            if bound is not None and bound.tzinfo is None:
                raise StorageError("since and until must be timezone-aware")
        with self._session() as conn:
            rows = conn.execute(
                "SELECT seq, at, actor, role, action, outcome, recording_id, variant, reason,"
                " origin, detail FROM access_log"
                " WHERE (%(user)s::text IS NULL OR actor = %(user)s)"
                "   AND (%(rid)s::uuid IS NULL OR recording_id = %(rid)s)"
                "   AND (%(since)s::timestamptz IS NULL OR at >= %(since)s)"
                "   AND (%(until)s::timestamptz IS NULL OR at < %(until)s)"
                " ORDER BY seq DESC LIMIT %(limit)s",
                {"user": user, "rid": recording_id, "since": since, "until": until,
                 "limit": limit}).fetchall()
        return [AuditRow(**{**r, "at": r["at"].astimezone(UTC)}) for r in rows]

    def head(self) -> tuple[int, bytes]:
        """(seq, entry_hash) of the chain's tip; (0, 32 zero bytes) when the log is empty."""
        with self._session() as conn:
            row = conn.execute("SELECT seq, entry_hash FROM access_log_head").fetchone()
        if row is None:
            raise AuditChainBroken("the access log's head row is missing")
        return int(row["seq"]), bytes(row["entry_hash"])

    def write_head(self, put: Callable[[str, bytes], object]) -> str | None:
        """Publish the tip as `audit/heads/{seq:012d}.json` through `put(key, data)`;
        return the key, or None when the log is empty (nothing to anchor yet)."""
        with self._session() as conn:
            row = conn.execute(
                "SELECT l.seq, l.at, l.entry_hash, l.mac FROM access_log_head h"
                " LEFT JOIN access_log l ON l.seq = h.seq AND l.entry_hash = h.entry_hash"
                " WHERE h.seq > 0").fetchone()
        if row is None:
            return None
        # Never anchor a tip that does not itself verify: that would bless a forgery.
        if row["seq"] is None or not hmac.compare_digest(
                self._mac(bytes(row["entry_hash"])), bytes(row["mac"])):
            raise AuditChainBroken("the access log's head entry does not verify")
        doc = {"seq": row["seq"], "entry_hash": bytes(row["entry_hash"]).hex(),
               "mac": bytes(row["mac"]).hex(), "at": _iso(row["at"])}
        key = f"{HEAD_PREFIX}{row['seq']:012d}.json"
        put(key, json.dumps(doc, sort_keys=True, separators=(",", ":")).encode())
        return key

    def check_against_head(self, doc: bytes) -> None:
        """Raise AuditChainBroken unless the log still holds the entry a written head names.

        With `verify()` passing, this proves every entry up to that head is intact: the
        chain links each of them to the entry whose hash the head recorded.
        """
        try:
            parsed = json.loads(doc)
            seq, entry_hash, mac = parsed["seq"], bytes.fromhex(parsed["entry_hash"]), \
                bytes.fromhex(parsed["mac"])
            if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
                raise ValueError
        except (ValueError, KeyError, TypeError):
            raise AuditChainBroken("the head document is malformed") from None
        if not hmac.compare_digest(self._mac(entry_hash), mac):
            raise AuditChainBroken(f"the head document for entry {seq} does not verify"
                                   " under the audit key")
        with self._session() as conn:
            row = conn.execute("SELECT entry_hash FROM access_log WHERE seq = %s",
                               (seq,)).fetchone()
        if row is None:
            raise AuditChainBroken(f"entry {seq}, recorded in a written head, is gone:"
                                   " the access log was truncated or rewritten")
        if bytes(row["entry_hash"]) != entry_hash:
            raise AuditChainBroken(f"entry {seq} differs from its written head:"
                                   " history was rewritten")

