"""The vault over the real embedded PostgreSQL and SeaweedFS: encryption at rest, the role
policy, tamper detection, key rotation and crypto-shredding."""

from __future__ import annotations

import io
import os
from datetime import UTC, datetime, timedelta

import pytest

from storage import crypto
from storage.db import connect
from storage.errors import AccessDenied, IntegrityError, NotFound, RetentionLocked
from storage.s3 import ObjectStore
from storage.vault import Vault
from tests.storage.vault_fixture import ADMIN, AGENT, COMPLIANCE, QA, new_recording

# distinctive plaintext: any 32-byte window of it found in storage would be a leak
RAW = os.urandom(300_000) + b"ACCOUNT 4820-1735 PIN 7391" * 200
REDACTED = os.urandom(200_000)


def _store(v: Vault) -> tuple[object, bytes, bytes]:
    rid = new_recording(v.dsn)
    v.put_plaintext(rid, "raw", io.BytesIO(RAW), len(RAW))
    v.put_plaintext(rid, "redacted", io.BytesIO(REDACTED), len(REDACTED))
    return rid, RAW, REDACTED


def _log(dsn: str, rid: object) -> list[tuple[str, str, str | None, str]]:
    with connect(dsn) as conn:
        return [(r["actor"], r["action"], r["variant"], r["outcome"]) for r in conn.execute(
            "SELECT actor, action, variant, outcome FROM access_log WHERE recording_id = %s"
            " ORDER BY seq", (rid,))]


def test_round_trip_by_role(vault: Vault) -> None:
    """QA reads redacted audio; compliance reads raw audio with a reason; bytes match."""
    rid, raw, red = _store(vault)
    assert vault.read_all(QA, rid, "redacted") == red
    assert vault.read_all(COMPLIANCE, rid, "raw", reason="complaint 1182 investigation") == raw
    entries = _log(vault.dsn, rid)
    assert ("quinn", "download", "redacted", "allowed") in entries
    assert ("carol", "download", "raw", "allowed") in entries
    assert [e for e in entries if e[1] == "store"] == [
        ("callvault-pipeline", "store", "raw", "ok"),
        ("callvault-pipeline", "store", "redacted", "ok")]


def test_stored_objects_hold_no_plaintext(vault: Vault) -> None:
    """What S3 holds for either variant contains no 32-byte window of the plaintext."""
    rid, raw, red = _store(vault)
    for variant, plain in (("raw", raw), ("redacted", red)):
        obj = vault.get_object(rid, variant)
        stored = vault.store.get_bytes(obj.s3_key, obj.version_id)
        assert len(stored) > len(plain)
        for i in range(0, len(plain) - 32, 997):
            assert plain[i:i + 32] not in stored
        assert b"ACCOUNT 4820" not in stored


def test_raw_and_redacted_use_different_keys(vault: Vault) -> None:
    """Raw audio is wrapped under another key-encryption key than redacted audio."""
    rid, _, _ = _store(vault)
    raw, red = vault.get_object(rid, "raw"), vault.get_object(rid, "redacted")
    assert raw.kek_id and red.kek_id and raw.kek_id != red.kek_id
    assert vault.data_key(raw) != vault.data_key(red)


@pytest.mark.parametrize(("who", "variant", "reason"), [
    (QA, "raw", None), (QA, "raw", "I would like to listen please"),
    (COMPLIANCE, "raw", None), (ADMIN, "redacted", None), (ADMIN, "raw", "key check, honest"),
    (AGENT, "redacted", None)])
def test_refusals_are_logged(vault: Vault, who: object, variant: str, reason: str | None
                             ) -> None:
    """Every refused request raises AccessDenied and leaves a `denied` entry."""
    rid, _, _ = _store(vault)
    with pytest.raises(AccessDenied):
        vault.read_all(who, rid, variant, reason=reason)  # type: ignore[arg-type]
    assert (who.name, "download", variant, "denied") in _log(vault.dsn, rid)  # type: ignore[attr-defined]


def _tamper(v: Vault, rid: object, variant: str, change: object) -> None:
    """Replace the stored bytes and point the row at them (an attacker with both S3 and
    SQL access, or corruption below S3: the vault must still notice)."""
    obj = v.get_object(rid, variant)  # type: ignore[arg-type]
    data = bytearray(v.store.get_bytes(obj.s3_key, obj.version_id))
    new = change(data)  # type: ignore[operator]
    put = v.store.put_bytes(obj.s3_key, bytes(new))
    with connect(v.dsn) as conn:
        conn.execute("UPDATE objects SET version_id = %s WHERE id = %s",
                     (put.version_id, obj.id))
        conn.commit()


