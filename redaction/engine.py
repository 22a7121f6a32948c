"""The orchestrator of one redaction: WAV in, redacted WAV and report out, fail closed.

The only place in `redaction` that does blocking work. Each channel is streamed in
bounded blocks: energy envelope, DTMF scan, resampling and transcription. Detection then
runs over every channel's words at once; the mutes are written to a temporary file beside
the output; and the verifier listens to that file again around every mute (or all of it)
before it is renamed into place. Anything still heard that looks sensitive is muted wider
and checked again; if it persists, no output is written and `VerificationFailed` is raised.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

from redaction.audio import WHISPER_RATE, AudioInfo, Resampler, WavReader, WavWriter, probe
from redaction.detect import DetectPolicy, detect
from redaction.dtmf import DtmfScanner
from redaction.errors import OutputError, VerificationFailed
from redaction.spans import Span, pad_and_merge
from redaction.transcribe import Transcriber, Word
from redaction.verify import Verification, VerifyPlan, batches, listen_windows, verify_once

Progress = Callable[[float], None]
_FRAME = 0.01          # energy envelope resolution, seconds
_TONE_LEVEL = 0.1      # -20 dBFS replacement tone


@dataclass(frozen=True, slots=True)
class RedactConfig:
    """Every knob of a redaction run; built from `callvault.config.Settings`."""

    mode: Literal["silence", "tone"] = "silence"
    tone_hz: float = 1000.0
    pad_before: float = 0.3
    pad_after: float = 0.4
    snap_before: float = 0.3
    snap_after: float = 0.6
    snap_bridge: float = 0.3
    verify_scope: Literal["windows", "file"] = "windows"
    verify_context: float = 3.0
    verify_rounds: int = 2
    widen_seconds: float = 0.5
    block_seconds: float = 300.0
    max_duration: float = 4 * 3600.0
    policy: DetectPolicy = field(default_factory=DetectPolicy)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a run found and did; `words` stay in memory only, for the report's text."""

    info: AudioInfo
    words: tuple[Word, ...] = field(repr=False)
    spans: tuple[Span, ...]
    verification: Verification
    timings: dict[str, float]


def redact_file(src: Path, out: Path, transcriber: Transcriber, cfg: RedactConfig,
                progress: Progress | None = None, *, direct: bool = False) -> Outcome:
    """Redact `src` into `out`; `out` appears only if verification passed.

    With `direct`, `out` is an existing file the caller owns (the vault passes an
    anonymous in-memory file so no plaintext touches a disk) and is written in place; the
    caller must discard it when this raises.
    """
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    info = probe(src, max_seconds=cfg.max_duration)
    report = progress or (lambda _f: None)
    words: list[Word] = []
    masks: list[npt.NDArray[np.bool_]] = []   # each channel's voiced frames
    dtmf_spans: list[Span] = []
    with WavReader(src, info) as reader:
        for ch in range(info.channels):
            def channel_progress(f: float, c: int = ch) -> None:
                report((c + f) / info.channels)

            ch_words, env, tones = _listen(reader, ch, transcriber, cfg, channel_progress)
            voiced = _voiced(env, cfg.snap_bridge)
            ch_words.extend(_rescue(reader, ch, voiced, ch_words, tones, transcriber, cfg))
            words.extend(ch_words)
            masks.append(voiced)
            dtmf_spans.extend(tones)
    timings["transcribe"] = time.perf_counter() - t0

    t1 = time.perf_counter()
    found = detect(words, cfg.policy, muted=dtmf_spans)
    snapped = _snap(found, masks, cfg.snap_before, cfg.snap_after)
    spans = _finalise([*snapped, *dtmf_spans], info, cfg)
    timings["detect"] = time.perf_counter() - t1

    if direct:
        _write_muted(src, out, info, spans, cfg)
        spans, verification = _verify(out, src, info, spans, transcriber, cfg)
        timings["total"] = time.perf_counter() - t0
        report(1.0)
        return Outcome(info, tuple(words), tuple(spans), verification, timings)
    try:  # 0600 temporary beside the output, renamed into place only once verified
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".partial",
                                        dir=out.parent)
        os.close(fd)
    except OSError as exc:
        raise OutputError(f"{out.name}: cannot write there ({exc.strerror})") from None
    tmp = Path(tmp_name)
    try:
        t2 = time.perf_counter()
        _write_muted(src, tmp, info, spans, cfg)
        timings["redact"] = time.perf_counter() - t2
        t3 = time.perf_counter()
        spans, verification = _verify(tmp, src, info, spans, transcriber, cfg)
        timings["verify"] = time.perf_counter() - t3
        try:
            os.replace(tmp, out)
        except OSError as exc:
            raise OutputError(f"{out.name}: cannot write the output ({exc.strerror})") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    timings["total"] = time.perf_counter() - t0
    report(1.0)
    return Outcome(info, tuple(words), tuple(spans), verification, timings)


