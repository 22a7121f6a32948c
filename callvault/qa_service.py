"""What the QA app's pages and its JSON API share: recordings' audio streamed out of the
vault with HTTP Range support, decrypted on the fly; the redacted transcript; the
waveform's peaks; and the catalogue and scorecards, off the event loop.

Every audio request goes through `Vault.stream_range`, so the policy decides and the
access log records it before a byte moves: a request from the start of the file is
logged as a play, one from further in as a seek (with the position), one asking for the
file as an attachment as a download. Raw audio needs a stated reason: a browser session's
grant (`WebAuth.grant_raw`) or an API client's `X-Access-Reason` header; without one the
vault refuses, logs the refusal, and the request gets 403.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import re
import struct
import uuid
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np
from aiohttp import web

from callvault.web_auth import REASON_HEADER, WebAuth, WebSession
from storage import catalog
from storage.access import Action, Variant, authorize
from storage.errors import (
    AccessDenied,
    IntegrityError,
    RangeNotSatisfiable,
    StorageError,
)
from storage.scorecards import Scorecards
from storage.vault import RangeStream, Vault

logger = logging.getLogger(__name__)

AUDIO_VARIANTS: tuple[Variant, ...] = ("redacted", "raw")
_RANGE = re.compile(r"^bytes=(\d{0,15})-(\d{0,15})$")
WAVEFORM_BINS_PER_SECOND = 20
WAVEFORM_MAX_BINS = 6000
_WAVE_CACHE = 64
_CONTINUE_SLACK = 256 * 1024   # bytes a player's next request may start from where the last stopped
_MAX_POSITIONS = 10_000
_STREAM_THREADS = 32
T = TypeVar("T")


class BadWave(ValueError):
    """Audio the waveform reader cannot parse (not a WAV it knows)."""


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """[start, stop) from one `Range: bytes=...` header, or None to send the whole object
    (no header, several ranges, or a form this server ignores, as RFC 9110 allows).
    RangeNotSatisfiable when the range lies past the end."""
    if not header:
        return None
    m = _RANGE.match(header.strip())
    if m is None:
        return None
    first, last = m.group(1), m.group(2)
    if not first and not last:
        return None
    if not first:                       # bytes=-N: the last N bytes
        n = int(last)
        if n == 0:
            raise RangeNotSatisfiable("an empty suffix range")
        return max(0, size - n), size
    start = int(first)
    stop = size if not last else min(size, int(last) + 1)
    if last and int(last) < start:
        return None                     # invalid: ignored
    if start >= size:
        raise RangeNotSatisfiable(f"bytes {start}- of a {size}-byte object")
    return start, stop


class QaService:
    """The vault, catalogue and scorecards as the web handlers need them."""

    def __init__(self, vault: Vault, scorecards: Scorecards, auth: WebAuth) -> None:
        self.vault = vault
        self.scorecards = scorecards
        self.auth = auth
        self._waves: OrderedDict[uuid.UUID, dict[str, Any]] = OrderedDict()
        # where each (session, recording, variant)'s last response stopped: a request that
        # picks up there is the player buffering on, not the listener seeking
        self._reached: OrderedDict[tuple[bytes, uuid.UUID, str], int] = OrderedDict()
        # streams get threads of their own: sign-ins (argon2id) and other work in the
        # default pool must not hold up a player's next chunk, nor it theirs
        self._pool = ThreadPoolExecutor(max_workers=_STREAM_THREADS,
                                        thread_name_prefix="qa-stream")

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def close(self) -> None:
        """Stop the streaming threads and the sign-in threads (the app's cleanup)."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.auth.close()

    def __repr__(self) -> str:
        return "QaService()"

    @property
    def dsn(self) -> str:
        return self.vault.dsn

    async def list(self, q: catalog.RecordingQuery) -> catalog.Page:
        return await asyncio.to_thread(catalog.list_recordings, self.dsn, q)

    async def summary(self, recording_id: uuid.UUID) -> catalog.RecordingSummary | None:
        """A stored recording's summary, or None (unknown, or not stored: queued, failed
        and purged recordings are not for replay)."""
        found = await asyncio.to_thread(catalog.get_summary, self.dsn, recording_id)
        return found if found is not None and found.status == "stored" else None

    async def transcript(self, session: WebSession, recording_id: uuid.UUID,
                         origin: str) -> dict[str, Any]:
        """The redacted transcript document (`callvault.transcript/1`), read and logged."""
        data = await asyncio.to_thread(self.vault.read_all, session.principal, recording_id,
                                       "transcript", origin=origin, action="read")
        doc = json.loads(data)
        if not isinstance(doc, dict):
            raise IntegrityError("the transcript is not a JSON object")
        return doc

    async def waveform(self, session: WebSession, recording_id: uuid.UUID,
                       origin: str) -> dict[str, Any]:
        """Peaks of the redacted audio (0..1 per bin and channel) for drawing the
        waveform. Computed once per recording (they show nothing the redacted audio does
        not), but every request is authorised and logged."""
        cached = self._waves.get(recording_id)
        if cached is not None:
            await asyncio.to_thread(self.vault.authorize, session.principal, "read",
                                    recording_id, "redacted", None, origin)
            self._waves.move_to_end(recording_id)
            return cached
        stream = await asyncio.to_thread(self.vault.stream_range, session.principal,
                                         recording_id, "redacted", 0, None, origin=origin)
        peaks = await asyncio.to_thread(wave_peaks, stream.chunks)
        self._waves[recording_id] = peaks
        while len(self._waves) > _WAVE_CACHE:
            self._waves.popitem(last=False)
        return peaks

    async def audio(self, request: web.Request, session: WebSession,
                    recording_id: uuid.UUID, variant: str) -> web.StreamResponse:
        """One recording's audio, with Range support; see the module's docstring."""
        if variant not in AUDIO_VARIANTS:
            raise web.HTTPNotFound(text="no such audio variant: redacted or raw")
        summary = await self.summary(recording_id)
        if summary is None:
            raise web.HTTPNotFound(text="no such recording")
        reason: str | None = None
        if variant == "raw":
            if session.kind == "browser":
                reason = await self.auth.raw_reason(session, recording_id)
            else:
                reason = request.headers.get(REASON_HEADER)
        download = request.query.get("download") == "1"
        where = f"QA app {self.auth.client(request)}"
        action: Action = "download" if download else "read"
        checked: Variant = "raw" if variant == "raw" else "redacted"
        try:   # the policy first: a refused caller learns nothing, not even the size
            authorize(session.principal, action, checked, reason)
        except AccessDenied:
            try:
                await self._run(self.vault.authorize, session.principal, action,
                                recording_id, checked, reason, f"{where}: {variant} audio")
            except AccessDenied as exc:      # logged by the vault
                raise web.HTTPForbidden(text=str(exc)) from None
        obj = await self._run(self.vault.get_object, recording_id, variant)
        size = obj.plaintext_size or 0
        try:
            span = parse_range(request.headers.get("Range"), size)
        except RangeNotSatisfiable:
            raise web.HTTPRequestRangeNotSatisfiable(
                headers={"Content-Range": f"bytes */{size}"}) from None
        start, stop = span if span is not None else (0, size)
        key = (session.token_hash, recording_id, variant)
        reached = self._reached.get(key)
        at = start / size * (summary.duration_seconds or 0.0) if size else 0.0
        if request.method == "HEAD":
            origin = f"{where}: size and type only (HEAD)"
        elif download:
            origin = f"{where}: download"
        elif start <= 64:
            origin = f"{where}: play"
        elif reached is not None and abs(start - reached) <= _CONTINUE_SLACK:
            origin = f"{where}: continue at ~{at:.1f} s (byte {start})"
        else:
            origin = f"{where}: seek to ~{at:.1f} s (byte {start})"
        if request.method == "HEAD":     # no bytes move: logged as what it is, no fetch
            try:
                await self._run(self.vault.authorize, session.principal, action,
                                recording_id, checked, reason, origin)
            except AccessDenied as exc:
                raise web.HTTPForbidden(text=str(exc)) from None
            stream = RangeStream(size, start, stop, iter(()))
        else:
            try:
                stream = await self._run(
                    functools.partial(self.vault.stream_range, session.principal,
                                      recording_id, checked, start, stop, reason=reason,
                                      origin=origin, action=action))
            except AccessDenied as exc:
                raise web.HTTPForbidden(text=str(exc)) from None
            except RangeNotSatisfiable:
                raise web.HTTPRequestRangeNotSatisfiable(
                    headers={"Content-Range": f"bytes */{size}"}) from None
        resp = web.StreamResponse(status=206 if span is not None else 200)
        resp.content_type = "audio/wav"
        resp.content_length = stream.stop - stream.start
        resp.headers["Accept-Ranges"] = "bytes"
        resp.headers["Cache-Control"] = "private, no-store"
        if span is not None:
            resp.headers["Content-Range"] = f"bytes {stream.start}-{stream.stop - 1}/{size}"
        name = f"recording-{recording_id}-{variant}.wav"
        resp.headers["Content-Disposition"] = (
            f'attachment; filename="{name}"' if download else f'inline; filename="{name}"')
        await resp.prepare(request)
        if request.method == "HEAD":
            return resp
        chunks = stream.chunks
        sent = stream.start
        try:
            while True:
                piece = await self._run(next, chunks, None)
                if piece is None:
                    break
                await resp.write(piece)
                sent += len(piece)
                self._remember(key, sent)
        except (IntegrityError, StorageError) as exc:
            # the client must not take a cut-short body for the whole object
            logger.error("QA app: streaming %s audio of %s stopped: %s", variant,
                         recording_id, type(exc).__name__)
            if request.transport is not None:
                request.transport.abort()
            return resp
        except ConnectionError:
            # the browser went away: every seek cancels the request in flight. Returning
            # (not raising) keeps this out of the error log, where it would be noise.
            return resp
        await resp.write_eof()
        return resp

    def _remember(self, key: tuple[bytes, uuid.UUID, str], reached: int) -> None:
        self._reached[key] = reached
        self._reached.move_to_end(key)
        while len(self._reached) > _MAX_POSITIONS:
            self._reached.popitem(last=False)


# --- waveform --------------------------------------------------------------------------

def _ulaw_table() -> np.ndarray:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    sign = u & 0x80
    exponent = (u >> 4) & 0x07
    mantissa = u & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return np.where(sign != 0, -magnitude, magnitude).astype(np.float32) / 32768.0


def _alaw_table() -> np.ndarray:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    sign = a & 0x80
    exponent = (a >> 4) & 0x07
    mantissa = a & 0x0F
    magnitude = np.where(exponent == 0, (mantissa << 4) + 8,
                         ((mantissa << 4) + 0x108) << np.maximum(exponent - 1, 0))
    return np.where(sign != 0, magnitude, -magnitude).astype(np.float32) / 32768.0


_TABLES = {6: _alaw_table(), 7: _ulaw_table()}


class _WavHeader:
    def __init__(self, fmt_tag: int, channels: int, rate: int, bits: int, data_offset: int,
                 data_size: int) -> None:
        self.fmt_tag, self.channels, self.rate, self.bits = fmt_tag, channels, rate, bits
        self.data_offset, self.data_size = data_offset, data_size


def _parse_header(head: bytes) -> _WavHeader:
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        raise BadWave("not a RIFF/WAVE file")
    pos, fmt = 12, None
    while pos + 8 <= len(head):
        cid, size = head[pos:pos + 4], struct.unpack("<I", head[pos + 4:pos + 8])[0]
        body = pos + 8
        if cid == b"fmt ":
            if size < 16 or body + 16 > len(head):
                raise BadWave("short fmt chunk")
            tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", head[body:body + 16])
            if tag == 0xFFFE and size >= 40 and body + 26 <= len(head):
                tag = struct.unpack("<H", head[body + 24:body + 26])[0]
            fmt = (tag, channels, rate, bits)
        elif cid == b"data":
            if fmt is None:
                raise BadWave("data before fmt")
            return _WavHeader(*fmt, body, size)
        pos = body + size + (size & 1)
    raise BadWave("no data chunk in the first bytes")


def wave_peaks(chunks: Any, bins_per_second: int = WAVEFORM_BINS_PER_SECOND,
               max_bins: int = WAVEFORM_MAX_BINS) -> dict[str, Any]:
    """Peak absolute amplitude (0..1) per bin and channel of a WAV given as byte chunks
    (16-bit PCM, µ-law or A-law), in one pass and bounded memory."""
    buf = bytearray()
    header: _WavHeader | None = None
    it = iter(chunks)
    for piece in it:
        buf += piece
        if len(buf) >= 4096:
            break
    header = _parse_header(bytes(buf[:65536]))
    if header.fmt_tag == 1 and header.bits == 16:
        width = 2
    elif header.fmt_tag in _TABLES and header.bits == 8:
        width = 1
    else:
        raise BadWave(f"unsupported encoding (format {header.fmt_tag}, {header.bits} bits)")
    ch = max(1, header.channels)
    frame = width * ch
    frames_total = header.data_size // frame
    duration = frames_total / header.rate if header.rate else 0.0
    nbins = max(1, min(max_bins, round(duration * bins_per_second)))
    per_bin = max(1, -(-frames_total // nbins))
    peaks = np.zeros((ch, nbins), dtype=np.float32)
    pending = bytes(buf[header.data_offset:])
    done = 0                                 # frames consumed

    def consume(data: bytes) -> bytes:
        nonlocal done
        usable = len(data) - len(data) % frame
        if usable <= 0 or done >= frames_total:
            return data
        usable = min(usable, (frames_total - done) * frame)
        raw = np.frombuffer(data[:usable], dtype="<i2" if width == 2 else np.uint8)
        samples = (raw.astype(np.float32) / 32768.0 if width == 2
                   else _TABLES[header.fmt_tag][raw])
        samples = np.abs(samples.reshape(-1, ch))
        idx = (np.arange(done, done + len(samples)) // per_bin).clip(max=nbins - 1)
        for c in range(ch):
            np.maximum.at(peaks[c], idx, samples[:, c])
        done += len(samples)
        return data[usable:]

    pending = consume(pending)
    for piece in it:
        pending = consume(pending + piece)
    return {"duration_seconds": round(duration, 3), "bins": nbins,
            "seconds_per_bin": round(per_bin / header.rate, 6) if header.rate else 0.0,
            "channels": [{"channel": c, "peaks": [round(float(v), 3) for v in peaks[c]]}
                         for c in range(ch)]}
