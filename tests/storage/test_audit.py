"""The access log on real PostgreSQL: chaining, refusals, tamper detection, heads, filters."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import psycopg
import pytest

from storage.audit import GENESIS, AccessLog, AuditEvent, _entry_hash
from storage.db import connect
from storage.errors import AuditChainBroken, StorageError, StorageUnavailable
from tests.storage import pg_fixture

# Assigned, not imported, so ruff sees no shadowing; pytest finds fixtures either way.
pg_server = pg_fixture.pg_server
pg_dsn = pg_fixture.pg_dsn

KEY = hashlib.sha256(b"test audit key").digest()
REC = uuid.UUID("6f1c2a5e-8d3b-4c7a-9e21-0b5d4f3a2c10")
DOWN = "postgresql://nobody@/nodb?host=/nonexistent-socket-dir"


def _event(i: int, **kw: Any) -> AuditEvent:
    base: dict[str, Any] = {
        "actor": f"user{i % 3}", "role": "qa", "action": "read", "outcome": "allowed",
        "recording_id": REC if i % 2 else None, "variant": "redacted" if i % 2 else None,
        "reason": f"review number {i}" if i % 5 == 0 else None, "origin": "web 10.0.0.7",
        "detail": None}
    return AuditEvent(**{**base, **kw})


def _fill(log: AccessLog, n: int) -> None:
    for i in range(1, n + 1):
        assert log.append(_event(i)) == i


def _superuser(dsn: str, *statements: tuple[str, tuple[Any, ...]]) -> None:
    """Run statements with every trigger off, as a superuser covering their tracks would."""
    with connect(dsn) as conn:
        conn.execute("SET session_replication_role = replica")
        for sql, params in statements:
            conn.execute(sql.encode(), params)


def _row(dsn: str, seq: int) -> dict[str, Any]:
    with connect(dsn) as conn:
        row = conn.execute("SELECT * FROM access_log WHERE seq = %s", (seq,)).fetchone()
    assert row is not None
    return dict(row)


def _collector() -> tuple[dict[str, bytes], Callable[[str, bytes], None]]:
    store: dict[str, bytes] = {}
    return store, store.__setitem__


def test_append_and_verify_200(pg_dsn: str) -> None:
    """200 entries chain from the zero hash and verify; the head is the last entry."""
    log = AccessLog(pg_dsn, KEY)
    assert log.verify().ok and log.verify().checked == 0
    _fill(log, 200)
    result = log.verify()
    assert (result.ok, result.checked, result.first_bad_seq, result.problem) == (
        True, 200, None, None)
    assert log.head() == (200, bytes(_row(pg_dsn, 200)["entry_hash"]))


def test_entry_hash_and_mac_are_as_documented(pg_dsn: str) -> None:
    """Entry 1 links to 32 zero bytes, entry 2 to entry 1; mac is HMAC-SHA256 of the hash."""
    log = AccessLog(pg_dsn, KEY)
    _fill(log, 2)
    first, second = _row(pg_dsn, 1), _row(pg_dsn, 2)
    assert bytes(first["prev_hash"]) == GENESIS == bytes(32)
    assert bytes(second["prev_hash"]) == bytes(first["entry_hash"])
    assert bytes(first["mac"]) == hmac.new(KEY, bytes(first["entry_hash"]),
                                           hashlib.sha256).digest()


def test_field_boundaries_cannot_shift() -> None:
    """Moving text between adjacent fields changes the entry hash."""
    row: dict[str, Any] = {
        "seq": 1, "at": datetime(2024, 1, 1, tzinfo=UTC), "actor": "ab", "role": "c",
        "action": "read", "recording_id": None, "variant": None, "reason": None,
        "origin": None, "outcome": "ok", "detail": None, "prev_hash": GENESIS}
    assert _entry_hash(row) != _entry_hash({**row, "actor": "a", "role": "bc"})
    assert _entry_hash(row) != _entry_hash({**row, "reason": ""})


def test_at_round_trips_in_any_session_timezone(pg_dsn: str) -> None:
    """Entries written and verified under a +05:30 session timezone still verify."""
    with connect(pg_dsn, autocommit=True) as conn:
        db = conn.execute("SELECT current_database() AS d").fetchone()
        assert db is not None
        conn.execute(f'ALTER DATABASE "{db["d"]}" SET timezone = \'Asia/Kolkata\''.encode())
    log = AccessLog(pg_dsn, KEY)
    _fill(log, 5)
    assert log.verify().ok
    assert all(r.at.utcoffset() == timedelta(0) for r in log.show())


@pytest.mark.parametrize("sql", [
    "UPDATE access_log SET reason = 'edited reason' WHERE seq = 2",
    "DELETE FROM access_log WHERE seq = 2",
    "TRUNCATE access_log",
    "DELETE FROM access_log_head",
    "TRUNCATE access_log_head",
    "UPDATE access_log_head SET seq = 1",
    "UPDATE access_log_head SET seq = 4",
])
def test_history_changes_refused(pg_dsn: str, sql: str) -> None:
    """Updates, deletes, truncation and rewinding the head are refused by triggers."""
    log = AccessLog(pg_dsn, KEY)
    _fill(log, 3)
    with connect(pg_dsn) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege,
                                                match=r"append-only|only advances"):
        conn.execute(sql.encode())
    assert log.verify().ok and log.head()[0] == 3


@pytest.mark.parametrize("edit", [
    "reason = 'nothing to see'",
    "at = at + interval '1 microsecond'",
    "outcome = 'denied'",
    "recording_id = NULL",
    "detail = ''",
])
def test_edited_row_named(pg_dsn: str, edit: str) -> None:
    """Any edit to one entry made with triggers off is caught at exactly that seq."""
    log = AccessLog(pg_dsn, KEY)
    _fill(log, 30)
    _superuser(pg_dsn, (f"UPDATE access_log SET {edit} WHERE seq = 17", ()))
    result = log.verify()
    assert (result.ok, result.first_bad_seq, result.checked) == (False, 17, 16)
    assert result.problem is not None and "entry 17 was altered" in result.problem
    with pytest.raises(AuditChainBroken, match="entry 17"):
        result.raise_if_broken()


def test_deleted_middle_row_named(pg_dsn: str) -> None:
    """Deleting a middle entry is reported as the gap it leaves."""
    log = AccessLog(pg_dsn, KEY)
    _fill(log, 30)
    _superuser(pg_dsn, ("DELETE FROM access_log WHERE seq = 12", ()))
    result = log.verify()
    assert (result.ok, result.first_bad_seq) == (False, 12)
    assert result.problem is not None and "entry 12 is missing" in result.problem


def test_deleted_last_row_caught_by_head_table(pg_dsn: str) -> None:
    """Deleting the last entry but not rewinding the head row fails verify."""
    log = AccessLog(pg_dsn, KEY)
    _fill(log, 10)
    _superuser(pg_dsn, ("DELETE FROM access_log WHERE seq = 10", ()))
    result = log.verify()
    assert (result.ok, result.checked, result.first_bad_seq) == (False, 9, 10)
    assert result.problem is not None and "head records entry 10" in result.problem


def test_truncation_caught_by_written_head(pg_dsn: str) -> None:
    """Deleting the last entry and rewinding the head passes verify but not the written head."""
    log = AccessLog(pg_dsn, KEY)
    _fill(log, 10)
    store, put = _collector()
    key = log.write_head(put)
    assert key == "audit/heads/000000000010.json" and list(store) == [key]
    log.check_against_head(store[key])
    ninth = bytes(_row(pg_dsn, 9)["entry_hash"])
    _superuser(pg_dsn, ("DELETE FROM access_log WHERE seq = 10", ()),
               ("UPDATE access_log_head SET seq = 9, entry_hash = %s", (ninth,)))
    assert log.verify().ok and log.verify().checked == 9
    with pytest.raises(AuditChainBroken, match="entry 10, recorded in a written head, is gone"):
        log.check_against_head(store[key])


def test_rewrite_with_the_key_caught_by_written_head(pg_dsn: str) -> None:
    """An insider re-chaining edited history with the key passes verify, not the head check."""
    log = AccessLog(pg_dsn, KEY)
    _fill(log, 5)
    store, put = _collector()
    doc = store[cast(str, log.write_head(put))]
    prev = bytes(_row(pg_dsn, 2)["entry_hash"])
    for seq in (3, 4, 5):
        row = {**_row(pg_dsn, seq), "prev_hash": prev}
        if seq == 3:
            row["reason"] = "rewritten reason"
        prev = _entry_hash(row)
        mac = hmac.new(KEY, prev, hashlib.sha256).digest()
        _superuser(pg_dsn, ("UPDATE access_log SET reason = %s, prev_hash = %s,"
                            " entry_hash = %s, mac = %s WHERE seq = %s",
                            (row["reason"], row["prev_hash"], prev, mac, seq)))
    _superuser(pg_dsn, ("UPDATE access_log_head SET entry_hash = %s", (prev,)))
    assert log.verify().ok
    with pytest.raises(AuditChainBroken, match="entry 5 differs from its written head"):
        log.check_against_head(doc)


def test_forged_hash_without_key_fails_mac(pg_dsn: str) -> None:
    """An edit with a recomputed entry hash but no key is named as a MAC failure."""
    log = AccessLog(pg_dsn, KEY)
    _fill(log, 20)
    row = {**_row(pg_dsn, 8), "reason": "forged reason"}
    _superuser(pg_dsn, ("UPDATE access_log SET reason = %s, entry_hash = %s WHERE seq = 8",
                        (row["reason"], _entry_hash(row))))
    result = log.verify()
    assert (result.ok, result.first_bad_seq) == (False, 8)
    assert result.problem is not None and "entry 8 fails its MAC" in result.problem


def test_wrong_key_fails_first_entry(pg_dsn: str) -> None:
    """Verifying with another audit key fails at entry 1."""
    _fill(AccessLog(pg_dsn, KEY), 3)
    result = AccessLog(pg_dsn, bytes(32)).verify()
    assert (result.ok, result.checked, result.first_bad_seq) == (False, 0, 1)
    assert result.problem is not None and "MAC" in result.problem


def test_concurrent_appends_form_one_chain(pg_dsn: str) -> None:
    """4 threads x 50 appends on separate connections give seqs 1..200 in one valid chain."""
    logs = [AccessLog(pg_dsn, KEY) for _ in range(4)]

    def worker(w: int) -> list[int]:
        return [logs[w].append(_event(i, actor=f"worker{w}")) for i in range(50)]

    with ThreadPoolExecutor(4) as pool:
        seqs = [s for chunk in pool.map(worker, range(4)) for s in chunk]
    assert sorted(seqs) == list(range(1, 201))
    result = logs[0].verify()
    assert result.ok and result.checked == 200
    assert {r.actor for r in logs[0].show(limit=200)} == {f"worker{w}" for w in range(4)}


def test_show_filters(pg_dsn: str) -> None:
    """show filters by user, recording and time window, newest first, within the limit."""
    log = AccessLog(pg_dsn, KEY)
    other = uuid.uuid4()
    log.append(_event(1, actor="alice", recording_id=other))
    log.append(_event(2, actor="bob", recording_id=REC))
    mid = datetime.now(UTC)
    log.append(_event(3, actor="alice", recording_id=REC, outcome="denied"))
    assert [r.seq for r in log.show()] == [3, 2, 1]
    assert [r.seq for r in log.show(user="alice")] == [3, 1]
    assert [r.seq for r in log.show(recording_id=REC)] == [3, 2]
    assert [r.seq for r in log.show(since=mid)] == [3]
    assert [r.seq for r in log.show(until=mid)] == [2, 1]
    assert [r.seq for r in log.show(user="alice", recording_id=REC)] == [3]
    assert [r.seq for r in log.show(limit=1)] == [3]
    assert log.show(user="nobody") == []
    assert log.show(user="alice")[0].outcome == "denied"
    with pytest.raises(StorageError, match="limit"):
        log.show(limit=0)
    with pytest.raises(StorageError, match="timezone-aware"):
        log.show(since=datetime(2024, 1, 1))


def test_denial_survives_callers_rollback(pg_dsn: str) -> None:
    """An entry is committed on its own even when the caller's transaction rolls back."""
    log = AccessLog(pg_dsn, KEY)
    with connect(pg_dsn) as conn:
        conn.execute("INSERT INTO vault_meta (key, value) VALUES ('x', '1')")
        log.append(_event(1, outcome="denied", detail="policy refused"))
        conn.rollback()
    assert [(r.outcome, r.detail) for r in log.show()] == [("denied", "policy refused")]


