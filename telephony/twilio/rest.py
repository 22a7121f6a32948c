"""Twilio's REST API: placing call-backs, fetching and deleting recordings, decrypting them.

Owns every request callvault makes to Twilio (`twilio_api_base_url`, `/2010-04-01/...`)
and the boundary where the `twilio` library's and aiohttp's exceptions and Twilio's HTTP
statuses become the `telephony.errors` family: nobody answers or it times out, HTTP 429
or 5xx → ProviderUnavailable; refused credentials (401/403) → ProviderRejected naming
the settings; other refusals → ProviderRejected with Twilio's error code only, because
Twilio's own messages quote the phone numbers. No message holds a number, the auth token
or a URL with SIDs, and the library's request logging (URLs with the account SID) is
silenced.

Calls are created through the `twilio` library's async client; recording media is
streamed with aiohttp because the library reads whole bodies into memory. A recording is
addressed by its SID only (validated, then the URL is built from it): the RecordingUrl
of a status callback is attacker-influenced and is never fetched.

`decrypt_recording` undoes Twilio's Voice Recording Encryption ("rsa-aes"): the content
key (CEK) is RSA-OAEP encrypted with SHA-256 (and MGF1-SHA-256) under the account's public
key; the media is AES-256-GCM under the CEK with the callback's 96-bit IV and the 16-byte
tag at the end of the file.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urljoin, urlsplit

import aiohttp
from cryptography.exceptions import InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from pydantic import SecretStr
from twilio.auth_strategy.auth_strategy import AuthStrategy
from twilio.auth_strategy.auth_type import AuthType
from twilio.base.exceptions import TwilioRestException
from twilio.credential.credential_provider import CredentialProvider
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client

from telephony.errors import ProviderRejected, ProviderUnavailable

if TYPE_CHECKING:
    from callvault.config import Settings

log = logging.getLogger(__name__)

API_VERSION: Final = "2010-04-01"
RECORDING_SID: Final = re.compile(r"^RE[0-9a-fA-F]{32}$")
_CALL_SID = re.compile(r"^CA[0-9a-fA-F]{32}$")
_ACCOUNT_SID = re.compile(r"^AC[0-9a-fA-F]{32}$")
_E164 = re.compile(r"^\+[1-9][0-9]{1,14}$")
_STATUS_EVENTS: Final = ("initiated", "ringing", "answered", "completed")
_REDIRECTS: Final = (301, 302, 303, 307, 308)
_MAX_REDIRECTS: Final = 5
_CHUNK: Final = 64 * 1024
_GCM_TAG: Final = 16
_CREDENTIALS = "check twilio_account_sid and twilio_auth_token (value not shown)"

# The library logs every request URL (with the account SID) at INFO; a detached logger
# that drops INFO keeps those lines out of callvault's logs whatever the root level.
_SDK_LOG = logging.Logger("callvault.twilio-sdk", logging.WARNING)


class RecordingDecryptError(ProviderRejected):
    """An encrypted recording cannot be decrypted: wrong private key, unsupported scheme,
    malformed encryption details, or a file altered after Twilio encrypted it. Retrying
    will not help."""


class _BasicAuth(AuthStrategy):  # type: ignore[misc]
    """Our own Authorization header: the library's default builds aiohttp.BasicAuth,
    which aiohttp deprecates."""

    def __init__(self, header: str) -> None:
        super().__init__(AuthType.BASIC)
        self._header = header

    def get_auth_string(self) -> str:
        return self._header

    def requires_authentication(self) -> bool:
        return True


class _Credentials(CredentialProvider):  # type: ignore[misc]
    def __init__(self, header: str) -> None:
        super().__init__(AuthType.BASIC)
        self._header = header

    def to_auth_strategy(self) -> _BasicAuth:
        return _BasicAuth(self._header)


class TwilioRest:
    """Twilio's REST API for one account. Use as `async with TwilioRest(...) as rest:` or
    call `close()`: the aiohttp session is made on first use and must be closed."""

    def __init__(self, account_sid: str, auth_token: SecretStr, *,
                 base_url: str = "https://api.twilio.com", caller_id: str | None = None,
                 timeout: float = 10.0, connect_timeout: float = 5.0,
                 media_read_timeout: float = 60.0) -> None:
        if not _ACCOUNT_SID.match(account_sid):
            raise ProviderRejected("twilio_account_sid is not an account SID (AC + 32 hex)")
        if caller_id is not None and not _E164.match(caller_id):
            raise ProviderRejected("twilio_caller_id is not an E.164 number (value not shown)")
        self.account_sid = account_sid
        self.base_url = base_url.rstrip("/")
        self.caller_id = caller_id
        self._token = auth_token
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._media_read_timeout = media_read_timeout
        self._session: aiohttp.ClientSession | None = None
        self._client: Any = None
        base = urlsplit(self.base_url)
        self._origin = (base.scheme, base.hostname, base.port)

    @classmethod
    def from_settings(cls, settings: Settings, **kw: float) -> TwilioRest:
        """The client for `settings`; ProviderRejected naming a missing setting."""
        if settings.twilio_account_sid is None:
            raise ProviderRejected("Twilio needs twilio_account_sid (not set)")
        if settings.twilio_auth_token is None:
            raise ProviderRejected("Twilio needs twilio_auth_token (not set)")
        return cls(settings.twilio_account_sid, settings.twilio_auth_token,
                   base_url=settings.twilio_api_base_url,
                   caller_id=settings.twilio_caller_id, **kw)

    def __repr__(self) -> str:
        return f"TwilioRest({self.base_url!r})"

    async def __aenter__(self) -> TwilioRest:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        self._client = None
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._timeout,
                                              sock_connect=self._connect_timeout),
                raise_for_status=False)
            self._client = None
        return self._session

    def _twilio(self) -> Any:
        """The library's client, sharing our session, with its API domain at base_url."""
        session = self._http()
        if self._client is None:
            http = AsyncTwilioHttpClient(pool_connections=False, logger=_SDK_LOG)
            http.session = session
            client = Client(self.account_sid, account_sid=self.account_sid,
                            http_client=http, credential_provider=_Credentials(self._auth()))
            # Client falls back to TWILIO_* environment variables; edge and region would
            # rewrite the host. Configuration comes from Settings only.
            client.password = client.edge = client.region = None
            client.api.base_url = self.base_url  # Domain.absolute_url joins onto this
            self._client = client
        return self._client

    def _auth(self) -> str:
        """The basic-auth `Authorization` value (a secret: never log it)."""
        raw = f"{self.account_sid}:{self._token.get_secret_value()}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    def _recording_url(self, recording_sid: str, suffix: str) -> str:
        if not RECORDING_SID.match(recording_sid):
            raise ProviderRejected("Twilio recording: not a recording SID (RE + 32 hex)")
        return (f"{self.base_url}/{API_VERSION}/Accounts/{self.account_sid}"
                f"/Recordings/{recording_sid}{suffix}")

    # --- calls --------------------------------------------------------------------------
    async def place_call(self, to: str, url: str, status_callback: str, timeout: int) -> str:
        """Dial `to` (E.164: the number of record) from `twilio_caller_id`; Twilio fetches
        TwiML from `url` when answered and posts progress to `status_callback`. Returns
        the new call's SID."""
        if self.caller_id is None:
            raise ProviderRejected("Twilio call-back needs twilio_caller_id (not set)")
        if not _E164.match(to):
            raise ProviderRejected("Twilio call-back: number is not E.164 (value not shown)")
        for name, value in (("url", url), ("status_callback", status_callback)):
            if urlsplit(value).scheme not in ("http", "https"):
                raise ProviderRejected(f"Twilio call-back: {name} is not an http(s) URL")
        if not 5 <= timeout <= 600:
            raise ProviderRejected("Twilio call-back: timeout must be 5-600 s")
        try:
            async with asyncio.timeout(self._timeout):
                call = await self._twilio().api.v2010.account.calls.create_async(
                    to=to, from_=self.caller_id, url=url, method="POST",
                    status_callback=status_callback, status_callback_method="POST",
                    status_callback_event=list(_STATUS_EVENTS), timeout=timeout)
        except TwilioRestException as exc:
            raise _refused("place call", int(exc.status), exc.code) from None
        except TimeoutError:
            raise ProviderUnavailable(f"Twilio place call: no answer from {self.base_url} "
                                      f"within {self._timeout:.0f} s") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise ProviderUnavailable(f"Twilio place call: cannot reach {self.base_url} "
                                      f"({type(exc).__name__})") from None
        except ValueError:  # a body that is not Twilio's JSON
            raise ProviderUnavailable("Twilio place call: unreadable answer") from None
        sid = getattr(call, "sid", None)
        if not isinstance(sid, str) or not _CALL_SID.match(sid):
            raise ProviderUnavailable("Twilio place call: answer without a call SID")
        return sid

    # --- recordings ---------------------------------------------------------------------
    async def fetch_recording(self, recording_sid: str, dest: Path, *, max_bytes: int) -> int:
        """Stream the recording's dual-channel WAV into `dest` (created 0600, must not
        exist) and fsync it; returns its size. On any failure `dest` is removed."""
        url = self._recording_url(recording_sid, ".wav")
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self._connect_timeout,
                                        sock_read=self._media_read_timeout)
        session = self._http()
        try:
            for _ in range(_MAX_REDIRECTS + 1):
                # credentials go to the API's origin only, never to a redirect target
                headers = {"Authorization": self._auth()} if self._same_origin(url) else {}
                async with session.get(url, headers=headers, timeout=timeout,
                                       allow_redirects=False) as resp:
                    if resp.status in _REDIRECTS:
                        url = self._redirect_target(url, resp.headers.get("Location"))
                        continue
                    if resp.status != 200:
                        raise _refused("fetch recording", resp.status, None)
                    if (resp.content_length or 0) > max_bytes:
                        raise ProviderRejected(f"Twilio fetch recording: larger than "
                                               f"max_bytes ({max_bytes})")
                    return await _stream_to(resp, dest, max_bytes)
            raise ProviderRejected("Twilio fetch recording: too many redirects")
        except TimeoutError:
            raise ProviderUnavailable(f"Twilio fetch recording: no data from "
                                      f"{self.base_url} in time") from None
        except aiohttp.ClientError as exc:
            raise ProviderUnavailable(f"Twilio fetch recording: cannot reach "
                                      f"{self.base_url} ({type(exc).__name__})") from None

    def _same_origin(self, url: str) -> bool:
        parts = urlsplit(url)
        return (parts.scheme, parts.hostname, parts.port) == self._origin

    def _redirect_target(self, current: str, location: str | None) -> str:
        """Where a redirect may lead: https anywhere (Twilio's media storage, without our
        credentials) or the API's own origin; never plain http elsewhere."""
        if not location:
            raise ProviderRejected("Twilio fetch recording: redirect without a Location")
        target = urljoin(current, location)
        if urlsplit(target).scheme == "https" or self._same_origin(target):
            return target
        raise ProviderRejected("Twilio fetch recording: refused a redirect to a plain-http "
                               "host other than twilio_api_base_url")

    async def delete_recording(self, recording_sid: str) -> bool:
        """Delete the recording at Twilio; False if it was already gone (404)."""
        url = self._recording_url(recording_sid, ".json")
        try:
            async with self._http().delete(url, headers={"Authorization": self._auth()},
                                           allow_redirects=False) as resp:
                await resp.read()
                status = resp.status
        except TimeoutError:
            raise ProviderUnavailable(f"Twilio delete recording: no answer from "
                                      f"{self.base_url} within {self._timeout:.0f} s") from None
        except aiohttp.ClientError as exc:
            raise ProviderUnavailable(f"Twilio delete recording: cannot reach "
                                      f"{self.base_url} ({type(exc).__name__})") from None
        if status in (200, 204):
            return True
        if status == 404:
            return False
        raise _refused("delete recording", status, None)