def _listen(reader: WavReader, channel: int, transcriber: Transcriber, cfg: RedactConfig,
            progress: Progress) -> tuple[list[Word], npt.NDArray[np.float32], list[Span]]:
    """Stream one channel: words, a 10 ms energy envelope, and DTMF tones."""
    rate = reader.info.sample_rate
    block = int(cfg.block_seconds * rate)
    frame = int(_FRAME * rate)
    resampler = Resampler(rate)
    scanner = DtmfScanner(rate)
    pending = np.zeros(0, dtype=np.float32)
    pending_start = 0.0
    words: list[Word] = []
    env_parts: list[npt.NDArray[np.float32]] = []
    tones: list[Span] = []
    carry = np.zeros(0, dtype=np.float32)
    for start, data in reader.blocks(block):
        mono = data[:, channel]
        framed = np.concatenate([carry, mono])
        n = len(framed) // frame * frame
        env_parts.append(np.sqrt(np.mean(framed[:n].reshape(-1, frame) ** 2, axis=1)))
        carry = framed[n:]
        tones.extend(Span(channel, t.start, t.end, "DTMF", "dtmf") for t in scanner.feed(mono))
        pending = np.concatenate([pending, resampler.feed(mono)])
        if len(pending) >= block * WHISPER_RATE // rate:
            cut = _quiet_cut(pending)
            words.extend(transcriber.words(pending[:cut], offset=pending_start, channel=channel))
            pending_start += cut / WHISPER_RATE
            pending = pending[cut:]
        progress(min(1.0, (start + len(data)) / reader.info.frames))
    tones.extend(Span(channel, t.start, t.end, "DTMF", "dtmf") for t in scanner.finish())
    pending = np.concatenate([pending, resampler.flush()])
    words.extend(transcriber.words(pending, offset=pending_start, channel=channel))
    env = np.concatenate(env_parts).astype(np.float32) if env_parts else np.zeros(0, np.float32)
    return words, env, tones


_UNHEARD_SECONDS = 1.0   # voiced audio at least this long with no word on it is re-heard
_WORD_REACH = 0.2        # a word accounts for this much audio either side of its stamps
_RESCUE_SHARE = 0.25     # at most this share of a channel is re-heard
# A word stamped longer than this did not take that long to say: Whisper stretched it
# over speech it skipped ("the" over a 3 s PIN). Only its ends account for audio.
_LONGEST_WORD = 1.5


