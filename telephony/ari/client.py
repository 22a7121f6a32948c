"""The ARI REST client: one aiohttp session with basic auth, timeouts, and error translation.

Owns every HTTP request callvault makes to Asterisk's REST interface (`/ari/...`) and the
boundary where aiohttp's exceptions and ARI's HTTP statuses become the `telephony.errors`
family: nobody can connect or it times out → ProviderUnavailable; 401/403 →
ProviderRejected("ARI credentials refused ..."); 404 on a channel → CallGone; other
refusals → ProviderRejected. Messages name the operation, never a URL with provider ids,
the user's password or the Authorization header; the client's repr shows neither.

Operations take ARI ids (channel, playback, recording): translating them to and from our
call ids is the adapter's job (`telephony.ari.adapter`).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
from pydantic import SecretStr

from telephony.errors import CallGone, ProviderRejected, ProviderUnavailable

log = logging.getLogger(__name__)

Params = Mapping[str, str | int | Sequence[str]]


def basic_auth_header(user: str, password: SecretStr) -> str:
    """The `Authorization` header value for ARI's basic auth (a secret: never log it)."""
    raw = f"{user}:{password.get_secret_value()}".encode()
    return "Basic " + base64.b64encode(raw).decode()


def credentials_refused(base_url: str, user: str, status: int) -> ProviderRejected:
    """The one error for refused credentials, shared by REST and the events stream."""
    return ProviderRejected(f"ARI credentials refused by {base_url} (HTTP {status}) for user "
                            f"{user!r}; check ari_user and ari_password (value not shown)")


