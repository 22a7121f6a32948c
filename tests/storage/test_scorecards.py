"""QA scorecards and the catalogue's QA-status filter, on the real PostgreSQL."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from storage.access import Principal, Users
from storage.catalog import RecordingQuery, get_summary, list_recordings
from storage.db import connect
from storage.errors import NotFound
from storage.scorecards import (
    DEFAULT_QUESTIONS,
    Question,
    ScorecardError,
    Scorecards,
    check_notes,
    score_of,
)
from tests.storage.vault_fixture import new_recording

QUESTIONS = (Question("greeting", "Greeted", 5), Question("resolution", "Resolved", 10))


def _stored(dsn: str, agent: str = "agent1") -> uuid.UUID:
    rid = new_recording(dsn, agent=agent, status="stored")
    return rid


@pytest.fixture
def reviewers(pg_dsn: str) -> tuple[Principal, Principal]:
    from argon2 import PasswordHasher
    users = Users(pg_dsn, PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))
    users.add("quinn", "qa", "correct horse battery")
    users.add("carol", "compliance", "correct horse battery")
    return Principal("quinn", "qa"), Principal("carol", "compliance")


def test_score_is_points_over_possible() -> None:
    answers, score = score_of(QUESTIONS, {"greeting": 5, "resolution": 5})
    assert answers == {"greeting": 5, "resolution": 5} and score == pytest.approx(66.7)
    assert score_of(QUESTIONS, {"greeting": 0, "resolution": 0})[1] == 0.0
    assert score_of(QUESTIONS, {"greeting": 5, "resolution": 10})[1] == 100.0


@pytest.mark.parametrize("answers, message", [
    ({"greeting": 5}, "resolution needs a whole number"),
    ({"greeting": 6, "resolution": 1}, "0-5"),
    ({"greeting": -1, "resolution": 1}, "0-5"),
    ({"greeting": 1.5, "resolution": 1}, "whole number"),
    ({"greeting": True, "resolution": 1}, "whole number"),
    ({"greeting": "5", "resolution": 1}, "whole number"),
    ({"greeting": 1, "resolution": 1, "bogus": 1}, "no such question: bogus"),
])
def test_bad_answers_are_refused_with_a_reason(answers: dict[str, object],
                                               message: str) -> None:
    with pytest.raises(ScorecardError, match=message):
        score_of(QUESTIONS, answers)


@given(st.dictionaries(st.sampled_from(["greeting", "resolution"]),
                       st.integers(min_value=0, max_value=10)))
def test_any_accepted_scorecard_scores_0_to_100(answers: dict[str, int]) -> None:
    try:
        _, score = score_of(QUESTIONS, answers)
    except ScorecardError:
        return
    assert 0.0 <= score <= 100.0


@pytest.mark.parametrize("notes", ["caller gave 4716 2231 9087 1234 twice",
                                   "call back on (555) 867-5309 ext 12", "ref 12345678901"])
def test_notes_with_long_numbers_are_refused(notes: str) -> None:
    with pytest.raises(ScorecardError, match="may not contain"):
        check_notes(notes)


def test_notes_are_cleaned_but_kept() -> None:
    kept = check_notes("  good call\x07 at 2:30, ticket QA-77  ")
    assert kept == "good call  at 2:30, ticket QA-77"
    with pytest.raises(ScorecardError, match="invisible"):
        check_notes("fine\u202eenif")
    with pytest.raises(ScorecardError, match="at most"):
        check_notes("x" * 4001)


def test_questions_must_be_sane() -> None:
    with pytest.raises(ValueError, match="unique"):
        Scorecards("postgresql://unused", (QUESTIONS[0], QUESTIONS[0]))
    with pytest.raises(ValueError):
        Question("Bad Id", "text")
    with pytest.raises(ValueError):
        Question("ok", "text", 0)
    assert len(DEFAULT_QUESTIONS) >= 3


def test_save_replace_and_list(pg_dsn: str, reviewers: tuple[Principal, Principal]) -> None:
    quinn, carol = reviewers
    cards = Scorecards(pg_dsn, QUESTIONS)
    rid = _stored(pg_dsn)
    first = cards.save(quinn, rid, {"greeting": 5, "resolution": 10}, "clear and kind")
    assert first.score == 100.0 and first.notes == "clear and kind"
    again = cards.save(quinn, rid, {"greeting": 0, "resolution": 10}, "")
    assert again.score == pytest.approx(66.7) and again.created_at == first.created_at
    cards.save(carol, rid, {"greeting": 1, "resolution": 1})
    assert [c.reviewer for c in cards.of_recording(rid)] == ["carol", "quinn"]
    got = cards.get(rid, "quinn")
    assert got is not None and got.answers == {"greeting": 0, "resolution": 10}
    assert cards.get(rid, "nobody") is None
    assert set(got.as_json()) == {"recording_id", "reviewer", "answers", "score", "notes",
                                  "created_at", "updated_at"}


def test_only_stored_recordings_are_scored(pg_dsn: str,
                                           reviewers: tuple[Principal, Principal]) -> None:
    quinn, _ = reviewers
    cards = Scorecards(pg_dsn, QUESTIONS)
    queued = new_recording(pg_dsn)
    with pytest.raises(NotFound):
        cards.save(quinn, queued, {"greeting": 1, "resolution": 1})
    with pytest.raises(NotFound):
        cards.save(quinn, uuid.uuid4(), {"greeting": 1, "resolution": 1})


def test_catalogue_filters_by_qa_status(pg_dsn: str,
                                        reviewers: tuple[Principal, Principal]) -> None:
    quinn, _ = reviewers
    cards = Scorecards(pg_dsn, QUESTIONS)
    scored, unscored = _stored(pg_dsn, "a1"), _stored(pg_dsn, "a2")
    cards.save(quinn, scored, {"greeting": 1, "resolution": 1})
    reviewed = list_recordings(pg_dsn, RecordingQuery(qa_status="reviewed"))
    open_ = list_recordings(pg_dsn, RecordingQuery(qa_status="unreviewed"))
    assert [r.id for r in reviewed.items] == [scored] and reviewed.total == 1
    assert [r.id for r in open_.items] == [unscored]
    assert reviewed.items[0].scorecards == 1 and open_.items[0].scorecards == 0
    with pytest.raises(ValueError, match="qa_status"):
        RecordingQuery(qa_status="maybe")  # type: ignore[arg-type]
    summary = get_summary(pg_dsn, scored)
    assert summary is not None and summary.id == scored and summary.scorecards == 1
    assert get_summary(pg_dsn, uuid.uuid4()) is None
    with connect(pg_dsn) as conn:   # a purged recording is still found by id, with its status
        conn.execute("UPDATE recordings SET status = 'purged' WHERE id = %s", (unscored,))
        conn.commit()
    gone = get_summary(pg_dsn, unscored)
    assert gone is not None and gone.status == "purged"
