"""In-band DTMF tone detection for call recordings.

This module owns finding keyed DTMF digits in a mono PCM signal and reporting when each
tone was on, so the redaction layer can silence the spans (a keyed digit may be part of a
PIN or card number). It is pure computation on numpy arrays: no file, device or log I/O.

Detection runs Goertzel filters at the eight DTMF frequencies over ~12.75 ms frames (half a
frame hop) and applies ITU-T Q.24 / Q.23 style acceptance rules per frame, then a duration
and inter-digit pause rule over the frame decisions. :class:`DtmfScanner` is the streaming
form; :func:`detect_dtmf` runs the same scanner over a whole signal, so both give identical
results.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

__all__ = ["DtmfScanner", "ToneSpan", "detect_dtmf"]

_ROW_FREQS = (697.0, 770.0, 852.0, 941.0)
_COL_FREQS = (1209.0, 1336.0, 1477.0, 1633.0)
_KEYPAD = ("123A", "456B", "789C", "*0#D")

# 102 samples at 8 kHz is the classic DTMF block: bins ~78 Hz wide, narrow enough to separate
# the closest row tones (73 Hz apart) yet short enough to time a 40 ms tone.
_REF_RATE = 8000
_REF_FRAME = 102

# The winning tone of each group must beat every other tone of its group by 8 dB; a tone
# 1.5 % off nominal still leaks only about -11 dB into its neighbour.
_REL_PEAK = 10.0 ** (8.0 / 10.0)
# Twist limits follow the Asterisk/spandsp convention: the low (row) group may be up to 8 dB
# stronger than the high group ("normal"), the high group up to 4 dB stronger ("reverse").
_NORMAL_TWIST = 10.0 ** (8.0 / 10.0)
_REVERSE_TWIST = 10.0 ** (4.0 / 10.0)
# Pair level relative to a full-scale sine (mean power 0.5). -30 dBFS is two tones of about
# -30 dBm0 each on a G.711 scale, a few dB below the weakest levels receivers are usually required
# to accept (around -25 dBm0 per tone), so real keypresses pass and faint hiss or crosstalk not.
_MIN_PAIR_POWER = 0.5 * 10.0 ** (-30.0 / 10.0)
# Speech spreads its energy over many harmonics and formants, a keypress puts nearly all of it
# in two tones: even a harmonic-rich synthetic voice stays near 0.6, a tone pair with 20 dB SNR
# noise and 1.5 % frequency error stays above 0.85.
_MIN_TONE_FRACTION = 0.75
# The fraction is measured on the best of three probes per tone (nominal and +-1 %) so that an
# off-nominal tone is not penalised by the ~1.5 dB scalloping loss of a 78 Hz wide bin. The
# probes are not used for the dominance tests, where their wider reach would leak neighbours.
_PROBE_SPREAD = 0.01
# A frame only partly covered by a tone acts as a shorter window with a wider main lobe, so the
# strict dominance test fails there well before the tone really stops (up to ~0.45 frame early
# for a tone 1.5 % off nominal). Once a digit is confirmed, neighbouring frames with the same
# best row and column still count when the tone holds this fraction of their energy. In
# silence that fraction equals the share of the frame the tone covers, which is what lets the
# frame grid be turned back into on/off times. Two frames back reach the partly covered onset.
_EDGE_FRACTION = 0.5
_BACKTRACK_FRAMES = 2
# Q.24: tones of 40 ms or more must be accepted and tones under 23 ms rejected. Measured spans
# are within about 4 ms of the true ones, so a cut at 30 ms separates the two with margin.
_MIN_DURATION = 0.030
# A dropout this short inside a tone is a glitch, not a pause; Q.24 requires a 40 ms pause to
# separate two keypresses of the same digit, which comfortably exceeds this.
_MAX_DROPOUT = 0.020
# Bounds the working arrays when a caller hands over a large block at once.
_CHUNK_FRAMES = 4096


@dataclass(frozen=True, slots=True)
class ToneSpan:
    """One detected keypress: tone on/off times in seconds and the digit keyed."""

    start: float
    end: float
    # A keyed digit can be a PIN digit: keep it out of repr so it can never reach a log.
    digit: str = field(repr=False)


def _to_float(
    samples: npt.NDArray[np.floating] | npt.NDArray[np.integer],
) -> npt.NDArray[np.float64]:
    arr = np.asarray(samples)
    if arr.ndim != 1:
        raise ValueError(f"expected a mono 1-D signal, got shape {arr.shape}")
    if np.issubdtype(arr.dtype, np.unsignedinteger):
        # Unsigned PCM (e.g. 8-bit WAV) is offset binary: centre it before scaling.
        half = float(2 ** (np.iinfo(arr.dtype).bits - 1))
        return (arr.astype(np.float64) - half) / half
    if np.issubdtype(arr.dtype, np.integer):
        return arr.astype(np.float64) / float(-int(np.iinfo(arr.dtype).min))
    if np.issubdtype(arr.dtype, np.floating):
        return arr.astype(np.float64, copy=False)
    raise TypeError(f"unsupported sample dtype {arr.dtype}")


class DtmfScanner:
    """Streaming DTMF detector for one channel, in bounded memory.

    Feed consecutive blocks of any size; each call returns the tones that ended (and were
    confirmed) since the previous call. Only the last partial frame of samples and the
    currently open tone are kept between blocks, so a tone straddling block boundaries is
    reported once, exactly as :func:`detect_dtmf` would report it.
    """

    def __init__(self, sample_rate: int) -> None:
        if sample_rate < _REF_RATE:
            raise ValueError(f"sample rate must be at least {_REF_RATE} Hz, got {sample_rate}")
        self._rate = float(sample_rate)
        self._frame = round(_REF_FRAME * sample_rate / _REF_RATE)
        self._hop = self._frame // 2
        nominal = np.array(_ROW_FREQS + _COL_FREQS)
        freqs = np.concatenate(
            (nominal, nominal * (1.0 - _PROBE_SPREAD), nominal * (1.0 + _PROBE_SPREAD))
        )
        self._coeff = 2.0 * np.cos(2.0 * np.pi * freqs / sample_rate)
        # Frame i spans samples [i*hop, i*hop + frame). A frame counts once the tone covers
        # about _EDGE_FRACTION of it, so the true edge lies within one hop of that point;
        # aiming at the middle of the hop halves the worst-case timing error.
        frame_s = self._frame / self._rate
        hop_s = self._hop / self._rate
        self._lead = (1.0 - _EDGE_FRACTION) * frame_s - hop_s / 2.0
        self._trail = _EDGE_FRACTION * frame_s + hop_s / 2.0
        self._hop_s = hop_s
        # Largest run of missing frames whose implied gap is still within _MAX_DROPOUT.
        self._max_missing = int((_MAX_DROPOUT - (1.0 - 2.0 * _EDGE_FRACTION) * frame_s) / hop_s)
        self._tail = np.zeros(0, dtype=np.float64)
        self._next_frame = 0
        self._digit: str | None = None
        self._first = 0
        self._last = 0
        # Frames before this index belong to an already reported tone and must not be reused.
        self._floor = 0
        self._recent: deque[tuple[int, str | None]] = deque(maxlen=_BACKTRACK_FRAMES)
        self._finished = False

    def feed(self, block: npt.NDArray[np.floating] | npt.NDArray[np.integer]) -> list[ToneSpan]:
        """Analyse the next block of samples; return the tones completed since the last call."""
        if self._finished:
            raise RuntimeError("feed() called after finish()")
        data = _to_float(block)
        out: list[ToneSpan] = []
        step = _CHUNK_FRAMES * self._hop
        for pos in range(0, len(data), step):
            self._process(np.concatenate((self._tail, data[pos : pos + step])), out)
        return out

    def finish(self) -> list[ToneSpan]:
        """Flush: analyse the final partial frame and close any tone still open."""
        if self._finished:
            return []
        self._finished = True
        out: list[ToneSpan] = []
        if len(self._tail):
            # Silence past the end keeps the coverage-based edge estimate valid for a tone
            # that runs up to the last sample.
            self._process(np.concatenate((self._tail, np.zeros(self._frame))), out)
        self._close(out)
        return out

    def _process(self, x: npt.NDArray[np.float64], out: list[ToneSpan]) -> None:
        if len(x) < self._frame:
            self._tail = x
            return
        count = (len(x) - self._frame) // self._hop + 1
        frames = np.lib.stride_tricks.sliding_window_view(x, self._frame)[:: self._hop][:count]
        strict, loose = self._classify(frames)
        for offset, (digit, near) in enumerate(zip(strict, loose, strict=True)):
            self._step(self._next_frame + offset, digit, near, out)
        self._next_frame += count
        self._tail = x[count * self._hop :].copy()

    def _classify(
        self, frames: npt.NDArray[np.float64]
    ) -> tuple[list[str | None], list[str | None]]:
        n = frames.shape[1]
        # Goertzel recurrence, vectorised across frames and all probes at once.
        s1 = np.zeros((frames.shape[0], len(self._coeff)))
        s2 = np.zeros_like(s1)
        for k in range(n):
            s0 = frames[:, k, None] + self._coeff * s1 - s2
            s2 = s1
            s1 = s0
        # Scaled so a sinusoid of amplitude A reads A**2 / 2, the same unit as mean power.
        power = (s1 * s1 + s2 * s2 - self._coeff * s1 * s2) * (2.0 / (n * n))
        total = np.einsum("ij,ij->i", frames, frames) / n
        nominal, low, high = power[:, :8], power[:, 8:16], power[:, 16:]
        return _decide(nominal, np.maximum(nominal, np.maximum(low, high)), total)

    def _step(self, index: int, digit: str | None, near: str | None, out: list[ToneSpan]) -> None:
        """Advance the tone state machine by one frame.

        digit is the strict per-frame decision, near the relaxed one (a superset of it).
        """
        if self._digit is not None:
            if near == self._digit and index - self._last - 1 <= self._max_missing:
                self._last = index
            elif digit is not None or index - self._last > self._max_missing:
                self._close(out)
        if digit is not None and self._digit is None:
            first = index
            for prev, prev_near in reversed(self._recent):
                if prev_near != digit or prev < self._floor or prev != first - 1:
                    break
                first = prev
            self._digit, self._first, self._last = digit, first, index
        self._recent.append((index, near))

    def _close(self, out: list[ToneSpan]) -> None:
        if self._digit is None:
            return
        start = max(0.0, self._first * self._hop_s + self._lead)
        end = self._last * self._hop_s + self._trail
        if end - start >= _MIN_DURATION:
            out.append(ToneSpan(start, end, self._digit))
        self._digit = None
        self._floor = self._last + 1


def _decide(
    nominal: npt.NDArray[np.float64],
    widened: npt.NDArray[np.float64],
    total: npt.NDArray[np.float64],
) -> tuple[list[str | None], list[str | None]]:
    """Per-frame decisions: (strict Q.24-style hits, relaxed hits used only to extend edges).

    nominal and widened hold the power of the 8 tones (rows then columns) per frame, at the
    nominal frequency and as the best of the probes around it; total is the frame power.
    """
    idx = np.arange(len(total))
    rows, cols = nominal[:, :4], nominal[:, 4:]
    best_r = np.argmax(rows, axis=1)
    best_c = np.argmax(cols, axis=1)
    pr = rows[idx, best_r]
    pc = cols[idx, best_c]
    pair = widened[idx, best_r] + widened[idx, 4 + best_c]
    # Twist is a ratio of the two tones, so partial coverage does not change it.
    near = (
        (pr <= pc * _NORMAL_TWIST)
        & (pc <= pr * _REVERSE_TWIST)
        & (pair >= _EDGE_FRACTION * total)
        # Partial coverage lowers the measured power with the square of the covered share.
        & (pair >= _MIN_PAIR_POWER * _EDGE_FRACTION**2)
    )
    hit = (
        near
        & (pair >= _MIN_TONE_FRACTION * total)
        & (pair >= _MIN_PAIR_POWER)
        & _dominant(rows, best_r, pr)
        & _dominant(cols, best_c, pc)
    )
    keys = [_KEYPAD[r][c] for r, c in zip(best_r, best_c, strict=True)]
    return (
        [k if h else None for k, h in zip(keys, hit, strict=True)],
        [k if n else None for k, n in zip(keys, near, strict=True)],
    )


def _dominant(
    group: npt.NDArray[np.float64], best: npt.NDArray[np.intp], peak: npt.NDArray[np.float64]
) -> npt.NDArray[np.bool_]:
    others = group.copy()
    others[np.arange(len(best)), best] = 0.0
    return np.asarray(peak >= _REL_PEAK * others.max(axis=1))


def detect_dtmf(
    samples: npt.NDArray[np.floating] | npt.NDArray[np.integer],
    sample_rate: int,
    *,
    offset: float = 0.0,
) -> list[ToneSpan]:
    """Find the DTMF keypresses in a signal.

    samples: mono signal (int16 or float in [-1,1]); any sample rate >= 8000. offset is added
    to every returned time (used when a long file is scanned in blocks).
    """
    scanner = DtmfScanner(sample_rate)
    spans = scanner.feed(samples) + scanner.finish()
    if offset == 0.0:
        return spans
    return [ToneSpan(s.start + offset, s.end + offset, s.digit) for s in spans]