class AriClient:
    """REST calls to one Asterisk's ARI. Use as `async with AriClient(...) as ari:` or call
    `close()`: the aiohttp session is made on first use and must be closed."""

    def __init__(self, base_url: str, user: str, password: SecretStr, *,
                 timeout: float = 5.0, connect_timeout: float = 3.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.user = user
        self._auth = basic_auth_header(user, password)
        self._timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=connect_timeout)
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"AriClient({self.base_url!r}, user={self.user!r})"

    async def __aenter__(self) -> AriClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                headers={"Authorization": self._auth}, timeout=self._timeout,
                raise_for_status=False)
        return self._session

    # --- the boundary -------------------------------------------------------------------
    async def request(self, method: str, path: str, op: str, *, params: Params | None = None,
                      json_body: dict[str, Any] | None = None,
                      gone_on: tuple[int, ...] = ()) -> tuple[int, bytes]:
        """One request to `/ari/{path}`; (status, body) for 2xx, else a telephony error.
        `op` names the operation in messages ("answer", "play", ...): paths hold provider
        ids, so a message never quotes one. A status in `gone_on` means the call ended.
        `json_body` parameters travel as a JSON object (ARI reads operation parameters from
        the body too): used for values that must not sit in a URL, where Asterisk's and
        proxies' request logs would keep them."""
        url = f"{self.base_url}/ari/{path.lstrip('/')}"
        query = _query(params or {})
        try:
            async with self._http().request(method, url, params=query, json=json_body) as resp:
                body = await resp.read()
                status = resp.status
        except TimeoutError:
            raise ProviderUnavailable(f"ARI {op}: no answer from {self.base_url} within "
                                      f"{self._timeout.total:.0f} s") from None
        except aiohttp.ClientError as exc:
            raise ProviderUnavailable(f"ARI {op}: cannot reach {self.base_url} "
                                      f"({type(exc).__name__})") from None
        if 200 <= status < 300:
            return status, body
        if status in (401, 403):
            raise credentials_refused(self.base_url, self.user, status)
        if status in gone_on:
            raise CallGone(f"ARI {op}: the call has ended")
        if status in (502, 503, 504):
            raise ProviderUnavailable(f"ARI {op}: Asterisk answered HTTP {status}")
        raise ProviderRejected(f"ARI {op}: Asterisk refused the request (HTTP {status}: "
                               f"{_ari_message(body)})")

    async def _json(self, method: str, path: str, op: str, **kw: Any) -> Any:
        _, body = await self.request(method, path, op, **kw)
        return json.loads(body) if body else None

    # --- operations ---------------------------------------------------------------------
    async def info(self) -> dict[str, Any]:
        """`GET /asterisk/info`: proves the URL and the credentials."""
        data: dict[str, Any] = await self._json("GET", "asterisk/info", "info")
        return data

    async def get_channel(self, channel_id: str) -> dict[str, Any]:
        data: dict[str, Any] = await self._json(
            "GET", f"channels/{_seg(channel_id)}", "get channel", gone_on=(404,))
        return data

    async def answer(self, channel_id: str) -> None:
        await self.request("POST", f"channels/{_seg(channel_id)}/answer", "answer",
                           gone_on=(404,))

    async def hangup(self, channel_id: str, reason: str = "normal") -> None:
        await self.request("DELETE", f"channels/{_seg(channel_id)}", "hangup",
                           params={"reason": reason}, gone_on=(404,))

    async def play(self, channel_id: str, playback_id: str, media: Sequence[str],
                   lang: str = "en") -> None:
        """Play `media` (e.g. `sound:vm-password`) back to back as one playback with our
        own `playback_id`, so events about it can be matched before the POST returns."""
        await self.request("POST", f"channels/{_seg(channel_id)}/play/{_seg(playback_id)}",
                           "play", params={"media": list(media), "lang": lang},
                           gone_on=(404,))

    async def stop_playback(self, playback_id: str) -> bool:
        """Stop a playback; False if it had already finished (404)."""
        try:
            await self.request("DELETE", f"playbacks/{_seg(playback_id)}", "stop playback",
                               gone_on=(404,))
        except CallGone:
            return False
        return True

    async def create_bridge(self, bridge_id: str, kind: str = "mixing") -> None:
        """`POST /bridges/{bridge_id}`: a bridge of `kind` under our own id."""
        await self.request("POST", f"bridges/{_seg(bridge_id)}", "create bridge",
                           params={"type": kind})

    async def add_to_bridge(self, bridge_id: str, channel_ids: Sequence[str]) -> None:
        """Put channels into a bridge; CallGone if a channel (or the bridge) is gone."""
        # 400: a channel not found; 422: a channel no longer in our application
        await self.request("POST", f"bridges/{_seg(bridge_id)}/addChannel",
                           "add to bridge", params={"channel": list(channel_ids)},
                           gone_on=(400, 404, 422))

    async def destroy_bridge(self, bridge_id: str) -> bool:
        """Destroy a bridge (its channels stay up); False if it was already gone."""
        try:
            await self.request("DELETE", f"bridges/{_seg(bridge_id)}", "destroy bridge",
                               gone_on=(404,))
        except CallGone:
            return False
        return True

    async def originate(self, channel_id: str, endpoint: str, app: str, *,
                        app_args: str = "", timeout: int = 30,
                        caller_id: str | None = None) -> None:
        """`POST /channels/{channel_id}`: dial `endpoint` (e.g. `PJSIP/agent1`) under our
        own channel id; once answered the channel enters Stasis application `app` with
        `app_args`. Asterisk gives up after `timeout` seconds of ringing. The endpoint
        (for a call-back, the customer's number of record) and the caller id go in the
        JSON body, never the query string."""
        params: dict[str, str | int | Sequence[str]] = {"app": app, "timeout": timeout}
        if app_args:
            params["appArgs"] = app_args
        body = {"endpoint": endpoint}
        if caller_id:
            body["callerId"] = caller_id
        await self.request("POST", f"channels/{_seg(channel_id)}", "originate",
                           params=params, json_body=body)

    async def record_bridge(self, bridge_id: str, name: str, *, fmt: str = "wav",
                            max_seconds: int = 0) -> None:
        """`POST /bridges/{id}/record`: record the bridge's mixed audio into the stored
        recording `name` (no beep, not stopped by keys, refused if `name` exists)."""
        await self.request("POST", f"bridges/{_seg(bridge_id)}/record", "start recording",
                           params={"name": name, "format": fmt, "ifExists": "fail",
                                   "beep": "false", "terminateOn": "none",
                                   "maxDurationSeconds": max_seconds},
                           gone_on=(404,))

    async def stop_recording(self, name: str) -> bool:
        """Stop a live recording and store it; False if it was no longer live."""
        try:
            await self.request("POST", f"recordings/live/{_seg(name)}/stop",
                               "stop recording", gone_on=(404,))
        except CallGone:
            return False
        return True

    async def recording_is_live(self, name: str) -> bool:
        try:
            await self.request("GET", f"recordings/live/{_seg(name)}", "recording state",
                               gone_on=(404,))
        except CallGone:
            return False
        return True

    async def stored_recordings(self) -> list[str]:
        """The names of every stored recording."""
        data = await self._json("GET", "recordings/stored", "list recordings")
        return [str(r["name"]) for r in data or [] if isinstance(r, dict) and "name" in r]

    async def fetch_stored_recording(self, name: str, dest: Path, *,
                                     max_bytes: int) -> int:
        """Stream the file of a stored recording (`GET /recordings/stored/{name}/file`)
        into `dest` (created 0600, must not exist); the number of bytes. A file larger
        than `max_bytes` is refused (ProviderRejected) and `dest` removed."""
        url = f"{self.base_url}/ari/recordings/stored/{_seg(name)}/file"
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self._timeout.sock_connect,
                                        sock_read=self._timeout.total)
        size = 0
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as out:
                try:
                    async with self._http().get(url, timeout=timeout) as resp:
                        if resp.status in (401, 403):
                            raise credentials_refused(self.base_url, self.user, resp.status)
                        if resp.status == 404:
                            raise CallGone("ARI fetch recording: no such stored recording")
                        if resp.status != 200:
                            raise ProviderRejected("ARI fetch recording: Asterisk answered "
                                                   f"HTTP {resp.status}")
                        async for chunk in resp.content.iter_chunked(1 << 16):
                            size += len(chunk)
                            if size > max_bytes:
                                raise ProviderRejected(
                                    f"ARI fetch recording: larger than {max_bytes} bytes")
                            await asyncio.to_thread(out.write, chunk)  # off the event loop
                except TimeoutError:
                    raise ProviderUnavailable("ARI fetch recording: no data from "
                                              f"{self.base_url}") from None
                except aiohttp.ClientError as exc:
                    raise ProviderUnavailable(f"ARI fetch recording: cannot reach "
                                              f"{self.base_url} ({type(exc).__name__})") \
                        from None
                await asyncio.to_thread(_sync, out)
        except BaseException:
            dest.unlink(missing_ok=True)
            raise
        return size

    async def delete_stored_recording(self, name: str) -> bool:
        """Delete a stored recording; False if it was already gone."""
        try:
            await self.request("DELETE", f"recordings/stored/{_seg(name)}",
                               "delete recording", gone_on=(404,))
        except CallGone:
            return False
        return True


def _sync(out: Any) -> None:
    out.flush()
    os.fsync(out.fileno())


def _seg(ident: str) -> str:
    return quote(ident, safe="")


def _query(params: Params) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for key, value in params.items():
        if isinstance(value, str | int):
            out.append((key, str(value)))
        else:
            out.append((key, ",".join(value)))  # ARI splits allowMultiple values on ","
    return out


def _ari_message(body: bytes) -> str:
    """ARI's own short error text ({"message": ...}), cut short; never the request."""
    try:
        message = json.loads(body).get("message", "")
    except (ValueError, AttributeError):
        message = ""
    return str(message)[:120] or "no message"
