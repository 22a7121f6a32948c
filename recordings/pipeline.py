"""The durable post-call pipeline, on procrastinate jobs in the vault's PostgreSQL.

`register()` encrypts the source into this node's spool, records the recording and its
raw object, and enqueues the first job in one transaction; only then is the source the
PBX wrote removed, so from that moment no plaintext audio is at rest. Two jobs follow:

* `store_raw` (queue `spool.<node>`, run where the spool copy lives) uploads the already
  encrypted spool file as the raw variant, checks the store holds exactly it, drops the
  spool copy and enqueues `redact`;
* `redact` (queue `redact`, any worker on any machine) decrypts the raw audio into an
  anonymous in-memory file, redacts it, and stores the redacted audio and the redacted
  transcript, each under its own data key.

Every step is idempotent (objects keep their id and S3 key from their pending row), so a
job repeated after a crash or a SIGKILL duplicates nothing. Transient failures (storage
or database down) retry with capped exponential backoff; bad audio or a failed redaction
proof marks the recording failed without retrying. Workers beat a heartbeat; a job whose
worker stopped beating is handed to another worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import logging
import os
import re
import socket
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO, cast

import procrastinate
from procrastinate import exceptions as pexc
from procrastinate.jobs import Job
from procrastinate.retry import BaseRetryStrategy, RetryDecision
from procrastinate.schema import SchemaManager
from procrastinate.sync_psycopg_connector import SyncPsycopgConnector

from redaction.audio import probe
from redaction.engine import Outcome, RedactConfig, redact_file
from redaction.errors import (
    ModelUnavailable,
    OutputError,
    RedactionError,
    VerificationFailed,
)
from redaction.spans import redacted_words
from redaction.transcribe import Transcriber
from storage import crypto
from storage.access import SYSTEM
from storage.audit import AuditEvent
from storage.db import connect, translate_errors
from storage.errors import KeyUnavailable, StorageError, StorageUnavailable
from storage.vault import Vault

log = logging.getLogger("callvault.pipeline")

REDACT_QUEUE = "redact"
TRANSCRIPT_SCHEMA = "callvault.transcript/1"
_SCHEMA_LOCK = 0x63767071  # advisory lock id for the job schema
# worth trying again later: storage, keys, the model files or memory may come back
_TRANSIENT = (StorageUnavailable, KeyUnavailable, OSError, ModelUnavailable, OutputError)


def node_name() -> str:
    """This machine's spool queue suffix: the host name, reduced to safe characters."""
    return re.sub(r"[^a-z0-9-]", "-", socket.gethostname().lower())[:40] or "node"


def spool_queue(node: str) -> str:
    return f"spool.{node}"


@dataclass
class Runtime:
    """What a process needs to register recordings and run pipeline jobs."""

    dsn: str
    vault: Vault
    spool_dir: Path
    redact_config: RedactConfig
    transcriber: Callable[[], Transcriber]
    max_attempts: int = 20
    retry_base_seconds: float = 2.0
    stalled_seconds: float = 30.0
    node: str = field(default_factory=node_name)
    deferrer: procrastinate.App | None = field(default=None, repr=False)


class Backoff(BaseRetryStrategy):
    """Retry transient failures with capped exponential backoff; never retry bad input."""

    def __init__(self, max_attempts: int, base_seconds: float, cap_seconds: float = 300.0):
        self.max_attempts = max_attempts
        self.base = base_seconds
        self.cap = cap_seconds

    def get_retry_decision(self, *, exception: BaseException, job: Job) -> RetryDecision | None:
        if not isinstance(exception, _TRANSIENT) or job.attempts + 1 >= self.max_attempts:
            return None
        delay = min(self.cap, self.base * 2 ** job.attempts)
        return RetryDecision(retry_in={"seconds": delay})


# ------------------------------------------------------------------ registration

@dataclass(frozen=True)
class Registered:
    recording_id: uuid.UUID
    created: bool   # False when the call id was already registered


