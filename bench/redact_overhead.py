"""Wall-time overhead of `callvault redact` over a bare faster-whisper transcription.

Builds the espeak-ng test corpus (tests/support/corpus.py), loads the model once, then for
each file times (a) a bare faster-whisper transcription of every channel with the same
model and decoding settings, and (b) the full redaction (`redaction.engine.redact_file`,
what `callvault redact` runs: transcription, DTMF scan, detection, muting, verification at
its default scope). The two are interleaved file by file so both see the same machine
noise, and the ratio of the totals is printed, with where the extra time went.

    .venv/bin/python bench/redact_overhead.py [--clips N] [--seed S] [--model tiny.en]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from callvault import wiring
from callvault.config import load_settings
from redaction.audio import to_whisper_rate
from tests.support.corpus import build_corpus


def bare_transcribe(model: object, path: Path, beam_size: int) -> float:
    """Seconds to transcribe every channel of `path`, words with timestamps, nothing else."""
    data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    t0 = time.perf_counter()
    for ch in range(data.shape[1]):
        audio = to_whisper_rate(np.ascontiguousarray(data[:, ch]), rate)
        segments, _ = model.transcribe(  # type: ignore[attr-defined]
            audio, language="en", beam_size=beam_size, word_timestamps=True,
            condition_on_previous_text=False, no_speech_threshold=None, vad_filter=False)
        for _segment in segments:
            pass
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=12)
    parser.add_argument("--seed", type=int, default=4242)
    parser.add_argument("--model", default="tiny.en")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        clips = build_corpus(root / "in", seed=args.seed, n_clips=args.clips)
        settings = load_settings(None, state_dir=root / "state", whisper_model=args.model)
        transcriber = wiring.transcriber(settings)
        cfg = wiring.redact_config(settings)
        model = transcriber._model  # the very same loaded model, for a fair baseline
        bare_transcribe(model, clips[0].path, settings.whisper_beam_size)  # warm-up
        bare = redact = audio_s = checked = 0.0
        phases: dict[str, float] = {}
        failed = 0
        for clip in clips:
            bare += bare_transcribe(model, clip.path, settings.whisper_beam_size)
            t0 = time.perf_counter()
            try:
                outcome = wiring.redact_file(clip.path, root / "out" / clip.path.name,
                                             transcriber, cfg)
            except Exception as exc:
                failed += 1
                print(f"  {clip.path.name}: {type(exc).__name__}")
                continue
            finally:
                redact += time.perf_counter() - t0
            audio_s += outcome.info.duration * outcome.info.channels
            checked += outcome.verification.checked_seconds
            for k, v in outcome.timings.items():
                phases[k] = phases.get(k, 0.0) + v
    print(f"files: {len(clips)} ({audio_s:.0f} s of channel audio), model {args.model}, "
          f"verify scope {cfg.verify_scope} ±{cfg.verify_context:g} s, failed {failed}")
    print(f"bare faster-whisper: {bare:.1f} s   callvault redact: {redact:.1f} s")
    print("phases: " + ", ".join(f"{k} {v:.1f} s" for k, v in phases.items() if k != "total"))
    print(f"re-heard by verification: {checked:.0f} s = {checked / max(audio_s, 1e-9):.2f} "
          "of the audio")
    print(f"RATIO redact / bare = {redact / bare:.2f}  (target <= 1.3)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
