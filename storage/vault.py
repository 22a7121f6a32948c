"""The vault: encrypted objects in S3, their wrapped data keys in PostgreSQL, every access
checked against the role policy and written to the access log before any byte moves.

Each object (raw audio, redacted audio, redacted transcript) has a fresh data key; raw
audio is wrapped under the `raw` key-encryption key, the other two under `redacted`, so
holding one never opens the other. The wrapped key sits in the `objects` row, not in the
object: rotation re-wraps rows without touching audio, and a purge that nulls the row
shreds every copy and version of the object at once.

Writes are idempotent: an object's id, key and S3 key are fixed by its `pending` row, so a
job repeated after a crash overwrites the same key, and every other version of that key
is deleted before the row turns `stored`.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, BinaryIO

from storage import crypto
from storage.access import SYSTEM, Action, Principal, Variant, authorize, check_reason
from storage.audit import AccessLog, AuditEvent
from storage.db import Connection, connect, translate_errors
from storage.errors import (
    AccessDenied,
    IntegrityError,
    NotFound,
    RangeNotSatisfiable,
    RetentionLocked,
)
from storage.keys import KeyProvider, Purpose, WrappedKey
from storage.s3 import ObjectStore

PURPOSE: dict[str, Purpose] = {"raw": "raw", "redacted": "redacted", "transcript": "redacted"}
_AUDIT_KEY = "audit_key"


@dataclass(frozen=True)
class StoredObject:
    """One object's metadata row (no key material)."""

    id: uuid.UUID
    recording_id: uuid.UUID
    variant: str
    s3_key: str
    version_id: str | None
    kek_id: str | None
    plaintext_size: int | None
    ciphertext_size: int | None
    segment_size: int
    state: str


@dataclass
class RangeStream:
    """Plaintext bytes [start, stop) of an object of `size` bytes, as authenticated chunks."""

    size: int
    start: int
    stop: int
    chunks: Iterator[bytes] = field(repr=False)


@dataclass(frozen=True)
class PurgeResult:
    recording_id: uuid.UUID
    objects_shredded: int
    versions_deleted: int


def object_key(recording_id: uuid.UUID, variant: str, object_id: uuid.UUID) -> str:
    """The S3 key: ids only, never a caller-supplied name or any CPNI."""
    return f"recordings/{recording_id}/{variant}/{object_id}.cvlt"


def load_audit_key(dsn: str, keys: KeyProvider) -> bytes:
    """The access log's HMAC key: a data key wrapped under the `audit` KEK, made once."""
    with connect(dsn) as conn, translate_errors():
        row = conn.execute("SELECT value FROM vault_meta WHERE key = %s", (_AUDIT_KEY,)
                           ).fetchone()
        if row is None:
            _dek, wrapped = keys.generate_data_key("audit")
            conn.execute(
                "INSERT INTO vault_meta (key, value) VALUES (%s, %s::jsonb)"
                " ON CONFLICT (key) DO NOTHING",
                (_AUDIT_KEY, _wrapped_json(wrapped)))
            conn.commit()
            row = conn.execute("SELECT value FROM vault_meta WHERE key = %s", (_AUDIT_KEY,)
                               ).fetchone()
            assert row is not None
        value = row["value"]
    return keys.unwrap(WrappedKey(value["key_id"], bytes.fromhex(value["blob"])), "audit")


def _loggable(reason: str | None) -> str | None:
    """A refused reason may be refused for carrying a customer's number: log it only if
    it passes the reason check."""
    if reason is None:
        return None
    try:
        return check_reason(reason)
    except AccessDenied:
        return "(reason refused by the policy)"


def _wrapped_json(wrapped: WrappedKey) -> str:
    import json
    return json.dumps({"key_id": wrapped.key_id, "blob": wrapped.blob.hex()})


