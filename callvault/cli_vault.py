"""The vault's commands: ingest, serve, worker, recordings, users, keys, audit.

People are named with `--user` and prove it with their password (typed at a prompt, or
`--password-stdin` for scripts); what they may do is the role policy of
`storage.access`, and every grant and refusal is on the access log before a byte moves.
A refused or failed request writes no file and exits with its error's own code.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import getpass
import json
import os
import re
import sys
import tempfile
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Literal

import typer
from typer.exceptions import TyperException

from callvault import services as svc
from callvault.cli_common import ConfigOption, err, fail, settings_from
from callvault.config import ConfigError
from recordings import pipeline
from redaction.errors import RedactionError
from storage.access import Principal
from storage.audit import AuditEvent
from storage.db import close_pools, connect, pool_connections
from storage.errors import AccessDenied, StorageError
from storage.s3 import ObjectStore
from telephony.commands import Verdict

users_app = typer.Typer(help="Vault users and their roles.", no_args_is_help=True)
keys_app = typer.Typer(help="Key-encryption keys.", no_args_is_help=True)
recordings_app = typer.Typer(help="Stored recordings: list, fetch, hold, purge.",
                             no_args_is_help=True)
audit_app = typer.Typer(help="The tamper-evident access log.", no_args_is_help=True)

UserOption = Annotated[str, typer.Option("--user", help="Who is asking (a vault user).")]
PasswordStdin = Annotated[bool, typer.Option(
    "--password-stdin", help="Read the password from the first line of stdin.")]
ReasonOption = Annotated[str | None, typer.Option(
    "--reason", help="Why (required for raw audio, purges and holds; logged).")]


def _origin() -> str:
    try:
        who = getpass.getuser()
    except (KeyError, OSError):
        who = str(os.getuid())
    return f"cli:{who}@{pipeline.node_name()}"


def _password(stdin: bool, prompt: str = "Password: ") -> str:
    if stdin:
        line = sys.stdin.readline()
        if not line:
            raise fail("no password on stdin", 2)
        return line.rstrip("\r\n")
    if not sys.stdin.isatty():
        raise fail("no terminal to ask the password on; use --password-stdin", 2)
    return getpass.getpass(prompt)


_EXIT_INTERNAL = 70  # as cli.EXIT_INTERNAL (cli imports this module, not the reverse)


@contextlib.contextmanager
def _errors() -> Iterator[None]:
    """Storage and audio errors become one line and their exit code; anything else one
    line naming only its type, because a driver's message can quote a DSN or CPNI."""
    try:
        yield
    except (StorageError, RedactionError, ConfigError) as exc:
        raise fail(str(exc), exc.exit_code) from None
    except (typer.Exit, typer.Abort, TyperException):
        raise
    except Exception as exc:
        raise fail(f"internal error ({type(exc).__name__})", _EXIT_INTERNAL) from None


def _sign_in(db: svc.Database, name: str, stdin: bool) -> Principal:
    """Authenticate, and put a failed sign-in on the access log (the typed name only if
    it is a possible user name: people sometimes type a password into the name)."""
    return _sign_in_with(db, name, _password(stdin))


def _sign_in_with(db: svc.Database, name: str, password: str) -> Principal:
    try:
        principal: Principal = db.users.authenticate(name, password)
    except AccessDenied:
        shown = name if _USER_NAME.match(name) else "(not a user name)"
        db.log.append(AuditEvent(actor=shown, role="unknown", action="sign_in",
                                 outcome="denied", origin=_origin()))
        raise
    return principal


_USER_NAME = re.compile(r"^[a-z][a-z0-9._-]{1,63}$")


def _operator(db: svc.Database, action: str) -> None:
    """Log a metadata command run by the local operator (who reaches the database
    directly, so holds no vault role): the OS user and host are the actor."""
    db.log.append(AuditEvent(actor=_origin(), role="operator", action=action, outcome="ok",
                             origin=_origin()))