def ensure_job_schema(dsn: str) -> None:
    """Install procrastinate's tables once (its own schema, beside our migrations)."""
    with connect(dsn, autocommit=True) as conn, translate_errors():
        conn.execute("SELECT pg_advisory_lock(%s)", (_SCHEMA_LOCK,))
        try:
            row = conn.execute("SELECT to_regclass('procrastinate_jobs') AS t").fetchone()
            if row is None or row["t"] is None:
                sql = SchemaManager.get_schema()
                conn.execute(sql.encode())
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_SCHEMA_LOCK,))


def register(rt: Runtime, source: Path, *, call_id: str | None = None,
             agent: str | None = None, keep_source: bool = False,
             verdict: dict[str, Any] | None = None) -> Registered:
    """Encrypt `source` into the spool, record it and enqueue its job in one transaction.

    Bad audio is refused here (the `RedactionError` of its kind) before anything is
    written. The source is removed once the encrypted copy is durable, unless
    `keep_source`.
    """
    info = probe(source, max_seconds=rt.redact_config.max_duration)
    rid = uuid.uuid4()
    rt.spool_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    spool = rt.spool_dir / f"{rid}.raw.cvlt"
    retain = (datetime.now(UTC) + timedelta(days=rt.vault.retention_days)
              if rt.vault.retention_days else None)
    with connect(rt.dsn) as conn, translate_errors():
        row = conn.execute(
            "INSERT INTO recordings (id, call_id, agent, source_name, channels, sample_rate,"
            " duration_seconds, retain_until, verdict) VALUES (%s, %s, %s, %s, %s, %s, %s, %s,"
            " %s::jsonb) ON CONFLICT (call_id) DO NOTHING RETURNING id",
            (rid, call_id, agent, source.name[:200], info.channels, info.sample_rate,
             info.duration, retain, json.dumps(verdict) if verdict else None)).fetchone()
        if row is None:
            conn.rollback()
            existing = conn.execute("SELECT id FROM recordings WHERE call_id = %s",
                                    (call_id,)).fetchone()
            assert existing is not None
            return Registered(existing["id"], created=False)
        object_id, dek = rt.vault.prepare(conn, rid, "raw")
        try:
            size = _spool(source, spool, dek, object_id, rt.vault.segment_size)
            conn.execute("UPDATE objects SET plaintext_size = %s, ciphertext_size = %s"
                         " WHERE id = %s", (source.stat().st_size, size, object_id))
            store_raw_task(deferrer(rt)).configure(
                connection=conn, queue=spool_queue(rt.node),
                lock=f"recording:{rid}").defer(recording_id=str(rid))
            conn.commit()
        except BaseException:
            conn.rollback()
            with contextlib.suppress(FileNotFoundError):
                spool.unlink()
            raise
    if not keep_source:
        source.unlink()
    return Registered(rid, created=True)


def _spool(source: Path, spool: Path, dek: bytes, object_id: uuid.UUID, segment: int) -> int:
    """Encrypt into a 0600 spool file, fsync it, and prove it decrypts to the source."""
    tmp = spool.with_suffix(".partial")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out, source.open("rb") as src:
            size = crypto.encrypt_stream(src, out, dek, object_id, segment)
            out.flush()
            os.fsync(out.fileno())
        with tmp.open("rb") as enc:
            crypto.decrypt_stream(enc, cast(BinaryIO, _HashSink(digest)), dek, object_id)
        with source.open("rb") as src:
            check = hashlib.sha256()
            for chunk in iter(lambda: src.read(1 << 20), b""):
                check.update(chunk)
        if check.digest() != digest.digest():
            raise StorageError("the spool copy does not match the source; nothing registered")
        os.replace(tmp, spool)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    return size


class _HashSink:
    """A write-only stream that only hashes what it is given."""

    def __init__(self, digest: Any) -> None:
        self._digest = digest

    def write(self, data: bytes) -> int:
        self._digest.update(data)
        return len(data)


# ------------------------------------------------------------------ the jobs

