"""`callvault asterisk create|up|down|restart|status`: the Asterisk sandbox; and
`callvault asterisk render`: the same configuration for a production Asterisk.

The chroot is built once into `asterisk_cache_dir` (root and debootstrap needed, from the
Debian mirror of this machine's apt sources); each state dir runs its own instance in it.
`render` only writes files (0600, ari.conf holds the password) for an Asterisk elsewhere,
such as the `asterisk` service of docker-compose.yml.

Exit codes: 0 done (status: running and ARI answering); 3 status: not running (as LSB's
status); 4 status: running but ARI does not answer; 30 the chroot cannot be built or is
missing; 31 Asterisk did not start (ports taken, ARI silent); 12 bad configuration.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Annotated

import typer

from callvault.cli_common import ConfigOption, err, fail, settings_from
from callvault.config import Settings
from telephony.ari.sandbox import (
    AsteriskSandbox,
    Deployment,
    SandboxError,
    SandboxStatus,
    render_configs,
)

asterisk_app = typer.Typer(
    help="The Asterisk sandbox: Asterisk 22 from Debian unstable in a chroot, on loopback.",
    no_args_is_help=True)

TimeoutOption = Annotated[float, typer.Option(
    "--timeout", min=1, max=600, help="Seconds to wait for ARI to answer.")]
EXIT_NOT_RUNNING = 3
EXIT_ARI_SILENT = 4


def _sandbox(settings: Settings) -> AsteriskSandbox:
    try:
        return AsteriskSandbox(settings.asterisk_root, settings)
    except SandboxError as exc:
        raise fail(str(exc), exc.exit_code) from None


def _build(box: AsteriskSandbox) -> None:
    if not box.root.exists():
        err.print(f"building the Asterisk chroot in {box.root} (about a minute, once)",
                  markup=False, soft_wrap=True)
    try:
        box.ensure_created()
    except SandboxError as exc:
        raise fail(str(exc), exc.exit_code) from None


def _describe(box: AsteriskSandbox, st: SandboxStatus) -> None:
    typer.echo(f"Asterisk {st.version or '?'} running (pid {st.pid})")
    typer.echo(f"ARI      {st.ari_url}/ari  user {box.settings.ari_user}, application "
               f"{box.settings.ari_app}")
    if box.settings.ari_password is None:
        typer.echo(f"password {box.state / 'ari-password'} (generated, 0600)")
    typer.echo(f"SIP      udp 127.0.0.1:{box.settings.sip_port}")
    typer.echo(f"log      {st.log}")


@asterisk_app.command("create")
def create(config: ConfigOption = None) -> None:
    """Build the chroot with Asterisk once (nothing to do if it exists)."""
    box = _sandbox(settings_from(config))
    _build(box)
    typer.echo(f"Asterisk chroot ready: {box.root}")


@asterisk_app.command("up")
def up(timeout: TimeoutOption = 60.0, config: ConfigOption = None) -> None:
    """Create if needed, write the configuration, start Asterisk, wait for ARI."""
    box = _sandbox(settings_from(config))
    _build(box)
    try:
        if box.pid() is None:
            box.configure()
        else:
            err.print("already running; configuration not rewritten (use restart)",
                      markup=False)
        st = box.start(timeout)
    except SandboxError as exc:
        raise fail(str(exc), exc.exit_code) from None
    _describe(box, st)


@asterisk_app.command("restart")
def restart(timeout: TimeoutOption = 60.0, config: ConfigOption = None) -> None:
    """Stop Asterisk, rewrite the configuration from the settings, start again."""
    box = _sandbox(settings_from(config))
    try:
        box.stop()
        box.configure()
        st = box.start(timeout)
    except SandboxError as exc:
        raise fail(str(exc), exc.exit_code) from None
    _describe(box, st)


@asterisk_app.command("down")
def down(config: ConfigOption = None) -> None:
    """Stop this state dir's Asterisk (nothing to do if it is not running)."""
    box = _sandbox(settings_from(config))
    typer.echo("stopped" if box.stop() else "not running")


