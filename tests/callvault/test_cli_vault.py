"""The vault's commands end to end, each run as a `callvault` subprocess against the real
PostgreSQL, SeaweedFS and Whisper model: users, ingest, get, the access log, key
rotation, hold and purge, and what never reaches a terminal.

One sample call is ingested for the whole module and shared by its tests; key rotation
and then the purge, which change it for good, come last in file order, and the check that
no output leaked a secret reads every run of the module after them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import soundfile as sf

from callvault.demo import make_sample
from storage.db import EmbeddedPostgres, connect
from storage.s3 import EmbeddedSeaweed
from tests.storage.pg_fixture import fresh_database
from tests.storage.seaweed_fixture import drop_bucket, raw_client

CLI = [sys.executable, "-c", "from callvault.cli import main; main()"]
# Pieces of the account, phone and card numbers the sample caller says (callvault.demo).
SECRETS = ("4820", "1735", "4111", "0192")
PASSWORDS = {"root": "root-Vault-Pass-kq7", "quinn": "qa-Vault-Pass-wz3",
             "carol": "compliance-Vault-Pass-hv8", "alex": "agent-Vault-Pass-mb5"}
ROLES = {"root": "admin", "quinn": "qa", "carol": "compliance", "alex": "agent"}
WRONG_PASSWORD = "not-the-Right-Pass-tx2"
REASON = "dispute review for ticket CV-88"
# Random hex (ids, version ids) can spell a secret's digits by chance: cut it out first.
_HEX = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
                  r"|[0-9a-f]{16,}")


@dataclass(frozen=True)
class Call:
    """One CLI run and the strings its output must never contain."""

    args: tuple[str, ...]
    proc: subprocess.CompletedProcess[str]
    forbidden: tuple[str, ...]


_CALLS: list[Call] = []


@dataclass
class VaultCli:
    """The CLI wired to one database, bucket, keyring and state dir through CALLVAULT_*."""

    dsn: str
    bucket: str
    root: Path
    env: dict[str, str] = field(repr=False)
    forbidden: tuple[str, ...] = field(repr=False)

    def run(self, *args: str, stdin: str = "", timeout: float = 120,
            **env: str) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([*CLI, *args], input=stdin, capture_output=True, text=True,
                              env={**self.env, **env}, timeout=timeout, check=False)
        _CALLS.append(Call(args, proc, self.forbidden))
        return proc

    def as_user(self, name: str, *args: str, password: str | None = None
                ) -> subprocess.CompletedProcess[str]:
        """A command signed in as `name` with the password on stdin."""
        pw = PASSWORDS[name] if password is None else password
        return self.run(*args, "--user", name, "--password-stdin", stdin=pw + "\n")


def _vault_cli(seaweed: EmbeddedSeaweed, dsn: str, root: Path) -> VaultCli:
    bucket = f"cli-{uuid.uuid4().hex[:20]}"
    access, secret = seaweed.credentials
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLVAULT_")}
    env.update({
        "CALLVAULT_DATABASE_URL": dsn,
        "CALLVAULT_S3_ENDPOINT_URL": seaweed.endpoint_url,
        "CALLVAULT_S3_ACCESS_KEY_ID": access,
        "CALLVAULT_S3_SECRET_ACCESS_KEY": secret,
        "CALLVAULT_S3_BUCKET": bucket,
        "CALLVAULT_KEYRING_FILE": str(root / "keys" / "keyring.json"),
        "CALLVAULT_STATE_DIR": str(root / "state"),
    })
    socket_dir = re.search(r"host=([^&]+)", dsn)
    forbidden = (*PASSWORDS.values(), WRONG_PASSWORD, dsn, access, secret,
                 *([socket_dir[1]] if socket_dir else []))
    return VaultCli(dsn, bucket, root, env, forbidden)


def _lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.strip()]


def _scrub(text: str) -> str:
    return _HEX.sub("<hex>", text)


def _one_error_line(proc: subprocess.CompletedProcess[str], phrase: str) -> None:
    lines = _lines(proc.stderr)
    assert len(lines) == 1 and lines[0].startswith("callvault: error:"), proc.stderr
    assert phrase in lines[0], proc.stderr


def _kek_ids(dsn: str) -> set[str]:
    with connect(dsn) as conn:
        rows = conn.execute("SELECT DISTINCT kek_id FROM objects"
                            " WHERE kek_id IS NOT NULL").fetchall()
    return {r["kek_id"] for r in rows}


# ---------------------------------------------------------------- module set-up


@pytest.fixture(scope="module")
def cli(pg_server: EmbeddedPostgres, seaweed: EmbeddedSeaweed,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[VaultCli]:
    """A fresh database, bucket, keyring and state dir for this module's CLI runs."""
    vc = _vault_cli(seaweed, fresh_database(pg_server), tmp_path_factory.mktemp("vault"))
    yield vc
    if seaweed.is_running():
        drop_bucket(seaweed, vc.bucket)


