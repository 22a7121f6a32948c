"""Helpers for pipeline tests: a sample call, a runtime over a test vault, and a worker
running in a background thread with its own event loop."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from callvault import wiring
from callvault.config import Settings
from recordings import pipeline
from storage.db import connect
from storage.vault import Vault


def runtime(vault: Vault, settings: Settings, spool: Path, **kw: object) -> pipeline.Runtime:
    return pipeline.Runtime(
        dsn=vault.dsn, vault=vault, spool_dir=spool,
        redact_config=wiring.redact_config(settings),
        transcriber=lambda: wiring.transcriber(settings), **kw)  # type: ignore[arg-type]


class BackgroundWorker:
    """`pipeline.run_worker` in a thread until `stop()`."""

    def __init__(self, rt: pipeline.Runtime) -> None:
        self.rt = rt
        self._stop = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        async def main() -> None:
            app = pipeline.build_app(self.rt)
            async with app.open_async():
                await pipeline.run_worker(self.rt, app, stop=self._stop.is_set,
                                          install_signal_handlers=False)
        try:
            asyncio.run(main())
        except BaseException as exc:  # surfaced to the test
            self.error = exc

    def __enter__(self) -> BackgroundWorker:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def status(dsn: str, rid: uuid.UUID) -> str | None:
    return pipeline.recording_state(dsn, rid)


def jobs(dsn: str, rid: uuid.UUID) -> list[dict[str, object]]:
    with connect(dsn) as conn:
        return [dict(r) for r in conn.execute(
            "SELECT id, task_name, status, attempts FROM procrastinate_jobs"
            " WHERE args->>'recording_id' = %s ORDER BY id", (str(rid),))]
