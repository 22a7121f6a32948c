"""The recordings catalogue: filters, sorting and pages over real PostgreSQL."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from storage.catalog import RecordingQuery, list_recordings
from storage.db import connect
from tests.storage.vault_fixture import new_recording

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
VERIFIED = {"verified": True, "method": "pin", "reason": None, "at": 1.0}
FLAGGED = {"verified": False, "method": None, "reason": "locked", "at": 1.0}


@pytest.fixture
def rows(pg_dsn: str) -> dict[str, uuid.UUID]:
    """Six recordings: agents, days, durations and verdicts that tell them apart."""
    specs = {
        "a": ("alex", 0, 30.0, VERIFIED, "stored"),
        "b": ("alex", 1, 300.0, FLAGGED, "stored"),
        "c": ("blair", 2, 90.0, VERIFIED, "stored"),
        "d": ("blair", 3, 5.0, None, "stored"),
        "e": ("casey", 4, 600.0, VERIFIED, "stored"),
        "f": ("casey", 5, 60.0, VERIFIED, "failed"),
    }
    ids = {}
    for key, (agent, day, seconds, verdict, status) in specs.items():
        ids[key] = new_recording(pg_dsn, agent=agent, duration_seconds=seconds,
                                 status=status, created_at=T0 + timedelta(days=day),
                                 verdict=json.dumps(verdict) if verdict else None,
                                 redaction=json.dumps({"spans": [{"label": "PIN"}] * day}))
    return ids


def _keys(dsn: str, rows: dict[str, uuid.UUID], **query: object) -> list[str]:
    back = {v: k for k, v in rows.items()}
    page = list_recordings(dsn, RecordingQuery(**query))  # type: ignore[arg-type]
    return [back[item.id] for item in page.items]


def test_filters(pg_dsn: str, rows: dict[str, uuid.UUID]) -> None:
    assert _keys(pg_dsn, rows) == ["e", "d", "c", "b", "a"]          # stored, newest first
    assert _keys(pg_dsn, rows, status=None)[0] == "f"
    assert _keys(pg_dsn, rows, agent="alex") == ["b", "a"]
    assert _keys(pg_dsn, rows, verdict="verified") == ["e", "c", "a"]
    assert _keys(pg_dsn, rows, verdict="not_verified") == ["b"]
    assert _keys(pg_dsn, rows, verdict="none") == ["d"]
    assert _keys(pg_dsn, rows, min_seconds=60, max_seconds=300) == ["c", "b"]
    assert _keys(pg_dsn, rows, since=T0 + timedelta(days=1),
                 until=T0 + timedelta(days=3)) == ["c", "b"]
    assert _keys(pg_dsn, rows, agent="nobody") == []
    hostile = "x'; DROP TABLE recordings; --"
    assert _keys(pg_dsn, rows, agent=hostile) == []
    with connect(pg_dsn) as conn:
        assert conn.execute("SELECT count(*) AS n FROM recordings").fetchone() == {"n": 6}


def test_sorting_and_pages(pg_dsn: str, rows: dict[str, uuid.UUID]) -> None:
    assert _keys(pg_dsn, rows, sort="duration") == ["e", "b", "c", "a", "d"]
    assert _keys(pg_dsn, rows, sort="duration", descending=False) == ["d", "a", "c", "b", "e"]
    # equal agents: newest first, whatever the (random) ids
    assert _keys(pg_dsn, rows, sort="agent", descending=False) == ["b", "a", "d", "c", "e"]
    first = list_recordings(pg_dsn, RecordingQuery(limit=2))
    second = list_recordings(pg_dsn, RecordingQuery(limit=2, offset=2))
    beyond = list_recordings(pg_dsn, RecordingQuery(limit=2, offset=10))
    assert first.total == second.total == beyond.total == 5 and beyond.items == []
    assert {i.id for i in first.items}.isdisjoint({i.id for i in second.items})
    item = first.items[0]
    assert (item.agent, item.verified, item.method, item.redacted_spans) == (
        "casey", True, "pin", 4)


def test_bad_queries_are_refused() -> None:
    for bad in ({"limit": 0}, {"limit": 201}, {"offset": -1}, {"sort": "id; drop"},
                {"verdict": "maybe"}, {"since": datetime(2026, 1, 1)}):
        with pytest.raises(ValueError):
            RecordingQuery(**bad)  # type: ignore[arg-type]
