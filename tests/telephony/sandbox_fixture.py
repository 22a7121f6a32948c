"""The Asterisk sandbox for tests: settings on free loopback ports, and a module-scoped
running sandbox (the chroot is built once per machine and cached)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from callvault.config import Settings, load_settings
from telephony.ari.sandbox import AsteriskSandbox


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def sandbox_settings(state: Path, **extra: object) -> Settings:
    """Settings for a sandbox of its own: ARI and SIP on free loopback ports."""
    return load_settings(state_dir=state, ari_url=f"http://127.0.0.1:{free_port()}",
                         sip_port=free_port(socket.SOCK_DGRAM), **extra)


def start_sandbox(state: Path) -> AsteriskSandbox:
    """Build (once, cached), configure and start a sandbox whose state dir is `state`."""
    settings = sandbox_settings(state)
    box = AsteriskSandbox(settings.asterisk_root, settings)
    box.ensure_created()  # about a minute the first time on a machine, then cached
    box.configure()
    box.start(timeout=60)
    return box


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AsteriskSandbox]:
    """A running sandbox for one test module."""
    box = start_sandbox(tmp_path_factory.mktemp("asterisk") / "state")
    yield box
    box.stop()
