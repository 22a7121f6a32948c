"""`callvault redact` on bad input: one line, a distinct exit code, nothing left behind."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

CLI = [sys.executable, "-c", "from callvault.cli import main; main()"]


def _run(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "CALLVAULT_STATE_DIR": str(tmp_path / "state"), **env}
    full_env.pop("CALLVAULT_CONFIG", None)
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=full_env,
                          timeout=300, check=False)


def _tone_wav(path: Path, seconds: float = 1.0, rate: int = 8000, subtype: str = "PCM_16",
              channels: int = 1) -> Path:
    t = np.arange(int(seconds * rate)) / rate
    x = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    data = np.stack([x] * channels, axis=1) if channels > 1 else x
    sf.write(str(path), data, rate, subtype=subtype, format="WAV")
    return path


def _zero_length_wav(path: Path) -> Path:
    header = b"RIFF" + struct.pack("<I", 36) + b"WAVE" + b"fmt " + struct.pack(
        "<IHHIIHH", 16, 1, 1, 8000, 16000, 2, 16) + b"data" + struct.pack("<I", 0)
    path.write_bytes(header)
    return path


def _truncated_wav(path: Path, tmp: Path) -> Path:
    good = _tone_wav(tmp / "good.wav", seconds=2.0)
    path.write_bytes(good.read_bytes()[:5000])
    return path


CASES = [
    ("missing", lambda p, t: p, 3, "no such file"),
    ("not audio", lambda p, t: (p.write_text("hello, I am a text file\n"), p)[1], 4,
     "not a WAV"),
    ("truncated", _truncated_wav, 5, "truncated"),
    ("empty", lambda p, t: (p.write_bytes(b""), p)[1], 6, "empty"),
    ("zero length", lambda p, t: _zero_length_wav(p), 6, "zero length"),
    ("float wav", lambda p, t: _tone_wav(p, subtype="FLOAT"), 7, "unsupported encoding"),
    ("44.1 kHz", lambda p, t: _tone_wav(p, rate=44100), 7, "unsupported sample rate"),
    ("three channels", lambda p, t: _tone_wav(p, channels=3), 7, "channels"),
    ("adpcm", lambda p, t: _tone_wav(p, subtype="IMA_ADPCM"), 7, "unsupported encoding"),
]


@pytest.mark.parametrize(("name", "make", "code", "phrase"), CASES, ids=[c[0] for c in CASES])
def test_bad_input(tmp_path: Path, name: str, make: object, code: int, phrase: str) -> None:
    """Each kind of bad input: its own exit code, one line on stderr, no output files."""
    src = make(tmp_path / "in.wav", tmp_path)  # type: ignore[operator]
    out = tmp_path / "out" / "o.wav"
    proc = _run(["redact", str(src), "--out", str(out), "--report",
                 str(tmp_path / "out" / "r.json")], tmp_path)
    assert proc.returncode == code, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and phrase in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists()
    leftovers = [p.name for p in (tmp_path / "out").glob("*")] if out.parent.exists() else []
    assert all(n == "r.json" for n in leftovers), leftovers


def test_too_long_names_the_limit(tmp_path: Path) -> None:
    """A recording over max_duration_seconds is refused with the limit in the message."""
    src = _tone_wav(tmp_path / "long.wav", seconds=3.0)
    proc = _run(["redact", str(src), "--out", str(tmp_path / "o.wav")], tmp_path,
                CALLVAULT_MAX_DURATION_SECONDS="2")
    assert proc.returncode == 8
    assert "limit" in proc.stderr and "max_duration_seconds" in proc.stderr
    assert not (tmp_path / "o.wav").exists()


def test_bad_setting_is_named(tmp_path: Path) -> None:
    """A bad configuration value fails at start naming the setting, exit 12."""
    src = _tone_wav(tmp_path / "a.wav")
    proc = _run(["redact", str(src), "--out", str(tmp_path / "o.wav")], tmp_path,
                CALLVAULT_VERIFY_SCOPE="everything")
    assert proc.returncode == 12
    assert "verify_scope" in proc.stderr and "Traceback" not in proc.stderr


def test_toml_config_file(tmp_path: Path) -> None:
    """Settings are read from a TOML file; the environment overrides it."""
    cfg = tmp_path / "callvault.toml"
    cfg.write_text('redact_mode = "tone"\nverify_context_seconds = 5.0\n'
                   '[custom_terms]\nPLAN_NAME = ["unlimited plus"]\n')
    proc = _run(["config", "--config", str(cfg)], tmp_path, CALLVAULT_REDACT_MODE="silence")
    assert proc.returncode == 0, proc.stderr
    assert "redact_mode = 'silence'" in proc.stdout
    assert "verify_context_seconds = 5.0" in proc.stdout
    assert "PLAN_NAME" in proc.stdout


def test_help_reads_well(tmp_path: Path) -> None:
    """`callvault redact --help` documents the options and the exit codes."""
    proc = _run(["redact", "--help"], tmp_path)
    assert proc.returncode == 0
    for word in ("--out", "--report", "--mode", "--verify-scope", "Exit codes"):
        assert word in proc.stdout


def test_output_never_overwrites_input(tmp_path: Path) -> None:
    """`--out` naming the input itself is refused and the original is left untouched."""
    src = _tone_wav(tmp_path / "a.wav")
    before = src.read_bytes()
    proc = _run(["redact", str(src), "--out", str(src)], tmp_path)
    assert proc.returncode == 2
    assert "overwrite the input" in proc.stderr
    assert src.read_bytes() == before


def test_unwritable_output_exit_10(tmp_path: Path) -> None:
    """An output folder that cannot be created gives exit 10 and one line, no traceback."""
    src = _tone_wav(tmp_path / "a.wav")
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    proc = _run(["redact", str(src), "--out", str(blocker / "o.wav")], tmp_path)
    assert proc.returncode == 10, proc.stderr
    assert "cannot write" in proc.stderr and "Traceback" not in proc.stderr
