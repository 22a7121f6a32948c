"""The proof step: listen to the redacted audio again and report anything still sensitive.

Re-transcribing costs what transcription costs, so the default scope is a window of a few
seconds either side of every mute; the windows of a channel are joined (with short
silences between them) into one stream and transcribed in one pass, because Whisper pays
for a full 30 s window however short the clip. The whole file can be checked instead
(`verify_scope = "file"`). DTMF is rescanned over the whole file in every case: the
Goertzel detector is cheap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

from redaction.audio import WHISPER_RATE, AudioInfo, WavReader, to_whisper_rate
from redaction.detect import DetectPolicy, detect
from redaction.dtmf import DtmfScanner
from redaction.spans import Span
from redaction.transcribe import Transcriber, Word

_GAP = 0.5          # silence between joined windows, seconds
# A finding at least this much inside existing mutes is an echo, not a leak.
_LEAK_COVERED = 0.5
_MIN_PIECE = 0.2    # audible stretches shorter than this hold no word


@dataclass(frozen=True, slots=True)
class VerifyPlan:
    scope: Literal["windows", "file"]
    context: float
    block_seconds: float


@dataclass(frozen=True, slots=True)
class Verification:
    """How a file was checked and what was found; no values, only counts and times."""

    scope: str
    context_seconds: float
    rounds: int
    windows: int
    checked_seconds: float
    leaks_found: int
    dtmf_found_after: int
    passed: bool
    leaks: tuple[Span, ...] = ()

    @staticmethod
    def combine(history: Sequence[Verification], *, passed: bool) -> Verification:
        first = history[0]
        return Verification(
            scope=first.scope, context_seconds=first.context_seconds, rounds=len(history),
            windows=sum(v.windows for v in history),
            checked_seconds=round(sum(v.checked_seconds for v in history), 3),
            leaks_found=sum(v.leaks_found for v in history),
            dtmf_found_after=sum(v.dtmf_found_after for v in history), passed=passed,
            leaks=tuple(s for v in history for s in v.leaks))


def windows_for(targets: Sequence[Span], muted: Sequence[Span], info: AudioInfo,
                plan: VerifyPlan) -> list[tuple[int, float, float]]:
    """(channel, start, end) stretches to re-check: around the targets (or the whole file),
    merged per channel, with the muted audio itself cut out.

    Silence is what Whisper hallucinates on, and there is nothing to hear in it: only the
    audible audio either side of each mute is worth a second listen.
    """
    if plan.scope == "file":
        raw = [(ch, 0.0, info.duration) for ch in range(info.channels)]
    else:
        raw = sorted((s.channel, max(0.0, s.start - plan.context),
                      min(info.duration, s.end + plan.context)) for s in targets)
    merged: list[tuple[int, float, float]] = []
    for ch, a, b in raw:
        if merged and merged[-1][0] == ch and a <= merged[-1][2]:
            merged[-1] = (ch, merged[-1][1], max(merged[-1][2], b))
        else:
            merged.append((ch, a, b))
    out: list[tuple[int, float, float]] = []
    for ch, a, b in merged:
        cuts = sorted((m.start, m.end) for m in muted if m.channel == ch and m.end > a
                      and m.start < b)
        cursor = a
        for m0, m1 in cuts:
            if m0 - cursor >= _MIN_PIECE:
                out.append((ch, cursor, m0))
            cursor = max(cursor, m1)
        if b - cursor >= _MIN_PIECE:
            out.append((ch, cursor, b))
    return out


def verify_once(path: Path, info: AudioInfo, muted: Sequence[Span], targets: Sequence[Span],
                transcriber: Transcriber, plan: VerifyPlan,
                policy: DetectPolicy) -> Verification:
    """One listening pass over the redacted file at `path`."""
    wins = windows_for(targets, muted, info, plan)
    words: list[Word] = []
    with WavReader(path, info) as reader:
        for batch in batches(wins, plan.block_seconds):
            words.extend(listen_windows(reader, batch, transcriber))
        tones = _rescan_dtmf(reader, plan.block_seconds)
    found = detect(words, policy, muted=muted)
    leaks = [s for s in found if _covered(s, muted) < _LEAK_COVERED] + tones
    return Verification(
        scope=plan.scope, context_seconds=plan.context, rounds=1, windows=len(wins),
        checked_seconds=round(sum(b - a for _c, a, b in wins), 3),
        leaks_found=len(leaks), dtmf_found_after=len(tones), passed=not leaks,
        leaks=tuple(leaks))


def batches(wins: list[tuple[int, float, float]], limit: float,
             ) -> list[list[tuple[int, float, float]]]:
    """Group windows of one channel so each joined stream stays under `limit` seconds."""
    out: list[list[tuple[int, float, float]]] = []
    total = 0.0
    for w in wins:
        length = w[2] - w[1]
        if not out or out[-1][0][0] != w[0] or total + length > limit:
            out.append([])
            total = 0.0
        out[-1].append(w)
        total += length + _GAP
    return out


def listen_windows(reader: WavReader, batch: list[tuple[int, float, float]],
                    transcriber: Transcriber) -> list[Word]:
    rate = reader.info.sample_rate
    channel = batch[0][0]
    pieces: list[npt.NDArray[np.float32]] = []
    placed: list[tuple[float, float, float]] = []   # (joined start, joined end, source start)
    cursor = 0.0
    gap = np.zeros(int(_GAP * WHISPER_RATE), dtype=np.float32)
    for _ch, a, b in batch:
        mono = reader.read(int(a * rate), int((b - a) * rate))[:, channel]
        audio = to_whisper_rate(mono, rate)
        pieces.extend([audio, gap])
        placed.append((cursor, cursor + len(audio) / WHISPER_RATE, a))
        cursor += (len(audio) + len(gap)) / WHISPER_RATE
    heard = transcriber.words(np.concatenate(pieces), channel=channel, fallback=False)
    out: list[Word] = []
    for w in heard:
        mid = (w.start + w.end) / 2
        for j0, j1, src in placed:
            if j0 <= mid <= j1:
                shift = src - j0
                out.append(Word(w.text, w.start + shift, w.end + shift, w.probability, channel))
                break
    return out


def _rescan_dtmf(reader: WavReader, block_seconds: float) -> list[Span]:
    info = reader.info
    scanners = [DtmfScanner(info.sample_rate) for _ in range(info.channels)]
    tones: list[Span] = []
    for _start, data in reader.blocks(int(block_seconds * info.sample_rate)):
        for ch, scanner in enumerate(scanners):
            found = scanner.feed(data[:, ch])
            tones.extend(Span(ch, t.start, t.end, "DTMF", "dtmf") for t in found)
    for ch, scanner in enumerate(scanners):
        tones.extend(Span(ch, t.start, t.end, "DTMF", "dtmf") for t in scanner.finish())
    return tones


def _covered(span: Span, muted: Sequence[Span]) -> float:
    """Fraction of `span` already inside mutes of its channel (overlaps counted once)."""
    length = span.end - span.start
    if length <= 0:
        return 1.0
    parts = sorted((max(span.start, m.start), min(span.end, m.end)) for m in muted
                   if m.channel == span.channel and m.end > span.start and m.start < span.end)
    inside, reach = 0.0, span.start
    for a, b in parts:
        lo = max(a, reach)
        if b > lo:
            inside += b - lo
            reach = b
    return inside / length
