"""`callvault customers` as an operator runs it: PINs only on stdin, weak PINs refused
without being echoed, changes notified to the contact of record, lockouts lifted."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from storage.db import EmbeddedPostgres, connect
from tests.storage.pg_fixture import fresh_database

CLI = [sys.executable, "-c", "from callvault.cli import main; main()"]
ACCOUNT, PHONE = "48201735", "+14155550192"


def _run(env: dict[str, str], *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, "customers", *args], env=env, input=stdin,
                          capture_output=True, text=True, timeout=120, check=False)


def test_customer_provisioning(tmp_path: Path, pg_server: EmbeddedPostgres) -> None:
    """add refuses weak PINs and PIN arguments, registers a good one, set-pin and
    set-contact queue notices, unlock works, and no output echoes a PIN or number."""
    dsn = fresh_database(pg_server)
    env = {**os.environ, "CALLVAULT_STATE_DIR": str(tmp_path / "state"),
           "CALLVAULT_DATABASE_URL": dsn}
    env.pop("CALLVAULT_CONFIG", None)
    outputs = []
    for weak in ("1234", "0000", "1735", "5550", "12345678901"):
        res = _run(env, "add", "--account", ACCOUNT, "--phone", PHONE, "--pin-stdin",
                   stdin=weak + "\n")
        outputs.append(res)
        assert res.returncode == 2, (weak, res.stderr)
        assert weak not in res.stderr
    no_stdin = _run(env, "add", "--account", ACCOUNT, "--phone", PHONE)
    assert no_stdin.returncode == 2 and "--pin-stdin" in no_stdin.stderr
    added = _run(env, "add", "--account", ACCOUNT, "--phone", PHONE, "--contact",
                 "pat@example.org", "--pin-stdin", stdin="583920\n")
    assert added.returncode == 0, added.stderr
    again = _run(env, "add", "--account", ACCOUNT, "--phone", PHONE, "--pin-stdin",
                 stdin="583921\n")
    assert again.returncode != 0 and "already registered" in again.stderr
    changed = _run(env, "set-pin", "--account", ACCOUNT, "--pin-stdin", stdin="719264\n")
    assert changed.returncode == 0, changed.stderr
    moved = _run(env, "set-contact", "--account", ACCOUNT, "--contact", "new@example.org")
    assert moved.returncode == 0, moved.stderr
    missing = _run(env, "unlock", "--account", "99999999")
    assert missing.returncode == 25
    unlocked = _run(env, "unlock", "--account", ACCOUNT)
    assert unlocked.returncode == 0, unlocked.stderr
    outputs += [no_stdin, added, again, changed, moved, missing, unlocked]
    with connect(dsn) as conn:
        kinds = [r["kind"] for r in conn.execute("SELECT kind FROM outbox ORDER BY id")]
        logged = conn.execute("SELECT count(*) AS n FROM access_log WHERE action ="
                              " 'manage_customers'").fetchone()
    assert kinds == ["pin_changed", "contact_changed"]
    assert logged is not None and logged["n"] == 4
    for res in outputs:
        for secret in ("583920", "719264", ACCOUNT, PHONE, "pat@example.org"):
            assert secret not in res.stdout + res.stderr
