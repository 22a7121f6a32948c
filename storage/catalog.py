"""The recordings catalogue QA reviewers search: filters, sorting and pages over the
`recordings` table, returning metadata only (ids, agent, times, duration, the verdict's
outcome, which variants are stored, how many spans were muted), never audio, transcript
text or CPNI. Every filter is a bound parameter and the sort column comes from a fixed
table, so nothing a user types becomes SQL."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from psycopg import sql

from storage.db import connect, translate_errors

Sort = Literal["created_at", "duration", "agent"]
VerdictFilter = Literal["verified", "not_verified", "none"]
QaStatus = Literal["unreviewed", "reviewed"]
_SORT_COLUMNS: dict[Sort, str] = {"created_at": "created_at", "duration": "duration_seconds",
                                  "agent": "agent"}
MAX_PAGE = 200


@dataclass(frozen=True)
class RecordingQuery:
    """What to list. Times are timezone-aware; `until` is exclusive."""

    since: datetime | None = None
    until: datetime | None = None
    agent: str | None = None
    verdict: VerdictFilter | None = None
    min_seconds: float | None = None
    max_seconds: float | None = None
    status: str | None = "stored"
    qa_status: QaStatus | None = None       # no scorecard yet, or at least one
    sort: Sort = "created_at"
    descending: bool = True
    limit: int = 25
    offset: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.limit <= MAX_PAGE or self.offset < 0:
            raise ValueError(f"limit is 1-{MAX_PAGE} and offset at least 0")
        if self.sort not in _SORT_COLUMNS:
            raise ValueError("sort by created_at, duration or agent")
        for bound in (self.since, self.until):
            if bound is not None and bound.tzinfo is None:
                raise ValueError("since and until must be timezone-aware")
        if self.verdict not in (None, "verified", "not_verified", "none"):
            raise ValueError("verdict is verified, not_verified or none")
        if self.qa_status not in (None, "unreviewed", "reviewed"):
            raise ValueError("qa_status is unreviewed or reviewed")


@dataclass(frozen=True)
class RecordingSummary:
    id: uuid.UUID
    agent: str | None
    status: str
    created_at: datetime
    duration_seconds: float | None
    channels: int | None
    verified: bool | None          # None: no IVR verdict (e.g. an ingested file)
    method: str | None
    reason: str | None
    variants: tuple[str, ...]
    redacted_spans: int
    scorecards: int = 0            # how many reviewers scored it


@dataclass(frozen=True)
class Page:
    items: list[RecordingSummary]
    total: int                     # matching recordings, over every page


def get_summary(dsn: str, recording_id: uuid.UUID) -> RecordingSummary | None:
    """One recording's summary whatever its status, or None."""
    found = _select(dsn, [sql.SQL("r.id = %s")], [recording_id], sql.SQL("r.id"), 1, 0)
    return found.items[0] if found.items else None


def list_recordings(dsn: str, q: RecordingQuery) -> Page:
    """One page of the recordings matching `q`."""
    where: list[sql.Composable] = []
    args: list[Any] = []

    def cond(text: str, *values: Any) -> None:
        where.append(sql.SQL(text))   # fixed text from this function, never input
        args.extend(values)

    if q.status is not None:
        cond("r.status = %s", q.status)
    if q.since is not None:
        cond("r.created_at >= %s", q.since)
    if q.until is not None:
        cond("r.created_at < %s", q.until)
    if q.agent is not None:
        cond("r.agent = %s", q.agent)
    if q.min_seconds is not None:
        cond("r.duration_seconds >= %s", q.min_seconds)
    if q.max_seconds is not None:
        cond("r.duration_seconds <= %s", q.max_seconds)
    if q.verdict == "verified":
        cond("(r.verdict->>'verified')::boolean IS TRUE")
    elif q.verdict == "not_verified":
        cond("(r.verdict->>'verified')::boolean IS FALSE")
    elif q.verdict == "none":
        cond("r.verdict IS NULL")
    if q.qa_status == "unreviewed":
        cond("NOT EXISTS (SELECT 1 FROM scorecards s WHERE s.recording_id = r.id)")
    elif q.qa_status == "reviewed":
        cond("EXISTS (SELECT 1 FROM scorecards s WHERE s.recording_id = r.id)")
    # ties (same agent, same duration) newest first, then by id: a stable order for pages
    order = sql.SQL("{} {} NULLS LAST, r.created_at DESC, r.id").format(
        sql.Identifier("r", _SORT_COLUMNS[q.sort]),
        sql.SQL("DESC" if q.descending else "ASC"))
    return _select(dsn, where, args, order, q.limit, q.offset)


def _select(dsn: str, where: list[sql.Composable], args: list[Any], order: sql.Composable,
            limit: int, offset: int) -> Page:
    filters = sql.SQL(" AND ").join(where) if where else sql.SQL("TRUE")
    query = sql.SQL(
        "SELECT r.id, r.agent, r.status, r.created_at, r.duration_seconds, r.channels,"
        " r.verdict, r.redaction, array(SELECT o.variant FROM objects o"
        " WHERE o.recording_id = r.id AND o.state = 'stored' ORDER BY o.variant) AS variants,"
        " (SELECT count(*) FROM scorecards s WHERE s.recording_id = r.id) AS scorecards,"
        " count(*) OVER () AS total FROM recordings r WHERE {} ORDER BY {}"
        " LIMIT %s OFFSET %s").format(filters, order)
    with connect(dsn) as conn, translate_errors():
        rows = conn.execute(query, [*args, limit, offset]).fetchall()
        if rows:
            total = int(rows[0]["total"])
        else:
            count = sql.SQL("SELECT count(*) AS n FROM recordings r WHERE {}").format(filters)
            row = conn.execute(count, args).fetchone()
            total = int(row["n"]) if row else 0
    items = []
    for r in rows:
        verdict = r["verdict"] or {}
        red = r["redaction"] or {}
        items.append(RecordingSummary(
            id=r["id"], agent=r["agent"], status=r["status"], created_at=r["created_at"],
            duration_seconds=r["duration_seconds"], channels=r["channels"],
            verified=verdict.get("verified") if r["verdict"] is not None else None,
            method=verdict.get("method"), reason=verdict.get("reason"),
            variants=tuple(r["variants"] or ()), redacted_spans=len(red.get("spans", [])),
            scorecards=int(r["scorecards"])))
    return Page(items, total)
