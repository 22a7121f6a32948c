"""The HTTP side of `callvault serve`: the aiohttp application later issues add their
routes to (the agent screen-pop, Twilio webhooks, the QA app), and `/healthz`.

`/healthz` answers 200 when every part `serve` runs is healthy and 503 otherwise, with
one boolean per part and nothing else: no versions, hosts, ids or counts that would help
an attacker.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from storage.audit import AccessLog, AuditEvent
from storage.errors import StorageError

HealthCheck = Callable[[], Awaitable[bool]]
HEALTH: web.AppKey[dict[str, HealthCheck]] = web.AppKey("health", dict)


async def _healthz(request: web.Request) -> web.Response:
    checks = request.app[HEALTH]
    parts = {}
    for name, check in checks.items():
        try:
            parts[name] = bool(await check())
        except Exception:  # a failing check is an unhealthy part, never a 500
            parts[name] = False
    ok = all(parts.values())
    return web.json_response({"status": "ok" if ok else "degraded", "parts": parts},
                             status=200 if ok else 503,
                             headers={"Cache-Control": "no-store"})


def build_app(checks: dict[str, HealthCheck]) -> web.Application:
    """The application with `/healthz` over the given named checks."""
    app = web.Application(client_max_size=1 << 20)
    app[HEALTH] = dict(checks)
    app.router.add_get("/healthz", _healthz)
    return app


async def log_event(log: AccessLog | None, event: AuditEvent, who: str) -> None:
    """Append to the access log off the event loop. A handler that already answered
    must not fail for the log: an outage is reported on `who`'s logger instead (by the
    action's name only)."""
    if log is None:
        return
    try:
        await asyncio.to_thread(log.append, event)
    except StorageError as exc:
        logging.getLogger(who).error("%s could not be logged (%s)", event.action,
                                     type(exc).__name__)


async def start(app: web.Application, host: str, port: int) -> web.AppRunner:
    """Listen on host:port; the caller cleans the returned runner up."""
    runner = web.AppRunner(app, access_log=None)  # request lines can carry ids: no log
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
