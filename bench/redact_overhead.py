"""Wall-time overhead of `callvault redact` over a bare faster-whisper transcription.

Two scenarios, both from the espeak-ng test corpus (tests/support/corpus.py):
"typical" calls are a corpus clip (a few sensitive items) followed by about two minutes
of ordinary conversation with no numbers, as most of a contact-centre call is; "dense"
calls are the corpus clips alone, a sensitive item every few seconds. For each file it
times (a) a bare faster-whisper transcription of every channel with the same
model and decoding settings, and (b) the full redaction (`redaction.engine.redact_file`,
what `callvault redact` runs: transcription, DTMF scan, detection, muting, verification at
its default scope). The two are interleaved file by file so both see the same machine
noise, and the ratio of the totals is printed, with where the extra time went.

Whisper re-decodes a window it is unsure of at rising temperatures, by sampling, and the
luck of those samples moves a run's time by up to half for the very same file and code
(measured: 6.2 s and 11.5 s to decode one 31 s clip). So both runs of a file start from
the same CTranslate2 random seed, which makes them decode alike most of the time but not
always (CTranslate2's sampling is not fully repeatable: one file, one seed, four runs, and
one decoded its last window differently); the order alternates file by file so a slow
spell does not always land on one side; and `--repeats N` times each side N times per
file and keeps the fastest of each (a failed redaction is timed and counted too). The
line "transcribe phase / bare" shows what is left: that phase is the bare run's decoding
plus the DTMF scan, the energy envelope and re-hearing of speech no word covered (usually
none), so in an undisturbed run it is 1.00-1.05.

    .venv/bin/python bench/redact_overhead.py [--clips N] [--repeats N] [--seed S]
                                              [--model tiny.en]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import ctranslate2
import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from callvault import wiring
from callvault.config import load_settings
from redaction.audio import to_whisper_rate
from redaction.engine import Outcome
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


_CHAT = (
    "Thanks for your patience while I look into this for you.",
    "I understand, that sounds really frustrating, let me see what happened.",
    "The system is a little slow this morning, bear with me.",
    "I have made a note on the account about our conversation today.",
    "Is there anything else I can help you with while I have you?",
    "To be honest I am not sure, my wife usually handles these things.",
    "It keeps dropping the connection when I walk into the kitchen.",
    "We can send a technician out, or I can walk you through a reset.",
    "Okay, I have restarted it and the light is blinking green now.",
    "That is great news, it looks like everything is working again.",
    "I would like to know why the service was so bad last week.",
    "There was an outage in your area and it has been fixed since.",
)


def _speak(text: str, voice: str, rate: int, tmp: Path) -> np.ndarray:
    wav, low = tmp / "chat.wav", tmp / "chat8k.wav"
    espeak, sox = shutil.which("espeak-ng"), shutil.which("sox")
    assert espeak and sox, "espeak-ng and sox are needed (make installs them)"
    subprocess.run([espeak, "-v", voice, "-w", str(wav), text], check=True)
    subprocess.run([sox, str(wav), "-r", str(rate), "-c", "1", str(low)], check=True)
    data, _ = sf.read(str(low), dtype="float32")
    return np.asarray(data, dtype=np.float32)


def typical_calls(clips: list, root: Path, seconds: float) -> list[Path]:  # type: ignore[type-arg]
    """Each mono clip followed by `seconds` of number-free conversation."""
    rng = random.Random(7)
    out: list[Path] = []
    for n, clip in enumerate(c for c in clips if c.channels == 1):
        data, rate = sf.read(str(clip.path), dtype="float32")
        parts = [data]
        total = 0.0
        while total < seconds:
            voice = rng.choice(("en-us", "en-gb", "en-us+f3", "en-gb-scotland"))
            speech = 0.5 * _speak(rng.choice(_CHAT), voice, rate, root)
            parts += [speech, np.zeros(int(rate * rng.uniform(0.4, 1.2)), np.float32)]
            total += (len(speech) / rate) + 0.8
        audio = np.concatenate(parts) + np.random.default_rng(n).normal(
            0, 0.002, sum(len(p) for p in parts)).astype(np.float32)
        path = root / f"typical{n:02d}.wav"
        sf.write(str(path), np.clip(audio, -1, 1), rate, subtype=sf.info(str(clip.path)).subtype)
        out.append(path)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=6)
    parser.add_argument("--scenario", choices=("typical", "dense", "both"), default="both")
    parser.add_argument("--chat-seconds", type=float, default=120.0)
    parser.add_argument("--seed", type=int, default=4242)
    parser.add_argument("--model", default=None, help="default: the settings default")
    parser.add_argument("--repeats", type=int, default=1,
                        help="time each side this many times per file and keep the fastest")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        clips = build_corpus(root / "in", seed=args.seed, n_clips=args.clips,
                             stereo_fraction=0.0)
        chosen = {"whisper_model": args.model} if args.model else {}
        settings = load_settings(None, state_dir=root / "state", **chosen)
        transcriber = wiring.transcriber(settings)
        cfg = wiring.redact_config(settings)
        model = transcriber._model  # the very same loaded model, for a fair baseline
        bare_transcribe(model, clips[0].path, settings.whisper_beam_size)  # warm-up
        scenarios = ["typical", "dense"] if args.scenario == "both" else [args.scenario]
        for name in scenarios:
            files = (typical_calls(clips, root, args.chat_seconds) if name == "typical"
                     else [c.path for c in clips])
            _run(name, files, root, transcriber, cfg, model, settings.whisper_beam_size,
                 settings.whisper_model, max(1, args.repeats))
    return 0


def _run(name: str, files: list[Path], root: Path, transcriber: wiring.Transcriber,
         cfg: wiring.RedactConfig, model: object, beam: int, model_name: str,
         repeats: int) -> None:
    bare = redact = audio_s = checked = 0.0
    phases: dict[str, float] = {}
    failed = 0
    for n, path in enumerate(files):
        seed = zlib.crc32(path.name.encode())
        bare_times: list[float] = []
        runs: list[tuple[float, Outcome | None]] = []
        for r in range(repeats):
            if (n + r) % 2 == 0:   # alternate which side goes first
                ctranslate2.set_random_seed(seed)
                bare_times.append(bare_transcribe(model, path, beam))
            ctranslate2.set_random_seed(seed)   # mostly the same samples, see above
            t0 = time.perf_counter()
            result: Outcome | None = None
            try:
                result = wiring.redact_file(path, root / "out" / name / path.name,
                                            transcriber, cfg)
            except Exception as exc:  # a failed file is counted (and timed), not fatal
                print(f"  {path.name}: {type(exc).__name__}")
            runs.append((time.perf_counter() - t0, result))
            if (n + r) % 2 == 1:
                ctranslate2.set_random_seed(seed)
                bare_times.append(bare_transcribe(model, path, beam))
        bare += min(bare_times)
        took, outcome = min(runs, key=lambda run: run[0])
        redact += took
        if outcome is None or any(o is None for _t, o in runs):
            failed += 1
        if outcome is None:
            continue
        audio_s += outcome.info.duration * outcome.info.channels
        checked += outcome.verification.checked_seconds
        for k, v in outcome.timings.items():
            phases[k] = phases.get(k, 0.0) + v
    print(f"[{name}] {len(files)} files, {audio_s:.0f} s of audio, model {model_name}, "
          f"verify {cfg.verify_scope} ±{cfg.verify_context:g} s, best of {repeats}, "
          f"failed {failed}")
    print(f"[{name}] bare faster-whisper {bare:.1f} s, callvault redact {redact:.1f} s; "
          + ", ".join(f"{k} {v:.1f} s" for k, v in phases.items() if k != "total"))
    listen = phases.get("transcribe", 0.0)
    print(f"[{name}] transcribe phase / bare = {listen / bare:.2f} (the same decoding, plus "
          "the DTMF scan and energy envelope, a few %, and any re-hearing; beyond that, "
          "decoding luck and machine noise)")
    print(f"[{name}] work after the first pass / bare = {(redact - listen) / bare:.2f} "
          "(verification, detection, muting)")
    print(f"[{name}] verification re-heard {checked:.0f} s = "
          f"{checked / max(audio_s, 1e-9):.2f} of the audio")
    print(f"[{name}] RATIO redact / bare = {redact / bare:.2f}  (target <= 1.3)", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
