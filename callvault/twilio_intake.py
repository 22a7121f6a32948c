"""Twilio's recordings into the vault, exactly once, and then off Twilio.

A recording status callback only records the recording SID (`accept`: one row per SID in
`twilio_recordings`, so a callback Twilio delivers twice is one recording) and answers at
once. `run` takes due rows one at a time under a lease: stream the dual-channel WAV from
Twilio's REST API into a 0600 file, decrypt it first if the account uses Voice Recording
Encryption, and register it with the vault pipeline (encrypted into the spool, one
transaction with its job; each channel is later redacted on its own): the row is then
`registered`. Twilio's copy is deleted by a later pass, once the vault confirms that the
encrypted raw copy is in S3, so at no moment is a local spool file the only copy.
Transient failures (Twilio or the vault unreachable) are tried again with capped backoff; a
recording the vault refuses for good (not audio, too long) or that cannot be decrypted is
marked `refused`, logged, and left at Twilio for an operator.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

from redaction.errors import RedactionError
from storage.db import connect, translate_errors
from storage.errors import StorageError
from telephony.commands import Verdict
from telephony.errors import CallGone, ProviderRejected, TelephonyError
from telephony.protocol import CallRecording
from telephony.twilio.rest import RecordingDecryptError, TwilioRest, decrypt_recording

log = logging.getLogger(__name__)

Owner = Callable[[str], tuple[str | None, Verdict | None]]   # call id → agent, verdict
Sink = Callable[[CallRecording, Verdict | None], Awaitable[uuid.UUID]]
MAX_BYTES = 4 << 30                    # about 37 h of dual-channel 8 kHz PCM16
LEASE_SECONDS = 600
RELEASE_POLL_SECONDS = 5.0             # how soon to look again whether S3 has the raw copy
_BACKOFF_CAP = 600.0


class TwilioIntake:
    """See the module doc."""

    def __init__(self, dsn: str, rest: TwilioRest, sink: Sink, spool: Path, *,
                 owner: Owner, private_key: bytes | None = None,
                 max_attempts: int = 20, poll_seconds: float = 5.0) -> None:
        self._dsn = dsn
        self._rest = rest
        self._sink = sink
        self._spool = spool
        self._owner = owner
        self._key = private_key
        self._max_attempts = max_attempts
        self._poll = poll_seconds
        self._wake = asyncio.Event()

    def accept(self, call_id: str, recording_sid: str, encryption: dict[str, str] | None
               ) -> bool:
        """Note a finished recording; False if it was noted already (a repeated callback)."""
        with connect(self._dsn) as conn, translate_errors():
            row = conn.execute(
                "INSERT INTO twilio_recordings (recording_sid, call_id, encryption) VALUES"
                " (%s, %s, %s::jsonb) ON CONFLICT (recording_sid) DO NOTHING"
                " RETURNING recording_sid",
                (recording_sid, call_id, json.dumps(encryption) if encryption else None)
            ).fetchone()
            conn.commit()
        self._wake.set()
        return row is not None

    async def run(self, stop: Callable[[], bool] = lambda: False) -> None:
        """Take due recordings until cancelled (or `stop()` says so)."""
        while not stop():
            try:
                busy = await self.once()
            except StorageError as exc:
                log.warning("Twilio intake: the database is unavailable (%s)",
                            type(exc).__name__)
                busy = False
            except Exception as exc:  # a bug must not end the intake for good
                log.error("Twilio intake: a recording could not be handled (%s); the row "
                          "is tried again when its lease runs out", type(exc).__name__)
                busy = False
            if not busy:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._poll)

    async def once(self) -> bool:
        """Take one due recording, if any; True if one was taken."""
        row = await asyncio.to_thread(self._claim)
        if row is None:
            return False
        sid, call_id, encryption, attempts, state, rid = row
        if state == "registered":
            await self._release(sid, call_id, rid)
            return True
        try:
            rid = await self._take(sid, call_id, encryption)
        except (RedactionError, RecordingDecryptError) as exc:
            await asyncio.to_thread(self._finish, sid, "refused", None, type(exc).__name__)
            log.error("Twilio intake: recording of call %s refused for good (%s: %s); left "
                      "at Twilio", call_id, type(exc).__name__, exc)
        except (TelephonyError, StorageError, OSError) as exc:
            final = attempts + 1 >= self._max_attempts or (
                isinstance(exc, ProviderRejected) and not isinstance(exc, CallGone))
            if final:
                await asyncio.to_thread(self._finish, sid, "refused", None,
                                        type(exc).__name__)
                log.error("Twilio intake: recording of call %s given up after %d attempts "
                          "(%s); left at Twilio", call_id, attempts + 1, type(exc).__name__)
            else:
                delay = min(_BACKOFF_CAP, 2.0 * 2 ** attempts)
                await asyncio.to_thread(self._retry_in, sid, delay)
                log.warning("Twilio intake: recording of call %s not taken yet (%s); again "
                            "in %.0f s", call_id, type(exc).__name__, delay)
        else:
            await asyncio.to_thread(self._finish, sid, "registered", rid, None)
            await self._release(sid, call_id, rid)
        return True

    async def _release(self, sid: str, call_id: str, rid: uuid.UUID | None) -> None:
        """Delete Twilio's copy once the vault's raw copy is in S3; else look again soon."""
        if rid is None or not await asyncio.to_thread(self._raw_stored, rid):
            await asyncio.to_thread(self._look_again, sid, RELEASE_POLL_SECONDS)
            return
        try:
            await self._rest.delete_recording(sid)  # the vault has it: no second copy
        except TelephonyError as exc:
            log.warning("Twilio intake: recording of call %s is in the vault but Twilio's "
                        "copy could not be deleted yet (%s)", call_id, type(exc).__name__)
            await asyncio.to_thread(self._look_again, sid, 60.0)
            return
        await asyncio.to_thread(self._finish, sid, "stored", rid, None)
        log.info("Twilio intake: recording of call %s in the vault, deleted at Twilio",
                 call_id)

    async def _take(self, sid: str, call_id: str, encryption: dict[str, str] | None
                    ) -> uuid.UUID | None:
        self._spool.mkdir(parents=True, exist_ok=True, mode=0o700)
        fetched = self._spool / f"{sid}.fetched"
        plain = self._spool / f"{sid}.wav"
        for stale in (fetched, plain):
            stale.unlink(missing_ok=True)
        try:
            await self._rest.fetch_recording(sid, fetched, max_bytes=MAX_BYTES)
            if encryption:
                if self._key is None:
                    raise RecordingDecryptError("the recording is encrypted but "
                                                "twilio_recording_private_key is not set")
                await asyncio.to_thread(decrypt_recording, fetched, plain, encryption,
                                        self._key)
                fetched.unlink()
            else:
                fetched.rename(plain)
            agent, verdict = await asyncio.to_thread(self._owner, call_id)
            rid = await self._sink(CallRecording(call_id, agent, plain), verdict)
            log.info("Twilio intake: recording of call %s registered with the vault",
                     call_id)
            return rid
        finally:
            for leftover in (fetched, plain):
                leftover.unlink(missing_ok=True)

    # --- the table ---------------------------------------------------------------------------
    def _claim(self) -> tuple[str, str, dict[str, str] | None, int, str,
                              uuid.UUID | None] | None:
        with connect(self._dsn) as conn, translate_errors():
            row = conn.execute(
                "UPDATE twilio_recordings SET lease_until = now() + make_interval(secs => %s),"
                " updated = now() WHERE recording_sid = (SELECT recording_sid FROM"
                " twilio_recordings WHERE state IN ('pending', 'registered') AND"
                " lease_until <= now() ORDER BY lease_until LIMIT 1 FOR UPDATE SKIP LOCKED)"
                " RETURNING recording_sid, call_id, encryption, attempts, state, recording_id",
                (LEASE_SECONDS,)).fetchone()
            conn.commit()
        if row is None:
            return None
        return (str(row["recording_sid"]), str(row["call_id"]), row["encryption"],
                int(row["attempts"]), str(row["state"]), row["recording_id"])

    def _raw_stored(self, rid: uuid.UUID) -> bool:
        with connect(self._dsn) as conn, translate_errors():
            row = conn.execute("SELECT state FROM objects WHERE recording_id = %s AND"
                               " variant = 'raw'", (rid,)).fetchone()
        return row is not None and row["state"] == "stored"

    def _look_again(self, sid: str, seconds: float) -> None:
        with connect(self._dsn) as conn, translate_errors():
            conn.execute("UPDATE twilio_recordings SET lease_until = now() +"
                         " make_interval(secs => %s), updated = now()"
                         " WHERE recording_sid = %s", (seconds, sid))
            conn.commit()

    def _retry_in(self, sid: str, seconds: float) -> None:
        with connect(self._dsn) as conn, translate_errors():
            conn.execute("UPDATE twilio_recordings SET attempts = attempts + 1, lease_until ="
                         " now() + make_interval(secs => %s), updated = now()"
                         " WHERE recording_sid = %s", (seconds, sid))
            conn.commit()

    def _finish(self, sid: str, state: str, rid: uuid.UUID | None, error: str | None) -> None:
        with connect(self._dsn) as conn, translate_errors():
            conn.execute("UPDATE twilio_recordings SET state = %s, recording_id = %s,"
                         " error = %s, attempts = attempts + 1, updated = now()"
                         " WHERE recording_sid = %s", (state, rid, error, sid))
            conn.commit()