def _rescue(reader: WavReader, channel: int, voiced: npt.NDArray[np.bool_],
            words: Sequence[Word], tones: Sequence[Span], transcriber: Transcriber,
            cfg: RedactConfig, *, share: float = _RESCUE_SHARE) -> list[Word]:
    """Words for speech the first pass skipped.

    Whisper sometimes jumps over part of its 30 s window (its timestamp tokens run ahead
    of the audio), and a long digit string is where that happens most: the speech is
    there and no word covers it, or one word's stamps stretch over it. Every voiced
    stretch of `_UNHEARD_SECONDS` or more that no word accounts for is transcribed again
    on its own, with a little context, and the words heard inside it are added. DTMF
    tones (muted anyway) are not speech; and at most `share` of the channel is re-heard,
    so hours of music on hold cannot double the work.
    """
    if not len(voiced):
        return []
    covered = np.zeros_like(voiced)
    reach = int(_WORD_REACH / _FRAME)
    stamps = [(t.start, t.end) for t in tones]
    for w in words:
        if w.end - w.start > _LONGEST_WORD:
            stamps += [(w.start, w.start + _LONGEST_WORD / 3), (w.end - _LONGEST_WORD / 3, w.end)]
        else:
            stamps.append((w.start, w.end))
    for start, end in stamps:
        covered[max(0, int(start / _FRAME) - reach):int(end / _FRAME) + reach + 1] = True
    gaps = np.concatenate([[False], voiced & ~covered, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(gaps))
    stretches = [(a * _FRAME, b * _FRAME) for a, b in zip(edges[::2], edges[1::2], strict=True)
                 if (b - a) * _FRAME >= _UNHEARD_SECONDS]
    budget = share * len(voiced) * _FRAME
    kept: list[tuple[float, float]] = []
    for a, b in stretches:
        if b - a > budget:
            break
        kept.append((a, b))
        budget -= b - a
    stretches = kept
    if not stretches:
        return []
    duration = reader.info.duration
    wins = [(channel, max(0.0, a - 0.5), min(duration, b + 0.5)) for a, b in stretches]
    heard: list[Word] = []
    for batch in batches(wins, cfg.block_seconds):
        heard.extend(listen_windows(reader, batch, transcriber))
    return [w for w in heard
            if any(a <= (w.start + w.end) / 2 <= b for a, b in stretches)]


def _quiet_cut(audio: npt.NDArray[np.float32]) -> int:
    """Index of the quietest 50 ms in the last 10 s, so a chunk never splits a word."""
    win = WHISPER_RATE // 20
    tail = audio[-10 * WHISPER_RATE:]
    n = len(tail) // win
    energy = np.mean(tail[: n * win].reshape(n, win) ** 2, axis=1)
    return len(audio) - len(tail) + int(np.argmin(energy)) * win + win // 2


def _snap(spans: Sequence[Span], masks: Sequence[npt.NDArray[np.bool_]],
          before: float, after: float) -> list[Span]:
    """Stretch each span over the voiced frames around it (`masks`, one per channel, from
    `_voiced`), at most `before` s back and `after` s ahead.

    Whisper's word times drift by a few hundred milliseconds; the voiced stretch a span
    starts or ends inside is almost always the rest of the same digit string. Gaps shorter
    than the bridge (the weak "th" of "three", a stop's closure, the breath between digit
    groups) do not end a stretch. Measured on the corpus, bridging 0.3 s instead of 0.12 s
    raised recall by 6-11 points for 2-4 points more over-redaction.

    The reach is lopsided because the drift is: against the corpus's true item times, a
    span's first word starts within 0.3 s of the truth half the time either way, while its
    last word ends early (median 0.17 s, a quarter of them by 0.34 s or more). Replayed
    over two corpora's words, reaching 0.3 s back and 0.6 s ahead kept every item that
    1.2 s each way kept; end to end it muted about a fifth less clean speech (README,
    "Measured").
    """
    out: list[Span] = []
    back, ahead = round(before / _FRAME), round(after / _FRAME)
    for s in spans:
        voiced = masks[s.channel]
        if not len(voiced):
            out.append(s)
            continue
        a = min(len(voiced) - 1, int(s.start / _FRAME))
        b = min(len(voiced) - 1, int(s.end / _FRAME))
        lo, hi = a, b
        while lo > 0 and a - lo < back and voiced[lo - 1]:
            lo -= 1
        while hi < len(voiced) - 1 and hi - b < ahead and voiced[hi + 1]:
            hi += 1
        out.append(replace(s, start=min(s.start, lo * _FRAME), end=max(s.end, (hi + 1) * _FRAME)))
    return out


def _voiced(env: npt.NDArray[np.float32], bridge: float) -> npt.NDArray[np.bool_]:
    """Frames of speech: 4x over the channel's quiet floor, pauses under `bridge` filled.

    Computed once per channel and shared by re-hearing and snapping: an hour holds
    360 000 frames."""
    if not len(env):
        return np.zeros(0, dtype=np.bool_)
    return _bridged(env > (float(np.percentile(env, 20)) + 1e-6) * 4, int(bridge / _FRAME))


def _bridged(voiced: npt.NDArray[np.bool_], gap: int) -> npt.NDArray[np.bool_]:
    """`voiced` with every unvoiced run of at most `gap` frames between voiced ones filled."""
    out = voiced.copy()
    edges = np.flatnonzero(np.diff(voiced.astype(np.int8)))
    falls = edges[voiced[edges]] + 1    # first unvoiced frame after speech
    rises = edges[~voiced[edges]] + 1   # first voiced frame after a pause
    nxt = np.searchsorted(rises, falls)
    for start, k in zip(falls, nxt, strict=True):
        if k < len(rises) and rises[k] - start <= gap:
            out[start:rises[k]] = True
    return out


def _finalise(spans: Sequence[Span], info: AudioInfo, cfg: RedactConfig) -> list[Span]:
    return pad_and_merge(spans, before=cfg.pad_before, after=cfg.pad_after,
                         duration=info.duration)


def _write_muted(src: Path, dst: Path, info: AudioInfo, spans: Sequence[Span],
                 cfg: RedactConfig) -> None:
    """Copy `src` to `dst` block by block with every span replaced."""
    rate = info.sample_rate
    with WavReader(src, info) as reader, WavWriter(dst, info) as writer:
        for start, data in reader.blocks(int(cfg.block_seconds * rate)):
            block = data.copy()
            end = start + len(block)
            for s in spans:
                a, b = max(start, int(s.start * rate)), min(end, int(np.ceil(s.end * rate)))
                if a >= b:
                    continue
                if cfg.mode == "tone":
                    t = np.arange(a, b) / rate
                    block[a - start:b - start, s.channel] = (
                        _TONE_LEVEL * np.sin(2 * np.pi * cfg.tone_hz * t)).astype(np.float32)
                else:
                    block[a - start:b - start, s.channel] = 0.0
            writer.write(block)


def _verify(tmp: Path, src: Path, info: AudioInfo, spans: list[Span],
            transcriber: Transcriber, cfg: RedactConfig) -> tuple[list[Span], Verification]:
    """Listen to the redacted file again; widen and re-mute leaks; fail if they persist."""
    plan = VerifyPlan(scope=cfg.verify_scope, context=cfg.verify_context,
                      block_seconds=cfg.block_seconds)
    history: list[Verification] = []
    targets: Sequence[Span] = spans
    for round_no in range(1, cfg.verify_rounds + 2):
        result = verify_once(tmp, info, spans, targets, transcriber, plan, cfg.policy)
        history.append(result)
        if not result.leaks:
            return spans, Verification.combine(history, passed=True)
        if round_no > cfg.verify_rounds:
            break
        widened = [replace(s, start=max(0.0, s.start - cfg.widen_seconds),
                           end=min(info.duration, s.end + cfg.widen_seconds))
                   for s in result.leaks]
        spans = _finalise([*spans, *widened], info, cfg)
        _write_muted(src, tmp, info, spans, cfg)
        targets = widened
    raise VerificationFailed(
        f"{src.name}: sensitive speech still heard after {cfg.verify_rounds} widening "
        "rounds; no output written", Verification.combine(history, passed=False))
