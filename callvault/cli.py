"""The `callvault` command line: wiring settings to the packages, and errors to exit codes.

Every command prints a one-line error and exits with the error's own code on bad input;
no traceback reaches the terminal, because a traceback can carry the very values callvault
exists to hide.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from callvault import cli_asterisk, cli_customers, cli_vault, wiring
from callvault.cli_common import ConfigOption, err, fail, settings_from
from redaction import report
from redaction.errors import InputMissing, RedactionError, VerificationFailed
from storage.errors import StorageError

app = typer.Typer(
    name="callvault",
    help="CPNI-compliant call recording: authenticate callers, record, redact, vault.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
_err = err
_fail = fail
_settings = settings_from
EXIT_INTERNAL = 70


def _expand(inputs: list[Path]) -> list[Path]:
    files: list[Path] = []
    for item in inputs:
        if item.is_dir():
            found = sorted(p for p in item.rglob("*") if p.suffix.lower() == ".wav"
                           and p.is_file())
            if not found:
                raise InputMissing(f"{item.name}: directory holds no .wav files")
            files.extend(found)
        else:
            files.append(item)
    return files


def _unique(name: str, used: set[str]) -> str:
    """`name`, or `name` with a counter if an earlier file of the batch already took it."""
    stem, n, candidate = name.removesuffix(".redacted.wav"), 1, name
    while candidate in used:
        n += 1
        candidate = f"{stem}-{n}.redacted.wav"
    used.add(candidate)
    return candidate


@contextmanager
def _progress(enabled: bool) -> Iterator[Progress | None]:
    if not enabled:
        yield None
        return
    bar = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn(
        "{task.percentage:>3.0f}%"), TimeRemainingColumn(), console=_err, transient=True)
    with bar:
        yield bar


@app.command()
def redact(
    inputs: Annotated[list[Path], typer.Argument(
        help="WAV files or directories of them (8/16 kHz, PCM16, µ-law or A-law, "
             "mono or stereo).", show_default=False)],
    out: Annotated[Path, typer.Option(
        "--out", "-o", help="Redacted WAV (one input) or output directory (several).",
        show_default=False)],
    report_path: Annotated[Path | None, typer.Option(
        "--report", "-r", help="JSON report (one input) or report directory (several); "
        "default: beside each output as NAME.report.json.", show_default=False)] = None,
    mode: Annotated[str | None, typer.Option(
        help="Replace sensitive audio with 'silence' or a 'tone'.", show_default=False)] = None,
    verify_scope: Annotated[str | None, typer.Option(
        help="Re-check 'windows' around each redaction or the whole 'file'.",
        show_default=False)] = None,
    model: Annotated[str | None, typer.Option(
        help="Whisper model: tiny.en, base, or a CTranslate2 directory.",
        show_default=False)] = None,
    config: ConfigOption = None,
) -> None:
    """Mute CPNI, secrets and keypad tones in recordings, then prove it by listening again.

    Exit codes: 3 missing input, 4 not audio, 5 truncated or damaged, 6 empty,
    7 unsupported format, 8 too long, 9 still sensitive after redaction, 10 cannot write,
    11 model unavailable, 12 bad configuration."""
    settings = _settings(config, redact_mode=mode, verify_scope=verify_scope,
                         whisper_model=model)
    try:
        files = _expand(inputs)
    except RedactionError as exc:
        raise _fail(str(exc), exc.exit_code) from None
    batch = len(files) > 1 or any(p.is_dir() for p in inputs)
    if batch and out.exists() and not out.is_dir():
        raise _fail(f"{out.name}: with several inputs --out must be a directory", 2)
    cfg = wiring.redact_config(settings)
    try:
        transcriber = wiring.transcriber(settings)
    except RedactionError as exc:
        raise _fail(str(exc), exc.exit_code) from None
    worst = 0
    with _progress(sys.stderr.isatty()) as bar:
        overall = bar.add_task("files", total=len(files)) if bar and batch else None
        used: set[str] = set()
        for src in files:
            dst = out / _unique(f"{src.stem}.redacted.wav", used) if batch else out
            if dst.resolve() == src.resolve():
                _err.print(f"callvault: error: {src.name}: --out would overwrite the input",
                           markup=False, soft_wrap=True)
                worst = worst or 2
                continue
            rep = ((report_path / f"{src.stem}.report.json") if batch and report_path
                   else report_path or dst.with_name(f"{dst.stem}.report.json"))
            task = bar.add_task(src.name[:40], total=1.0) if bar else None

            def tick(fraction: float, task: object = task) -> None:
                if bar is not None and task is not None:
                    bar.update(task, completed=fraction)  # type: ignore[arg-type]

            code = _redact_one(src, dst, rep, transcriber, cfg, tick)
            worst = worst or code
            if bar is not None and task is not None:
                bar.remove_task(task)
            if bar is not None and overall is not None:
                bar.advance(overall)
            if code == 0:
                _err.print(f"{src.name}: clean -> {dst} (report {rep})", markup=False,
                           soft_wrap=True)
    raise typer.Exit(worst)


def _redact_one(src: Path, dst: Path, rep: Path, transcriber: wiring.Transcriber,
                cfg: wiring.RedactConfig, tick: wiring.ProgressFn) -> int:
    """Redact one file; return its exit code. Failures write a 'failed' report."""
    spec = transcriber.spec
    try:
        outcome = wiring.redact_file(src, dst, transcriber, cfg, tick)
        report.write(rep, report.build(src=src, out=dst, outcome=outcome, model=spec, cfg=cfg,
                                       status="clean"))
        return 0
    except RedactionError as exc:
        _err.print(f"callvault: error: {exc}", markup=False, soft_wrap=True)
        verification = exc.verification if isinstance(exc, VerificationFailed) else None
        with suppress(RedactionError):
            report.write(rep, report.build(
                src=src, out=None, outcome=None, model=spec, cfg=cfg, status="failed",
                error=str(exc), verification=verification))  # type: ignore[arg-type]
        return exc.exit_code
    except Exception as exc:  # a traceback could carry CPNI: name the type, nothing more
        _err.print(f"callvault: internal error ({type(exc).__name__}) on {src.name}",
                   markup=False, soft_wrap=True)
        return EXIT_INTERNAL


@app.command("config")
def show_config(config: ConfigOption = None) -> None:
    """Print the effective settings (secrets masked) as TOML-like lines."""
    settings = _settings(config)
    for name, value in settings.model_dump(mode="json").items():
        typer.echo(f"{name} = {value!r}")


@app.command()
def demo(
    workdir: Annotated[Path | None, typer.Option(
        help="Where to write the sample call and results (default: STATE_DIR/demo).",
        show_default=False)] = None,
    vault: Annotated[bool, typer.Option(
        help="Then ingest the call into the vault and show QA and compliance access.")
    ] = True,
    call: Annotated[bool, typer.Option(
        help="Then place a phone call through the Asterisk sandbox: IVR, PIN, agent, "
             "screen-pop, recording into the vault.")] = True,
    config: ConfigOption = None,
) -> None:
    """Synthesize a sample call with espeak-ng, redact it, run it through the vault, then
    place a real SIPp call through the Asterisk sandbox and follow its recording."""
    from callvault import demo as demo_mod
    from callvault import demo_call
    from telephony.ari.sandbox import SandboxError
    from telephony.errors import TelephonyError

    settings = _settings(config)
    where = workdir or settings.state_dir / "demo"
    try:
        code = demo_mod.run(settings, where, _err)
        if code == 0 and vault:
            code = demo_mod.run_vault(settings, where, _err)
        if code == 0 and call:
            code = demo_call.run_call(settings, where, _err)
    except (RedactionError, StorageError, SandboxError, TelephonyError) as exc:
        raise _fail(str(exc), exc.exit_code) from None
    raise typer.Exit(code)


cli_vault.register(app)
cli_asterisk.register(app)
cli_customers.register(app)


def main() -> None:
    """Console-script entry point."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no model hub, ever
    app()