def store_raw(rt: Runtime, recording_id: uuid.UUID) -> None:
    """Upload the spooled ciphertext as the raw variant, then hand over to `redact`."""
    vault = rt.vault
    obj = vault.get_object(recording_id, "raw")
    spool = rt.spool_dir / f"{recording_id}.raw.cvlt"
    if obj.state == "pending":
        if not spool.exists():
            raise StorageError(f"recording {recording_id}: spool copy missing on {rt.node}")
        size = spool.stat().st_size
        with spool.open("rb") as body:
            vault.put_ciphertext(recording_id, "raw", body, size, obj.plaintext_size or 0)
    with connect(rt.dsn) as conn, translate_errors():
        conn.execute("UPDATE recordings SET status = 'processing' WHERE id = %s"
                     " AND status = 'queued'", (recording_id,))
        with contextlib.suppress(pexc.AlreadyEnqueued):
            redact_task(deferrer(rt)).configure(
                connection=conn, queueing_lock=f"redact:{recording_id}",
                lock=f"recording:{recording_id}").defer(recording_id=str(recording_id))
        conn.commit()
    with contextlib.suppress(FileNotFoundError):
        spool.unlink()


def redact(rt: Runtime, recording_id: uuid.UUID) -> None:
    """Redact the raw audio in memory and store the redacted audio and transcript."""
    vault = rt.vault
    with connect(rt.dsn) as conn, translate_errors():
        rec = conn.execute("SELECT status FROM recordings WHERE id = %s",
                           (recording_id,)).fetchone()
    if rec is None or rec["status"] in ("stored", "purged", "failed"):
        return
    raw = vault.get_object(recording_id, "raw")
    with _memfile("callvault-raw") as raw_path, _memfile("callvault-redacted") as out_path:
        dek = vault.data_key(raw)
        vault.log.append(AuditEvent(actor=SYSTEM.name, role=SYSTEM.role, action="decrypt",
                                    outcome="ok", recording_id=recording_id, variant="raw",
                                    detail="redaction"))
        body = vault.store.open_stream(raw.s3_key, raw.version_id)
        try:
            with raw_path.open("wb") as sink:
                crypto.decrypt_stream(body, sink, dek, raw.id)
        finally:
            body.close()
        try:
            outcome = redact_file(raw_path, out_path, rt.transcriber(), rt.redact_config,
                                  direct=True)
        except VerificationFailed:
            _fail(rt.dsn, recording_id, "redaction could not be proven; raw kept encrypted")
            return
        except (ModelUnavailable, OutputError):
            raise  # retried: not the recording's fault
        except RedactionError as exc:
            _fail(rt.dsn, recording_id, f"unusable audio ({type(exc).__name__})")
            return
        with out_path.open("rb") as fh:
            vault.put_plaintext(recording_id, "redacted", fh, out_path.stat().st_size)
    doc = transcript_document(recording_id, outcome)
    data = json.dumps(doc, ensure_ascii=False).encode()
    vault.put_plaintext(recording_id, "transcript", io.BytesIO(data), len(data))
    summary = {"spans": doc["spans"], "redacted_seconds": doc["redacted_seconds"],
               "verification": {"passed": outcome.verification.passed,
                                "rounds": outcome.verification.rounds}}
    with connect(rt.dsn) as conn, translate_errors():
        conn.execute("UPDATE recordings SET status = 'stored', stored_at = now(),"
                     " redaction = %s::jsonb, error = NULL WHERE id = %s AND status <> 'purged'",
                     (json.dumps(summary), recording_id))
        conn.commit()


def transcript_document(recording_id: uuid.UUID, outcome: Outcome) -> dict[str, Any]:
    """The redacted transcript: timed tokens per channel, `[LABEL]` where muted."""
    info = outcome.info
    channels = []
    for ch in range(info.channels):
        tokens = redacted_words(outcome.words, outcome.spans, ch)
        channels.append({"channel": ch, "text": " ".join(t for _, _, t in tokens),
                         "words": [{"start": round(a, 3), "end": round(b, 3), "text": t}
                                   for a, b, t in tokens]})
    spans = [{"channel": s.channel, "start": round(s.start, 3), "end": round(s.end, 3),
              "label": s.label} for s in outcome.spans]
    return {"schema": TRANSCRIPT_SCHEMA, "recording_id": str(recording_id),
            "duration_seconds": round(info.duration, 3), "channels": channels, "spans": spans,
            "redacted_seconds": round(sum(s.end - s.start for s in outcome.spans), 3)}