class Vault:
    """Store and open encrypted objects; the only door to recordings' bytes."""

    def __init__(self, dsn: str, store: ObjectStore, keys: KeyProvider, log: AccessLog, *,
                 retention_days: int = 0, object_lock: bool = False,
                 segment_size: int = crypto.DEFAULT_SEGMENT) -> None:
        self.dsn = dsn
        self.store = store
        self.keys = keys
        self.log = log
        self.retention_days = retention_days
        self.object_lock = object_lock
        self.segment_size = segment_size

    # ------------------------------------------------------------------ writing

    def prepare(self, conn: Connection, recording_id: uuid.UUID, variant: Variant
                ) -> tuple[uuid.UUID, bytes]:
        """Insert the `pending` row of an object inside the caller's transaction and return
        its id and data key; an existing pending row is reused (a repeated job)."""
        rec = conn.execute("SELECT status FROM recordings WHERE id = %s FOR SHARE",
                           (recording_id,)).fetchone()
        if rec is None:
            raise NotFound(f"no recording {recording_id}")
        if rec["status"] == "purged":
            raise NotFound(f"recording {recording_id} was purged")
        row = conn.execute(
            "SELECT id, kek_id, wrapped_key, state FROM objects"
            " WHERE recording_id = %s AND variant = %s", (recording_id, variant)).fetchone()
        if row is not None:
            if row["state"] == "shredded" or row["wrapped_key"] is None:
                raise NotFound(f"recording {recording_id} was purged")
            dek = self.keys.unwrap(WrappedKey(row["kek_id"], bytes(row["wrapped_key"])),
                                   PURPOSE[variant])
            return row["id"], dek
        object_id = uuid.uuid4()
        dek, wrapped = self.keys.generate_data_key(PURPOSE[variant])
        conn.execute(
            "INSERT INTO objects (id, recording_id, variant, s3_key, kek_id, wrapped_key,"
            " segment_size) VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (object_id, recording_id, variant, object_key(recording_id, variant, object_id),
             wrapped.key_id, wrapped.blob, self.segment_size))
        return object_id, dek

    def put_plaintext(self, recording_id: uuid.UUID, variant: Variant, src: BinaryIO,
                      plaintext_size: int) -> StoredObject:
        """Encrypt `src` as it streams and store it (idempotent per recording and variant)."""
        with connect(self.dsn) as conn, translate_errors():
            object_id, dek = self.prepare(conn, recording_id, variant)
            conn.commit()
        reader = crypto.EncryptingReader(src, dek, object_id, self.segment_size)
        size = crypto.ciphertext_size(plaintext_size, self.segment_size)
        return self.put_ciphertext(recording_id, variant, io.BufferedReader(reader), size,
                                   plaintext_size)

    def put_ciphertext(self, recording_id: uuid.UUID, variant: Variant, body: BinaryIO,
                       ciphertext_size: int, plaintext_size: int) -> StoredObject:
        """Upload an object already in the CVLT format (a spooled copy), verify the store
        holds exactly it, drop stray versions from earlier attempts, mark it stored."""
        obj = self.get_object(recording_id, variant)
        if obj.state == "stored":
            return obj
        if obj.state != "pending":
            raise NotFound(f"recording {recording_id} was purged")
        put = self.store.put_stream(obj.s3_key, body, content_length=ciphertext_size,
                                    retain_until=self._retain_until())
        head = self.store.head(obj.s3_key, put.version_id)
        if head.size != ciphertext_size:
            raise IntegrityError(f"{variant} object of {recording_id}: the store holds "
                                 f"{head.size} bytes, {ciphertext_size} were sent")
        for v in self.store.list_versions(obj.s3_key):
            if v.version_id != put.version_id and put.version_id is not None:
                # an earlier attempt's orphan: ours, never referenced, so past its lock
                self.store.delete_version(obj.s3_key, v.version_id, bypass_governance=True)
        with connect(self.dsn) as conn, translate_errors():
            conn.execute(
                "UPDATE objects SET state = 'stored', version_id = %s, plaintext_size = %s,"
                " ciphertext_size = %s, stored_at = now() WHERE id = %s AND state = 'pending'",
                (put.version_id, plaintext_size, ciphertext_size, obj.id))
            conn.commit()
        self.log.append(AuditEvent(actor=SYSTEM.name, role=SYSTEM.role, action="store",
                                   outcome="ok", recording_id=recording_id, variant=variant))
        return self.get_object(recording_id, variant)

    def _retain_until(self) -> datetime | None:
        if not self.retention_days or not self.object_lock:
            return None
        return datetime.now(UTC) + timedelta(days=self.retention_days)

    # ------------------------------------------------------------------ reading

    def get_object(self, recording_id: uuid.UUID, variant: str) -> StoredObject:
        with connect(self.dsn) as conn, translate_errors():
            row = conn.execute(
                "SELECT id, recording_id, variant, s3_key, version_id, kek_id, plaintext_size,"
                " ciphertext_size, segment_size, state FROM objects"
                " WHERE recording_id = %s AND variant = %s", (recording_id, variant)
            ).fetchone()
        if row is None:
            raise NotFound(f"recording {recording_id} has no {variant} object")
        return StoredObject(**row)

    def authorize(self, principal: Principal, action: Action, recording_id: uuid.UUID | None,
                  variant: Variant | None = None, reason: str | None = None,
                  origin: str | None = None) -> None:
        """Check the policy; log the refusal or the grant. No log line, no access."""
        try:
            authorize(principal, action, variant, reason)
        except AccessDenied as exc:
            self.log.append(AuditEvent(actor=principal.name, role=principal.role, action=action,
                                       outcome="denied", recording_id=recording_id,
                                       variant=variant, reason=_loggable(reason),
                                       origin=origin, detail=str(exc)))
            raise
        self.log.append(AuditEvent(actor=principal.name, role=principal.role, action=action,
                                   outcome="allowed", recording_id=recording_id,
                                   variant=variant, reason=_loggable(reason), origin=origin))

    def data_key(self, obj: StoredObject) -> bytes:
        with connect(self.dsn) as conn, translate_errors():
            row = conn.execute("SELECT kek_id, wrapped_key FROM objects WHERE id = %s",
                               (obj.id,)).fetchone()
        if row is None or row["wrapped_key"] is None:
            raise NotFound(f"recording {obj.recording_id}: the {obj.variant} key is destroyed")
        return self.keys.unwrap(WrappedKey(row["kek_id"], bytes(row["wrapped_key"])),
                                PURPOSE[obj.variant])

    @contextmanager
    def open(self, principal: Principal, recording_id: uuid.UUID, variant: Variant, *,
             reason: str | None = None, origin: str | None = None,
             action: Action = "download") -> Iterator[BinaryIO]:
        """A plaintext stream of one object, after the policy and the log allow it.

        Damage found while reading raises `IntegrityError` and is logged as failed.
        """
        self.authorize(principal, action, recording_id, variant, reason, origin)
        obj = self.get_object(recording_id, variant)
        if obj.state != "stored":
            raise NotFound(f"recording {recording_id} has no stored {variant} object")
        dek = self.data_key(obj)
        body = self.store.open_stream(obj.s3_key, obj.version_id)
        try:
            yield io.BufferedReader(crypto.DecryptingReader(body, dek, obj.id))
        except IntegrityError:
            self.log.append(AuditEvent(actor=principal.name, role=principal.role,
                                       action="decrypt", outcome="failed",
                                       recording_id=recording_id, variant=variant,
                                       origin=origin, detail="integrity check failed"))
            raise
        finally:
            body.close()

    def read_range(self, principal: Principal, recording_id: uuid.UUID, variant: Variant,
                   start: int, end: int | None = None, *, reason: str | None = None,
                   origin: str | None = None, action: Action = "read") -> tuple[bytes, int]:
        """Plaintext bytes [start, end) of one object (end None or past the object: to its
        end) and the object's plaintext size, after the policy and the log allow it: what
        an HTTP Range request needs (seeking in a recording). Only the segments that hold
        the range are fetched and authenticated; damage raises `IntegrityError`, logged.
        A start at or past the end raises `RangeNotSatisfiable`."""
        stream = self.stream_range(principal, recording_id, variant, start, end,
                                   reason=reason, origin=origin, action=action)
        return b"".join(stream.chunks), stream.size

    def stream_range(self, principal: Principal, recording_id: uuid.UUID, variant: Variant,
                     start: int, end: int | None = None, *, reason: str | None = None,
                     origin: str | None = None, action: Action = "read",
                     batch_segments: int = 16) -> RangeStream:
        """Like `read_range`, but the bytes come as an iterator of chunks, `batch_segments`
        segments fetched and authenticated at a time: constant memory for a range of any
        length (an hour of audio streamed to a browser). One policy check and one log line
        for the whole range, before anything is fetched. A chunk is only handed out once
        it authenticates; damage part-way raises `IntegrityError` (logged) from the
        iterator, so a server must cut the response short rather than end it cleanly."""
        if batch_segments < 1:
            raise ValueError("batch_segments must be at least 1")
        self.authorize(principal, action, recording_id, variant, reason, origin)
        obj = self.get_object(recording_id, variant)
        if obj.state != "stored" or obj.plaintext_size is None:
            raise NotFound(f"recording {recording_id} has no stored {variant} object")
        size = obj.plaintext_size
        stop = size if end is None else min(end, size)
        if not 0 <= start < stop:
            raise RangeNotSatisfiable(f"bytes {start}- of a {size}-byte object")
        dek = self.data_key(obj)

        def failed() -> None:
            self.log.append(AuditEvent(actor=principal.name, role=principal.role,
                                       action="decrypt", outcome="failed",
                                       recording_id=recording_id, variant=variant,
                                       origin=origin, detail="integrity check failed"))

        try:
            header = crypto.read_header(self.store.get_range(
                obj.s3_key, 0, crypto.HEADER_SIZE - 1, obj.version_id))
            if header.object_id != obj.id or header.segment_size != obj.segment_size:
                raise IntegrityError("the header belongs to another object")
        except IntegrityError:
            failed()
            raise
        return RangeStream(size, start, stop, self._chunks(
            obj, header, dek, start, stop, batch_segments, failed))

    def _chunks(self, obj: StoredObject, header: crypto.Header, dek: bytes, start: int,
                stop: int, batch: int, failed: Callable[[], None]) -> Iterator[bytes]:
        seg = obj.segment_size
        total = crypto.segment_count(obj.plaintext_size or 0, seg)
        pos = start
        step = 1      # the first chunk small, so the first byte comes soon; then `batch`
        try:
            while pos < stop:
                upto = min(stop, (pos // seg + step) * seg)
                step = batch
                first, offset, length = crypto.segment_span(pos, upto, seg)
                body = self.store.get_range(obj.s3_key, offset, offset + length - 1,
                                            obj.version_id)
                plain = crypto.decrypt_segments(header, dek, first, body, total)
                skip = pos - first * seg
                piece = plain[skip:skip + (upto - pos)]
                if len(piece) < upto - pos:
                    raise IntegrityError("object truncated: the range runs past the stored data")
                yield piece
                pos = upto
        except IntegrityError:
            failed()
            raise

    def read_all(self, principal: Principal, recording_id: uuid.UUID, variant: Variant,
                 **kw: Any) -> bytes:
        """The whole plaintext (small objects such as transcripts)."""
        with self.open(principal, recording_id, variant, **kw) as fh:
            return fh.read()

    # ---------------------------------------------------------------- lifecycle

    def purge(self, principal: Principal, recording_id: uuid.UUID, reason: str,
              origin: str | None = None) -> PurgeResult:
        """Crypto-shred a recording: destroy its data keys, delete every object version."""
        self.authorize(principal, "purge", recording_id, None, reason, origin)
        with connect(self.dsn) as conn, translate_errors():
            rec = conn.execute(
                "SELECT retain_until, legal_hold FROM recordings WHERE id = %s FOR UPDATE",
                (recording_id,)).fetchone()
            if rec is None:
                raise NotFound(f"no recording {recording_id}")
            refusal = None
            if rec["legal_hold"]:
                refusal = "a legal hold is on this recording"
            elif rec["retain_until"] is not None and rec["retain_until"] > datetime.now(UTC):
                refusal = f"retention runs until {rec['retain_until']:%Y-%m-%d}"
            if refusal:
                conn.rollback()
                self.log.append(AuditEvent(actor=principal.name, role=principal.role,
                                           action="purge", outcome="denied",
                                           recording_id=recording_id, reason=reason,
                                           origin=origin, detail=refusal))
                raise RetentionLocked(f"not purged: {refusal}")
            rows = conn.execute(
                "UPDATE objects SET wrapped_key = NULL, kek_id = NULL, state = 'shredded'"
                " WHERE recording_id = %s RETURNING s3_key", (recording_id,)).fetchall()
            conn.execute("UPDATE recordings SET status = 'purged', purged_at = now(),"
                         " redaction = NULL, error = NULL WHERE id = %s", (recording_id,))
            conn.commit()
        deleted = 0
        for row in rows:
            # the database's retention date was checked above and is the authority; the
            # object's own GOVERNANCE date was set at upload, a little later
            deleted += self.store.delete_all_versions(row["s3_key"], bypass_governance=True)
        with connect(self.dsn, autocommit=True) as conn, translate_errors():
            # drop the dead row versions that still held the wrapped keys
            conn.execute("VACUUM objects")
        self.log.append(AuditEvent(actor=principal.name, role=principal.role, action="purge",
                                   outcome="ok", recording_id=recording_id, reason=reason,
                                   origin=origin, detail=f"{len(rows)} objects shredded"))
        return PurgeResult(recording_id, len(rows), deleted)

    def set_hold(self, principal: Principal, recording_id: uuid.UUID, on: bool, reason: str,
                 origin: str | None = None) -> None:
        """Put or lift a legal hold; a held recording cannot be purged."""
        self.authorize(principal, "hold", recording_id, None, reason, origin)
        with connect(self.dsn) as conn, translate_errors():
            cur = conn.execute("UPDATE recordings SET legal_hold = %s, hold_reason = %s"
                               " WHERE id = %s", (on, reason if on else None, recording_id))
            if cur.rowcount != 1:
                raise NotFound(f"no recording {recording_id}")
            conn.commit()

    def rotate(self, principal: Principal, origin: str | None = None) -> tuple[list[str], int]:
        """Add new key-encryption keys and re-wrap every live data key under them.

        The audio is not touched: only the wrapped keys in PostgreSQL change, one row per
        transaction, so an interrupted rotation can simply be run again.
        """
        self.authorize(principal, "manage_keys", None, None, None, origin)
        new_ids = self.keys.rotate()
        count = 0
        with connect(self.dsn) as conn, translate_errors():
            rows = conn.execute("SELECT id, variant, kek_id, wrapped_key FROM objects"
                                " WHERE wrapped_key IS NOT NULL").fetchall()
            conn.commit()
            for row in rows:
                purpose = PURPOSE[row["variant"]]
                # KMS keeps one key id across rotations (its ARN); re-wrap there always,
                # so every data key ends up under the newest backing key
                if self.keys.name != "kms" and row["kek_id"] == self.keys.current_key_id(
                        purpose):
                    continue
                new = self.keys.rewrap(WrappedKey(row["kek_id"], bytes(row["wrapped_key"])),
                                       purpose)
                conn.execute("UPDATE objects SET kek_id = %s, wrapped_key = %s"
                             " WHERE id = %s AND wrapped_key IS NOT NULL",
                             (new.key_id, new.blob, row["id"]))
                conn.commit()
                count += 1
            meta = conn.execute("SELECT value FROM vault_meta WHERE key = %s",
                                (_AUDIT_KEY,)).fetchone()
            if meta is not None:
                old = WrappedKey(meta["value"]["key_id"], bytes.fromhex(meta["value"]["blob"]))
                if old.key_id != self.keys.current_key_id("audit"):
                    new = self.keys.rewrap(old, "audit")
                    conn.execute("UPDATE vault_meta SET value = %s::jsonb WHERE key = %s",
                                 (_wrapped_json(new), _AUDIT_KEY))
                    conn.commit()
        self.log.append(AuditEvent(actor=principal.name, role=principal.role,
                                   action="manage_keys", outcome="ok", origin=origin,
                                   detail=f"rotated; {count} data keys re-wrapped"))
        return new_ids, count

