"""`callvault asterisk create|up|down|restart|status`: the Asterisk sandbox.

The chroot is built once into `asterisk_cache_dir` (root and debootstrap needed, from the
Debian mirror of this machine's apt sources); each state dir runs its own instance in it.

Exit codes: 0 done (status: running and ARI answering); 3 status: not running (as LSB's
status); 4 status: running but ARI does not answer; 30 the chroot cannot be built or is
missing; 31 Asterisk did not start (ports taken, ARI silent); 12 bad configuration.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from callvault.cli_common import ConfigOption, err, fail, settings_from
from callvault.config import Settings
from telephony.ari.sandbox import AsteriskSandbox, SandboxError, SandboxStatus

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


def register(app: typer.Typer) -> None:
    """Add the sandbox's commands to the main CLI."""
    app.add_typer(asterisk_app, name="asterisk")
