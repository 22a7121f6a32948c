"""End to end with the real Whisper model: the scripted demo call through `callvault redact`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from callvault import wiring
from callvault.config import Settings, load_settings
from callvault.demo import make_sample
from redaction import engine
from redaction.audio import WavReader, probe
from redaction.dtmf import detect_dtmf
from redaction.errors import VerificationFailed
from redaction.spans import Span
from redaction.transcribe import Word

CLI = [sys.executable, "-c", "from callvault.cli import main; main()"]
# Values spoken in the demo script, in every form they could be written back.
SECRETS = ("48201735", "4 8 2 0 1 7 3 5", "4111", "0192", "415 555", "7391")


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[int, float,
                                                                                float, str]]]:
    path = tmp_path_factory.mktemp("sample") / "call.wav"
    return path, make_sample(path)


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return load_settings(None, state_dir=tmp_path_factory.mktemp("state"))


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x)))) if len(x) else 0.0


def test_cli_redacts_demo_call(sample: tuple[Path, list[tuple[int, float, float, str]]],
                               tmp_path: Path) -> None:
    """The CLI writes a same-format copy with the caller's numbers and tones muted, and a
    report, stdout and stderr that hold none of the spoken values."""
    src, where = sample
    out, rep = tmp_path / "out.wav", tmp_path / "out.json"
    env = {**os.environ, "CALLVAULT_STATE_DIR": str(tmp_path / "state")}
    proc = subprocess.run([*CLI, "redact", str(src), "--out", str(out), "--report", str(rep)],
                          capture_output=True, text=True, env=env, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr
    a, rate_a = sf.read(str(src), dtype="float32", always_2d=True)
    b, rate_b = sf.read(str(out), dtype="float32", always_2d=True)
    assert (rate_a, a.shape) == (rate_b, b.shape)
    assert sf.info(str(out)).subtype == "ULAW"
    doc = json.loads(rep.read_text())
    assert doc["status"] == "clean" and doc["verification"]["passed"] is True
    assert doc["output"]["name"] == "out.wav" and len(doc["output"]["sha256"]) == 64
    assert {"DTMF"} <= {s["label"] for s in doc["spans"]}
    assert any(s["source"] == "asr" for s in doc["spans"])
    text = rep.read_text() + proc.stdout + proc.stderr
    for secret in SECRETS:
        assert secret not in text
    # The caller's DTMF is gone from the output, by the detector and by level.
    assert detect_dtmf(b[:, 1], rate_b) == []
    (_, t0, t1, _), = [w for w in where if w[3] == "dtmf"]
    assert _rms(b[int(t0 * rate_b):int(t1 * rate_b), 1]) < 0.01
    # The agent's channel keeps most of its speech; the caller's number lines are muted.
    agent = [w for w in where if w[0] == 0]
    kept = np.mean([_rms(b[int(s * rate_b):int(e * rate_b), 0]) /
                    _rms(a[int(s * rate_b):int(e * rate_b), 0]) for _, s, e, _ in agent])
    assert kept > 0.6
    account = next(w for w in where if w[3] == "1")
    s, e = int(account[1] * rate_b), int(account[2] * rate_b)
    assert _rms(b[s:e, 1]) < 0.5 * _rms(a[s:e, 1])


def test_tone_mode_keeps_length_and_beeps(sample: tuple[Path, list[tuple[int, float, float,
                                                                          str]]],
                                          settings: Settings, tmp_path: Path) -> None:
    """In tone mode the spans carry a 1 kHz tone instead of speech; length is unchanged."""
    src, _ = sample
    cfg = replace(wiring.redact_config(settings), mode="tone")
    out = tmp_path / "tone.wav"
    outcome = engine.redact_file(src, out, wiring.transcriber(settings), cfg)
    b, rate = sf.read(str(out), dtype="float32", always_2d=True)
    assert b.shape[0] == outcome.info.frames
    span = max(outcome.spans, key=lambda s: s.end - s.start)
    seg = b[int(span.start * rate) + 80:int(span.end * rate) - 80, span.channel]
    spectrum = np.abs(np.fft.rfft(seg))
    assert abs(np.argmax(spectrum) * rate / len(seg) - 1000) < 20


def test_missed_number_is_caught_by_verification(
        sample: tuple[Path, list[tuple[int, float, float, str]]], settings: Settings,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """If the first pass misses the spoken numbers, the second listening finds them: with
    widening rounds the file ends clean; with none, it fails and nothing is written."""
    src, _ = sample
    real_detect = engine.detect
    calls = {"n": 0}

    def blind_first_pass(words, policy=None, muted=()):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        return [] if calls["n"] == 1 else real_detect(words, policy, muted)

    monkeypatch.setattr(engine, "detect", blind_first_pass)
    transcriber = wiring.transcriber(settings)
    cfg = replace(wiring.redact_config(settings), verify_scope="file", verify_rounds=0)
    out = tmp_path / "none.wav"
    with pytest.raises(VerificationFailed) as info:
        engine.redact_file(src, out, transcriber, cfg)
    assert not out.exists() and not list(tmp_path.glob(".*partial"))
    assert "4820" not in str(info.value)

    calls["n"] = 0
    cfg = replace(cfg, verify_rounds=2)
    outcome = engine.redact_file(src, out, transcriber, cfg)
    assert out.exists()
    assert outcome.verification.leaks_found > 0 and outcome.verification.passed


def test_speech_no_word_covers_is_heard_again(
        sample: tuple[Path, list[tuple[int, float, float, str]]], settings: Settings) -> None:
    """Voiced audio the first pass left without words (Whisper skipping part of its
    window) is transcribed again on its own: given no words at all, the rescue hears the
    call's speech, numbers included; given the first pass's words, it has little left."""
    src, _ = sample
    transcriber = wiring.transcriber(settings)
    cfg = wiring.redact_config(settings)
    info = probe(src, max_seconds=cfg.max_duration)
    heard: dict[int, tuple[list[Word], list[Word], list[Word]]] = {}
    with WavReader(src, info) as reader:
        for ch in range(info.channels):
            words, env, _tones = engine._listen(reader, ch, transcriber, cfg, lambda _f: None)
            voiced = engine._voiced(env, cfg.snap_bridge)
            heard[ch] = (words,
                         engine._rescue(reader, ch, voiced, [], [], transcriber, cfg, share=1.0),
                         engine._rescue(reader, ch, voiced, words, [], transcriber, cfg))
            capped = engine._rescue(reader, ch, voiced, [], [], transcriber, cfg, share=0.1)
            assert len(capped) < len(heard[ch][1])   # the share caps the audio re-heard
    for ch, (words, rescued, left) in heard.items():
        assert len(rescued) >= len(words) // 2, ch
        assert all(w.channel == ch for w in rescued)
        # each rescued word sits where the first pass heard speech too (same timeline)
        spoken = [(w.start, w.end) for w in words]
        near = [w for w in rescued if any(a - 1.0 <= w.start <= b + 1.0 for a, b in spoken)]
        assert len(near) >= 0.8 * len(rescued), ch
        assert len(left) < len(rescued) // 4, ch
    caller = " ".join(w.text for w in heard[1][1])   # the demo's caller says the numbers
    assert sum(c.isdigit() for c in caller) >= 8


def test_a_word_stretched_over_skipped_speech_does_not_hide_it(
        sample: tuple[Path, list[tuple[int, float, float, str]]], settings: Settings) -> None:
    """Whisper sometimes stamps one short word over seconds it skipped ("the" from 25.3 to
    28.3 s over a PIN): such a word accounts only for its ends, and the speech under it is
    heard again, digits and all."""
    src, utterances = sample
    ch, a, b, _ = max((u for u in utterances if u[0] == 1), key=lambda u: u[2] - u[1])
    lo, hi = a + 1.0, b - 1.0                  # the caller's longest turn, less its edges
    transcriber = wiring.transcriber(settings)
    cfg = wiring.redact_config(settings)
    info = probe(src, max_seconds=cfg.max_duration)
    with WavReader(src, info) as reader:
        words, env, _tones = engine._listen(reader, ch, transcriber, cfg, lambda _f: None)
        voiced = engine._voiced(env, cfg.snap_bridge)
        kept = [w for w in words if w.end <= lo or w.start >= hi]
        stretched = [*kept, Word("the", lo, hi, 0.4, ch)]
        again = engine._rescue(reader, ch, voiced, stretched, [], transcriber, cfg)
    inside = [w for w in again if lo <= (w.start + w.end) / 2 <= hi]
    assert sum(c.isdigit() for w in inside for c in w.text) >= 4


def test_batch_directory_keeps_going(sample: tuple[Path, list[tuple[int, float, float, str]]],
                                     tmp_path: Path) -> None:
    """A directory batch redacts the good files, reports the bad one, and exits with its
    code."""
    src, _ = sample
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    mono, rate = sf.read(str(src), dtype="float32", always_2d=True)
    sf.write(str(inbox / "a.wav"), mono[: rate * 12, 1], rate, subtype="PCM_16")
    (inbox / "b.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    env = {**os.environ, "CALLVAULT_STATE_DIR": str(tmp_path / "state")}
    proc = subprocess.run([*CLI, "redact", str(inbox), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, env=env, timeout=600, check=False)
    assert proc.returncode == 5, proc.stderr
    assert (tmp_path / "out" / "a.redacted.wav").exists()
    assert not (tmp_path / "out" / "b.redacted.wav").exists()
    failed = json.loads((tmp_path / "out" / "b.redacted.report.json").read_text())
    assert failed["status"] == "failed" and failed["output"] is None


def test_snapping_reaches_further_ahead_than_back_and_stops_at_pauses() -> None:
    """A span stretches over the voiced audio around it, at most `before` s back and
    `after` s ahead; a pause longer than the bridge stops it, a shorter one does not."""
    # Frame resolution is 10 ms, and a stretch ends at the end of its last frame.
    env = np.full(1000, 1e-4, dtype=np.float32)      # 10 s of quiet floor, 10 ms frames
    env[100:400] = 0.1                                # speech 1.0-4.0 s ...
    env[250:265] = 1e-4                               # ... with a 0.15 s gap inside
    env[450:600] = 0.1                                # more speech after a 0.5 s pause
    span = Span(0, 2.0, 2.2, "PIN", "asr")
    bridged = engine._voiced(env, 0.3)
    (wide,) = engine._snap([span], [bridged], 1.2, 1.2)
    assert (wide.start, wide.end) == pytest.approx((1.0, 3.4), abs=0.015)  # 1.2 s ahead
    (lop,) = engine._snap([span], [bridged], 0.3, 0.6)
    assert (lop.start, lop.end) == pytest.approx((1.7, 2.8), abs=0.015)
    (late,) = engine._snap([Span(0, 3.5, 3.8, "PIN", "asr")], [bridged], 0.3, 0.6)
    assert late.end == pytest.approx(4.0, abs=0.015)   # the 0.5 s pause ends the stretch
    (tight,) = engine._snap([span], [engine._voiced(env, 0.1)], 0.3, 0.6)
    assert tight.end == pytest.approx(2.5, abs=0.015)  # an unbridged 0.15 s gap ends it
    (still,) = engine._snap([span], [bridged], 0.0, 0.0)
    assert (still.start, still.end) == pytest.approx((2.0, 2.2), abs=0.015)
