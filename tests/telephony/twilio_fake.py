"""A FAKE of Twilio's REST API, for tests only: Twilio's cloud cannot run here.

`FakeTwilioApi` is an aiohttp server on a free loopback port that answers the few
endpoints callvault uses, the way Twilio documents them: every request needs HTTP basic
auth with the account SID and auth token (401 otherwise, 403 for another account's
path); recordings added with `add_recording` are served at
`/2010-04-01/Accounts/{AC}/Recordings/{RE}.wav` and deleted at `.../{RE}.json` (204, then
404); `POST .../Calls.json` creates a call (201 with a generated CA SID). `requests`,
`calls` and `deleted` record what arrived, for assertions. Point `twilio_api_base_url` at
`base_url`.

Use it from async tests (`async with FakeTwilioApi(...)`) or from sync ones (`start()` /
`stop()`, or `with`), which run the server on its own event loop in a thread.

`encrypt_like_twilio` encrypts a WAV as Twilio's Voice Recording Encryption does (random
AES-256-GCM content key, 96-bit IV, tag appended; the key wrapped with RSA-OAEP-SHA-256),
with a key pair made at test time by `make_recording_key`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import threading
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any

from aiohttp import web
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

API = "/2010-04-01/Accounts/{account}"


@dataclass(frozen=True)
class SeenRequest:
    method: str
    path: str
    authorized: bool


@dataclass
class FakeTwilioApi:
    """The fake; see the module docstring."""

    account_sid: str
    auth_token: str
    requests: list[SeenRequest] = field(default_factory=list)
    calls: list[dict[str, Any]] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    media_redirect: str | None = None   # answer .wav with 302 to this Location ({sid})
    fail_status: int | None = None      # answer every request with this status,
    fail_code: int = 20500              # Twilio error code
    fail_message: str = "Internal Server Error"   # and message
    chunked_media: bool = False         # send media without a Content-Length
    call_sids: list[str] = field(default_factory=list)
    _recordings: dict[str, bytes] = field(default_factory=dict)
    _runner: web.AppRunner | None = None
    _port: int = 0
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None

    # --- set-up -------------------------------------------------------------------------
    def add_recording(self, sid: str, wav: bytes) -> None:
        self._recordings[sid] = wav

    @property
    def base_url(self) -> str:
        if not self._port:
            raise RuntimeError("FakeTwilioApi is not started")
        return f"http://127.0.0.1:{self._port}"

    async def __aenter__(self) -> FakeTwilioApi:
        await self.start_async()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop_async()

    async def start_async(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self._port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def stop_async(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    def start(self) -> FakeTwilioApi:
        """Serve from a thread with its own event loop (for sync tests)."""
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(self.start_async())
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self.stop_async())
            loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=run, name="fake-twilio-api", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("FakeTwilioApi did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop = self._thread = None

    def __enter__(self) -> FakeTwilioApi:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- the API ------------------------------------------------------------------------
    def _authorized(self, request: web.Request) -> bool:
        scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
        try:
            login, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        return (scheme.lower() == "basic"
                and secrets.compare_digest(login.encode(), self.account_sid.encode())
                and secrets.compare_digest(password.encode(), self.auth_token.encode()))

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        ok = self._authorized(request)
        self.requests.append(SeenRequest(request.method, request.path, ok))
        if request.path.startswith("/media/"):   # a pre-signed redirect target: no auth
            return await self._media(request, request.path.removeprefix("/media/"))
        if not ok:
            return _error(401, 20003, "Authenticate")
        if self.fail_status is not None:
            return _error(self.fail_status, self.fail_code, self.fail_message)
        prefix = API.format(account=self.account_sid)
        if not request.path.startswith(prefix + "/"):
            return _error(403, 20003, "Permission denied")
        rest = request.path.removeprefix(prefix)
        if request.method == "POST" and rest == "/Calls.json":
            return await self._create_call(request)
        if rest.startswith("/Recordings/"):
            name = rest.removeprefix("/Recordings/")
            if request.method == "GET" and name.endswith(".wav"):
                sid = name.removesuffix(".wav")
                if self.media_redirect is not None and sid in self._recordings:
                    raise web.HTTPFound(self.media_redirect.format(sid=sid))
                return await self._media(request, sid)
            if request.method == "DELETE" and name.endswith(".json"):
                sid = name.removesuffix(".json")
                if self._recordings.pop(sid, None) is None:
                    return _error(404, 20404, "The requested resource was not found")
                self.deleted.append(sid)
                return web.Response(status=204)
        return _error(404, 20404, "The requested resource was not found")

    async def _media(self, request: web.Request, sid: str) -> web.StreamResponse:
        if sid not in self._recordings:
            return _error(404, 20404, "The requested resource was not found")
        if not self.chunked_media:
            return web.Response(body=self._recordings[sid], content_type="audio/x-wav")
        resp = web.StreamResponse(headers={"Content-Type": "audio/x-wav"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        data = self._recordings[sid]
        for at in range(0, len(data), 32 * 1024):
            await resp.write(data[at:at + 32 * 1024])
        await resp.write_eof()
        return resp

    async def _create_call(self, request: web.Request) -> web.Response:
        form = await request.post()
        fields: dict[str, Any] = {k: form.getall(k) if k == "StatusCallbackEvent"
                                  else form[k] for k in form}
        self.calls.append(fields)
        sid = "CA" + os.urandom(16).hex()
        self.call_sids.append(sid)
        now = formatdate(usegmt=True)
        body: dict[str, Any] = {
            "sid": sid, "account_sid": self.account_sid, "api_version": "2010-04-01",
            "to": fields.get("To"), "to_formatted": fields.get("To"),
            "from": fields.get("From"), "from_formatted": fields.get("From"),
            "status": "queued", "direction": "outbound-api", "date_created": now,
            "date_updated": now, "start_time": None, "end_time": None, "duration": None,
            "price": None, "price_unit": "USD", "answered_by": None, "caller_name": None,
            "forwarded_from": None, "group_sid": None, "parent_call_sid": None,
            "phone_number_sid": None, "queue_time": "0", "trunk_sid": None,
            "uri": f"{API.format(account=self.account_sid)}/Calls/{sid}.json",
            "subresource_uris": {},
        }
        return web.json_response(body, status=201)


def _error(status: int, code: int, message: str) -> web.Response:
    return web.Response(status=status, content_type="application/json", text=json.dumps(
        {"code": code, "message": message, "status": status,
         "more_info": f"https://www.twilio.com/docs/errors/{code}"}))


# --- Voice Recording Encryption, as Twilio applies it --------------------------------------
def make_recording_key() -> tuple[bytes, rsa.RSAPublicKey]:
    """A fresh RSA key pair: (private key PEM, public key), as an account would upload."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    return pem, key.public_key()


def encrypt_like_twilio(wav: bytes, public_key: rsa.RSAPublicKey) -> tuple[bytes, dict[str, str]]:
    """(encrypted media, EncryptionDetails) for `wav` under `public_key`."""
    cek = AESGCM.generate_key(bit_length=256)
    iv = os.urandom(12)
    media = AESGCM(cek).encrypt(iv, wav, None)    # ciphertext || 16-byte tag
    wrapped = public_key.encrypt(cek, padding.OAEP(mgf=padding.MGF1(hashes.SHA256()),
                                                   algorithm=hashes.SHA256(), label=None))
    details = {"type": "rsa-aes", "public_key_sid": "CR" + os.urandom(16).hex(),
               "encrypted_cek": base64.b64encode(wrapped).decode(),
               "iv": base64.b64encode(iv).decode()}
    return media, details
