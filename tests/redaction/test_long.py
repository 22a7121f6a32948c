"""Long recordings are streamed in blocks: the same findings in every block, nothing lost."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import soundfile as sf

from callvault import wiring
from callvault.config import load_settings
from callvault.demo import make_sample
from redaction import engine


def test_blocks_cover_the_whole_file(tmp_path: Path) -> None:
    """A call repeated three times and read in 30 s blocks (cut mid-call) yields the
    caller's keypad tones and number spans in every repeat, and a same-length output."""
    sample = tmp_path / "one.wav"
    where = make_sample(sample)
    data, rate = sf.read(str(sample), dtype="float32", always_2d=True)
    caller = data[:, 1]
    long_path = tmp_path / "long.wav"
    sf.write(str(long_path), np.concatenate([caller] * 3), rate, subtype="ULAW")
    period = len(caller) / rate

    settings = load_settings(None, state_dir=tmp_path / "state", whisper_model="tiny.en")
    cfg = replace(wiring.redact_config(settings), block_seconds=30.0)
    out = tmp_path / "long.redacted.wav"
    outcome = engine.redact_file(long_path, out, wiring.transcriber(settings), cfg)

    assert sf.info(str(out)).frames == sf.info(str(long_path)).frames
    (_, d0, d1, _), = [w for w in where if w[3] == "dtmf"]
    account = next(w for w in where if w[3] == "1")
    for k in range(3):
        shift = k * period
        tones = [s for s in outcome.spans if s.label == "DTMF"
                 and s.end > d0 + shift and s.start < d1 + shift]
        assert tones and min(s.start for s in tones) <= d0 + shift + 0.01, k
        assert max(s.end for s in tones) >= d1 + shift - 0.11, k  # the last gap is silence
        assert any(s.source == "asr" and s.start < account[2] + shift
                   and s.end > account[1] + shift for s in outcome.spans), k
