"""The ARI events WebSocket: one long-lived subscription of our Stasis application.

Owns the connection to `/ari/events?app=APP&subscribeAll=false` (credentials in the
Authorization header, never `api_key` in the URL), and keeping it: when it cannot connect,
is refused, or is dropped (Asterisk restarted), it tries again after a capped exponential
backoff with full jitter, forever, until `close()`. It yields the raw ARI events (dicts)
in arrival order, plus a STREAM_CONNECTED marker after each (re)subscription; `connected`
and `status` are what a health check reads. Turning events into provider-neutral ones is
the adapter's job.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import aiohttp
from pydantic import SecretStr

from telephony.ari.client import basic_auth_header, credentials_refused

log = logging.getLogger(__name__)

_CLOSED = object()

STREAM_CONNECTED = "callvault.StreamConnected"
"""The type of the one event of our own making, queued each time the socket is
subscribed (`{"type": STREAM_CONNECTED, "connection": n}`): events may have been missed
before it, so the adapter checks the calls it knows about."""


@dataclass(frozen=True)
class StreamStatus:
    """What a health check reports: `healthy` while subscribed; `state` and `last_error`
    are short texts without secrets; `attempts` counts failed connection attempts since the
    last success; `connections` counts successful ones (so >1 means it reconnected)."""

    healthy: bool
    state: str
    attempts: int
    connections: int
    last_error: str | None


class AriEventStream:
    """Reconnecting subscription to one application's events. `start()` it, iterate it
    (`async for event in stream`), and `close()` it."""

    def __init__(self, base_url: str, user: str, password: SecretStr, app: str, *,
                 backoff_initial: float = 0.5, backoff_max: float = 30.0,
                 heartbeat: float = 10.0, connect_timeout: float = 5.0,
                 rng: Callable[[], float] = random.random,
                 on_lost: Callable[[], None] | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.user = user
        self.app = app
        self._auth = basic_auth_header(user, password)
        self._ws_url = (self.base_url.replace("http", "ws", 1) + "/ari/events?"
                        + urlencode({"app": app, "subscribeAll": "false"}))
        self._backoff = (backoff_initial, backoff_max)
        self._heartbeat = heartbeat
        self._connect_timeout = connect_timeout
        self._rng = rng
        self.on_lost = on_lost  # called when a subscription that was up goes down
        self._queue: asyncio.Queue[dict[str, Any] | object] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.connected = asyncio.Event()
        self._state = "not started"
        self._attempts = 0
        self._connections = 0
        self._last_error: str | None = None

    def __repr__(self) -> str:
        return f"AriEventStream({self.base_url!r}, app={self.app!r}, state={self._state!r})"

    @property
    def status(self) -> StreamStatus:
        return StreamStatus(healthy=self.connected.is_set(), state=self._state,
                            attempts=self._attempts, connections=self._connections,
                            last_error=self._last_error)

    def start(self) -> None:
        """Begin connecting in the background (idempotent)."""
        if self._task is None:
            self._closing = False
            self._task = asyncio.create_task(self._run(), name=f"ari-events-{self.app}")

    async def close(self) -> None:
        """Stop for good: the connection is closed and iteration ends."""
        self._closing = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.connected.clear()
        self._state = "closed"
        self._queue.put_nowait(_CLOSED)

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self._events()

    async def _events(self) -> AsyncIterator[dict[str, Any]]:
        while True:
            item = await self._queue.get()
            if item is _CLOSED:
                self._queue.put_nowait(_CLOSED)  # every other reader ends as well
                return
            assert isinstance(item, dict)
            yield item

    # --- the connection loop ------------------------------------------------------------
    def _delay(self) -> float:
        """Full jitter over a capped exponential: uniform in [0, min(cap, base * 2^n)],
        with a floor of a tenth of the base so a refused peer is never hammered."""
        base, cap = self._backoff
        ceiling = min(cap, base * 2.0 ** min(self._attempts - 1, 30))
        return max(base / 10, ceiling * self._rng())

    async def _run(self) -> None:
        timeout = aiohttp.ClientWSTimeout(ws_close=5.0)
        http_timeout = aiohttp.ClientTimeout(total=None, sock_connect=self._connect_timeout)
        async with aiohttp.ClientSession(headers={"Authorization": self._auth},
                                         timeout=http_timeout) as http:
            while not self._closing:
                self._state = "connecting"
                try:
                    async with http.ws_connect(self._ws_url, heartbeat=self._heartbeat,
                                               timeout=timeout, autoping=True) as ws:
                        self._on_connected()
                        reason = await self._pump(ws)
                    self._on_lost(f"connection lost ({reason})")
                except aiohttp.WSServerHandshakeError as exc:
                    if exc.status in (401, 403):
                        err = credentials_refused(self.base_url, self.user, exc.status)
                        self._on_lost(str(err))
                    else:
                        self._on_lost(f"events handshake refused (HTTP {exc.status})")
                except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                    self._on_lost(f"cannot reach {self.base_url} ({type(exc).__name__})")
                self._attempts += 1
                delay = self._delay()
                self._state = f"retrying in {delay:.1f} s: {self._last_error}"
                log.warning("ARI events: %s; retrying in %.1f s (attempt %d)",
                            self._last_error, delay, self._attempts)
                await asyncio.sleep(delay)

    def _on_connected(self) -> None:
        self._attempts = 0
        self._connections += 1
        self._last_error = None
        self._state = "connected"
        self.connected.set()
        self._queue.put_nowait({"type": STREAM_CONNECTED, "connection": self._connections})
        log.info("ARI events: subscribed to application %s (connection %d)", self.app,
                 self._connections)

    def _on_lost(self, why: str) -> None:
        was_up = self.connected.is_set()
        self.connected.clear()
        self._last_error = why
        if was_up and self.on_lost is not None:
            self.on_lost()

    async def _pump(self, ws: aiohttp.ClientWebSocketResponse) -> str:
        """Queue every event until the socket ends; the reason it ended."""
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                try:
                    event = json.loads(msg.data)
                except ValueError:
                    log.warning("ARI events: a message that is not JSON was ignored")
                    continue
                if isinstance(event, dict):
                    self._queue.put_nowait(event)
            elif msg.type == aiohttp.WSMsgType.ERROR:
                return f"error {type(ws.exception()).__name__}"
        return f"closed, code {ws.close_code}"
