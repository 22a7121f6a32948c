"""The redaction report: a JSON record of what was found, muted and proven for one file.

Schema `callvault.redaction-report/1`, documented in the README. The report is safe to
share with QA: it holds the redacted transcript (every sensitive word replaced by
`[LABEL]`), labels and times, counts and settings; never a redacted value, never a path
beyond a file's own name.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from redaction.engine import Outcome, RedactConfig
from redaction.errors import OutputError
from redaction.spans import redacted_text
from redaction.transcribe import ModelSpec
from redaction.verify import Verification

SCHEMA = "callvault.redaction-report/1"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _verification(v: Verification | None) -> dict[str, Any] | None:
    if v is None:
        return None
    return {"scope": v.scope, "context_seconds": v.context_seconds, "rounds": v.rounds,
            "windows": v.windows, "checked_seconds": v.checked_seconds,
            "leaks_found": v.leaks_found, "dtmf_found_after": v.dtmf_found_after,
            "passed": v.passed,
            "leaks": [{"channel": s.channel, "start": round(s.start, 3), "end": round(s.end, 3),
                       "label": s.label} for s in v.leaks]}


def build(*, src: Path, out: Path | None, outcome: Outcome | None, model: ModelSpec,
          cfg: RedactConfig, status: str, error: str | None = None,
          verification: Verification | None = None,
          timings: Mapping[str, float] | None = None) -> dict[str, Any]:
    """The report for one input; `outcome` is None when the file could not be processed."""
    doc: dict[str, Any] = {"schema": SCHEMA, "status": status, "error": error,
                           "input": {"name": src.name}}
    if outcome is not None:
        info = outcome.info
        doc["input"].update(sample_rate=info.sample_rate, channels=info.channels,
                            encoding=info.encoding, duration_seconds=round(info.duration, 3))
        spans = outcome.spans
        doc["channels"] = [
            {"channel": ch, "transcript": redacted_text(outcome.words, spans, ch)}
            for ch in range(info.channels)]
        doc["spans"] = [{"channel": s.channel, "start": round(s.start, 3),
                         "end": round(s.end, 3), "label": s.label,
                         "source": "asr" if s.source == "custom" else s.source}
                        for s in spans]
        doc["redacted_seconds"] = round(sum(s.end - s.start for s in spans), 3)
        verification = outcome.verification
        timings = outcome.timings
    doc["output"] = ({"name": out.name, "sha256": sha256_file(out)}
                     if out is not None and status == "clean" else None)
    doc["model"] = {"name": model.name, "device": model.device,
                    "compute_type": model.compute_type, "beam_size": model.beam_size,
                    "word_timestamps": True}
    doc["settings"] = {"mode": cfg.mode, "tone_hz": cfg.tone_hz, "pad_before": cfg.pad_before,
                       "pad_after": cfg.pad_after, "snap_before": cfg.snap_before,
                       "snap_after": cfg.snap_after,
                       "snap_bridge": cfg.snap_bridge,
                       "verify_scope": cfg.verify_scope, "verify_context": cfg.verify_context,
                       "verify_rounds": cfg.verify_rounds,
                       "custom_labels": sorted(cfg.policy.custom_terms)}
    doc["verification"] = _verification(verification)
    doc["timings"] = {k: round(v, 3) for k, v in (timings or {}).items()}
    return doc


def write(path: Path, doc: Mapping[str, Any]) -> None:
    """Write the report atomically: a reader never sees half a report."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, indent=2, ensure_ascii=False)
            fh.write("\n")
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError, UnboundLocalError):
            os.unlink(tmp)
        raise OutputError(f"{path.name}: cannot write the report") from None
