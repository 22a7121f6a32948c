"""PostgreSQL plumbing: versioned migrations applied once, and clear errors when the
database cannot be reached or the connection string is malformed."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from storage.db import EmbeddedPostgres, connect, migrate, migrations
from storage.errors import StorageError, StorageUnavailable
from tests.storage.pg_fixture import fresh_database


def test_migrations_are_numbered_and_recorded(pg_dsn: str) -> None:
    """Every shipped migration is recorded once, in order; a second run applies none."""
    shipped = [v for v, _, _ in migrations()]
    assert shipped == sorted(shipped) and shipped[0] == 1
    with connect(pg_dsn) as conn:
        done = [r["version"] for r in conn.execute(
            "SELECT version FROM schema_migrations ORDER BY version")]
    assert done == shipped
    assert migrate(pg_dsn) == []


def test_concurrent_first_start_migrates_once(pg_server: EmbeddedPostgres) -> None:
    """Several processes starting at once on an empty database: one migrates, none fail."""
    dsn = fresh_database(pg_server)
    with connect(dsn, autocommit=True) as conn:  # back to an empty database
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(migrate(dsn))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    applied = [r for r in results if r]
    assert len(applied) == 1 and len(applied[0]) == len(migrations())


def test_unreachable_database_is_storage_unavailable(tmp_path: Path) -> None:
    """A socket folder where nothing listens gives StorageUnavailable, no driver text."""
    with pytest.raises(StorageUnavailable) as info:
        connect(f"postgresql://postgres@/postgres?host={tmp_path}", timeout=2)
    assert str(tmp_path) not in str(info.value)


def test_malformed_dsn_never_echoes_it() -> None:
    """A connection string the driver cannot parse is a StorageError without the value."""
    with pytest.raises(StorageError) as info:
        connect("host=/x password=open sesame-42")
    assert "sesame" not in str(info.value)


def test_pooled_connections_keep_the_transaction_rules_of_plain_ones(pg_dsn: str) -> None:
    """With pool_connections: a block that ends commits, one that raises rolls back, a
    connection killed under us is dropped rather than handed out again, autocommit
    connections bypass the pool; close_pools ends it."""
    from storage.db import _POOLS, close_pools, pool_connections

    with connect(pg_dsn) as conn:
        conn.execute("CREATE TABLE pool_t (n int)")
    pool_connections(pg_dsn, max_size=2)
    try:
        with connect(pg_dsn) as conn:
            conn.execute("INSERT INTO pool_t VALUES (1)")
        with pytest.raises(RuntimeError), connect(pg_dsn) as conn:
            conn.execute("INSERT INTO pool_t VALUES (2)")
            raise RuntimeError("boom")
        with connect(pg_dsn) as conn:
            pid = conn.execute("SELECT pg_backend_pid() AS p").fetchone()
        assert pid is not None
        with connect(pg_dsn, autocommit=True) as other:
            assert other.execute("SELECT pg_backend_pid() AS p").fetchone() != pid
            other.execute("SELECT pg_terminate_backend(%s)", (pid["p"],))
        for _ in range(3):   # the killed connection fails once at most, then is gone
            try:
                with connect(pg_dsn) as conn:
                    rows = [r["n"] for r in conn.execute("SELECT n FROM pool_t")]
                break
            except StorageError:
                continue
        assert rows == [1]
        assert _POOLS[pg_dsn].get_stats()["pool_max"] == 2
    finally:
        close_pools()
    assert pg_dsn not in _POOLS
