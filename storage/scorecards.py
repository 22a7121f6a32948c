"""QA scorecards: one per recording and reviewer, answering the configured questions.

A deployment sets its questions (`qa_questions` in the settings: an id, the text, the most
points). A scorecard gives each question 0..its most points, plus free-text notes; the
score is the points given over the points possible, as a percentage. Notes are kept for
years and read by other reviewers, so like a stated reason they may carry no long number
(an account, card or phone number typed in by mistake is refused, not stored).
"""

from __future__ import annotations

import json
import re
import unicodedata
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from storage.access import Principal
from storage.db import connect, translate_errors
from storage.errors import NotFound, StorageError

NOTES_MAX = 4000
_QUESTION_ID = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
# the same rule as a stated reason's: ten or more digits, with the separators people type
_LONG_NUMBER = re.compile(r"\d(?:[\s().\-/]{0,2}\d){9,}")


class ScorecardError(StorageError):
    """A scorecard that does not fit the questions, or notes that may not be kept."""


@dataclass(frozen=True)
class Question:
    id: str
    text: str
    points: int = 5

    def __post_init__(self) -> None:
        if not _QUESTION_ID.match(self.id):
            raise ValueError(f"question id {self.id!r}: lowercase letters, digits and '_'")
        if not 1 <= self.points <= 100:
            raise ValueError(f"question {self.id}: points are 1-100")
        if not 1 <= len(self.text) <= 300:
            raise ValueError(f"question {self.id}: the text is 1-300 characters")


DEFAULT_QUESTIONS: tuple[Question, ...] = (
    Question("greeting", "Greeted the caller and gave their name", 5),
    Question("verification", "Relied on the IVR verdict; asked for no PIN or account data", 5),
    Question("resolution", "Understood and resolved the caller's request", 5),
    Question("courtesy", "Courteous and clear throughout", 5),
    Question("closing", "Summarised next steps and closed the call properly", 5),
)


@dataclass(frozen=True)
class Scorecard:
    recording_id: uuid.UUID
    reviewer: str
    answers: dict[str, int]
    score: float
    notes: str
    created_at: datetime
    updated_at: datetime

    def as_json(self) -> dict[str, Any]:
        return {"recording_id": str(self.recording_id), "reviewer": self.reviewer,
                "answers": dict(self.answers), "score": self.score, "notes": self.notes,
                "created_at": _iso(self.created_at), "updated_at": _iso(self.updated_at)}


def _iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def check_notes(text: str) -> str:
    """Notes as they will be kept: control characters out, at most NOTES_MAX characters,
    no long numbers; ScorecardError otherwise."""
    if len(text) > NOTES_MAX:
        raise ScorecardError(f"notes are at most {NOTES_MAX} characters")
    if any(unicodedata.category(ch) in ("Cf", "Cs", "Co", "Cn") for ch in text):
        raise ScorecardError("notes may not contain invisible or unassigned characters")
    clean = "".join(ch if ch in "\n\t" or unicodedata.category(ch) != "Cc" else " "
                    for ch in text).strip()
    if _LONG_NUMBER.search(clean):
        raise ScorecardError("notes may not contain phone, account or card numbers;"
                             " refer to the time in the call instead")
    return clean


def score_of(questions: Sequence[Question], answers: Mapping[str, object]) -> tuple[
        dict[str, int], float]:
    """The answers checked against the questions (every question answered, each within
    its points, nothing else) and the score in percent."""
    if not isinstance(answers, Mapping):
        raise ScorecardError("answers map question ids to points")
    known = {q.id: q for q in questions}
    extra = sorted(set(answers) - set(known))
    if extra:
        raise ScorecardError(f"no such question: {', '.join(map(str, extra))[:200]}")
    checked: dict[str, int] = {}
    for q in questions:
        value = answers.get(q.id)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ScorecardError(f"question {q.id} needs a whole number of points")
        if not 0 <= value <= q.points:
            raise ScorecardError(f"question {q.id} takes 0-{q.points} points")
        checked[q.id] = value
    possible = sum(q.points for q in questions)
    score = round(100.0 * sum(checked.values()) / possible, 1) if possible else 0.0
    return checked, score


class Scorecards:
    """Scorecards in the database at `dsn`, against `questions`."""

    def __init__(self, dsn: str, questions: Sequence[Question] = DEFAULT_QUESTIONS) -> None:
        if not questions:
            raise ValueError("at least one scorecard question is needed")
        ids = [q.id for q in questions]
        if len(set(ids)) != len(ids):
            raise ValueError("scorecard question ids must be unique")
        self._dsn = dsn
        self.questions: tuple[Question, ...] = tuple(questions)

    def __repr__(self) -> str:
        return f"Scorecards(questions={len(self.questions)})"

    def save(self, reviewer: Principal, recording_id: uuid.UUID,
             answers: Mapping[str, object], notes: str = "") -> Scorecard:
        """Create or replace `reviewer`'s scorecard of a stored recording."""
        checked, score = score_of(self.questions, answers)
        clean = check_notes(notes)
        try:
            with connect(self._dsn) as conn, translate_errors():
                rec = conn.execute("SELECT status FROM recordings WHERE id = %s",
                                   (recording_id,)).fetchone()
                if rec is None or rec["status"] != "stored":
                    raise NotFound(f"no stored recording {recording_id}")
                row = conn.execute(
                    "INSERT INTO scorecards (recording_id, reviewer, answers, score, notes)"
                    " VALUES (%s, %s, %s::jsonb, %s, %s)"
                    " ON CONFLICT (recording_id, reviewer) DO UPDATE SET"
                    "  answers = EXCLUDED.answers, score = EXCLUDED.score,"
                    "  notes = EXCLUDED.notes, updated_at = now()"
                    " RETURNING *", (recording_id, reviewer.name, json.dumps(checked), score,
                                     clean)).fetchone()
        except psycopg.errors.ForeignKeyViolation:
            raise NotFound(f"no user {reviewer.name!r}") from None
        assert row is not None
        return _card(row)

    def get(self, recording_id: uuid.UUID, reviewer: str) -> Scorecard | None:
        with connect(self._dsn) as conn, translate_errors():
            row = conn.execute("SELECT * FROM scorecards WHERE recording_id = %s"
                               " AND reviewer = %s", (recording_id, reviewer)).fetchone()
        return None if row is None else _card(row)

    def of_recording(self, recording_id: uuid.UUID) -> list[Scorecard]:
        """Every reviewer's scorecard of one recording, most recently updated first."""
        with connect(self._dsn) as conn, translate_errors():
            rows = conn.execute("SELECT * FROM scorecards WHERE recording_id = %s"
                                " ORDER BY updated_at DESC, reviewer",
                                (recording_id,)).fetchall()
        return [_card(r) for r in rows]


def _card(row: Mapping[str, Any]) -> Scorecard:
    return Scorecard(row["recording_id"], row["reviewer"], dict(row["answers"]),
                     float(row["score"]), row["notes"], row["created_at"], row["updated_at"])