def _refused(op: str, status: int, code: object) -> ProviderRejected | ProviderUnavailable:
    """The error for a non-2xx answer: credentials, throttling and outages are told
    apart; Twilio's message is left out because it may quote a phone number."""
    suffix = f", Twilio error {code}" if isinstance(code, int) else ""
    if status in (401, 403):
        return ProviderRejected(f"Twilio {op}: credentials refused (HTTP {status}{suffix}); "
                                f"{_CREDENTIALS}")
    if status == 429 or status >= 500:
        return ProviderUnavailable(f"Twilio {op}: Twilio answered HTTP {status}{suffix}")
    if status == 404:
        return ProviderRejected(f"Twilio {op}: not found (HTTP 404{suffix})")
    return ProviderRejected(f"Twilio {op}: refused (HTTP {status}{suffix})")


def _create_private(dest: Path) -> int:
    return os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


async def _stream_to(resp: aiohttp.ClientResponse, dest: Path, max_bytes: int) -> int:
    fd = _create_private(dest)
    size = 0
    try:
        async for chunk in resp.content.iter_chunked(_CHUNK):
            size += len(chunk)
            if size > max_bytes:
                raise ProviderRejected(f"Twilio fetch recording: larger than max_bytes "
                                       f"({max_bytes})")
            _write_all(fd, chunk)
        await asyncio.to_thread(os.fsync, fd)
    except BaseException:
        os.close(fd)
        dest.unlink(missing_ok=True)
        raise
    os.close(fd)
    return size


