"""A `Vault` over the real embedded PostgreSQL and SeaweedFS, with a local keyring."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from recordings.pipeline import ensure_job_schema
from storage.access import Principal, Users
from storage.audit import AccessLog
from storage.db import connect
from storage.keys import LocalKeyring
from storage.s3 import ObjectStore
from storage.vault import Vault, load_audit_key

QA = Principal("quinn", "qa")
COMPLIANCE = Principal("carol", "compliance")
ADMIN = Principal("adam", "admin")
AGENT = Principal("alex", "agent")


@pytest.fixture
def vault(pg_dsn: str, object_store: ObjectStore, tmp_path: Path) -> Vault:
    """A fresh vault: its own database, bucket and keyring."""
    ensure_job_schema(pg_dsn)
    keys = LocalKeyring(tmp_path / "keys" / "keyring.json")
    log = AccessLog(pg_dsn, load_audit_key(pg_dsn, keys))
    return Vault(pg_dsn, object_store, keys, log, segment_size=64 * 1024)


@pytest.fixture
def users(pg_dsn: str) -> Users:
    return Users(pg_dsn)


def new_recording(dsn: str, **fields: object) -> uuid.UUID:
    """Insert a bare recordings row (what the pipeline's registration does)."""
    rid = uuid.uuid4()
    cols = {"id": rid, "source_name": "call.wav", **fields}
    names = ", ".join(cols)
    marks = ", ".join(["%s"] * len(cols))
    with connect(dsn) as conn:
        conn.execute(f"INSERT INTO recordings ({names}) VALUES ({marks})".encode(),
                     tuple(cols.values()))
        conn.commit()
    return rid