@asterisk_app.command("status")
def status(as_json: Annotated[bool, typer.Option("--json")] = False,
           config: ConfigOption = None) -> None:
    """Say whether Asterisk runs, its version and whether ARI answers (exit 0, 3 or 4)."""
    box = _sandbox(settings_from(config))
    st = box.status()
    if as_json:
        typer.echo(json.dumps({"running": st.running, "pid": st.pid, "version": st.version,
                               "ari_reachable": st.ari_reachable, "ari_url": st.ari_url,
                               "log": str(st.log), "root": str(box.root)}))
    elif st.running:
        _describe(box, st)
        if not st.ari_reachable:
            typer.echo("ARI does not answer")
    else:
        typer.echo("not running")
    if not st.running:
        raise typer.Exit(EXIT_NOT_RUNNING)
    if not st.ari_reachable:
        raise typer.Exit(EXIT_ARI_SILENT)


_TRUNK = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::([0-9]{1,5}))?$")
_RTP = re.compile(r"^([0-9]{4,5})-([0-9]{4,5})$")


def _agent_secrets(source: Path | None) -> dict[str, str]:
    """`endpoint=password` pairs separated by white space, from a file or `-` (stdin)."""
    if source is None:
        return {}
    try:
        text = sys.stdin.read() if str(source) == "-" else source.read_text()
    except OSError:
        raise fail("--agent-secrets: cannot read the file", 2) from None
    pairs: dict[str, str] = {}
    for item in text.split():
        name, sep, password = item.partition("=")
        if not sep or not name or name in pairs:
            raise fail("--agent-secrets: expected unique endpoint=password pairs "
                       "(values not shown)", 2)
        pairs[name] = password
    return pairs


@asterisk_app.command("render")
def render(
    out: Annotated[Path, typer.Option(help="Folder to write the configuration into.",
                                      file_okay=False, show_default=False)],
    bind: Annotated[str, typer.Option(
        help="Address the SIP transport (and ARI/HTTP, unless --ari-bind) listens on.")
    ] = "0.0.0.0",  # noqa: S104
    ari_bind: Annotated[str | None, typer.Option(
        help="Address ARI/HTTP listens on, when it should not be where SIP is public "
             "(ARI is basic auth over plain HTTP: keep it on a private network).",
        show_default=False)] = None,
    callers_from: Annotated[list[str] | None, typer.Option(
        "--callers-from", help="Networks whose calls are callers (the carrier or SBC), comma-"
                               "separated or repeated.", show_default=False)] = None,
    trunk: Annotated[str, typer.Option(
        help="HOST[:PORT] of the carrier that call-backs are sent to.",
        show_default=False)] = "",
    agent_secrets: Annotated[Path | None, typer.Option(
        help="File of endpoint=password pairs, one per agent endpoint ('-': stdin).",
        show_default=False)] = None,
    external_address: Annotated[str | None, typer.Option(
        help="Public address put into SIP and SDP (Asterisk behind NAT or in a container).",
        show_default=False)] = None,
    rtp_ports: Annotated[str, typer.Option(help="RTP port range START-END.")] = "10000-20000",
    instance: Annotated[str, typer.Option(
        help="Folder Asterisk keeps its files under (etc, spool, run, log, db).")]
        = "/srv/callvault",
    config: ConfigOption = None,
) -> None:
    """Write deploy/asterisk/ for a production Asterisk: bound to --bind, ARI user and
    password from the settings, callers from the carrier, agents registering."""
    settings = settings_from(config)
    trunk_match = _TRUNK.match(trunk)
    rtp = _RTP.match(rtp_ports)
    if not trunk_match or not rtp:
        raise fail("--trunk HOST[:PORT] and --rtp-ports START-END are required", 2)
    if not instance.startswith("/") or not re.fullmatch(r"[A-Za-z0-9_./-]+", instance):
        raise fail("--instance: an absolute path", 2)
    deployment = Deployment(
        bind=bind, ari_bind=ari_bind,
        callers_from=tuple(n.strip() for item in callers_from or () for n in item.split(",")
                           if n.strip()),
        trunk_host=trunk_match.group(1), trunk_port=int(trunk_match.group(2) or 5060),
        agent_passwords=_agent_secrets(agent_secrets), external_address=external_address,
        rtp_ports=(int(rtp.group(1)), int(rtp.group(2))))
    try:
        files = render_configs(settings, instance.rstrip("/") or "/", deployment=deployment)
    except SandboxError as exc:
        raise fail(str(exc), exc.exit_code) from None
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    for name, text in files.items():
        tmp = out / f".{name}.tmp"
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        tmp.replace(out / name)
    typer.echo(f"wrote {len(files)} files to {out} (Asterisk -C {instance}/etc/asterisk.conf)")


def register(app: typer.Typer) -> None:
    """Add the sandbox's commands to the main CLI."""
    app.add_typer(asterisk_app, name="asterisk")
