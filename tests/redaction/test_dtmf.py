"""Tests for redaction.dtmf: DTMF detection, rejection rules, timing and streaming."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from redaction.dtmf import DtmfScanner, ToneSpan, detect_dtmf

ROWS = (697.0, 770.0, 852.0, 941.0)
COLS = (1209.0, 1336.0, 1477.0, 1633.0)
KEYPAD = ("123A", "456B", "789C", "*0#D")
DIGITS = "".join(KEYPAD)
TIME_TOL = 0.020
FRAME_8K = 102 / 8000

Signal = npt.NDArray[np.float64]


def freqs(digit: str) -> tuple[float, float]:
    """Row and column frequency of a keypad digit."""
    for r, keys in enumerate(KEYPAD):
        if digit in keys:
            return ROWS[r], COLS[keys.index(digit)]
    raise ValueError(digit)


def tone(
    digit: str,
    dur: float,
    fs: int,
    *,
    amp: float = 0.25,
    row_db: float = 0.0,
    col_db: float = 0.0,
    dev: float = 0.0,
) -> Signal:
    """Dual tone for digit: per-tone amplitude amp, adjusted by row_db/col_db, freqs * (1+dev)."""
    fr, fc = freqs(digit)
    t = np.arange(round(dur * fs)) / fs
    row = amp * 10 ** (row_db / 20) * np.sin(2 * np.pi * fr * (1 + dev) * t + 0.3)
    col = amp * 10 ** (col_db / 20) * np.sin(2 * np.pi * fc * (1 + dev) * t + 1.1)
    return row + col


def silence(dur: float, fs: int) -> Signal:
    """Digital silence of dur seconds."""
    return np.zeros(round(dur * fs))


def sequence(
    keys: str, fs: int, *, on: float, off: float, lead: float = 0.1, **kw: float
) -> tuple[Signal, list[tuple[float, float, str]]]:
    """Digits keyed with on/off timing; returns the signal and the expected (start, end, digit)."""
    parts = [silence(lead, fs)]
    expected = []
    t = len(parts[0]) / fs
    for key in keys:
        parts.append(tone(key, on, fs, **kw))
        expected.append((t, t + on, key))
        parts.append(silence(off, fs))
        t += (len(parts[-2]) + len(parts[-1])) / fs
    parts.append(silence(0.1, fs))
    return np.concatenate(parts), expected


def assert_spans(
    spans: Sequence[ToneSpan], expected: Sequence[tuple[float, float, str]], tol: float = TIME_TOL
) -> None:
    """Spans match expected digits in order, with start/end within tol seconds."""
    assert [s.digit for s in spans] == [e[2] for e in expected]
    for span, (start, end, _) in zip(spans, expected, strict=True):
        assert span.start == pytest.approx(start, abs=tol)
        assert span.end == pytest.approx(end, abs=tol)


def mulaw_round_trip(x: Signal) -> Signal:
    """8-bit mu-law (mu = 255) encode then decode, as a G.711 channel would."""
    mu = 255.0
    y = np.sign(x) * np.log1p(mu * np.abs(np.clip(x, -1, 1))) / np.log1p(mu)
    q = np.round(y * 127.0)
    return np.asarray(np.sign(q) * np.expm1(np.abs(q) / 127.0 * np.log1p(mu)) / mu)


def add_noise(x: Signal, snr_db: float, seed: int) -> Signal:
    """White Gaussian noise at snr_db relative to the mean power of the tone-on part of x."""
    active = x[np.abs(x) > 0]
    power = float(np.mean(active**2))
    rng = np.random.default_rng(seed)
    return x + rng.normal(0.0, np.sqrt(power / 10 ** (snr_db / 10)), len(x))


@pytest.mark.parametrize("fs", [8000, 16000])
@pytest.mark.parametrize("digit", list(DIGITS))
def test_every_digit_detected_with_timing(digit: str, fs: int) -> None:
    """Each of the 16 digits is found once, with start/end within 20 ms, at 8 and 16 kHz."""
    start = 0.1234
    x = np.concatenate([silence(start, fs), tone(digit, 0.1, fs), silence(0.2, fs)])
    assert_spans(detect_dtmf(x, fs), [(start, start + 0.1, digit)])


def test_int16_input_and_offset() -> None:
    """int16 samples are accepted and offset is added to every returned time."""
    x, expected = sequence("07", 8000, on=0.08, off=0.08)
    pcm = np.round(x * 32767).astype(np.int16)
    shifted = [(s + 12.5, e + 12.5, d) for s, e, d in expected]
    assert_spans(detect_dtmf(pcm, 8000, offset=12.5), shifted)


@pytest.mark.parametrize(
    ("keys", "on", "off"),
    [
        ("419#", 0.060, 0.060),
        ("55", 0.060, 0.060),
        ("11", 0.050, 0.040),
        ("*0D8", 0.045, 0.045),
    ],
)
@pytest.mark.parametrize("fs", [8000, 16000])
def test_sequences_and_repeated_digits(keys: str, on: float, off: float, fs: int) -> None:
    """Digit sequences give one span per key in order; a repeat after a >= 40 ms pause splits."""
    x, expected = sequence(keys, fs, on=on, off=off)
    assert_spans(detect_dtmf(x, fs), expected)


def test_short_dropout_does_not_split_a_tone() -> None:
    """A 10 ms interruption inside a keypress is bridged, not reported as two digits."""
    fs = 8000
    x = np.concatenate(
        [silence(0.1, fs), tone("5", 0.06, fs), silence(0.01, fs), tone("5", 0.06, fs)]
    )
    x = np.concatenate([x, silence(0.1, fs)])
    assert_spans(detect_dtmf(x, fs), [(0.1, 0.23, "5")])


@pytest.mark.parametrize(
    ("dur", "found"),
    [(0.015, False), (0.020, False), (0.023, False), (0.040, True), (0.045, True)],
)
@pytest.mark.parametrize("fs", [8000, 16000])
def test_duration_limits(dur: float, found: bool, fs: int) -> None:
    """Tones of 23 ms or less are rejected, tones of 40 ms or more accepted (Q.24)."""
    x = np.concatenate([silence(0.1037, fs), tone("8", dur, fs), silence(0.1, fs)])
    spans = detect_dtmf(x, fs)
    assert [s.digit for s in spans] == (["8"] if found else [])


@pytest.mark.parametrize(
    "components",
    [
        pytest.param((697.0,), id="697-alone"),
        pytest.param((1209.0,), id="1209-alone"),
        pytest.param((1000.0,), id="1kHz"),
        pytest.param((697.0, 770.0), id="two-row-tones"),
        pytest.param((1209.0, 1477.0), id="two-column-tones"),
        pytest.param((350.0, 440.0), id="dial-tone"),
        pytest.param((480.0, 620.0), id="busy-tone"),
        pytest.param((697.0, 1209.0, 1336.0), id="two-columns-equal"),
    ],
)
def test_non_dtmf_tones_rejected(components: tuple[float, ...]) -> None:
    """Single tones, same-group pairs and call-progress tones are not digits."""
    fs = 8000
    t = np.arange(fs) / fs
    x = sum(0.25 * np.sin(2 * np.pi * f * t) for f in components)
    assert detect_dtmf(np.asarray(x, dtype=np.float64), fs) == []


@pytest.mark.parametrize(
    ("row_db", "col_db", "found"),
    [
        (0.0, -6.0, True),  # low group 6 dB stronger: normal twist within 8 dB
        (0.0, 3.0, True),  # high group 3 dB stronger: reverse twist within 4 dB
        (0.0, -11.0, False),  # normal twist too large
        (0.0, 7.0, False),  # reverse twist too large
    ],
)
def test_twist_limits(row_db: float, col_db: float, found: bool) -> None:
    """Level difference between the two tones is limited (8 dB normal, 4 dB reverse twist)."""
    fs = 8000
    x = np.concatenate(
        [silence(0.1, fs), tone("6", 0.1, fs, row_db=row_db, col_db=col_db), silence(0.1, fs)]
    )
    assert [s.digit for s in detect_dtmf(x, fs)] == (["6"] if found else [])


@pytest.mark.parametrize(("level_dbfs", "found"), [(-20.0, True), (-45.0, False)])
def test_minimum_level(level_dbfs: float, found: bool) -> None:
    """A tone pair well below -30 dBFS is ignored; one at -20 dBFS is found."""
    fs = 8000
    # Two tones of amplitude a have mean power a**2; a full-scale sine has 0.5.
    amp = float(np.sqrt(0.5 * 10 ** (level_dbfs / 10)))
    x = np.concatenate([silence(0.1, fs), tone("2", 0.1, fs, amp=amp), silence(0.1, fs)])
    assert [s.digit for s in detect_dtmf(x, fs)] == (["2"] if found else [])


def test_white_noise_alone_is_silent() -> None:
    """Loud white noise produces no digits."""
    rng = np.random.default_rng(7)
    assert detect_dtmf(rng.normal(0.0, 0.2, 8000 * 3), 8000) == []


@pytest.mark.parametrize("dev", [-0.015, 0.015])
@pytest.mark.parametrize("fs", [8000, 16000])
def test_frequency_deviation(dev: float, fs: int) -> None:
    """All digits are still found, and timed within 6 ms, with both tones 1.5 % off nominal."""
    x, expected = sequence(DIGITS, fs, on=0.05, off=0.05, dev=dev, lead=0.1031)
    assert_spans(detect_dtmf(x, fs), expected, tol=0.006)


@pytest.mark.parametrize("fs", [8000, 16000])
def test_noise_20db_snr(fs: int) -> None:
    """All digits are found in white noise at 20 dB SNR."""
    x, expected = sequence(DIGITS, fs, on=0.06, off=0.06)
    assert_spans(detect_dtmf(add_noise(x, 20.0, seed=fs), fs), expected)


def test_mulaw_round_trip() -> None:
    """All digits survive mu-law quantisation, also combined with noise and deviation."""
    fs = 8000
    x, expected = sequence(DIGITS, fs, on=0.05, off=0.05, amp=0.1)
    assert_spans(detect_dtmf(mulaw_round_trip(x), fs), expected)
    y, expected = sequence(DIGITS, fs, on=0.06, off=0.06, amp=0.1, dev=0.01)
    assert_spans(detect_dtmf(mulaw_round_trip(add_noise(y, 25.0, seed=3)), fs), expected)


SPEECH = (
    "My card number is 4 1 9 2, 5 5 6 7, 8 8 0 1, and the PIN is 7 3 9 9.",
    "Please call me back on zero seven seven, nine hundred, one two three four five six.",
    "Press one for sales, two for support, or hash to return to the main menu.",
)


@pytest.fixture(scope="module")
def speech_8k(tmp_path_factory: pytest.TempPathFactory) -> Signal:
    """A few sentences with numbers from espeak-ng, in several voices, as 8 kHz mono floats."""
    if shutil.which("espeak-ng") is None or shutil.which("sox") is None:
        pytest.skip("espeak-ng and sox are needed to synthesise speech")
    tmp: Path = tmp_path_factory.mktemp("speech")
    chunks = []
    for i, (voice, text) in enumerate(zip(("en", "en-us+f3", "en+m7"), SPEECH, strict=True)):
        wav, raw = tmp / f"s{i}.wav", tmp / f"s{i}.raw"
        subprocess.run(["espeak-ng", "-v", voice, "-w", str(wav), text], check=True)
        # -v 0.5 leaves headroom so resampling cannot clip.
        subprocess.run(
            ["sox", "-v", "0.5", str(wav), "-r", "8000", "-c", "1", "-b", "16",
             "-e", "signed-integer", "-L", "-t", "raw", str(raw)],
            check=True,
        )  # fmt: skip
        chunks.append(np.fromfile(raw, dtype="<i2").astype(np.float64) / 32768.0)
    return np.concatenate(chunks)


def test_speech_does_not_trigger(speech_8k: Signal) -> None:
    """Synthesised speech full of spoken digits yields no DTMF spans."""
    assert len(speech_8k) > 8000 * 5
    assert detect_dtmf(speech_8k, 8000) == []


@pytest.mark.parametrize("dev", [0.0, -0.015, 0.015])
def test_tones_mixed_into_speech_are_found(speech_8k: Signal, dev: float) -> None:
    """Keypresses over speech (tones ~9 dB above active speech), also 1.5 % off, are found."""
    fs = 8000
    x = speech_8k.copy()
    keys = "3141592653589793#*ABCD0"
    starts = np.linspace(0.5, len(x) / fs - 1.0, len(keys))
    expected = []
    talked_over = 0
    for key, start in zip(keys, starts, strict=True):
        burst = tone(key, 0.07, fs, amp=0.2, dev=dev)
        i = round(start * fs)
        # Count bursts that really overlap speech (above -40 dBFS), else the test proves little.
        talked_over += float(np.mean(x[i : i + len(burst)] ** 2)) > 0.5e-4
        x[i : i + len(burst)] += burst
        expected.append((i / fs, i / fs + 0.07, key))
    assert talked_over >= len(keys) // 2
    assert_spans(detect_dtmf(x, fs), expected)


def scan_in_blocks(x: Signal, fs: int, sizes: Sequence[int]) -> list[ToneSpan]:
    """Run DtmfScanner over x cut into blocks, cycling through the given block sizes."""
    scanner = DtmfScanner(fs)
    spans: list[ToneSpan] = []
    pos, i = 0, 0
    while pos < len(x):
        size = sizes[i % len(sizes)]
        spans += scanner.feed(x[pos : pos + size])
        pos, i = pos + size, i + 1
    return spans + scanner.finish()


@pytest.mark.parametrize("sizes", [(1000,), (333,), (1000, 333, 7, 2048)])
def test_streaming_matches_whole_signal(sizes: tuple[int, ...]) -> None:
    """Block-wise scanning gives the same spans as one call, also for block-straddling tones."""
    fs = 8000
    x, expected = sequence("1#2580*D", fs, on=0.09, off=0.05, lead=0.07)
    # The last tone runs to the very end of the signal, so finish() must flush it.
    x = np.concatenate([x, tone("9", 0.2, fs)])
    expected.append(((len(x) - 1600) / fs, len(x) / fs, "9"))
    bounds = np.cumsum([sizes[i % len(sizes)] for i in range(len(x) // min(sizes) + 1)])
    bounds = bounds[bounds < len(x)] / fs
    straddling = [s for s, e, _ in expected if np.any((bounds > s) & (bounds < e))]
    assert straddling, "test signal must contain a tone straddling a block boundary"

    whole = detect_dtmf(x, fs)
    assert_spans(whole, expected)
    streamed = scan_in_blocks(x, fs, sizes)
    assert_spans(streamed, [(s.start, s.end, s.digit) for s in whole], tol=FRAME_8K)


def test_scanner_feed_returns_completed_tones_incrementally() -> None:
    """feed() reports a tone once it has ended, and never reports it again."""
    fs = 8000
    scanner = DtmfScanner(fs)
    first = scanner.feed(np.concatenate([tone("4", 0.08, fs), silence(0.2, fs)]))
    assert [s.digit for s in first] == ["4"]
    second = scanner.feed(np.concatenate([tone("2", 0.08, fs), silence(0.2, fs)]))
    assert [s.digit for s in second] == ["2"]
    assert second[0].start == pytest.approx(0.28, abs=TIME_TOL)
    assert scanner.finish() == []


def test_empty_and_invalid_input() -> None:
    """Empty input gives no spans; stereo arrays and sample rates below 8 kHz are refused."""
    assert detect_dtmf(np.zeros(0), 8000) == []
    assert detect_dtmf(np.zeros(50), 8000) == []
    with pytest.raises(ValueError, match="mono"):
        detect_dtmf(np.zeros((100, 2)), 8000)
    with pytest.raises(ValueError, match="8000"):
        DtmfScanner(4000)


def test_tone_span_repr_hides_digit() -> None:
    """repr/str of a ToneSpan never show the digit, which may be part of a PIN."""
    span = ToneSpan(1.25, 1.5, "7")
    assert "7" not in repr(span)
    assert "7" not in str(span)
    assert "digit" not in repr(span)
    assert span.digit == "7"
    x = np.concatenate([silence(0.1, 8000), tone("#", 0.1, 8000), silence(0.1, 8000)])
    (found,) = detect_dtmf(x, 8000)
    assert found.digit == "#"
    assert "#" not in f"{found!r}"