@pytest.mark.parametrize("change", [
    pytest.param(lambda d: d[:20] + bytes([d[20] ^ 1]) + d[21:], id="header-bit"),
    pytest.param(lambda d: d[:150_000] + bytes([d[150_000] ^ 0x80]) + d[150_001:],
                 id="body-bit"),
    pytest.param(lambda d: d[:-1] + bytes([d[-1] ^ 1]), id="tag-bit"),
    pytest.param(lambda d: d[: len(d) // 2], id="truncated-mid"),
    pytest.param(lambda d: d[: crypto.HEADER_SIZE + 2 * (64 * 1024 + 16)],
                 id="truncated-at-segment"),
])
def test_damage_is_detected(vault: Vault, change: object) -> None:
    """A flipped bit or a truncation anywhere fails loudly; it never returns audio."""
    rid, _, _ = _store(vault)
    _tamper(vault, rid, "redacted", change)
    with pytest.raises(IntegrityError):
        vault.read_all(QA, rid, "redacted")
    assert ("quinn", "decrypt", "redacted", "failed") in _log(vault.dsn, rid)
    with pytest.raises(IntegrityError):   # and as ranges, whichever segment is damaged
        vault.read_range(QA, rid, "redacted", 0)


def test_rotation_keeps_old_recordings_readable(vault: Vault) -> None:
    """After `rotate`, every data key is wrapped under the new keys and still opens."""
    rid, raw, red = _store(vault)
    before = vault.get_object(rid, "raw").kek_id
    new_ids, count = vault.rotate(ADMIN)
    assert count == 2 and len(new_ids) >= 2
    after = vault.get_object(rid, "raw")
    assert after.kek_id != before and after.kek_id in new_ids
    assert vault.read_all(QA, rid, "redacted") == red
    assert vault.read_all(COMPLIANCE, rid, "raw", reason="audit of rotation result") == raw
    # and what is stored after rotation uses the new keys
    rid2, _, _ = _store(vault)
    assert vault.get_object(rid2, "redacted").kek_id in new_ids


def test_rotation_needs_admin(vault: Vault) -> None:
    """Only an admin may rotate keys."""
    with pytest.raises(AccessDenied):
        vault.rotate(COMPLIANCE)


def test_purge_leaves_nothing_recoverable(vault: Vault) -> None:
    """Purge destroys the wrapped keys and every S3 version; nothing can be opened."""
    rid, _, _ = _store(vault)
    keys = [vault.get_object(rid, v).s3_key for v in ("raw", "redacted")]
    result = vault.purge(COMPLIANCE, rid, "customer asked for erasure, ticket 55")
    assert result.objects_shredded == 2 and result.versions_deleted >= 2
    for key in keys:
        assert vault.store.list_versions(key) == []
    with connect(vault.dsn) as conn:
        left = conn.execute("SELECT count(*) AS n FROM objects WHERE recording_id = %s"
                            " AND wrapped_key IS NOT NULL", (rid,)).fetchone()
        status = conn.execute("SELECT status FROM recordings WHERE id = %s", (rid,)).fetchone()
    assert left is not None and left["n"] == 0
    assert status is not None and status["status"] == "purged"
    with pytest.raises(NotFound):
        vault.read_all(COMPLIANCE, rid, "raw", reason="after the purge, checking")
    assert ("carol", "purge", None, "ok") in _log(vault.dsn, rid)


def test_purge_refused_under_retention_or_hold(vault: Vault) -> None:
    """Retention or a legal hold stops a purge, says why, and logs the refusal."""
    held = new_recording(vault.dsn)
    vault.put_plaintext(held, "redacted", io.BytesIO(REDACTED), len(REDACTED))
    vault.set_hold(COMPLIANCE, held, True, "litigation hold, matter 2026-114")
    with pytest.raises(RetentionLocked, match="legal hold"):
        vault.purge(COMPLIANCE, held, "routine clean up of old calls")
    retained = new_recording(vault.dsn, retain_until=datetime.now(UTC) + timedelta(days=30))
    with pytest.raises(RetentionLocked, match="retention"):
        vault.purge(COMPLIANCE, retained, "routine clean up of old calls")
    assert ("carol", "purge", None, "denied") in _log(vault.dsn, held)
    assert vault.read_all(QA, held, "redacted") == REDACTED
    vault.set_hold(COMPLIANCE, held, False, "matter 2026-114 closed")
    assert vault.purge(COMPLIANCE, held, "routine clean up of old calls").objects_shredded == 1


def test_repeated_store_adds_nothing(vault: Vault) -> None:
    """Storing the same variant again (a repeated job) keeps one object and one version."""
    rid = new_recording(vault.dsn)
    for _ in range(3):
        vault.put_plaintext(rid, "redacted", io.BytesIO(REDACTED), len(REDACTED))
    obj = vault.get_object(rid, "redacted")
    assert len(vault.store.list_versions(obj.s3_key)) == 1


def test_interrupted_upload_retried_leaves_one_version(vault: Vault) -> None:
    """A crash after the upload but before the row turned `stored` (the job runs again)
    ends with exactly one version in S3."""
    rid = new_recording(vault.dsn)
    vault.put_plaintext(rid, "redacted", io.BytesIO(REDACTED), len(REDACTED))
    obj = vault.get_object(rid, "redacted")
    with connect(vault.dsn) as conn:  # as if the worker died before marking it stored
        conn.execute("UPDATE objects SET state = 'pending' WHERE id = %s", (obj.id,))
        conn.commit()
    vault.put_plaintext(rid, "redacted", io.BytesIO(REDACTED), len(REDACTED))
    assert len(vault.store.list_versions(obj.s3_key)) == 1
    assert vault.read_all(QA, rid, "redacted") == REDACTED


def test_vault_over_kms(pg_dsn: str, object_store: ObjectStore) -> None:
    """With AWS KMS (emulated by moto's server) as the key provider: raw and redacted
    data keys come from different KMS keys, both read back, and rotation keeps them
    readable after every data key is re-encrypted."""
    from moto.server import ThreadedMotoServer

    from storage.audit import AccessLog
    from storage.keys import KmsKeyProvider
    from storage.vault import load_audit_key
    from tests.storage.test_keys import kms_client

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        client = kms_client(f"http://{host}:{port}")
        raw_key = client.create_key(Description="callvault raw")["KeyMetadata"]["KeyId"]
        red_key = client.create_key(Description="callvault redacted")["KeyMetadata"]["KeyId"]
        keys = KmsKeyProvider(client, raw_key, red_key)
        v = Vault(pg_dsn, object_store, keys, AccessLog(pg_dsn, load_audit_key(pg_dsn, keys)))
        rid, raw, red = _store(v)
        assert raw_key in (v.get_object(rid, "raw").kek_id or "")
        assert red_key in (v.get_object(rid, "redacted").kek_id or "")
        with connect(pg_dsn) as conn:
            before = conn.execute("SELECT wrapped_key FROM objects WHERE recording_id = %s"
                                  " ORDER BY variant", (rid,)).fetchall()
        _, count = v.rotate(ADMIN)
        with connect(pg_dsn) as conn:
            after = conn.execute("SELECT wrapped_key FROM objects WHERE recording_id = %s"
                                 " ORDER BY variant", (rid,)).fetchall()
        assert count == 2 and before != after
        assert v.read_all(QA, rid, "redacted") == red
        assert v.read_all(COMPLIANCE, rid, "raw", reason="kms rotation check, ticket 9") == raw
        client.close()
    finally:
        server.stop()


def test_retention_locks_object_versions(vault: Vault, seaweed: object) -> None:
    """With retention_days set and an object-lock bucket, every stored version carries a
    GOVERNANCE retention date, so S3 itself refuses to delete it early."""
    from tests.storage.seaweed_fixture import raw_client
    locked = Vault(vault.dsn, vault.store, vault.keys, vault.log, retention_days=3,
                   object_lock=True)
    rid = new_recording(vault.dsn)
    locked.put_plaintext(rid, "redacted", io.BytesIO(REDACTED), len(REDACTED))
    obj = locked.get_object(rid, "redacted")
    client = raw_client(seaweed)  # type: ignore[arg-type]
    try:
        ret = client.get_object_retention(Bucket=vault.store.bucket, Key=obj.s3_key,
                                          VersionId=obj.version_id or "")
    finally:
        client.close()
    assert ret["Retention"]["Mode"] == "GOVERNANCE"
    until = ret["Retention"]["RetainUntilDate"]
    assert timedelta(days=2) < until - datetime.now(UTC) <= timedelta(days=3)


def test_locked_objects_still_dedupe_and_purge(vault: Vault) -> None:
    """Under object lock, a retried upload still ends with one version, and once the
    recording's retention date (the database's) has passed, purge removes every version."""
    locked = Vault(vault.dsn, vault.store, vault.keys, vault.log, retention_days=3,
                   object_lock=True)
    rid = new_recording(vault.dsn, retain_until=datetime.now(UTC) - timedelta(seconds=1))
    locked.put_plaintext(rid, "redacted", io.BytesIO(REDACTED), len(REDACTED))
    obj = locked.get_object(rid, "redacted")
    with connect(vault.dsn) as conn:  # the worker died before marking it stored
        conn.execute("UPDATE objects SET state = 'pending' WHERE id = %s", (obj.id,))
        conn.commit()
    locked.put_plaintext(rid, "redacted", io.BytesIO(REDACTED), len(REDACTED))
    assert len(locked.store.list_versions(obj.s3_key)) == 1
    result = locked.purge(COMPLIANCE, rid, "retention period over, routine purge")
    assert result.objects_shredded == 1
    assert locked.store.list_versions(obj.s3_key) == []


def test_ranges_decrypt_only_what_is_asked_and_are_logged(vault: Vault) -> None:
    """read_range returns exactly the bytes of any range (across segment edges, to the
    end, clamped), fetches only the segments that hold it, logs each read, refuses QA the
    raw variant and a start past the end, and reports damage in those segments."""
    import random

    from storage.errors import RangeNotSatisfiable

    rng = random.Random(7)
    data = bytes(rng.getrandbits(8) for _ in range(3 * 64 * 1024 + 123))
    rid = new_recording(vault.dsn)
    vault.put_plaintext(rid, "redacted", io.BytesIO(data), len(data))
    seg = 64 * 1024
    for start, end in [(0, 10), (seg - 5, seg + 5), (2 * seg, None), (len(data) - 1, None),
                       (100, 10**9), (rng.randrange(len(data)), None)]:
        got, size = vault.read_range(QA, rid, "redacted", start, end)
        assert size == len(data)
        assert got == data[start:len(data) if end is None else min(end, len(data))]
    fetched: list[tuple[int, int]] = []
    real = vault.store.get_range

    def spy(key: str, a: int, b: int, version_id: str | None = None) -> bytes:
        fetched.append((a, b))
        return real(key, a, b, version_id)

    vault.store.get_range = spy  # type: ignore[method-assign]
    try:
        vault.read_range(QA, rid, "redacted", seg + 1, seg + 2)
    finally:
        vault.store.get_range = real  # type: ignore[method-assign]
    assert sum(b - a + 1 for a, b in fetched) < 2 * (seg + 16) + 64, fetched
    with pytest.raises(RangeNotSatisfiable):
        vault.read_range(QA, rid, "redacted", len(data))
    with pytest.raises(AccessDenied):
        vault.read_range(QA, rid, "raw", 0, 10)
    reads = [r for r in vault.log.show(recording_id=rid, limit=100) if r.action == "read"]
    assert len(reads) >= 8 and any(r.outcome == "denied" for r in reads)


def test_stream_range_streams_authenticated_chunks_with_one_log_line(vault: Vault) -> None:
    """stream_range yields exactly the asked bytes in chunks of at most `batch_segments`
    segments, whatever the batch size; the policy is checked and logged once, before any
    fetch; damage part-way stops the stream with IntegrityError (logged), after handing
    out only chunks that authenticated."""
    import random

    from storage.errors import RangeNotSatisfiable

    rng = random.Random(11)
    seg = 64 * 1024
    data = bytes(rng.getrandbits(8) for _ in range(5 * seg + 777))
    rid = new_recording(vault.dsn)
    vault.put_plaintext(rid, "redacted", io.BytesIO(data), len(data))
    before = len(vault.log.show(recording_id=rid, limit=1000))
    for start, end, batch in [(0, None, 1), (0, None, 2), (seg - 3, 4 * seg + 9, 1),
                              (123, 124, 16), (3 * seg, None, 16)]:
        stream = vault.stream_range(QA, rid, "redacted", start, end, batch_segments=batch)
        chunks = list(stream.chunks)
        stop = len(data) if end is None else end
        assert (stream.size, stream.start, stream.stop) == (len(data), start, stop)
        assert b"".join(chunks) == data[start:stop]
        assert all(len(c) <= batch * seg for c in chunks)
    rows = vault.log.show(recording_id=rid, limit=1000)
    assert len(rows) - before == 5   # one line per range, not per chunk
    with pytest.raises(RangeNotSatisfiable):
        vault.stream_range(QA, rid, "redacted", len(data))
    with pytest.raises(AccessDenied):   # refused before anything is fetched
        vault.stream_range(QA, rid, "raw", 0)
    _tamper(vault, rid, "redacted",
            lambda d: d[:crypto.HEADER_SIZE + 3 * (seg + 16) + 5]
            + bytes([d[crypto.HEADER_SIZE + 3 * (seg + 16) + 5] ^ 1])
            + d[crypto.HEADER_SIZE + 3 * (seg + 16) + 6:])
    got: list[bytes] = []
    stream = vault.stream_range(QA, rid, "redacted", 0, None, batch_segments=1)
    with pytest.raises(IntegrityError):
        for chunk in stream.chunks:
            got.append(chunk)
    assert b"".join(got) == data[:3 * seg]   # the three good segments, then the stop
    assert ("quinn", "decrypt", "redacted", "failed") in _log(vault.dsn, rid)
