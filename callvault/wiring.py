"""Builds the packages' objects from `Settings`: the one place settings meet the code."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

from callvault.config import Settings
from redaction.detect import DetectPolicy
from redaction.engine import RedactConfig, redact_file
from redaction.transcribe import ModelSpec, Transcriber, resolve_model_dir

ProgressFn = Callable[[float], None]

__all__ = ["ProgressFn", "RedactConfig", "Transcriber", "redact_config", "redact_file",
           "transcriber"]


def redact_config(settings: Settings) -> RedactConfig:
    policy = DetectPolicy(custom_terms={k: tuple(v) for k, v in settings.custom_terms.items()})
    return RedactConfig(
        mode=settings.redact_mode, tone_hz=settings.redact_tone_hz,
        pad_before=settings.redact_pad_before, pad_after=settings.redact_pad_after,
        snap_before=settings.redact_snap_before_seconds,
        snap_after=settings.redact_snap_after_seconds,
        snap_bridge=settings.redact_snap_bridge_seconds, verify_scope=settings.verify_scope,
        verify_context=settings.verify_context_seconds, verify_rounds=settings.verify_rounds,
        block_seconds=settings.block_seconds, max_duration=settings.max_duration_seconds,
        policy=policy)


def model_spec(settings: Settings) -> ModelSpec:
    name = settings.whisper_model
    shown = name if name in ("tiny.en", "base") else f"custom:{name.rstrip('/').split('/')[-1]}"
    return ModelSpec(shown, settings.whisper_device, settings.whisper_compute_type,
                     settings.whisper_threads, settings.whisper_beam_size)


def transcriber(settings: Settings) -> Transcriber:
    """The process's one loaded model for these settings."""
    return _cached(model_spec(settings), settings.whisper_model, str(settings.models_dir))


@lru_cache(maxsize=2)
def _cached(spec: ModelSpec, name: str, models_dir: str) -> Transcriber:
    return Transcriber(spec, resolve_model_dir(name, Path(models_dir)))
