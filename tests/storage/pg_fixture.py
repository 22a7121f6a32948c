"""Pytest fixtures for a real PostgreSQL: the embedded server, started once per session.

`pg_server` is the running server; `pg_dsn` gives each test a fresh, migrated database
of its own on it, so tests never see each other's rows.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage.db import EmbeddedPostgres, connect, migrate


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    """One embedded PostgreSQL for the whole session."""
    server = EmbeddedPostgres(Path(tmp_path_factory.mktemp("pg")))
    server.start()
    yield server
    server.stop()


def fresh_database(server: EmbeddedPostgres) -> str:
    """Create an empty database on `server`, migrate it, return its DSN."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with connect(server.dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"'.encode())
    dsn = server.dsn.replace("/postgres?", f"/{name}?", 1)
    migrate(dsn)
    return dsn


@pytest.fixture
def pg_dsn(pg_server: EmbeddedPostgres) -> str:
    """A fresh migrated database for one test."""
    return fresh_database(pg_server)
