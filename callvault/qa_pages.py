"""The QA app's browser pages (issue 6): sign-in, the recordings list and the player.

Server-rendered HTML (Jinja2, autoescaped) with one static script, `qa_static/player.js`,
which fetches the transcript and waveform from the JSON API (`callvault.qa_api`) and
plays audio from it. The CSP forbids inline script and style, so nothing inline is
rendered: what the script needs travels in `data-` attributes, and the session's CSRF
token in `<meta name="csrf-token">`.

Every page needs a live browser session (else 303 to the sign-in page; WebAuth ends
sessions when idle or too old). Every form carries a CSRF token: the sign-in form a
double-submit one, the others the session's. A compliance officer's "Play original"
control is rendered for roles the policy lets read raw audio only, and the grant it asks
for is logged with its reason by WebAuth. No CPNI goes into a title or a URL: a
recording is named by the first characters of its random id.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlencode

import jinja2
from aiohttp import web

from callvault.qa_service import QaService
from callvault.web_auth import CSRF_FIELD, SignInRefused, WebSession
from storage import catalog
from storage.access import POLICY, REASON_MAX, REASON_MIN, Principal
from storage.errors import AccessDenied, NotFound, StorageError
from storage.scorecards import NOTES_MAX, ScorecardError

logger = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parent
PAGE_SIZE = 25
MAX_PAGE_NUMBER = 100_000
SIGN_IN = "/qa/sign-in"
RECORDINGS = "/qa/recordings"
# where a sign-in may send the browser back to: our own pages, never a query string
_NEXT = re.compile(r"^/qa/recordings(?:/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}"
                   r"-[0-9a-f]{12})?$")
_AGENT = re.compile(r"^[\w.@+-]{1,64}$")
_SORTS = {"created_at": "date", "duration": "duration", "agent": "agent"}
_VERDICTS = {"verified": "verified", "not_verified": "not verified", "none": "no verdict"}
_QA_STATUSES = {"unreviewed": "unreviewed", "reviewed": "reviewed"}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class BadFilter(ValueError):
    """A recordings-list filter that cannot be used; the message is safe to show."""


def may_play_original(principal: Principal) -> bool:
    """Whether the policy lets this role read raw audio at all (with a reason)."""
    grant = POLICY.get(principal.role, {}).get("read")
    return grant is not None and "raw" in grant.variants


def _fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    total = round(seconds)
    return f"{total // 60}:{total % 60:02d}"


def _fmt_time(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _verdict(verified: bool | None) -> str:
    return "—" if verified is None else ("verified" if verified else "not verified")


def _see_other(location: str) -> web.Response:
    """A 303 that can carry cookies (an HTTPException must be raised, not returned)."""
    return web.Response(status=303, headers={"Location": location})


@dataclass(frozen=True)
class Filters:
    """The recordings list's query string, checked; `values` re-fills the form."""

    query: catalog.RecordingQuery
    values: dict[str, str]
    page: int

    def link(self, page: int) -> str:
        params = {k: v for k, v in self.values.items() if v}
        params["page"] = str(page)
        return f"{RECORDINGS}?{urlencode(params)}"


def _date(name: str, text: str) -> date | None:
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise BadFilter(f"{name}: a date as YYYY-MM-DD") from None


def _seconds(name: str, text: str) -> float | None:
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise BadFilter(f"{name}: a number of seconds") from None
    if not math.isfinite(value) or value < 0 or value > 86400 * 7:
        raise BadFilter(f"{name}: a number of seconds from 0 to 604800")
    return value


def parse_filters(query: Mapping[str, str]) -> Filters:
    """The list page's filters from its query string, or BadFilter saying what is wrong
    (the form is re-filled with what was typed either way)."""
    keys = ("since", "until", "agent", "verdict", "min_seconds", "max_seconds", "qa_status",
            "sort", "order")
    values = {k: query.get(k, "").strip()[:100] for k in keys}
    since = _date("from", values["since"])
    until = _date("to", values["until"])
    if since and until and until < since:
        raise BadFilter("the 'to' date is before the 'from' date")
    agent = values["agent"] or None
    if agent is not None and not _AGENT.match(agent):
        raise BadFilter("agent: a user name (letters, digits and . _ - @ +, at most 64)")
    verdict = values["verdict"] or None
    if verdict is not None and verdict not in _VERDICTS:
        raise BadFilter("verdict: verified, not verified or no verdict")
    qa_status = values["qa_status"] or None
    if qa_status is not None and qa_status not in _QA_STATUSES:
        raise BadFilter("QA status: unreviewed or reviewed")
    low = _seconds("minimum duration", values["min_seconds"])
    high = _seconds("maximum duration", values["max_seconds"])
    if low is not None and high is not None and high < low:
        raise BadFilter("the maximum duration is below the minimum")
    sort = values["sort"] or "created_at"
    if sort not in _SORTS:
        raise BadFilter("sort by date, duration or agent")
    order = values["order"] or "desc"
    if order not in ("asc", "desc"):
        raise BadFilter("order: ascending or descending")
    raw_page = query.get("page", "1").strip() or "1"
    if not (raw_page.isascii() and raw_page.isdigit()) \
            or not 1 <= int(raw_page) <= MAX_PAGE_NUMBER:
        raise BadFilter(f"page: a whole number from 1 to {MAX_PAGE_NUMBER}")
    page = int(raw_page)
    q = catalog.RecordingQuery(
        since=datetime.combine(since, datetime.min.time(), UTC) if since else None,
        # the form's 'to' date is inclusive; the catalogue's `until` is exclusive
        until=(datetime.combine(until, datetime.min.time(), UTC) + timedelta(days=1)
               if until else None),
        agent=agent, verdict=cast(catalog.VerdictFilter | None, verdict),
        min_seconds=low, max_seconds=high,
        qa_status=cast(catalog.QaStatus | None, qa_status),
        sort=cast(catalog.Sort, sort), descending=order == "desc",
        limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE)
    return Filters(q, values, page)


