"""Where calls meet the vault: the recording sink the phone adapters hand finished agent
recordings to, and the verdict document stored with each recording.

The sink runs `recordings.pipeline.register` in a thread: the WAV is encrypted into the
spool, the recording row and its first job are committed in one transaction, and only then
does the adapter delete the provider's copy. Registering is idempotent per call id, so a
recording collected twice (the provider's delete failed) is stored once.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from typing import Any

from recordings import pipeline
from telephony.commands import Verdict
from telephony.protocol import CallRecording, RecordingSink

log = logging.getLogger(__name__)

VerdictOf = Callable[[str], Verdict | None]


def verdict_document(verdict: Verdict | None) -> dict[str, Any] | None:
    """What the recording row keeps of the verdict: how or why, and when; no account."""
    if verdict is None:
        return None
    return {"verified": verdict.verified, "method": verdict.method,
            "reason": verdict.reason, "at": verdict.at}


async def register(rt: pipeline.Runtime, recording: CallRecording,
                   verdict: Verdict | None) -> uuid.UUID:
    """Register one recording with the vault pipeline of `rt`; its recording id."""
    registered = await asyncio.to_thread(
        pipeline.register, rt, recording.path, call_id=recording.call_id,
        agent=recording.agent, verdict=verdict_document(verdict))
    log.info("call %s: recording %s %s", recording.call_id, registered.recording_id,
             "registered" if registered.created else "was registered already")
    return registered.recording_id


def vault_sink(rt: pipeline.Runtime, verdict_of: VerdictOf) -> RecordingSink:
    """A sink that registers each recording with the vault pipeline of `rt`;
    `verdict_of(call_id)` gives the call's verdict if this process still knows it."""

    async def sink(recording: CallRecording) -> None:
        await register(rt, recording, verdict_of(recording.call_id))

    return sink
