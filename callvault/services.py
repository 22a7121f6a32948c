"""Starts and connects the vault's real components from `Settings`.

PostgreSQL is the embedded server in the state directory unless `database_url` is set;
S3 is the embedded SeaweedFS on loopback unless `s3_endpoint_url` is set. Migrations and
procrastinate's schema are applied on every start (both are no-ops when current). What
this process started it also stops; a server another process started is left running.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

from callvault import wiring
from callvault.config import Settings
from recordings.pipeline import Runtime, build_app, ensure_job_schema
from storage.access import Users
from storage.audit import AccessLog
from storage.db import EmbeddedPostgres, migrate
from storage.keys import KeyProvider, open_key_provider
from storage.s3 import EmbeddedSeaweed, ObjectStore, open_object_store
from storage.vault import Vault, load_audit_key


@dataclass
class Database:
    dsn: str
    keys: KeyProvider
    log: AccessLog
    users: Users


@dataclass
class Services:
    settings: Settings
    db: Database
    store: ObjectStore
    vault: Vault

    def runtime(self) -> Runtime:
        s = self.settings
        return Runtime(dsn=self.db.dsn, vault=self.vault, spool_dir=s.spool_dir,
                       redact_config=wiring.redact_config(s),
                       transcriber=lambda: wiring.transcriber(s),
                       max_attempts=s.job_max_attempts,
                       retry_base_seconds=s.job_retry_base_seconds,
                       stalled_seconds=s.job_stalled_seconds)


@contextmanager
def database(settings: Settings) -> Iterator[Database]:
    """PostgreSQL migrated and ready, with the key provider and the access log."""
    with ExitStack() as stack:
        if settings.database_url is not None:
            dsn = settings.database_url.get_secret_value()
        else:
            pg = EmbeddedPostgres(settings.state_dir)
            dsn = pg.start()
            stack.callback(pg.stop)
        migrate(dsn)
        ensure_job_schema(dsn)
        keys = open_key_provider(settings)
        log = AccessLog(dsn, load_audit_key(dsn, keys))
        yield Database(dsn, keys, log, Users(dsn, lock_after=settings.sign_in_lock_after,
                                             lock_seconds=settings.sign_in_lock_seconds))


@contextmanager
def object_store(settings: Settings) -> Iterator[ObjectStore]:
    """The S3 store: the configured endpoint, or the embedded SeaweedFS."""
    with ExitStack() as stack:
        seaweed: EmbeddedSeaweed | None = None
        if settings.s3_endpoint_url is None:
            seaweed = EmbeddedSeaweed(settings.state_dir, s3_port=settings.seaweedfs_s3_port)
            if seaweed.attach_or_start():
                stack.callback(seaweed.stop)
        yield open_object_store(settings, seaweed)


@contextmanager
def services(settings: Settings) -> Iterator[Services]:
    """Everything: database, object store (bucket ensured) and the vault over them."""
    with database(settings) as db, object_store(settings) as store:
        features = store.ensure_bucket(settings.s3_object_lock)
        vault = Vault(db.dsn, store, db.keys, db.log, retention_days=settings.retention_days,
                      object_lock=features.object_lock)
        yield Services(settings, db, store, vault)


__all__ = ["Database", "Services", "build_app", "database", "object_store", "services"]