# --- Voice Recording Encryption -------------------------------------------------------
def decrypt_recording(src: Path, dest: Path, details: Mapping[str, str],
                      private_key_pem: bytes) -> None:
    """Decrypt Twilio's "rsa-aes" encrypted recording `src` into `dest` (created 0600,
    must not exist), in bounded memory. `details` is the callback's EncryptionDetails
    (type, public_key_sid, encrypted_cek, iv). Blocking: run it in a thread. On any
    failure `dest` is removed; it holds unauthenticated plaintext until this returns."""
    if details.get("type") != "rsa-aes":
        raise RecordingDecryptError("Twilio recording: unsupported encryption type "
                                    "(expected rsa-aes)")
    try:
        encrypted_cek = base64.b64decode(details["encrypted_cek"], validate=True)
        iv = base64.b64decode(details["iv"], validate=True)
    except (KeyError, binascii.Error, TypeError):
        raise RecordingDecryptError("Twilio recording: encryption details lack a valid "
                                    "encrypted_cek or iv") from None
    if len(iv) != 12:
        raise RecordingDecryptError("Twilio recording: iv is not 96 bits")
    cek = _unwrap_cek(encrypted_cek, private_key_pem)
    decryptor = Cipher(algorithms.AES(cek), modes.GCM(iv)).decryptor()
    with src.open("rb") as encrypted:
        remaining = os.fstat(encrypted.fileno()).st_size - _GCM_TAG
        if remaining < 0:
            raise RecordingDecryptError("Twilio recording: encrypted file is truncated")
        fd = _create_private(dest)
        try:
            while remaining:
                chunk = encrypted.read(min(_CHUNK, remaining))
                if not chunk:
                    raise RecordingDecryptError("Twilio recording: file shrank while read")
                remaining -= len(chunk)
                _write_all(fd, decryptor.update(chunk))
            tag = encrypted.read(_GCM_TAG)
            try:
                _write_all(fd, decryptor.finalize_with_tag(tag))
            except (InvalidTag, ValueError):
                raise RecordingDecryptError(
                    "Twilio recording: authentication failed (file altered, or encryption "
                    "details from another recording)") from None
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            dest.unlink(missing_ok=True)
            raise
        os.close(fd)


def _unwrap_cek(encrypted_cek: bytes, private_key_pem: bytes) -> bytes:
    try:
        key = serialization.load_pem_private_key(private_key_pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise RecordingDecryptError("twilio_recording_private_key is not an unencrypted "
                                    "PEM private key") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise RecordingDecryptError("twilio_recording_private_key is not an RSA key")
    try:
        cek = key.decrypt(encrypted_cek, padding.OAEP(mgf=padding.MGF1(hashes.SHA256()),
                                                      algorithm=hashes.SHA256(), label=None))
    except ValueError:
        raise RecordingDecryptError("Twilio recording: the content key does not decrypt "
                                    "with twilio_recording_private_key (wrong key?)") from None
    if len(cek) != 32:
        raise RecordingDecryptError("Twilio recording: content key is not AES-256")
    return cek
