"""Spans: the stretches of a recording to mute, and what they mean for the transcript.

A `Span` carries a channel, times, a label and where it came from, never the value it
hides. Padding and merging spans and rewriting a transcript with `[LABEL]` live here, apart
from how spans are found (`detect`, `dtmf`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

from redaction.transcribe import Word

Source = Literal["asr", "dtmf", "custom"]


@dataclass(frozen=True, slots=True)
class Span:
    """A stretch of one channel to mute; it holds a label, never the value."""

    channel: int
    start: float
    end: float
    label: str
    source: Source = "asr"


def pad_and_merge(spans: Sequence[Span], *, before: float, after: float, duration: float,
                  gap: float = 0.25) -> list[Span]:
    """Pad spans for timestamp drift; merge touching spans of one channel and label.

    Spans of different labels may overlap: each stays in the report under its own label.
    """
    out: list[Span] = []
    last: dict[tuple[int, str], int] = {}
    for s in sorted(spans, key=lambda s: (s.channel, s.start)):
        pad_b, pad_a = (0.03, 0.03) if s.source == "dtmf" else (before, after)
        cur = Span(s.channel, max(0.0, s.start - pad_b), min(duration, s.end + pad_a),
                   s.label, s.source)
        key = (cur.channel, cur.label)
        k = last.get(key)
        if k is not None and cur.start <= out[k].end + gap:
            out[k] = replace(out[k], end=max(out[k].end, cur.end))
            continue
        last[key] = len(out)
        out.append(cur)
    return sorted((s for s in out if s.end > s.start), key=lambda s: (s.channel, s.start))


def redacted_words(words: Sequence[Word], spans: Sequence[Span],
                   channel: int) -> list[tuple[float, float, str]]:
    """The channel's words as (start, end, text) with every word inside a span replaced by
    [LABEL]; consecutive words of one span become one token covering their times."""
    out: list[tuple[float, float, str]] = []
    for w in sorted((w for w in words if w.channel == channel), key=lambda w: w.start):
        mid = (w.start + w.end) / 2
        hit = next((s for s in spans if s.channel == channel and
                    (s.start <= mid <= s.end or (s.start < w.end and w.start < s.end
                                                 and _has_digit(w.text)))), None)
        token = f"[{hit.label}]" if hit else w.text
        if hit and out and out[-1][2] == token:
            out[-1] = (out[-1][0], max(out[-1][1], w.end), token)
            continue
        out.append((w.start, w.end, token))
    return out


def redacted_text(words: Sequence[Word], spans: Sequence[Span], channel: int) -> str:
    """The channel's transcript with every word inside a span replaced by [LABEL]."""
    return " ".join(t for _, _, t in redacted_words(words, spans, channel))


def _has_digit(text: str) -> bool:
    return any(c.isdigit() for c in text)