def _fail(dsn: str, recording_id: uuid.UUID, why: str) -> None:
    log.warning("recording %s failed: %s", recording_id, why)
    with connect(dsn) as conn, translate_errors():
        conn.execute("UPDATE recordings SET status = 'failed', error = %s WHERE id = %s",
                     (why, recording_id))
        conn.commit()


@contextlib.contextmanager
def _memfile(name: str) -> Iterator[Path]:
    """An anonymous in-memory file, reachable by path only from this process; it
    vanishes when closed or when the process dies, so plaintext never reaches a disk."""
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    try:
        yield Path(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)


# ------------------------------------------------------------------ the app and workers

def build_app(rt: Runtime) -> procrastinate.App:
    """A procrastinate app (async connector) to run workers; its tasks close over `rt`."""
    return _with_tasks(procrastinate.App(
        connector=procrastinate.PsycopgConnector(conninfo=rt.dsn)), rt)


def deferrer(rt: Runtime) -> procrastinate.App:
    """The app jobs are deferred through, on the caller's own psycopg connection so the
    job and the rows it needs commit together. It is synchronous: a worker's async
    connector cannot take a plain connection."""
    if rt.deferrer is None:
        rt.deferrer = _with_tasks(procrastinate.App(connector=SyncPsycopgConnector(
            conninfo=rt.dsn)), rt)
    return rt.deferrer


def _with_tasks(app: procrastinate.App, rt: Runtime) -> procrastinate.App:
    retry = Backoff(rt.max_attempts, rt.retry_base_seconds)

    @app.task(name="callvault.store_raw", retry=retry)
    def _store_raw(recording_id: str) -> None:
        store_raw(rt, uuid.UUID(recording_id))

    @app.task(name="callvault.redact", queue=REDACT_QUEUE, retry=retry)
    def _redact(recording_id: str) -> None:
        redact(rt, uuid.UUID(recording_id))

    return app


def store_raw_task(app: procrastinate.App) -> Any:
    return app.tasks["callvault.store_raw"]


def redact_task(app: procrastinate.App) -> Any:
    return app.tasks["callvault.redact"]


async def run_worker(rt: Runtime, app: procrastinate.App, *, concurrency: int = 1,
                     stop: Callable[[], bool] | None = None,
                     install_signal_handlers: bool = True,
                     on_tick: Callable[[], None] | None = None) -> None:
    """Run jobs of this node's spool queue and the shared redact queue until cancelled
    (or until `stop()` is true). A side task hands stalled jobs of dead workers over."""
    queues = [spool_queue(rt.node), REDACT_QUEUE]
    heartbeat = max(1.0, rt.stalled_seconds / 3)
    worker = asyncio.create_task(app.run_worker_async(
        queues=queues, concurrency=concurrency, wait=True,
        install_signal_handlers=install_signal_handlers, update_heartbeat_interval=heartbeat,
        stalled_worker_timeout=rt.stalled_seconds, fetch_job_polling_interval=1.0,
        listen_notify=True))
    try:
        while not worker.done():
            await asyncio.wait({worker}, timeout=min(2.0, heartbeat))
            await _retry_stalled(app, rt.stalled_seconds)
            if on_tick is not None:
                on_tick()
            if stop is not None and stop():
                break
    finally:
        if not worker.done():
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker
    if worker.done() and not worker.cancelled() and worker.exception() is not None:
        raise worker.exception()  # type: ignore[misc]


async def _retry_stalled(app: procrastinate.App, stalled_seconds: float) -> None:
    with contextlib.suppress(pexc.ConnectorException):
        for job in await app.job_manager.get_stalled_jobs(
                seconds_since_heartbeat=stalled_seconds):
            log.warning("job %s of a worker that stopped beating runs again", job.id)
            await app.job_manager.retry_job(job)


def recording_state(dsn: str, recording_id: uuid.UUID) -> str | None:
    with connect(dsn) as conn, translate_errors():
        row = conn.execute("SELECT status FROM recordings WHERE id = %s",
                           (recording_id,)).fetchone()
    return None if row is None else str(row["status"])