def test_event_text_is_sanitised() -> None:
    """Control, bidi and surrogate characters are stripped, whitespace collapsed, text capped."""
    e = AuditEvent("alice\nFAKE ENTRY", "qa", "read", "denied", reason="a\u202eb  c" + "x" * 600,
                   detail="\x1b[2J" + "d" * 300, origin="  ")
    assert e.actor == "alice FAKE ENTRY"
    assert e.reason is not None and e.reason.startswith("a b c") and len(e.reason) == 500
    assert e.detail is not None and len(e.detail) == 200 and "\x1b" not in e.detail
    assert e.origin is None
    assert AuditEvent("bad\udc80name", "qa", "read", "denied").actor == "bad name"


@pytest.mark.parametrize("kw", [
    {"outcome": "maybe"}, {"actor": " \t "}, {"action": ""},
    {"recording_id": str(REC)},
])
def test_bad_events_refused(kw: dict[str, Any]) -> None:
    """An unknown outcome, a blank actor or action, or a non-UUID recording id is refused."""
    with pytest.raises((ValueError, TypeError)):
        AuditEvent(**{"actor": "a", "role": "qa", "action": "read", "outcome": "ok", **kw})


def test_head_document(pg_dsn: str) -> None:
    """The written head holds seq, hash, MAC and time; forged or garbled heads are refused."""
    log = AccessLog(pg_dsn, KEY)
    store, put = _collector()
    assert log.write_head(put) is None and store == {}
    _fill(log, 3)
    doc = json.loads(store[cast(str, log.write_head(put))])
    assert doc["seq"] == 3 and bytes.fromhex(doc["entry_hash"]) == log.head()[1]
    assert doc["at"].endswith("Z")
    forged = json.dumps({**doc, "seq": 2, "entry_hash": "00" * 32}).encode()
    with pytest.raises(AuditChainBroken, match="does not verify"):
        log.check_against_head(forged)
    with pytest.raises(AuditChainBroken, match="does not verify"):
        AccessLog(pg_dsn, bytes(32)).check_against_head(json.dumps(doc).encode())
    for garbled in (b"not json", b"[]", b'{"seq": "3"}', json.dumps({**doc, "seq": 0}).encode()):
        with pytest.raises(AuditChainBroken, match="malformed"):
            log.check_against_head(garbled)