class QaPages:
    """The HTML pages of the QA app over a `QaService`."""

    def __init__(self, service: QaService) -> None:
        self.service = service
        self.auth = service.auth
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(PACKAGE_DIR / "qa_templates"),
            autoescape=True, undefined=jinja2.StrictUndefined)
        self.env.filters["duration"] = _fmt_duration
        self.env.filters["when"] = _fmt_time
        self.env.filters["verdict"] = _verdict

    def __repr__(self) -> str:
        return "QaPages()"

    def _origin(self, request: web.Request, what: str) -> str:
        return f"QA app {self.auth.client(request)}: {what}"

    def add_routes(self, app: web.Application) -> None:
        g = self._guard
        app.router.add_get("/", self.root)
        app.router.add_get("/qa", self.root)
        app.router.add_get("/qa/", self.root)
        app.router.add_get(SIGN_IN, g(self.sign_in_form))
        app.router.add_post(SIGN_IN, g(self.sign_in))
        app.router.add_post("/qa/sign-out", g(self.sign_out))
        app.router.add_get(RECORDINGS, g(self.recordings))
        app.router.add_get(RECORDINGS + "/{id}", g(self.player))
        app.router.add_post(RECORDINGS + "/{id}/scorecard", g(self.save_scorecard))
        app.router.add_post(RECORDINGS + "/{id}/original", g(self.play_original))
        app.router.add_static("/qa/static", PACKAGE_DIR / "qa_static", append_version=False)

    # --- rendering ----------------------------------------------------------------------------
    def render(self, template: str, status: int = 200, **context: Any) -> web.Response:
        context.setdefault("session", None)
        context.setdefault("csrf", None)
        html = self.env.get_template(template).render(**context)
        return web.Response(text=html, status=status, content_type="text/html",
                            charset="utf-8")

    def error(self, status: int, heading: str, message: str,
              session: WebSession | None = None) -> web.Response:
        return self.render("error.html", status, heading=heading, message=message,
                           session=session, csrf=session.csrf if session else None)

    def _guard(self, handler: Handler) -> Handler:
        """A page's handler with the vault's refusals as 403/404 pages and an outage as a
        503 page, never a 500."""
        async def guarded(request: web.Request) -> web.StreamResponse:
            try:
                return await handler(request)
            except AccessDenied as exc:
                return self.error(403, "Not allowed", str(exc))
            except NotFound:
                return self.error(404, "Not found", "There is nothing stored at this "
                                  "address.")
            except StorageError as exc:
                logger.error("QA page %s failed: %s", request.path, type(exc).__name__)
                return self.error(503, "The vault is unavailable",
                                  "The recordings database or store did not answer. "
                                  "Try again shortly.")
        return guarded

    async def _session(self, request: web.Request) -> WebSession:
        """The browser session, or a redirect to the sign-in page (back here after)."""
        session = await self.auth.session(request)
        if session is None or session.kind != "browser":
            where = SIGN_IN
            if request.method == "GET" and _NEXT.match(request.path):
                where += "?" + urlencode({"next": request.path})
            raise web.HTTPSeeOther(where)
        return session

    async def _form(self, request: web.Request) -> dict[str, str]:
        data = await request.post()
        return {k: v for k, v in data.items() if isinstance(v, str)}

    def _csrf_ok(self, request: web.Request, session: WebSession,
                 form: Mapping[str, str]) -> bool:
        return self.auth.csrf_ok(request, session, form.get(CSRF_FIELD, ""))

    # --- sign-in ------------------------------------------------------------------------------
    async def root(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPSeeOther(RECORDINGS)

    def _sign_in_page(self, request: web.Request, status: int = 200, message: str = "",
                      user: str = "", next_path: str = "") -> web.Response:
        resp = web.Response(status=status, content_type="text/html", charset="utf-8")
        token = self.auth.signin_csrf(request, resp)
        resp.text = self.env.get_template("sign_in.html").render(
            session=None, csrf=None, signin_csrf=token, message=message, user=user[:64],
            next_path=next_path if _NEXT.match(next_path) else "")
        return resp

    async def sign_in_form(self, request: web.Request) -> web.StreamResponse:
        session = await self.auth.session(request)
        if session is not None and session.kind == "browser":
            raise web.HTTPSeeOther(RECORDINGS)
        return self._sign_in_page(request, next_path=request.query.get("next", ""))

    async def sign_in(self, request: web.Request) -> web.StreamResponse:
        form = await self._form(request)
        user = form.get("user", "").strip()
        next_path = form.get("next", "")
        if not self.auth.signin_csrf_ok(request, form.get(CSRF_FIELD)):
            return self._sign_in_page(request, 403, "The sign-in form expired or came from "
                                      "another site. Please sign in again.", user, next_path)
        try:
            principal = await self.auth.sign_in(user, form.get("password", ""),
                                                self.auth.client(request),
                                                self._origin(request, "sign-in"))
        except SignInRefused as refused:
            # the name is not typed back: after a failure it may be a password typed
            # into the wrong field
            resp = self._sign_in_page(request, refused.status, refused.message, "",
                                      next_path)
            if refused.retry_after is not None:
                resp.headers["Retry-After"] = str(refused.retry_after)
            return resp
        previous = await self.auth.session(request)
        if previous is not None and previous.kind == "browser":   # one session per browser
            await self.auth.end(previous, self._origin(request, "sign-in replaces a session"))
        token, _ = await self.auth.start(principal, "browser",
                                         self._origin(request, "sign-in"))
        resp = _see_other(next_path if _NEXT.match(next_path) else RECORDINGS)
        self.auth.set_session_cookie(resp, token)
        resp.del_cookie(self.auth.signin_cookie_name, path="/", secure=self.auth.secure,
                        httponly=True, samesite="Strict")
        return resp

    async def sign_out(self, request: web.Request) -> web.StreamResponse:
        session = await self.auth.session(request)
        form = await self._form(request)
        if session is not None and session.kind == "browser":
            if not self._csrf_ok(request, session, form):
                return self.error(403, "Sign-out refused", "The form expired or came from "
                                  "another site; sign out from the app's own page.", session)
            await self.auth.end(session, self._origin(request, "sign-out"))
        resp = _see_other(SIGN_IN)
        self.auth.clear_session_cookie(resp)
        return resp

    # --- recordings list ----------------------------------------------------------------------
    async def recordings(self, request: web.Request) -> web.StreamResponse:
        session = await self._session(request)
        try:
            filters = parse_filters(request.query)
        except (BadFilter, ValueError, OverflowError) as exc:
            values = {k: request.query.get(k, "")[:100] for k in
                      ("since", "until", "agent", "verdict", "min_seconds", "max_seconds",
                       "qa_status", "sort", "order")}
            return self._list_page(session, 400, values=values, message=str(exc))
        found = await self.service.list(filters.query)
        pages = max(1, -(-found.total // PAGE_SIZE))
        return self._list_page(
            session, values=filters.values, items=found.items, total=found.total,
            page=filters.page, pages=pages,
            prev_link=filters.link(filters.page - 1) if filters.page > 1 else "",
            next_link=filters.link(filters.page + 1) if filters.page < pages else "")

    def _list_page(self, session: WebSession, status: int = 200, *, values: dict[str, str],
                   message: str = "", items: list[catalog.RecordingSummary] | None = None,
                   total: int = 0, page: int = 1, pages: int = 1, prev_link: str = "",
                   next_link: str = "") -> web.Response:
        return self.render("recordings.html", status, session=session, csrf=session.csrf,
                           values=values, message=message, items=items or [], total=total,
                           page=page, pages=pages, prev_link=prev_link, next_link=next_link,
                           sorts=_SORTS, verdicts=_VERDICTS, qa_statuses=_QA_STATUSES)

    # --- player -------------------------------------------------------------------------------
    async def _recording(self, request: web.Request) -> catalog.RecordingSummary:
        try:
            rid = uuid.UUID(request.match_info["id"])
        except ValueError:
            raise web.HTTPNotFound(text="no such recording") from None
        summary = await self.service.summary(rid)
        if summary is None:
            raise web.HTTPNotFound(text="no such recording")
        return summary

    async def player(self, request: web.Request) -> web.StreamResponse:
        session = await self._session(request)
        try:
            summary = await self._recording(request)
        except web.HTTPNotFound:
            return self.error(404, "No such recording", "There is no stored recording at "
                              "this address.", session)
        notice = "Scorecard saved" if request.query.get("saved") == "1" else ""
        return await self._player_page(request, session, summary, notice=notice,
                                       want_original=request.query.get("original") == "1")

    async def _player_page(self, request: web.Request, session: WebSession,
                           summary: catalog.RecordingSummary, status: int = 200, *,
                           notice: str = "", card_error: str = "",
                           submitted: Mapping[str, str] | None = None,
                           original_error: str = "", reason_typed: str = "",
                           want_original: bool = False) -> web.Response:
        rid = summary.id
        cards = await asyncio.to_thread(self.service.scorecards.of_recording, rid)
        mine = next((c for c in cards if c.reviewer == session.user), None)
        others = [c for c in cards if c.reviewer != session.user]
        questions = self.service.scorecards.questions
        if submitted is not None:
            answers = {q.id: submitted.get(f"q_{q.id}", "") for q in questions}
            notes = submitted.get("notes", "")[:NOTES_MAX]
        else:
            answers = {q.id: str(mine.answers.get(q.id, "")) if mine else ""
                       for q in questions}
            notes = mine.notes if mine else ""
        can_original = may_play_original(session.principal)
        grant_reason = None
        if can_original and want_original:
            grant_reason = await self.auth.raw_reason(session, rid)
            if grant_reason is None and not original_error:
                original_error = ("Your permission to play this original has ended. State "
                                  "a reason again to play it.")
        return self.render(
            "player.html", status, session=session, csrf=session.csrf, rec=summary,
            rid=str(rid), short_id=str(rid)[:8], notice=notice, questions=questions,
            answers=answers, notes=notes, notes_max=NOTES_MAX, mine=mine, others=others,
            card_error=card_error, can_original=can_original, grant_reason=grant_reason,
            original_error=original_error, reason_typed=reason_typed[:REASON_MAX],
            reason_min=REASON_MIN, reason_max=REASON_MAX,
            question_text={q.id: q.text for q in questions})

    async def save_scorecard(self, request: web.Request) -> web.StreamResponse:
        session = await self._session(request)
        form = await self._form(request)
        if not self._csrf_ok(request, session, form):
            return self.error(403, "Scorecard not saved", "The form expired or came from "
                              "another site. Reload the player and save again.", session)
        try:
            summary = await self._recording(request)
        except web.HTTPNotFound:
            return self.error(404, "No such recording", "There is no stored recording at "
                              "this address.", session)
        try:
            answers = self._answers(form)
            await asyncio.to_thread(self.service.scorecards.save, session.principal,
                                    summary.id, answers, form.get("notes", ""))
        except ScorecardError as exc:
            if "numbers" in str(exc):     # refused for a number in them: not typed back
                form = {k: v for k, v in form.items() if k != "notes"}
            return await self._player_page(request, session, summary, 400,
                                           card_error=str(exc), submitted=form)
        except NotFound:
            return self.error(404, "No such recording", "The recording is no longer "
                              "stored.", session)
        raise web.HTTPSeeOther(f"{RECORDINGS}/{summary.id}?saved=1")

    def _answers(self, form: Mapping[str, str]) -> dict[str, object]:
        answers: dict[str, object] = {}
        for q in self.service.scorecards.questions:
            text = form.get(f"q_{q.id}", "").strip()
            if not text:
                raise ScorecardError(f"answer every question ({q.text!s:.60})")
            if not (text.isascii() and text.isdigit()) or len(text) > 3:
                raise ScorecardError(f"question {q.id} takes 0-{q.points} points")
            answers[q.id] = int(text)
        return answers

    async def play_original(self, request: web.Request) -> web.StreamResponse:
        session = await self._session(request)
        form = await self._form(request)
        if not self._csrf_ok(request, session, form):
            return self.error(403, "Original not unlocked", "The form expired or came from "
                              "another site. Reload the player and try again.", session)
        try:
            summary = await self._recording(request)
        except web.HTTPNotFound:
            return self.error(404, "No such recording", "There is no stored recording at "
                              "this address.", session)
        reason = form.get("reason", "")
        try:
            await self.auth.grant_raw(session, summary.id, reason,
                                      self._origin(request, "play original"))
        except AccessDenied as exc:
            if not may_play_original(session.principal):
                return self.error(403, "Not allowed", f"{exc}. Only compliance officers "
                                  "may play an original recording.", session)
            return await self._player_page(
                request, session, summary, 400, original_error=str(exc),
                reason_typed="" if "numbers" in str(exc) else reason)
        raise web.HTTPSeeOther(f"{RECORDINGS}/{summary.id}?original=1")


__all__ = ["BadFilter", "Filters", "QaPages", "may_play_original", "parse_filters"]