@pytest.fixture(scope="module")
def accounts(cli: VaultCli) -> dict[str, subprocess.CompletedProcess[str]]:
    """root bootstraps itself as admin, then authorises quinn, carol and alex."""
    done = {"root": cli.run("users", "add", "root", "--role", "admin", "--password-stdin",
                            stdin=PASSWORDS["root"] + "\n")}
    assert done["root"].returncode == 0, done["root"].stderr
    for name in ("quinn", "carol", "alex"):
        done[name] = cli.run("users", "add", name, "--role", ROLES[name], "--password-stdin",
                             "--admin", "root", "--admin-password-stdin",
                             stdin=f"{PASSWORDS[name]}\n{PASSWORDS['root']}\n")
        assert done[name].returncode == 0, done[name].stderr
    return done


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The scripted two-channel call, kept to compare with what comes back."""
    path = tmp_path_factory.mktemp("sample") / "call.wav"
    make_sample(path)
    return path


@dataclass(frozen=True)
class Ingested:
    rid: uuid.UUID
    proc: subprocess.CompletedProcess[str]
    source: Path


@pytest.fixture(scope="module")
def recording(cli: VaultCli, accounts: object, sample: Path) -> Ingested:
    """The sample, copied where a PBX would leave it, ingested once (Whisper runs here)."""
    source = cli.root / "pbx" / "call.wav"
    source.parent.mkdir()
    shutil.copyfile(sample, source)
    proc = cli.run("ingest", str(source), "--call-id", "c1", "--agent", "alex", timeout=600)
    assert proc.returncode == 0, proc.stderr
    return Ingested(uuid.UUID(proc.stdout.split("\t")[0]), proc, source)


# ---------------------------------------------------------------- users


def test_users_bootstrap_then_admin_authorises(
        cli: VaultCli, accounts: dict[str, subprocess.CompletedProcess[str]]) -> None:
    """The first admin needs no --admin, later users do, and `users list` shows no hash."""
    assert [p.stdout.strip() for p in accounts.values()] == [
        "added root (admin)", "added quinn (qa)", "added carol (compliance)",
        "added alex (agent)"]

    again = cli.run("users", "add", "eve", "--role", "admin", "--password-stdin",
                    stdin="eve-Vault-Pass-rr4\n")
    assert again.returncode == 2
    _one_error_line(again, "--admin NAME is required")
    by_qa = cli.run("users", "add", "mallory", "--role", "admin", "--password-stdin",
                    "--admin", "quinn", "--admin-password-stdin",
                    stdin=f"mallory-Vault-Pass-9\n{PASSWORDS['quinn']}\n")
    assert by_qa.returncode == 24, by_qa.stderr

    listed = cli.run("users", "list")
    assert listed.returncode == 0, listed.stderr
    assert sorted(_lines(listed.stdout)) == sorted(
        f"{name}\t{role}\tactive" for name, role in ROLES.items())
    assert "argon2" not in listed.stdout and "$" not in listed.stdout


# ---------------------------------------------------------------- ingest


def test_ingest_stores_and_removes_source(cli: VaultCli, recording: Ingested) -> None:
    """`ingest` prints `<id>\\tstored`, removes the source, and lists three variants with
    no CPNI in the listing; a non-WAV is refused with exit 4 and kept."""
    assert recording.proc.stdout == f"{recording.rid}\tstored\n"
    assert not recording.source.exists()

    bad = cli.root / "pbx" / "notes.wav"
    bad.write_text("caller notes, not audio\n")
    refused = cli.run("ingest", str(bad), "--call-id", "c2")
    assert refused.returncode == 4
    _one_error_line(refused, "not a WAV")
    assert bad.exists()

    listed = cli.run("recordings", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    docs = json.loads(listed.stdout)
    assert [(d["id"], d["call_id"], d["agent"], d["status"]) for d in docs] == [
        (str(recording.rid), "c1", "alex", "stored")]
    assert docs[0]["variants"] == ["raw", "redacted", "transcript"]
    assert docs[0]["redacted_spans"] >= 1
    assert not any(s in _scrub(listed.stdout) for s in SECRETS)


# ---------------------------------------------------------------- get


def test_qa_gets_redacted_audio(cli: VaultCli, recording: Ingested, sample: Path) -> None:
    """QA's redacted copy is a WAV as long as the call (muted, not cut) and not the raw."""
    out = cli.root / "qa" / "redacted.wav"
    proc = cli.as_user("quinn", "recordings", "get", str(recording.rid),
                       "--variant", "redacted", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert sf.info(str(out)).frames == sf.info(str(sample)).frames
    assert out.read_bytes() != sample.read_bytes()


def test_qa_gets_transcript_without_secrets(cli: VaultCli, recording: Ingested) -> None:
    """The transcript QA gets has [LABEL] tokens where CPNI was, and none of its digits."""
    out = cli.root / "qa" / "transcript.json"
    proc = cli.as_user("quinn", "recordings", "get", str(recording.rid),
                       "--variant", "transcript", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    doc = json.loads(text)
    spoken = " ".join(c["text"] for c in doc["channels"])
    assert re.search(r"\[[A-Z][A-Z0-9_]+\]", spoken), spoken
    assert not any(s in _scrub(text) for s in SECRETS)
    assert not re.search(r"\d(?:[\s,.-]?\d){3,}", spoken), spoken


def test_qa_refused_raw_writes_nothing(cli: VaultCli, recording: Ingested) -> None:
    """QA asking for raw audio: exit 24, no file, no temporary file beside it."""
    out = cli.root / "qa-raw" / "raw.wav"
    proc = cli.as_user("quinn", "recordings", "get", str(recording.rid),
                       "--variant", "raw", "--out", str(out))
    assert proc.returncode == 24
    _one_error_line(proc, "role qa may not download raw")
    assert not out.exists()
    assert not out.parent.exists() or list(out.parent.iterdir()) == []


def test_compliance_raw_needs_a_reason(cli: VaultCli, recording: Ingested,
                                       sample: Path) -> None:
    """Compliance gets raw audio only with a reason: then byte for byte the original,
    readable by its owner alone."""
    out = cli.root / "compliance" / "raw.wav"
    get = ("recordings", "get", str(recording.rid), "--variant", "raw", "--out", str(out))
    bare = cli.as_user("carol", *get)
    assert bare.returncode == 24
    _one_error_line(bare, "needs a stated reason")
    assert not out.exists()

    proc = cli.as_user("carol", *get, "--reason", REASON)
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes() == sample.read_bytes()
    assert out.stat().st_mode & 0o777 == 0o600


def test_wrong_password_writes_nothing(cli: VaultCli, recording: Ingested) -> None:
    """A wrong password: exit 24, "sign-in failed", nothing written."""
    out = cli.root / "wrong" / "redacted.wav"
    proc = cli.as_user("quinn", "recordings", "get", str(recording.rid), "--out", str(out),
                       password=WRONG_PASSWORD)
    assert proc.returncode == 24
    _one_error_line(proc, "sign-in failed")
    assert not out.parent.exists()


def test_admin_refused_audio(cli: VaultCli, recording: Ingested) -> None:
    """An admin manages the vault but hears nothing, not even redacted audio."""
    out = cli.root / "admin" / "redacted.wav"
    proc = cli.as_user("root", "recordings", "get", str(recording.rid),
                       "--variant", "redacted", "--out", str(out))
    assert proc.returncode == 24
    _one_error_line(proc, "role admin may not download redacted")
    assert not out.exists()


# ---------------------------------------------------------------- the access log


def test_audit_show_lists_grants_and_refusals(cli: VaultCli, recording: Ingested) -> None:
    """`audit show --recording` lists who, role, action and outcome of a grant and a
    refusal; `--json` gives the same entries as a parseable document."""
    rid = str(recording.rid)
    out = cli.root / "audit-show"
    cli.as_user("quinn", "recordings", "get", rid, "--out", str(out / "r.wav"))
    cli.as_user("quinn", "recordings", "get", rid, "--variant", "raw",
                "--out", str(out / "x.wav"))

    text = cli.run("audit", "show", "--recording", rid)
    assert text.returncode == 0, text.stderr
    rows = [ln.split() for ln in _lines(text.stdout)]
    assert all(r[7] == rid for r in rows)
    seen = {(*r[3:7], r[8]) for r in rows}
    assert ("quinn", "qa", "download", "allowed", "redacted") in seen
    assert ("quinn", "qa", "download", "denied", "raw") in seen
    assert ("callvault-pipeline", "system", "store", "ok", "raw") in seen

    as_json = cli.run("audit", "show", "--recording", rid, "--json")
    assert as_json.returncode == 0, as_json.stderr
    docs = json.loads(as_json.stdout)
    assert [d["seq"] for d in docs] == [int(r[0]) for r in rows]
    denied = [d for d in docs if d["outcome"] == "denied" and d["actor"] == "quinn"]
    assert denied and denied[0]["detail"] == "role qa may not download raw"


def test_audit_show_time_filters(cli: VaultCli, accounts: object) -> None:
    """--since and --until take the UTC times `audit show` prints and filter by them."""
    now = datetime.now(UTC).replace(tzinfo=None)
    stamp = "%Y-%m-%dT%H:%M:%S"
    recent = cli.run("audit", "show", "--since", f"{now - timedelta(days=1):{stamp}}")
    assert recent.returncode == 0, recent.stderr
    assert any(" root " in ln for ln in _lines(recent.stdout))
    for args in (("--since", f"{now + timedelta(days=1):{stamp}}"),
                 ("--until", "2000-01-01")):
        none = cli.run("audit", "show", *args)
        assert none.returncode == 0, none.stderr
        assert none.stdout == ""
    assert cli.run("audit", "show", "--limit", "10000").returncode == 0
    too_many = cli.run("audit", "show", "--limit", "10001")
    assert too_many.returncode == 2 and "10000" in too_many.stderr


def test_audit_verify_detects_an_edited_entry(cli: VaultCli, recording: Ingested) -> None:
    """`audit verify` says intact, then exit 27 naming the entry a superuser edited
    behind the triggers; restored, it verifies again."""
    ok = cli.run("audit", "verify")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("access log intact:")

    with connect(cli.dsn, autocommit=True) as conn:
        last = conn.execute("SELECT max(seq) AS n FROM access_log").fetchone()
        assert last is not None and last["n"] >= 3
        seq = last["n"] // 2
        before = conn.execute("SELECT reason FROM access_log WHERE seq = %s",
                              (seq,)).fetchone()
        assert before is not None
        conn.execute("ALTER TABLE access_log DISABLE TRIGGER ALL")
        try:
            conn.execute("UPDATE access_log SET reason = 'edited' WHERE seq = %s", (seq,))
            broken = cli.run("audit", "verify")
        finally:
            conn.execute("UPDATE access_log SET reason = %s WHERE seq = %s",
                         (before["reason"], seq))
            conn.execute("ALTER TABLE access_log ENABLE TRIGGER ALL")
    assert broken.returncode == 27
    _one_error_line(broken, f"broken at entry {seq}: entry {seq} was altered")
    assert cli.run("audit", "verify").returncode == 0


def test_audit_verify_detects_a_deleted_entry(
        pg_server: EmbeddedPostgres, seaweed: EmbeddedSeaweed, tmp_path: Path) -> None:
    """On a database of its own: a middle entry deleted behind the triggers is exit 27,
    naming the gap."""
    vc = _vault_cli(seaweed, fresh_database(pg_server), tmp_path)
    assert vc.run("users", "add", "root", "--role", "admin", "--password-stdin",
                  stdin=PASSWORDS["root"] + "\n").returncode == 0
    for name in ("quinn", "carol"):
        assert vc.run("users", "add", name, "--role", ROLES[name], "--password-stdin",
                      "--admin", "root", "--admin-password-stdin",
                      stdin=f"{PASSWORDS[name]}\n{PASSWORDS['root']}\n").returncode == 0
    assert vc.run("recordings", "list").returncode == 0
    assert vc.run("recordings", "list").returncode == 0
    ok = vc.run("audit", "verify")
    assert ok.returncode == 0 and ok.stdout.strip() == "access log intact: 5 entries", ok

    with connect(vc.dsn, autocommit=True) as conn:
        conn.execute("ALTER TABLE access_log DISABLE TRIGGER ALL")
        conn.execute("DELETE FROM access_log WHERE seq = 3")
    broken = vc.run("audit", "verify")
    assert broken.returncode == 27
    _one_error_line(broken, "broken at entry 3: entry 3 is missing (the next entry is 4)")


# ---------------------------------------------------------------- keys


def test_keys_rotate_keeps_every_copy_readable(cli: VaultCli, recording: Ingested,
                                               sample: Path) -> None:
    """Only an admin rotates; afterwards every data key is under the new keys, QA gets the
    same redacted bytes, compliance the same raw bytes, and the log still verifies."""
    rid = str(recording.rid)
    before = cli.root / "rotate" / "before.wav"
    assert cli.as_user("quinn", "recordings", "get", rid, "--out",
                       str(before)).returncode == 0
    old_keks = _kek_ids(cli.dsn)

    refused = cli.run("keys", "rotate", "--admin", "quinn", "--password-stdin",
                      stdin=PASSWORDS["quinn"] + "\n")
    assert refused.returncode == 24
    _one_error_line(refused, "role qa may not manage_keys")
    assert _kek_ids(cli.dsn) == old_keks

    proc = cli.run("keys", "rotate", "--admin", "root", "--password-stdin",
                   stdin=PASSWORDS["root"] + "\n")
    assert proc.returncode == 0, proc.stderr
    new_ids = set(re.findall(r"local:(?:raw|redacted|audit|customer):\d+", proc.stdout))
    assert len(new_ids) == 4 and not new_ids & old_keks, proc.stdout
    assert _kek_ids(cli.dsn) <= new_ids and _kek_ids(cli.dsn).isdisjoint(old_keks)

    after = cli.root / "rotate" / "after.wav"
    assert cli.as_user("quinn", "recordings", "get", rid, "--out",
                       str(after)).returncode == 0
    assert after.read_bytes() == before.read_bytes()
    raw = cli.root / "rotate" / "raw.wav"
    assert cli.as_user("carol", "recordings", "get", rid, "--variant", "raw", "--reason",
                       REASON, "--out", str(raw)).returncode == 0
    assert raw.read_bytes() == sample.read_bytes()
    assert cli.run("audit", "verify").returncode == 0


# ---------------------------------------------------------------- hold and purge


def test_hold_blocks_purge_then_purge_shreds(cli: VaultCli, recording: Ingested,
                                             seaweed: EmbeddedSeaweed) -> None:
    """A legal hold refuses the purge (exit 26); released, the purge destroys the keys and
    every stored version, and each variant is then not found (exit 25)."""
    rid = str(recording.rid)
    prefix = f"recordings/{rid}/"
    s3 = raw_client(seaweed)
    try:
        held = s3.list_object_versions(Bucket=cli.bucket, Prefix=prefix)
        assert len(held.get("Versions", [])) == 3

        assert cli.as_user("carol", "recordings", "hold", rid, "--reason",
                           "litigation hold, case LH-7").returncode == 0
        listed = json.loads(cli.run("recordings", "list", "--json").stdout)
        assert listed[0]["legal_hold"] is True
        purge = ("recordings", "purge", rid, "--reason", "erasure request ER-3 from customer")
        refused = cli.as_user("carol", *purge)
        assert refused.returncode == 26
        _one_error_line(refused, "legal hold")

        assert cli.as_user("carol", "recordings", "hold", rid, "--release", "--reason",
                           "litigation LH-7 closed").returncode == 0
        done = cli.as_user("carol", *purge)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(f"purged {rid}: 3 keys destroyed")

        gone = s3.list_object_versions(Bucket=cli.bucket, Prefix=prefix)
        assert gone.get("Versions", []) == [] and gone.get("DeleteMarkers", []) == []
    finally:
        s3.close()

    out = cli.root / "purged" / "x"
    for user, variant, why in (("quinn", "redacted", ()), ("quinn", "transcript", ()),
                               ("carol", "raw", ("--reason", REASON))):
        proc = cli.as_user(user, "recordings", "get", rid, "--variant", variant, *why,
                           "--out", str(out))
        assert proc.returncode == 25, (variant, proc.stderr)
        _one_error_line(proc, f"no stored {variant} object")
        assert not out.exists()
    listed = json.loads(cli.run("recordings", "list", "--json").stdout)
    assert [(d["status"], d["variants"]) for d in listed] == [("purged", [])]


# ---------------------------------------------------------------- failures


def test_postgres_unreachable_is_exit_23(cli: VaultCli, tmp_path: Path) -> None:
    """PostgreSQL not listening: `recordings get` exits 23 with one line, writes nothing."""
    nobody = tmp_path / "no-postgres"
    nobody.mkdir()
    out = tmp_path / "out" / "r.wav"
    proc = cli.run("recordings", "get", str(uuid.uuid4()), "--user", "quinn",
                   "--password-stdin", "--out", str(out), stdin=PASSWORDS["quinn"] + "\n",
                   CALLVAULT_DATABASE_URL=f"postgresql://postgres@/postgres?host={nobody}")
    assert proc.returncode == 23
    _one_error_line(proc, "PostgreSQL unreachable")
    assert not out.parent.exists()


def test_malformed_database_url_shows_no_part_of_it(cli: VaultCli) -> None:
    """A DATABASE_URL the driver cannot parse: one line naming the error's type, no
    traceback, and not the fragment of the password the driver's message quotes."""
    host = re.search(r"host=([^&]+)", cli.dsn)
    assert host is not None
    proc = cli.run("users", "list", CALLVAULT_DATABASE_URL=(
        f"host={host[1]} dbname=postgres password=open sesame-{PASSWORDS['root']}"))
    assert proc.returncode not in (0, 1), proc.stderr
    _one_error_line(proc, "error")
    assert "sesame" not in proc.stderr and "Traceback" not in proc.stderr


def test_no_secret_reaches_any_output(cli: VaultCli, recording: Ingested) -> None:
    """No command of this module printed a password, a DSN or an S3 key, nor any of the
    sample's CPNI digits on stderr; every failure was one line without a traceback."""
    proc = cli.as_user("quinn", "recordings", "get", str(recording.rid), "--out",
                       str(cli.root / "last" / "r.wav"), password=WRONG_PASSWORD)
    assert proc.returncode == 24
    assert any(c.proc.returncode == 0 and c.args[0] == "ingest" for c in _CALLS)
    for call in _CALLS:
        out, err = call.proc.stdout, call.proc.stderr
        leaked = [s for s in call.forbidden if s in out or s in err]
        assert not leaked, (call.args, "printed a password, DSN or S3 key")
        assert not any(s in _scrub(err) for s in SECRETS), (call.args, err)
        assert "Traceback" not in err, call.args
        if call.proc.returncode not in (0, 2):
            assert len(_lines(err)) == 1, (call.args, err)
