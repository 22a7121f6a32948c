"""What every `callvault` command shares: the config option, one-line errors, settings."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from callvault.config import ConfigError, Settings, load_settings

err = Console(stderr=True, highlight=False)

ConfigOption = Annotated[Path | None, typer.Option(
    "--config", help="TOML settings file (also CALLVAULT_CONFIG).", show_default=False)]


def fail(message: str, code: int) -> typer.Exit:
    """Print one error line (never a traceback: it could carry CPNI) and exit `code`."""
    err.print(f"callvault: error: {message}", markup=False, soft_wrap=True)
    return typer.Exit(code)


def settings_from(config: Path | None, **overrides: object) -> Settings:
    try:
        return load_settings(config, **{k: v for k, v in overrides.items() if v is not None})
    except ConfigError as exc:
        raise fail(str(exc), exc.exit_code) from None
