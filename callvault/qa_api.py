"""The QA app's JSON API (`/api/`): what the player page's script fetches, and what machine
clients use with a bearer token from `POST /api/tokens`.

Every input is checked before it reaches the catalogue or the vault: an unknown filter
value, a number out of range or a date that is not one is a 400 with a message, never a
500, and a recording id that is not a UUID is simply not found. Errors are JSON
(`{"error": "..."}`) everywhere under `/api/`, the router's own included, and say
nothing a caller may not know (no CPNI, no internals). `GET /api/openapi.json` describes
every route as the handlers check it, so a schema-driven fuzzer can hold them to it.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, NoReturn

from aiohttp import web

from callvault.qa_service import AUDIO_VARIANTS, BadWave, QaService
from callvault.web_auth import (
    CSRF_HEADER,
    REASON_HEADER,
    SignInRefused,
    WebSession,
    same_origin,
)
from storage import catalog
from storage.access import PASSWORD_MAX, REASON_MAX, VARIANTS, Principal, Variant, authorize
from storage.audit import AuditEvent
from storage.db import connect, translate_errors
from storage.errors import (
    AccessDenied,
    IntegrityError,
    NotFound,
    RangeNotSatisfiable,
    StorageError,
)
from storage.scorecards import NOTES_MAX, Scorecard, ScorecardError

TOKEN_BODY_MAX = 4096
EVENT_BODY_MAX = 256
PLAYER_EVENTS = ("play", "pause", "seek", "ended")
SCORECARD_BODY_MAX = 32768           # notes are 4000 characters, up to 4 bytes each in UTF-8
LABEL_MAX = 100
AGENT_MAX = 200
SECONDS_MAX = 10_000_000.0           # a filter on duration, in seconds (about 16 weeks)
OFFSET_MAX = 10**6
_INT = re.compile(r"[+-]?[0-9]{1,12}", re.ASCII)
_NUMBER = re.compile(r"[+-]?(?:[0-9]{1,20}(?:\.[0-9]{0,20})?|\.[0-9]{1,20})"
                     r"(?:[eE][+-]?[0-9]{1,3})?", re.ASCII)
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", re.ASCII)
_WHEN = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}(?:[Tt ][0-9]{2}:[0-9]{2}(?::[0-9]{2}"
                   r"(?:\.[0-9]{1,6})?)?(?:[Zz]|[+-][0-9]{2}:?[0-9]{2})?)?", re.ASCII)
WHEN_PATTERN = ("^[0-9]{4}-[0-9]{2}-[0-9]{2}([Tt ][0-9]{2}:[0-9]{2}(:[0-9]{2}"
                "(\\.[0-9]{1,6})?)?([Zz]|[+-][0-9]{2}:?[0-9]{2})?)?$")
USER_PATTERN = "^[a-z][a-z0-9._-]{1,63}$"
_USER = re.compile(USER_PATTERN[1:-1], re.ASCII)
RANGE_PATTERN = "^bytes=[0-9]{0,15}-[0-9]{0,15}$"
SORTS = ("created_at", "duration", "agent")
VERDICTS = ("verified", "not_verified", "none")
QA_STATUSES = ("unreviewed", "reviewed")
ORDERS = ("asc", "desc")
_NOT_A_UUID = "no such recording"


class ApiError(Exception):
    """An answer other than success: the status, a message safe to show, extra headers."""

    def __init__(self, status: int, message: str,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


def error_response(status: int, message: str,
                   headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=dict(headers or {}))


_GENERIC = {400: "bad request", 401: "sign in first", 403: "forbidden",
            404: "no such resource", 405: "method not allowed", 413: "request body too large",
            415: "unsupported media type", 416: "range not satisfiable"}
_DROP_HEADERS = {"content-type", "content-length"}


@web.middleware
async def api_errors(request: web.Request,
                     handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                     ) -> web.StreamResponse:
    """JSON errors for every path under /api/, the router's and the service's too."""
    if not request.path.startswith("/api/"):
        return await handler(request)
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.message, exc.headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        text = exc.text or ""
        if not text or text.startswith(f"{exc.status}:"):
            text = _GENERIC.get(exc.status, exc.reason.lower())
        kept = {k: v for k, v in exc.headers.items() if k.lower() not in _DROP_HEADERS}
        return error_response(exc.status, text, kept)


def _storage_error(exc: StorageError) -> NoReturn:
    """The answer for a vault failure (the more specific classes first)."""
    if isinstance(exc, ScorecardError):
        raise ApiError(400, str(exc)) from None
    if isinstance(exc, AccessDenied):
        raise ApiError(403, str(exc)) from None
    if isinstance(exc, NotFound):
        raise ApiError(404, "no such recording, or it has no such variant") from None
    if isinstance(exc, RangeNotSatisfiable):
        raise ApiError(416, "range not satisfiable") from None
    if isinstance(exc, IntegrityError):
        raise ApiError(502, "the stored data failed its integrity check; the incident "
                            "is logged") from None
    raise ApiError(503, "the vault is unavailable; try again shortly") from None


# --- query parameters ----------------------------------------------------------------------

def _one(request: web.Request, name: str) -> str | None:
    """A query parameter given at most once (None if absent)."""
    values = request.query.getall(name, [])
    if not values:
        return None
    if len(values) > 1:
        raise ApiError(400, f"{name} may be given once")
    return values[0]


def _int(name: str, text: str, low: int, high: int) -> int:
    if not _INT.fullmatch(text) or not low <= int(text) <= high:
        raise ApiError(400, f"{name} is a whole number from {low} to {high}")
    return int(text)


def _seconds(name: str, text: str) -> float:
    value = float(text) if _NUMBER.fullmatch(text) else math.nan
    if not (math.isfinite(value) and 0 <= value <= SECONDS_MAX):
        raise ApiError(400, f"{name} is a number of seconds from 0 to {SECONDS_MAX:.0f}")
    return value


def _choice(name: str, text: str, allowed: tuple[str, ...]) -> str:
    if text not in allowed:
        raise ApiError(400, f"{name} is one of {', '.join(allowed)}")
    return text


def parse_when(name: str, text: str, *, end_of_day: bool = False) -> datetime:
    """A YYYY-MM-DD date (its start; with `end_of_day`, the start of the next day, since
    `until` is exclusive and a date means the whole day) or an ISO date and time, UTC
    unless it names a zone."""
    try:
        if _DATE.fullmatch(text):
            day = date.fromisoformat(text)
            at = datetime.combine(day, time(), UTC)
            if end_of_day:
                try:
                    at += timedelta(days=1)
                except OverflowError:
                    at = datetime.max.replace(tzinfo=UTC)
            return at
        if not _WHEN.fullmatch(text):
            raise ValueError(text)
        at = datetime.fromisoformat(text.upper())
    except (ValueError, OverflowError):
        raise ApiError(400, f"{name} is a date (YYYY-MM-DD) or an ISO 8601 date and time"
                            ) from None
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def recording_query(request: web.Request) -> catalog.RecordingQuery:
    """The list filters of a request, checked; ApiError(400) for any bad value."""
    def get(name: str) -> str | None:
        return _one(request, name)

    args: dict[str, Any] = {}
    if (v := get("since")) is not None:
        args["since"] = parse_when("since", v)
    if (v := get("until")) is not None:
        args["until"] = parse_when("until", v, end_of_day=True)
    if (v := get("agent")) is not None:
        if not 1 <= len(v) <= AGENT_MAX or not v.isprintable():
            raise ApiError(400, f"agent is 1-{AGENT_MAX} printable characters")
        args["agent"] = v
    if (v := get("verdict")) is not None:
        args["verdict"] = _choice("verdict", v, VERDICTS)
    if (v := get("min_seconds")) is not None:
        args["min_seconds"] = _seconds("min_seconds", v)
    if (v := get("max_seconds")) is not None:
        args["max_seconds"] = _seconds("max_seconds", v)
    if (v := get("qa_status")) is not None:
        args["qa_status"] = _choice("qa_status", v, QA_STATUSES)
    if (v := get("sort")) is not None:
        args["sort"] = _choice("sort", v, SORTS)
    if (v := get("order")) is not None:
        args["descending"] = _choice("order", v, ORDERS) == "desc"
    if (v := get("limit")) is not None:
        args["limit"] = _int("limit", v, 1, catalog.MAX_PAGE)
    if (v := get("offset")) is not None:
        args["offset"] = _int("offset", v, 0, OFFSET_MAX)
    try:
        return catalog.RecordingQuery(**args)
    except ValueError as exc:          # the catalogue's own checks, the same rules
        raise ApiError(400, str(exc)) from None


def recording_id(request: web.Request) -> uuid.UUID:
    try:
        return uuid.UUID(request.match_info["id"])
    except ValueError:
        raise ApiError(404, _NOT_A_UUID) from None


# --- JSON shapes ---------------------------------------------------------------------------

def iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def readable(principal: Principal, variant: Variant) -> bool | None:
    """Whether `principal` may read `variant`: None (never), False (freely), True (only
    with a stated reason)."""
    try:
        authorize(principal, "read", variant)
        return False
    except AccessDenied:
        pass
    try:
        authorize(principal, "read", variant, "a stated reason, for the check only")
        return True
    except AccessDenied:
        return None


def summary_json(s: catalog.RecordingSummary, principal: Principal) -> dict[str, Any]:
    variants = []
    for v in VARIANTS:
        if v not in s.variants:
            continue
        needs = readable(principal, v)
        if needs is not None:
            variants.append({"variant": v, "needs_reason": needs})
    return {"id": str(s.id), "agent": s.agent, "status": s.status,
            "created_at": iso(s.created_at), "duration_seconds": s.duration_seconds,
            "channels": s.channels, "verified": s.verified, "method": s.method,
            "reason": s.reason, "variants": variants, "redacted_spans": s.redacted_spans,
            "scorecards": s.scorecards}


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def spans_of(dsn: str, rid: uuid.UUID) -> list[dict[str, Any]]:
    """The muted spans of one recording from its `redaction` summary: label, times and
    channel only (the summary holds no values, and nothing else is passed on)."""
    with connect(dsn) as conn, translate_errors():
        row = conn.execute("SELECT redaction FROM recordings WHERE id = %s",
                           (rid,)).fetchone()
    red = row["redaction"] if row is not None else None
    found = red.get("spans") if isinstance(red, dict) else None
    spans: list[dict[str, Any]] = []
    for s in found if isinstance(found, list) else []:
        if not isinstance(s, dict):
            continue
        label, start, end, channel = s.get("label"), _number(s.get("start")), \
            _number(s.get("end")), s.get("channel")
        if not isinstance(label, str) or start is None or end is None:
            continue
        spans.append({"label": label[:64], "start": start, "end": end,
                      "channel": channel if isinstance(channel, int)
                      and not isinstance(channel, bool) else None})
    return spans


def card_json(card: Scorecard) -> dict[str, Any]:
    return card.as_json()


async def read_json(request: web.Request, limit: int) -> dict[str, Any]:
    """A JSON object body of at most `limit` bytes: 415, 413 or 400 otherwise."""
    if request.content_type != "application/json":
        raise ApiError(415, "send the body as application/json")
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, f"the body is at most {limit} bytes")
    data = bytearray()
    while True:
        chunk = await request.content.read(limit + 1 - len(data))
        if not chunk:
            break
        data += chunk
        if len(data) > limit:
            raise ApiError(413, f"the body is at most {limit} bytes")

    def no_constant(name: str) -> NoReturn:
        raise ValueError(name)

    try:
        doc = json.loads(bytes(data).decode("utf-8"), parse_constant=no_constant)
    except (ValueError, RecursionError):
        raise ApiError(400, "the body is not valid JSON") from None
    if not isinstance(doc, dict):
        raise ApiError(400, "the body is a JSON object")
    return doc


def _text(doc: Mapping[str, Any], name: str, *, low: int, high: int,
          required: bool) -> str | None:
    value = doc.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not low <= len(value) <= high:
        raise ApiError(400, f"{name} is a string of {low}-{high} characters")
    return value


# --- the API -------------------------------------------------------------------------------

class QaApi:
    """The `/api/` routes over a QaService."""

    def __init__(self, service: QaService) -> None:
        self.service = service
        self._spec: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return "QaApi()"

    def add_routes(self, app: web.Application) -> None:
        app.middlewares.append(api_errors)
        r = app.router
        r.add_get("/api/openapi.json", self.openapi, allow_head=False)
        r.add_post("/api/tokens", self.issue_token)
        r.add_delete("/api/tokens", self.revoke_token)
        r.add_get("/api/recordings", self.list_recordings, allow_head=False)
        r.add_get("/api/recordings/{id}", self.recording, allow_head=False)
        r.add_get("/api/recordings/{id}/transcript", self.transcript, allow_head=False)
        r.add_get("/api/recordings/{id}/waveform", self.waveform, allow_head=False)
        r.add_get("/api/recordings/{id}/audio/{variant}", self.audio)   # HEAD as well
        r.add_get("/api/scorecard-questions", self.questions, allow_head=False)
        r.add_get("/api/recordings/{id}/scorecards", self.scorecards, allow_head=False)
        r.add_get("/api/recordings/{id}/scorecard", self.my_scorecard, allow_head=False)
        r.add_put("/api/recordings/{id}/scorecard", self.save_scorecard)
        r.add_post("/api/recordings/{id}/events", self.player_event)

    def origin(self, request: web.Request) -> str:
        return f"QA API {self.service.auth.client(request)}"

    async def _session(self, request: web.Request) -> WebSession:
        """The caller's session: 401 without one, 503 if the database is down, 403 for an
        unsafe request from a browser session without its CSRF token."""
        try:
            session = await self.service.auth.session(request)
        except StorageError:
            raise ApiError(503, "the vault database is unavailable; try again shortly"
                           ) from None
        if session is None:
            presented = "Authorization" in request.headers
            raise ApiError(401, "the token is not valid (expired or revoked); get a new one"
                           if presented else "sign in first: send Authorization: Bearer "
                           "<token> (POST /api/tokens) or the session cookie",
                           {"WWW-Authenticate": 'Bearer error="invalid_token"' if presented
                            else 'Bearer realm="callvault"'})
        if request.method not in ("GET", "HEAD", "OPTIONS") and not \
                self.service.auth.csrf_ok(request, session, None):
            raise ApiError(403, f"a browser session must send its {CSRF_HEADER} header, "
                                "from this site")
        return session

    async def _stored(self, rid: uuid.UUID) -> catalog.RecordingSummary:
        try:
            found = await self.service.summary(rid)
        except StorageError as exc:
            _storage_error(exc)
        if found is None:
            raise ApiError(404, "no such recording")
        return found

    # --- tokens -----------------------------------------------------------------------
    async def issue_token(self, request: web.Request) -> web.Response:
        if not same_origin(request):
            raise ApiError(403, "cross-site requests may not sign in")
        doc = await read_json(request, TOKEN_BODY_MAX)
        extra = sorted(set(doc) - {"user", "password", "label"})
        if extra:
            raise ApiError(400, "the body has user, password and label only")
        user = _text(doc, "user", low=2, high=64, required=True) or ""
        if not _USER.fullmatch(user):
            raise ApiError(400, "user is a user name: lowercase letters, digits, '.', '_' "
                                "or '-', starting with a letter")
        password = _text(doc, "password", low=1, high=PASSWORD_MAX, required=True) or ""
        label = _text(doc, "label", low=0, high=LABEL_MAX, required=False)
        if label is not None and not label.isprintable():
            raise ApiError(400, f"label is up to {LABEL_MAX} printable characters")
        origin = self.origin(request)
        try:
            principal = await self.service.auth.sign_in(user, password,
                                                        self.service.auth.client(request), origin)
        except SignInRefused as exc:
            headers = ({"Retry-After": str(exc.retry_after)}
                       if exc.status == 429 and exc.retry_after else {})
            if exc.status == 401:
                headers["WWW-Authenticate"] = 'Bearer realm="callvault"'
            raise ApiError(exc.status, exc.message, headers) from None
        try:
            token, session = await self.service.auth.start(principal, "api", origin,
                                                           label or None)
        except StorageError as exc:
            _storage_error(exc)
        return web.json_response(
            {"token": token, "token_type": "Bearer", "user": session.user,
             "role": session.role, "expires_at": iso(datetime.fromtimestamp(
                 session.expires, UTC))}, status=201)

    async def revoke_token(self, request: web.Request) -> web.Response:
        session = await self._session(request)
        if session.kind != "api":
            raise ApiError(400, "this revokes a bearer token; a browser signs out at "
                                "/qa/sign-out")
        try:
            await self.service.auth.end(session, self.origin(request))
        except StorageError as exc:
            _storage_error(exc)
        return web.Response(status=204)

    # --- recordings ---------------------------------------------------------------------
    async def list_recordings(self, request: web.Request) -> web.Response:
        session = await self._session(request)
        q = recording_query(request)
        try:
            page = await self.service.list(q)
        except StorageError as exc:
            _storage_error(exc)
        return web.json_response({"items": [summary_json(s, session.principal)
                                            for s in page.items],
                                  "total": page.total, "limit": q.limit, "offset": q.offset})

    async def recording(self, request: web.Request) -> web.Response:
        session = await self._session(request)
        rid = recording_id(request)
        found = await self._stored(rid)
        try:
            spans = await asyncio.to_thread(spans_of, self.service.dsn, rid)
        except StorageError as exc:
            _storage_error(exc)
        return web.json_response({**summary_json(found, session.principal), "spans": spans})

    async def transcript(self, request: web.Request) -> web.Response:
        session = await self._session(request)
        rid = recording_id(request)
        await self._stored(rid)
        try:
            doc = await self.service.transcript(session, rid, self.origin(request))
        except StorageError as exc:
            _storage_error(exc)
        except ValueError:               # not JSON: damage the integrity check missed
            raise ApiError(502, "the stored transcript could not be read") from None
        return web.json_response(doc)

    async def waveform(self, request: web.Request) -> web.Response:
        session = await self._session(request)
        rid = recording_id(request)
        await self._stored(rid)
        try:
            peaks = await self.service.waveform(session, rid, self.origin(request))
        except StorageError as exc:
            _storage_error(exc)
        except BadWave:
            raise ApiError(502, "the stored audio could not be drawn") from None
        return web.json_response(peaks)

    async def audio(self, request: web.Request) -> web.StreamResponse:
        session = await self._session(request)
        rid = recording_id(request)
        variant = request.match_info["variant"]
        if variant not in AUDIO_VARIANTS:
            raise ApiError(404, "no such audio variant: redacted or raw")
        download = _one(request, "download")
        if download is not None:
            _choice("download", download, ("0", "1"))
        try:
            return await self.service.audio(request, session, rid, variant)
        except StorageError as exc:
            _storage_error(exc)

    # --- scorecards -----------------------------------------------------------------------
    async def questions(self, request: web.Request) -> web.Response:
        await self._session(request)
        return web.json_response({"questions": [
            {"id": q.id, "text": q.text, "points": q.points}
            for q in self.service.scorecards.questions]})

    async def scorecards(self, request: web.Request) -> web.Response:
        await self._session(request)
        rid = recording_id(request)
        await self._stored(rid)
        try:
            cards = await asyncio.to_thread(self.service.scorecards.of_recording, rid)
        except StorageError as exc:
            _storage_error(exc)
        return web.json_response({"scorecards": [card_json(c) for c in cards]})

    async def my_scorecard(self, request: web.Request) -> web.Response:
        session = await self._session(request)
        rid = recording_id(request)
        await self._stored(rid)
        try:
            card = await asyncio.to_thread(self.service.scorecards.get, rid, session.user)
        except StorageError as exc:
            _storage_error(exc)
        if card is None:
            raise ApiError(404, "you have not scored this recording yet")
        return web.json_response(card_json(card))

    async def save_scorecard(self, request: web.Request) -> web.Response:
        session = await self._session(request)
        rid = recording_id(request)
        doc = await read_json(request, SCORECARD_BODY_MAX)
        if set(doc) - {"answers", "notes"}:
            raise ApiError(400, "the body has answers and notes only")
        answers = doc.get("answers")
        if not isinstance(answers, dict):
            raise ApiError(400, "answers is an object of question id to points")
        notes = doc.get("notes", "")
        if not isinstance(notes, str):
            raise ApiError(400, f"notes is a string of at most {NOTES_MAX} characters")
        await self._stored(rid)
        try:
            card = await asyncio.to_thread(self.service.scorecards.save, session.principal,
                                           rid, answers, notes)
        except StorageError as exc:
            _storage_error(exc)
        return web.json_response(card_json(card))

    # --- what the player reports --------------------------------------------------------------
    async def player_event(self, request: web.Request) -> web.Response:
        """A play, pause, seek or end reported by the browser's player, written to the
        access log. The byte ranges the server streams are logged anyway; these add the
        seeks a player serves from its own buffer, which make no request."""
        session = await self._session(request)
        rid = recording_id(request)
        doc = await read_json(request, EVENT_BODY_MAX)
        if set(doc) - {"type", "variant", "position"}:
            raise ApiError(400, "the body has type, variant and position only")
        kind, variant, position = doc.get("type"), doc.get("variant"), doc.get("position")
        if kind not in PLAYER_EVENTS:
            raise ApiError(400, f"type is one of {', '.join(PLAYER_EVENTS)}")
        if variant not in AUDIO_VARIANTS:
            raise ApiError(400, "variant is redacted or raw")
        if isinstance(position, bool) or not isinstance(position, int | float) \
                or not 0 <= position <= SECONDS_MAX:
            raise ApiError(400, f"position is a number of seconds, 0-{SECONDS_MAX}")
        await self._stored(rid)
        if variant == "raw" and (session.kind != "browser" or await
                                 self.service.auth.raw_reason(session, rid) is None):
            raise ApiError(403, "only a player granted the original reports on it")
        if readable(session.principal, variant) is None:
            raise ApiError(403, f"role {session.role} may not play {variant} audio")
        try:
            await asyncio.to_thread(self.service.vault.log.append, AuditEvent(
                actor=session.user, role=session.role, action=kind, outcome="ok",
                recording_id=rid, variant=variant,
                origin=f"QA app player {self.service.auth.client(request)}",
                detail=f"{kind} at {float(position):.1f} s"))
        except StorageError as exc:
            _storage_error(exc)
        return web.Response(status=204)

    # --- the description ---------------------------------------------------------------------
    async def openapi(self, request: web.Request) -> web.Response:
        if self._spec is None:
            self._spec = openapi_document(self.service)
        return web.json_response(self._spec)


# --- OpenAPI 3.0.3 -----------------------------------------------------------------------------

def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str,
          headers: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description,
                           "content": {"application/json": {"schema": schema}}}
    if headers:
        out["headers"] = headers
    return out


def _err(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    return _json(_ref("Error"), description, headers)


def _obj(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {"type": "object", "properties": properties,
            "required": list(properties) if required is None else required,
            "additionalProperties": False}


_STR = {"type": "string"}
_NSTR = {"type": "string", "nullable": True}
_UUID = {"type": "string", "format": "uuid"}
_TIME = {"type": "string", "format": "date-time"}
_SECONDS = {"type": "number", "minimum": 0}
_CHANNEL = {"type": "integer", "minimum": 0}


def openapi_document(service: QaService) -> dict[str, Any]:
    """The OpenAPI 3.0.3 description of these routes, as the handlers check them."""
    questions = service.scorecards.questions
    answers = {"type": "object",
               "properties": {q.id: {"type": "integer", "minimum": 0, "maximum": q.points,
                                     "description": q.text} for q in questions},
               "required": [q.id for q in questions], "additionalProperties": False}
    variant = _obj({"variant": {"type": "string", "enum": list(VARIANTS)},
                    "needs_reason": {"type": "boolean", "description":
                                     "true: only with a stated reason (raw, compliance)"}})
    summary_props: dict[str, Any] = {
        "id": _UUID, "agent": _NSTR, "status": {"type": "string", "enum": ["stored"]},
        "created_at": _TIME, "duration_seconds": {**_SECONDS, "nullable": True},
        "channels": {"type": "integer", "minimum": 1, "nullable": True},
        "verified": {"type": "boolean", "nullable": True,
                     "description": "the IVR verdict; null when there was none"},
        "method": _NSTR, "reason": _NSTR,
        "variants": {"type": "array", "items": _ref("Variant"), "description":
                     "the stored variants this caller may read; raw only for roles that "
                     "may play it with a stated reason"},
        "redacted_spans": {"type": "integer", "minimum": 0},
        "scorecards": {"type": "integer", "minimum": 0}}
    span = _obj({"label": {"type": "string", "maxLength": 64}, "start": _SECONDS,
                 "end": _SECONDS, "channel": {**_CHANNEL, "nullable": True}})
    word = _obj({"start": _SECONDS, "end": _SECONDS, "text": _STR})
    transcript = _obj({
        "schema": {"type": "string", "enum": ["callvault.transcript/1"]},
        "recording_id": _UUID, "duration_seconds": _SECONDS,
        "channels": {"type": "array", "items": _obj({
            "channel": _CHANNEL, "text": _STR,
            "words": {"type": "array", "items": word}})},
        "spans": {"type": "array", "items": _ref("Span")},
        "redacted_seconds": _SECONDS})
    waveform = _obj({
        "duration_seconds": _SECONDS, "bins": {"type": "integer", "minimum": 1},
        "seconds_per_bin": _SECONDS,
        "channels": {"type": "array", "items": _obj({
            "channel": _CHANNEL, "peaks": {"type": "array", "items": {
                "type": "number", "minimum": 0, "maximum": 1}}})}})
    scorecard = _obj({
        "recording_id": _UUID, "reviewer": _STR,
        "answers": {"type": "object", "additionalProperties": {"type": "integer",
                                                               "minimum": 0}},
        "score": {"type": "number", "minimum": 0, "maximum": 100},
        "notes": {"type": "string", "maxLength": NOTES_MAX},
        "created_at": _TIME, "updated_at": _TIME})
    schemas: dict[str, Any] = {
        "Error": _obj({"error": _STR}),
        "TokenRequest": _obj({
            "user": {"type": "string", "pattern": USER_PATTERN},
            "password": {"type": "string", "minLength": 1, "maxLength": PASSWORD_MAX},
            "label": {"type": "string", "maxLength": LABEL_MAX, "nullable": True,
                      "description": "printable characters naming the client"}},
            required=["user", "password"]),
        "Token": _obj({"token": {"type": "string", "pattern": "^[A-Za-z0-9_-]{43}$"},
                       "token_type": {"type": "string", "enum": ["Bearer"]},
                       "user": _STR, "role": {"type": "string", "enum": ["qa", "compliance"]},
                       "expires_at": _TIME}),
        "Variant": variant,
        "Recording": _obj(summary_props),
        "RecordingDetail": _obj({**summary_props, "spans": {"type": "array",
                                                            "items": _ref("Span")}}),
        "RecordingPage": _obj({"items": {"type": "array", "items": _ref("Recording")},
                               "total": {"type": "integer", "minimum": 0},
                               "limit": {"type": "integer", "minimum": 1,
                                         "maximum": catalog.MAX_PAGE},
                               "offset": {"type": "integer", "minimum": 0,
                                          "maximum": OFFSET_MAX}}),
        "Span": span, "Transcript": transcript, "Waveform": waveform,
        "Question": _obj({"id": _STR, "text": _STR,
                          "points": {"type": "integer", "minimum": 1, "maximum": 100}}),
        "Questions": _obj({"questions": {"type": "array", "items": _ref("Question")}}),
        "Scorecard": scorecard,
        "Scorecards": _obj({"scorecards": {"type": "array", "items": _ref("Scorecard")}}),
        "ScorecardInput": _obj({"answers": answers,
                                "notes": {"type": "string", "maxLength": NOTES_MAX,
                                          "description": "no phone, account or card "
                                                         "numbers (refused with 400)"}},
                               required=["answers"]),
    }
    www = {"WWW-Authenticate": {"schema": _STR}}
    authed = {"401": _err("no valid session or token", www),
              "503": _err("the vault database is unavailable")}
    rid = {"name": "id", "in": "path", "required": True, "schema": _UUID,
           "description": "the recording id (anything else: 404)"}

    def q(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
        return {"name": name, "in": "query", "required": False, "schema": schema,
                "description": description}

    when = {"type": "string", "pattern": WHEN_PATTERN}
    seconds = {"type": "number", "minimum": 0, "maximum": SECONDS_MAX}
    list_params = [
        q("since", when, "from this date (its start) or date and time; UTC unless a zone "
                         "is given"),
        q("until", when, "before this date and time; a date covers that whole day"),
        q("agent", {"type": "string", "minLength": 1, "maxLength": AGENT_MAX},
          "the agent's name, exactly (printable characters)"),
        q("verdict", {"type": "string", "enum": list(VERDICTS)}, "the IVR verdict"),
        q("min_seconds", seconds, "at least this long"),
        q("max_seconds", seconds, "at most this long"),
        q("qa_status", {"type": "string", "enum": list(QA_STATUSES)},
          "without any scorecard, or with at least one"),
        q("sort", {"type": "string", "enum": list(SORTS), "default": "created_at"},
          "the sort key"),
        q("order", {"type": "string", "enum": list(ORDERS), "default": "desc"},
          "the sort order"),
        q("limit", {"type": "integer", "minimum": 1, "maximum": catalog.MAX_PAGE,
                    "default": 25}, "page size"),
        q("offset", {"type": "integer", "minimum": 0, "maximum": OFFSET_MAX, "default": 0},
          "items to skip"),
    ]
    audio_params = [
        rid,
        {"name": "variant", "in": "path", "required": True,
         "schema": {"type": "string", "enum": list(AUDIO_VARIANTS)}},
        q("download", {"type": "string", "enum": ["0", "1"]},
          "1: as an attachment, logged as a download"),
        {"name": "Range", "in": "header", "required": False,
         "schema": {"type": "string", "pattern": RANGE_PATTERN},
         "description": "one byte range; other forms are ignored (the whole file)"},
        {"name": REASON_HEADER, "in": "header", "required": False,
         "schema": {"type": "string", "maxLength": 4 * REASON_MAX},
         "description": "raw audio, bearer clients: the stated reason (10-500 characters, "
                        "in words, no long numbers), kept in the access log"},
    ]
    audio_headers = {"Accept-Ranges": {"schema": {"type": "string", "enum": ["bytes"]}},
                     "Content-Disposition": {"schema": _STR}}
    ranged = {**audio_headers, "Content-Range": {"schema": {
        "type": "string", "pattern": "^bytes [0-9]+-[0-9]+/[0-9]+$"}}}
    wav = {"audio/wav": {"schema": {"type": "string", "format": "binary"}}}
    audio_errors = {
        "400": _err("a bad download value"),
        "403": _err("this role may not play the variant, or no or a bad stated reason"),
        "404": _err("no such recording or variant"),
        "416": _err("the range starts past the end",
                    {"Content-Range": {"schema": {"type": "string",
                                                  "pattern": "^bytes \\*/[0-9]+$"}}}),
        "502": _err("the stored audio failed its integrity check"), **authed}

    def audio_op(head: bool) -> dict[str, Any]:
        ok: dict[str, Any] = {"description": "the whole file", "headers": audio_headers}
        part: dict[str, Any] = {"description": "the requested range", "headers": ranged}
        if not head:
            ok["content"] = wav
            part["content"] = wav
        return {"operationId": "headAudio" if head else "getAudio",
                "summary": "a recording's audio (headers only)" if head
                           else "a recording's audio (Range supported; play, seek and "
                                "download are logged)",
                "parameters": audio_params,
                "responses": {"200": ok, "206": part, **audio_errors}}

    csrf = {"name": CSRF_HEADER, "in": "header", "required": False, "schema": _STR,
            "description": "browser (cookie) sessions: the session's CSRF token"}
    one_recording = {"404": _err("no such stored recording"), **authed}
    paths: dict[str, Any] = {
        "/api/openapi.json": {"get": {
            "operationId": "openapi", "summary": "this document", "security": [],
            "responses": {"200": {"description": "OpenAPI 3.0.3", "content": {
                "application/json": {"schema": {"type": "object"}}}}}}},
        "/api/tokens": {
            "post": {"operationId": "issueToken", "security": [],
                     "summary": "a bearer token for a QA reviewer or compliance officer",
                     "requestBody": {"required": True, "content": {"application/json": {
                         "schema": _ref("TokenRequest")}}},
                     "responses": {
                         "201": _json(_ref("Token"), "the token (shown once)"),
                         "400": _err("a malformed body"),
                         "401": _err("wrong user name or password", www),
                         "403": _err("a role the QA app does not serve, or cross-site"),
                         "413": _err(f"a body over {TOKEN_BODY_MAX} bytes"),
                         "415": _err("not application/json"),
                         "429": _err("locked out or throttled",
                                     {"Retry-After": {"schema": {"type": "integer",
                                                                 "minimum": 1}}}),
                         "503": _err("the vault database is unavailable")}},
            "delete": {"operationId": "revokeToken", "summary": "revoke this bearer token",
                       "parameters": [csrf],
                       "responses": {"204": {"description": "revoked"},
                                     "400": _err("not a bearer token (a browser session)"),
                                     "403": _err("a browser session without its CSRF token"),
                                     **authed}}},
        "/api/recordings": {"get": {
            "operationId": "listRecordings", "summary": "stored recordings, filtered",
            "parameters": list_params,
            "responses": {"200": _json(_ref("RecordingPage"), "one page"),
                          "400": _err("a bad filter value"), **authed}}},
        "/api/recordings/{id}": {"get": {
            "operationId": "getRecording", "summary": "a recording and its muted spans",
            "parameters": [rid],
            "responses": {"200": _json(_ref("RecordingDetail"), "the recording"),
                          **one_recording}}},
        "/api/recordings/{id}/transcript": {"get": {
            "operationId": "getTranscript", "summary": "the redacted transcript (logged)",
            "parameters": [rid],
            "responses": {"200": _json(_ref("Transcript"), "the transcript"),
                          "403": _err("the policy refuses"),
                          "502": _err("the stored transcript failed its integrity check"),
                          **one_recording}}},
        "/api/recordings/{id}/waveform": {"get": {
            "operationId": "getWaveform", "summary": "peaks of the redacted audio (logged)",
            "parameters": [rid],
            "responses": {"200": _json(_ref("Waveform"), "peaks per bin and channel"),
                          "403": _err("the policy refuses"),
                          "502": _err("the stored audio could not be read"),
                          **one_recording}}},
        "/api/recordings/{id}/audio/{variant}": {"get": audio_op(False),
                                                 "head": audio_op(True)},
        "/api/scorecard-questions": {"get": {
            "operationId": "scorecardQuestions", "summary": "the scorecard's questions",
            "responses": {"200": _json(_ref("Questions"), "the questions"), **authed}}},
        "/api/recordings/{id}/scorecards": {"get": {
            "operationId": "listScorecards", "summary": "every reviewer's scorecard",
            "parameters": [rid],
            "responses": {"200": _json(_ref("Scorecards"), "newest first"),
                          **one_recording}}},
        "/api/recordings/{id}/scorecard": {
            "get": {"operationId": "getMyScorecard", "summary": "the caller's scorecard",
                    "parameters": [rid],
                    "responses": {"200": _json(_ref("Scorecard"), "the scorecard"),
                                  "404": _err("no such recording, or not scored yet"),
                                  **authed}},
            "put": {"operationId": "saveMyScorecard",
                    "summary": "create or replace the caller's scorecard",
                    "parameters": [rid, csrf],
                    "requestBody": {"required": True, "content": {"application/json": {
                        "schema": _ref("ScorecardInput")}}},
                    "responses": {"200": _json(_ref("Scorecard"), "the saved scorecard"),
                                  "400": _err("answers or notes refused"),
                                  "403": _err("a browser session without its CSRF token"),
                                  "404": _err("no such stored recording"),
                                  "413": _err(f"a body over {SCORECARD_BODY_MAX} bytes"),
                                  "415": _err("not application/json"), **authed}}},
    }
    paths["/api/recordings/{id}/events"] = {
        "post": {"operationId": "reportPlayerEvent",
                 "summary": "log a play, pause, seek or end reported by a player",
                 "parameters": [rid, csrf],
                 "requestBody": {"required": True, "content": {"application/json": {
                     "schema": _ref("PlayerEvent")}}},
                 "responses": {"204": {"description": "logged"},
                               "400": _err("a malformed event"),
                               "403": _err("a variant this caller may not play, or a "
                                           "browser session without its CSRF token"),
                               "404": _err("no such stored recording"),
                               "413": _err(f"a body over {EVENT_BODY_MAX} bytes"),
                               "415": _err("not application/json"), **authed}}}
    schemas["PlayerEvent"] = _obj({
        "type": {"type": "string", "enum": list(PLAYER_EVENTS)},
        "variant": {"type": "string", "enum": list(AUDIO_VARIANTS)},
        "position": {"type": "number", "minimum": 0, "maximum": SECONDS_MAX}},
        required=["type", "variant", "position"])
    return {
        "openapi": "3.0.3",
        "info": {"title": "callvault QA API", "version": "1",
                 "description": "Replay redacted call recordings, read redacted transcripts "
                                "and score calls. Raw audio is for compliance officers with "
                                "a stated reason, and every access is logged."},
        "paths": paths,
        "components": {"schemas": schemas, "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer",
                       "description": "a token from POST /api/tokens"},
            "cookie": {"type": "apiKey", "in": "cookie", "name": service.auth.cookie_name,
                       "description": "the QA app's browser session; unsafe methods also "
                                      f"need the {CSRF_HEADER} header"}}},
        "security": [{"bearer": []}, {"cookie": []}],
    }
