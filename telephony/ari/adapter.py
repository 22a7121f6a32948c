"""`AriProvider`: Asterisk through ARI, seen as a provider-neutral `TelephonyProvider`.

Owns the translation both ways. ARI events from the events stream become `telephony.events`
(StasisStart → CallStarted, ChannelDtmfReceived → Digits, PlaybackFinished → PromptDone,
StasisEnd / ChannelHangupRequest / ChannelDestroyed → one CallEnded; calls whose channel is
gone after the stream reconnects → CallEnded "provider-lost"); provider commands
become REST calls (Answer → answer, Play → play of the prompt's sound files, Hangup →
hangup). Each inbound channel gets our own call id (a uuid) when it enters the
application; channel and playback ids never leave this module, in events, logs or errors.

Prompts map to Asterisk's stock English sounds (`SOUNDS`), stand-ins until callvault has
recorded its own: a prompt is one ARI playback of one or more files, so it ends in a single
PlaybackFinished. A Play with `allow_digits` is stopped on the first key (barge-in).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import SecretStr

from callvault.config import Settings
from telephony.ari.client import AriClient
from telephony.ari.events import STREAM_CONNECTED, AriEventStream, StreamStatus
from telephony.commands import (
    Answer,
    BridgeToAgent,
    CollectDigits,
    Hangup,
    Play,
    ProviderCommand,
)
from telephony.errors import CallGone, ProviderRejected, TelephonyError
from telephony.events import CallEnded, CallStarted, Digits, Event, PromptDone, e164_or_none

log = logging.getLogger(__name__)

# Every prompt id of ivr.machine.PROMPTS → the sound files played for it, in order
# (files of /usr/share/asterisk/sounds/en, the en_US_f_Allison set; the text each says
# is in core-sounds-en.txt). A test checks the table covers PROMPTS and the files exist.
SOUNDS: dict[str, tuple[str, ...]] = {
    "enter-account": ("vm-enter-num-to-call", "astcc-followed-by-the-pound-key"),
    "invalid-account": ("vm-incorrect", "vm-enter-num-to-call",
                        "astcc-followed-by-the-pound-key"),
    "enter-pin": ("agent-pass", "vm-press", "digits/2", "vm-then-pound"),
    "invalid-pin": ("auth-incorrect",),
    "account-locked": ("im-sorry", "feature-not-avail-line"),
    "not-verified": ("vm-incorrect",),
    "forgot-pin-callback": ("auth-thankyou", "vm-goodbye"),
    "callback-confirm": ("hello", "vm-press", "digits/1"),
    "please-hold": ("pls-hold-while-try",),
    "no-agents": ("queue-periodic-announce",),
    "no-agents-goodbye": ("all-circuits-busy-now", "please-try-call-later", "vm-goodbye"),
    "goodbye": ("vm-goodbye",),
}


@dataclass
class _Call:
    call_id: str
    channel: str
    barge_in: set[str] = field(default_factory=set)  # playbacks a key stops
    hanging_up: bool = False


@dataclass(frozen=True)
class _Playback:
    call_id: str
    prompt: str


class AriProvider:
    """The Asterisk adapter. `async with AriProvider.from_settings(settings) as ari:` proves
    the credentials, subscribes the application, and closes everything on the way out."""

    def __init__(self, client: AriClient, stream: AriEventStream, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.client = client
        self.stream = stream
        self._clock = clock
        self._calls: dict[str, _Call] = {}        # our call id → call
        self._by_channel: dict[str, _Call] = {}   # ARI channel id → call
        self._playbacks: dict[str, _Playback] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        stream.on_lost = self._stream_lost

    def _stream_lost(self) -> None:
        # Pooled keep-alive connections to an Asterisk that went away are dead, and while
        # we hold them a stopping Asterisk keeps its HTTP threads (and port) alive: drop them.
        self._spawn(self.client.close())

    @classmethod
    def from_settings(cls, settings: Settings, password: SecretStr, *,
                      backoff_initial: float = 0.5, backoff_max: float = 30.0,
                      request_timeout: float = 5.0) -> AriProvider:
        """The provider for `settings` (`password`: `ari_password(settings)` in the
        sandbox, the configured secret in production)."""
        client = AriClient(settings.ari_url, settings.ari_user, password,
                           timeout=request_timeout)
        stream = AriEventStream(settings.ari_url, settings.ari_user, password,
                                settings.ari_app, backoff_initial=backoff_initial,
                                backoff_max=backoff_max)
        return cls(client, stream)

    def __repr__(self) -> str:
        return f"AriProvider({self.client.base_url!r}, app={self.stream.app!r})"

    async def __aenter__(self) -> AriProvider:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Check that ARI answers and takes our credentials, then subscribe. Raises
        ProviderRejected (credentials) or ProviderUnavailable (unreachable) at once, having
        closed what it opened: the caller decides when to try again."""
        try:
            await self.client.info()
        except TelephonyError:
            await self.close()
            raise
        self.stream.start()

    async def close(self) -> None:
        await self.stream.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.client.close()

    def health(self) -> StreamStatus:
        """The events stream's status: healthy while subscribed."""
        return self.stream.status

    # --- events -------------------------------------------------------------------------
    async def events(self) -> AsyncIterator[Event]:
        """Provider-neutral events of every call until `close()`."""
        async for raw in self.stream:
            if raw.get("type") == STREAM_CONNECTED:
                for ended in await self._reconcile():
                    yield ended
                continue
            for event in self._translate(raw):
                yield event

    async def _reconcile(self) -> list[Event]:
        """After a (re)subscription: end the calls whose channels Asterisk no longer has
        (it restarted, or they ended while nobody listened), so no call waits forever."""
        ended: list[Event] = []
        for call in list(self._calls.values()):
            try:
                await self.client.get_channel(call.channel)
            except CallGone:
                if call.channel in self._by_channel:
                    self._forget(call.channel)
                    log.info("ARI: call %s ended while the events stream was down",
                             call.call_id)
                    ended.append(CallEnded(call.call_id, "provider-lost", at=self._clock()))
            except TelephonyError as exc:
                log.warning("ARI: cannot check call %s after reconnecting: %s",
                            call.call_id, exc)
        return ended

    def _translate(self, raw: dict[str, Any]) -> list[Event]:
        kind = raw.get("type")
        at = self._clock()
        channel = raw.get("channel") or {}
        chan_id = channel.get("id") if isinstance(channel, dict) else None
        if kind == "StasisStart" and chan_id is not None:
            if chan_id in self._by_channel:
                return []
            call = _Call(call_id=str(uuid.uuid4()), channel=chan_id)
            self._calls[call.call_id] = call
            self._by_channel[chan_id] = call
            caller = (channel.get("caller") or {}).get("number")
            log.info("ARI: call %s started", call.call_id)
            return [CallStarted(call.call_id, e164_or_none(caller), at=at)]
        if kind == "ChannelDtmfReceived" and chan_id in self._by_channel:
            call = self._by_channel[chan_id]
            digit = str(raw.get("digit", ""))
            for playback in call.barge_in:
                self._spawn(self._stop(playback))
            call.barge_in.clear()
            try:
                return [Digits(call.call_id, digit, at=at)]
            except ValueError:  # A-D keys: the IVR has no use for them
                return []
        if kind == "PlaybackFinished":
            playback_id = str((raw.get("playback") or {}).get("id"))
            done = self._playbacks.pop(playback_id, None)
            if done is None:
                return []
            call_or_none = self._calls.get(done.call_id)
            if call_or_none is not None:
                call_or_none.barge_in.discard(playback_id)
            return [PromptDone(done.call_id, done.prompt, at=at)]
        if kind in ("StasisEnd", "ChannelHangupRequest", "ChannelDestroyed") \
                and chan_id in self._by_channel:
            call = self._forget(chan_id)
            cause = "hangup" if call.hanging_up else "caller-hangup"
            log.info("ARI: call %s ended (%s)", call.call_id, cause)
            return [CallEnded(call.call_id, cause, at=at)]
        return []

    def _forget(self, chan_id: str) -> _Call:
        call = self._by_channel.pop(chan_id)
        self._calls.pop(call.call_id, None)
        for pid in [p for p, pb in self._playbacks.items() if pb.call_id == call.call_id]:
            del self._playbacks[pid]
        return call

    def _spawn(self, work: Any) -> None:
        task: asyncio.Task[None] = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _stop(self, playback_id: str) -> None:
        try:
            await self.client.stop_playback(playback_id)
        except TelephonyError as exc:  # its PlaybackFinished, or CallEnded, still comes
            log.warning("ARI: stopping a prompt on a key failed: %s", exc)

    # --- commands -----------------------------------------------------------------------
    async def commands(self, call_id: str, commands: Sequence[ProviderCommand]) -> None:
        """Carry out `commands` in order; CallGone if the call has ended."""
        for command in commands:
            call = self._calls.get(call_id)
            if call is None:
                raise CallGone(f"ARI: call {call_id} has ended")
            try:
                await self._one(call, command)
            except CallGone:
                raise CallGone(f"ARI: call {call_id} ended before "
                               f"{type(command).__name__}") from None

    async def _one(self, call: _Call, command: ProviderCommand) -> None:
        if isinstance(command, Answer):
            await self.client.answer(call.channel)
        elif isinstance(command, Play):
            files = SOUNDS.get(command.prompt)
            if files is None:
                raise ProviderRejected(f"ARI: no sounds for prompt {command.prompt!r}")
            playback_id = str(uuid.uuid4())
            # registered before the POST: its events may overtake the response
            self._playbacks[playback_id] = _Playback(call.call_id, command.prompt)
            if command.allow_digits:
                call.barge_in.add(playback_id)
            try:
                await self.client.play(call.channel, playback_id,
                                       [f"sound:{f}" for f in files])
            except TelephonyError:
                self._playbacks.pop(playback_id, None)
                call.barge_in.discard(playback_id)
                raise
        elif isinstance(command, CollectDigits):
            pass  # ARI reports each key as it comes; the driver runs the digit timer
        elif isinstance(command, Hangup):
            call.hanging_up = True
            log.info("ARI: hanging up call %s (%s)", call.call_id, command.reason)
            await self.client.hangup(call.channel, "normal")
        elif isinstance(command, BridgeToAgent):
            raise ProviderRejected("agent bridging not built yet")
        else:  # pragma: no cover - the union is exhausted above
            raise ProviderRejected(f"ARI: unknown command {type(command).__name__}")

    async def dial(self, call_id: str, number: str) -> None:
        """Call-back legs are not built yet (originate through a trunk endpoint)."""
        raise ProviderRejected("call-back dialling not built yet")