def _recording_id(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise fail("recording ids look like 3f2b…-…; see `callvault recordings list`", 2) \
            from None


# ---------------------------------------------------------------- pipeline commands

def ingest(
    files: Annotated[list[Path], typer.Argument(help="WAV recordings to ingest.",
                                                show_default=False)],
    call_id: Annotated[str | None, typer.Option(help="The platform's call id (idempotency).",
                                                show_default=False)] = None,
    agent: Annotated[str | None, typer.Option(help="Agent who took the call.",
                                              show_default=False)] = None,
    keep_source: Annotated[bool, typer.Option(
        help="Keep the source file (default: removed once its encrypted copy is durable)."
    )] = False,
    wait: Annotated[bool, typer.Option(help="Run the pipeline here until each is stored.")
                    ] = True,
    config: ConfigOption = None,
) -> None:
    """Register recordings in the vault, run the pipeline, print each recording id."""
    settings = settings_from(config)
    if call_id is not None and len(files) > 1:
        raise fail("--call-id names one call; give one file", 2)
    with _errors(), svc.services(settings) as s:
        rt = s.runtime()
        ids: list[uuid.UUID] = []
        for f in files:
            reg = pipeline.register(rt, f, call_id=call_id, agent=agent,
                                    keep_source=keep_source)
            if not reg.created:
                err.print(f"{f.name}: call already registered", markup=False)
            ids.append(reg.recording_id)
        if wait:
            asyncio.run(_drain(rt, pipeline.build_app(rt), ids))
        failed = 0
        for rid in ids:
            state = pipeline.recording_state(rt.dsn, rid)
            typer.echo(f"{rid}\t{state}")
            failed += state == "failed"
        if failed:
            raise typer.Exit(9)


async def _drain(rt: pipeline.Runtime, app: object, ids: list[uuid.UUID]) -> None:
    import procrastinate
    assert isinstance(app, procrastinate.App)

    def done() -> bool:
        return all(pipeline.recording_state(rt.dsn, r) in ("stored", "failed", "purged")
                   for r in ids)

    if done():
        return
    async with app.open_async():
        await pipeline.run_worker(rt, app, stop=done, install_signal_handlers=False)


def serve(
    host: Annotated[str | None, typer.Option(help="HTTP address (setting http_host).",
                                             show_default=False)] = None,
    port: Annotated[int | None, typer.Option(help="HTTP port (setting http_port).",
                                             show_default=False)] = None,
    config: ConfigOption = None,
) -> None:
    """Run everything on this machine: the embedded components (unless configured away),
    pipeline workers, the HTTP server (`/healthz`; later the agent, Twilio and QA routes)
    and, with `telephony = "asterisk"`, the IVR on ARI. The access log's chain head is
    written to S3 periodically. Stops cleanly on SIGTERM or Ctrl-C."""
    _work(config, serve=True, host=host, port=port)


def worker(
    concurrency: Annotated[int | None, typer.Option(help="Jobs run at once.",
                                                    show_default=False)] = None,
    config: ConfigOption = None,
) -> None:
    """Run pipeline workers against the configured PostgreSQL and S3 until interrupted."""
    _work(config, serve=False, concurrency=concurrency)


def _work(config: Path | None, *, serve: bool, concurrency: int | None = None,
          host: str | None = None, port: int | None = None) -> None:
    settings = settings_from(config, http_host=host, http_port=port)
    if serve and settings.telephony == "twilio":
        from callvault.twilio_wiring import required
        with _errors():
            required(settings)   # before anything starts
    with _errors(), svc.services(settings) as s:
        pool_connections(s.db.dsn, max_size=max(16, 4 * (concurrency or
                                                       settings.worker_concurrency)))
        rt = s.runtime()
        app = pipeline.build_app(rt)
        last = [0.0]

        def tick() -> None:
            now = asyncio.get_running_loop().time()
            if now - last[0] >= settings.audit_head_interval_seconds:
                last[0] = now
                with contextlib.suppress(StorageError):
                    s.db.log.write_head(s.store.put_bytes)

        async def database_ok() -> bool:
            return await asyncio.to_thread(_database_ok, s.db.dsn)

        async def main() -> None:
            async with app.open_async():
                err.print(f"callvault {'serve' if serve else 'worker'}: node {rt.node}, "
                          f"queues {pipeline.spool_queue(rt.node)} and {pipeline.REDACT_QUEUE}",
                          markup=False)
                runner = None
                desk = None
                twilio = None
                intake_task = None
                if serve:
                    from callvault import app as http
                    from callvault.agent_desk import AgentDesk
                    web_app = http.build_app({"database": database_ok})
                    desk = AgentDesk(s.db.dsn, settings.agent_desks,
                                     session_seconds=settings.agent_session_seconds,
                                     users=s.db.users, log=s.db.log)
                    desk.add_routes(web_app)
                    from callvault import qa_app
                    qa_app.mount(web_app, qa_app.build(settings, s.vault, s.db.users))
                    if settings.telephony == "twilio":
                        from callvault import twilio_wiring
                        from storage.customers import Customers

                        async def pop(call_id: str, agent: str, verdict: Verdict) -> None:
                            if desk is not None:
                                await desk.publish(agent, call_id, verdict)

                        twilio = twilio_wiring.build(
                            settings, s.db.dsn, Customers(s.db.dsn, s.db.keys), s.db.log, rt,
                            web_app, pop)
                        intake_task = asyncio.create_task(twilio.intake.run())
                        err.print(f"Twilio webhooks at {settings.public_url}/twilio/voice",
                                  markup=False)
                    runner = await http.start(web_app, settings.http_host, settings.http_port)
                    err.print(f"HTTP on http://{settings.http_host}:{settings.http_port}/"
                              f" (QA app at /qa/, API at /api/)", markup=False)
                ivr_task = None
                if serve and settings.telephony == "asterisk":
                    from callvault.calls import vault_sink
                    from ivr.driver import IvrDriver, serve_ivr
                    from storage.customers import Customers
                    customers = Customers(s.db.dsn, s.db.keys)
                    drivers: list[IvrDriver] = []

                    def verdict_of(call_id: str) -> Verdict | None:
                        for driver in reversed(drivers):
                            if call_id in driver.verdicts:
                                return driver.verdicts[call_id]
                        return None

                    sink = vault_sink(rt, verdict_of) if settings.record_agent_calls else None

                    async def screen_pop(call_id: str, agent: str, verdict: Verdict) -> None:
                        if desk is not None:
                            await desk.publish(agent, call_id, verdict)

                    ivr_task = asyncio.create_task(serve_ivr(
                        settings, customers, s.db.log, recordings=sink, drivers=drivers,
                        on_agent=screen_pop))
                    err.print(f"IVR on ARI {settings.ari_url} (app {settings.ari_app})",
                              markup=False)
                try:
                    await pipeline.run_worker(
                        rt, app, concurrency=concurrency or settings.worker_concurrency,
                        install_signal_handlers=True, on_tick=tick)
                finally:
                    if intake_task is not None:
                        intake_task.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await intake_task
                    if twilio is not None:
                        await twilio.rest.close()
                    if ivr_task is not None:
                        ivr_task.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await ivr_task
                    if runner is not None:
                        await runner.cleanup()
                    if twilio is not None:
                        twilio.webhooks.close()

        try:
            with contextlib.suppress(KeyboardInterrupt):
                asyncio.run(main())
            with contextlib.suppress(StorageError):
                s.db.log.write_head(s.store.put_bytes)
        finally:
            close_pools()


def _database_ok(dsn: str) -> bool:
    try:
        with connect(dsn, timeout=2) as conn:
            conn.execute("SELECT 1")
    except StorageError:
        return False
    return True


# ---------------------------------------------------------------- recordings

@recordings_app.command("list")
def recordings_list(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document.")] = False,
    limit: Annotated[int, typer.Option(min=1, max=10000)] = 100,
    config: ConfigOption = None,
) -> None:
    """List recordings (ids, status, agent, times, redaction summary; never audio)."""
    settings = settings_from(config)
    with _errors(), svc.database(settings) as db:
        _operator(db, "list")
        with connect(db.dsn) as conn:
            rows = conn.execute(
                "SELECT r.id, r.call_id, r.agent, r.status, r.duration_seconds, r.channels,"
                " r.created_at, r.stored_at, r.legal_hold, r.retain_until, r.error,"
                " r.redaction, array(SELECT o.variant FROM objects o WHERE o.recording_id = r.id"
                " AND o.state = 'stored' ORDER BY o.variant) AS variants"
                " FROM recordings r ORDER BY r.created_at DESC LIMIT %s", (limit,)).fetchall()
    docs = []
    for r in rows:
        red = r["redaction"] or {}
        docs.append({
            "id": str(r["id"]), "call_id": r["call_id"], "agent": r["agent"],
            "status": r["status"], "duration_seconds": r["duration_seconds"],
            "channels": r["channels"], "created_at": _iso(r["created_at"]),
            "stored_at": _iso(r["stored_at"]), "legal_hold": r["legal_hold"],
            "retain_until": _iso(r["retain_until"]), "error": r["error"],
            "variants": list(r["variants"] or []),
            "redacted_spans": len(red.get("spans", [])),
        })
    if as_json:
        typer.echo(json.dumps(docs, indent=2))
        return
    for d in docs:
        typer.echo(f"{d['id']}  {d['status']:<10} {d['created_at'] or '':<26} "
                   f"{(d['duration_seconds'] or 0):7.1f}s  {d['agent'] or '-':<12} "
                   f"{','.join(d['variants']) or '-'}")


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat(timespec="seconds")


@recordings_app.command("get")
def recordings_get(
    recording_id: Annotated[str, typer.Argument(help="Recording id.", show_default=False)],
    variant: Annotated[Literal["redacted", "raw", "transcript"], typer.Option(
        help="Which copy.")] = "redacted",
    user: UserOption = ...,  # type: ignore[assignment]
    out: Annotated[Path, typer.Option(help="Where to write the plaintext.",
                                      show_default=False)] = ...,  # type: ignore[assignment]
    reason: ReasonOption = None,
    password_stdin: PasswordStdin = False,
    config: ConfigOption = None,
) -> None:
    """Decrypt one variant to a file, if your role allows it (checked and logged)."""
    settings = settings_from(config)
    rid = _recording_id(recording_id)
    with _errors(), svc.services(settings) as s:
        principal = _sign_in(s.db, user, password_stdin)
        # the policy and the log first: a refusal leaves nothing behind, not even a folder
        with s.vault.open(principal, rid, variant, reason=reason, origin=_origin()) as plain:
            out.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
            try:
                with os.fdopen(fd, "wb") as sink:
                    for chunk in iter(lambda: plain.read(1 << 20), b""):
                        sink.write(chunk)
                os.replace(tmp, out)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
    err.print(f"wrote {out.name}", markup=False)


@recordings_app.command("purge")
def recordings_purge(
    recording_id: Annotated[str, typer.Argument(help="Recording id.", show_default=False)],
    reason: Annotated[str, typer.Option(help="Why (logged).", show_default=False)],
    user: UserOption,
    password_stdin: PasswordStdin = False,
    config: ConfigOption = None,
) -> None:
    """Crypto-shred a recording: destroy its data keys, delete every stored version.
    Refused (and logged) under retention or a legal hold."""
    settings = settings_from(config)
    rid = _recording_id(recording_id)
    with _errors(), svc.services(settings) as s:
        principal = _sign_in(s.db, user, password_stdin)
        result = s.vault.purge(principal, rid, reason, origin=_origin())
        with contextlib.suppress(StorageError):
            s.db.log.write_head(s.store.put_bytes)
    typer.echo(f"purged {rid}: {result.objects_shredded} keys destroyed, "
               f"{result.versions_deleted} object versions deleted")


@recordings_app.command("hold")
def recordings_hold(
    recording_id: Annotated[str, typer.Argument(help="Recording id.", show_default=False)],
    reason: Annotated[str, typer.Option(help="Why (logged).", show_default=False)],
    user: UserOption,
    release: Annotated[bool, typer.Option(help="Lift the hold instead.")] = False,
    password_stdin: PasswordStdin = False,
    config: ConfigOption = None,
) -> None:
    """Put a legal hold on a recording (or lift it with --release)."""
    settings = settings_from(config)
    rid = _recording_id(recording_id)
    with _errors(), svc.database(settings) as db:
        principal = _sign_in(db, user, password_stdin)
        from storage.vault import Vault
        vault = Vault(db.dsn, None, db.keys, db.log)  # type: ignore[arg-type]
        vault.set_hold(principal, rid, not release, reason, origin=_origin())
    typer.echo(f"{'released' if release else 'held'} {rid}")


# ---------------------------------------------------------------- users and keys

@users_app.command("add")
def users_add(
    name: Annotated[str, typer.Argument(help="User name (lower case).", show_default=False)],
    role: Annotated[Literal["agent", "qa", "compliance", "admin"], typer.Option(
        help="What they may do.", show_default=False)],
    password_stdin: PasswordStdin = False,
    admin: Annotated[str | None, typer.Option(
        help="An admin authorising this (not needed for the very first admin).",
        show_default=False)] = None,
    admin_password_stdin: Annotated[bool, typer.Option(
        help="Read the admin's password from stdin (the line after the new password's, "
             "when --password-stdin is given too).")] = False,
    config: ConfigOption = None,
) -> None:
    """Add a user. The password is read from stdin or asked twice on a terminal."""
    settings = settings_from(config)
    with _errors(), svc.database(settings) as db:
        password = _new_password(password_stdin)
        actor = _authorise_admin(db, admin, admin_password_stdin, bootstrap_role=role)
        db.users.add(name, role, password)
        db.log.append(AuditEvent(actor=actor.name, role=actor.role, action="manage_users",
                                 outcome="ok", origin=_origin(),
                                 detail=f"added user {name} as {role}"))
    typer.echo(f"added {name} ({role})")


def _new_password(stdin: bool) -> str:
    first = _password(stdin, "New password: ")
    if not stdin and _password(False, "Again: ") != first:
        raise fail("the passwords differ", 2)
    return first


def _authorise_admin(db: svc.Database, admin: str | None, stdin: bool,
                     bootstrap_role: str | None = None) -> Principal:
    """The admin behind a user or key change; the first admin bootstraps themselves."""
    if admin is None:
        if bootstrap_role == "admin" and not db.users.list():
            return Principal("bootstrap", "admin")
        raise fail("--admin NAME is required (an existing admin authorises this)", 2)
    principal = _sign_in_with(db, admin, _password(stdin, f"Password for {admin}: "))
    from storage.access import authorize
    try:
        authorize(principal, "manage_users")
    except AccessDenied as exc:
        db.log.append(AuditEvent(actor=principal.name, role=principal.role,
                                 action="manage_users", outcome="denied", origin=_origin(),
                                 detail=str(exc)))
        raise
    return principal


@users_app.command("unlock")
def users_unlock(
    name: Annotated[str, typer.Argument(help="User name.", show_default=False)],
    admin: Annotated[str, typer.Option(help="The admin authorising this.",
                                       show_default=False)],
    admin_password_stdin: Annotated[bool, typer.Option(
        help="Read the admin's password from stdin.")] = False,
    config: ConfigOption = None,
) -> None:
    """End a user's sign-in lockout (after repeated failed QA app sign-ins) early."""
    settings = settings_from(config)
    with _errors(), svc.database(settings) as db:
        actor = _authorise_admin(db, admin, admin_password_stdin)
        db.users.unlock(name)
        db.log.append(AuditEvent(actor=actor.name, role=actor.role, action="manage_users",
                                 outcome="ok", origin=_origin(), detail=f"unlocked user {name}"))
    typer.echo(f"unlocked {name}")


@users_app.command("list")
def users_list(config: ConfigOption = None) -> None:
    """List users and roles (never a password hash)."""
    settings = settings_from(config)
    with _errors(), svc.database(settings) as db:
        _operator(db, "list_users")
        for u in db.users.list():
            typer.echo(f"{u.name}\t{u.role}\t{'disabled' if u.disabled else 'active'}")


@keys_app.command("rotate")
def keys_rotate(
    admin: Annotated[str, typer.Option(help="The admin rotating the keys.",
                                       show_default=False)],
    password_stdin: PasswordStdin = False,
    config: ConfigOption = None,
) -> None:
    """Add new key-encryption keys and re-wrap every data key (audio is not touched)."""
    settings = settings_from(config)
    with _errors(), svc.database(settings) as db:
        principal = _sign_in(db, admin, password_stdin)
        from storage.vault import Vault
        vault = Vault(db.dsn, None, db.keys, db.log)  # type: ignore[arg-type]
        new_ids, count = vault.rotate(principal, origin=_origin())
    typer.echo(f"new keys: {', '.join(new_ids)}; {count} data keys re-wrapped")


# ---------------------------------------------------------------- audit

@audit_app.command("verify")
def audit_verify(config: ConfigOption = None) -> None:
    """Check the whole access-log chain (hashes, MACs, no gaps) and the last chain head
    written to S3; name the first broken entry."""
    settings = settings_from(config)
    with _errors(), svc.database(settings) as db:
        result = db.log.verify()
        head_problem = None
        if result.ok:
            try:
                with svc.object_store(settings) as store:
                    head_problem = _check_heads(db, store)
            except StorageError as exc:
                raise fail(f"the database chain is intact ({result.checked} entries) but "
                           f"its head in S3 could not be checked: {exc}", exc.exit_code
                           ) from None
    if not result.ok:
        raise fail(f"access log broken at entry {result.first_bad_seq}: {result.problem} "
                   f"({result.checked} entries checked)", 27)
    if head_problem:
        raise fail(head_problem, 27)
    typer.echo(f"access log intact: {result.checked} entries")


def _check_heads(db: svc.Database, store: ObjectStore) -> str | None:
    from storage.errors import AuditChainBroken, NotFound
    try:
        key = store.latest_key("audit/heads/")
    except NotFound:  # no bucket yet: nothing was ever stored, no head was ever written
        key = None
    if key is None:
        err.print("no chain head in S3 yet to compare with", markup=False)
        return None
    try:
        db.log.check_against_head(store.get_bytes(key))
    except AuditChainBroken as exc:
        return f"access log shorter than its chain head in S3: {exc}"
    return None


@audit_app.command("show")
def audit_show(
    user: Annotated[str | None, typer.Option(help="Only this user.", show_default=False)
                    ] = None,
    recording: Annotated[str | None, typer.Option(help="Only this recording id.",
                                                  show_default=False)] = None,
    since: Annotated[datetime | None, typer.Option(
        help="From (ISO time in UTC, as shown here).", show_default=False)] = None,
    until: Annotated[datetime | None, typer.Option(
        help="Until, exclusive (ISO time in UTC).", show_default=False)] = None,
    limit: Annotated[int, typer.Option(min=1, max=10000)] = 100,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    config: ConfigOption = None,
) -> None:
    """List access-log entries: who, role, what, when, why, outcome."""
    settings = settings_from(config)
    rid = _recording_id(recording) if recording else None
    with _errors(), svc.database(settings) as db:
        _operator(db, "audit")
        rows = db.log.show(user=user, recording_id=rid, since=_utc(since), until=_utc(until),
                           limit=limit)
    if as_json:
        typer.echo(json.dumps([dataclasses.asdict(r) for r in rows], indent=2, default=str))
        return
    for r in rows:
        typer.echo(f"{r.seq:>6} {r.at:%Y-%m-%d %H:%M:%S} {r.actor:<20} {r.role:<10} "
                   f"{r.action:<12} {r.outcome:<8} {r.recording_id or '-'} "
                   f"{r.variant or '-'} {r.reason or ''}")


def _utc(value: datetime | None) -> datetime | None:
    """The command line's times carry no offset; they are UTC, like the times shown."""
    return value if value is None or value.tzinfo else value.replace(tzinfo=UTC)


def register(app: typer.Typer) -> None:
    """Add the vault's commands to the main CLI."""
    app.command()(ingest)
    app.command()(serve)
    app.command()(worker)
    app.add_typer(recordings_app, name="recordings")
    app.add_typer(users_app, name="users")
    app.add_typer(keys_app, name="keys")
    app.add_typer(audit_app, name="audit")