def test_write_head_refuses_forged_tip(pg_dsn: str) -> None:
    """A tip whose MAC fails is never published as a head."""
    log = AccessLog(pg_dsn, KEY)
    _fill(log, 2)
    store, put = _collector()
    with pytest.raises(AuditChainBroken):
        AccessLog(pg_dsn, bytes(32)).write_head(put)
    assert store == {}


def test_key_never_printed(pg_dsn: str) -> None:
    """Neither repr nor errors show the audit key; short keys are refused."""
    log = AccessLog(pg_dsn, KEY)
    assert KEY.hex() not in repr(log) and str(KEY) not in repr(log) and "dsn" in repr(log)
    with pytest.raises(StorageError, match="at least 32 bytes") as err:
        AccessLog(pg_dsn, b"short key")
    assert "short key" not in str(err.value)


def test_postgres_down_is_unavailable() -> None:
    """With PostgreSQL unreachable every operation raises StorageUnavailable."""
    log = AccessLog(DOWN, KEY)
    for op in (lambda: log.append(_event(1)), log.verify, log.show, log.head,
               lambda: log.write_head(lambda k, d: None),
               lambda: log.check_against_head(json.dumps({
                   "seq": 1, "entry_hash": "00" * 32,
                   "mac": hmac.new(KEY, bytes(32), hashlib.sha256).hexdigest()}).encode())):
        with pytest.raises(StorageUnavailable):
            op()
