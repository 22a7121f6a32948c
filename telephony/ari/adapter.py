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

BridgeToAgent: the next free agent of the pool (round robin, skipping agents this provider
already has on a call) is dialled through ARI under a channel id of our own into our Stasis
application (args "agent"), ringing at most `agent_ring_timeout` seconds; the caller waits in
a mixing bridge of the call. The agent's StasisStart (it answered) → the agent joins the
bridge → AgentAnswered; the agent leg ending before that, or the originate failing, or no
free agent → AgentUnavailable; the agent ending after that → AgentHungUp. When the caller
ends, the agent leg is hung up and the bridge destroyed. Agent legs are never callers (no
CallStarted). Results of our own REST work (an agent joined, an originate failed) go through
the events queue as internal events, so they are ordered with Asterisk's own.
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
from telephony.events import (
    AgentAnswered,
    AgentHungUp,
    AgentUnavailable,
    CallEnded,
    CallStarted,
    Digits,
    Event,
    PromptDone,
    e164_or_none,
)

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
    bridge: str | None = None                         # ARI bridge id, once made


AGENT_ARG = "agent"               # Stasis args of an agent leg: never a caller
_LOCAL = "callvault.local"        # type of our own internal events in the queue


@dataclass
class _Leg:
    """One ringing or answered agent leg of a call."""

    call_id: str
    agent: str
    channel: str
    state: str = "ringing"        # ringing → connecting → connected, or → over


@dataclass(frozen=True)
class _Playback:
    call_id: str
    prompt: str


class AriProvider:
    """The Asterisk adapter. `async with AriProvider.from_settings(settings) as ari:` proves
    the credentials, subscribes the application, and closes everything on the way out."""

    def __init__(self, client: AriClient, stream: AriEventStream, *,
                 clock: Callable[[], float] = time.time, agents: Sequence[str] = (),
                 agent_ring_timeout: float = 20.0) -> None:
        if agent_ring_timeout < 1:
            raise ValueError("agent_ring_timeout must be at least 1 s")
        self.client = client
        self.stream = stream
        self._clock = clock
        self._agents = tuple(agents)
        self._ring_timeout = agent_ring_timeout
        self._next_agent = 0                      # round robin position in _agents
        self._legs: dict[str, _Leg] = {}          # ARI channel id of an agent leg → leg
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
                      request_timeout: float = 5.0,
                      agent_ring_timeout: float = 20.0) -> AriProvider:
        """The provider for `settings` (`password`: `ari_password(settings)` in the
        sandbox, the configured secret in production)."""
        client = AriClient(settings.ari_url, settings.ari_user, password,
                           timeout=request_timeout)
        stream = AriEventStream(settings.ari_url, settings.ari_user, password,
                                settings.ari_app, backoff_initial=backoff_initial,
                                backoff_max=backoff_max)
        return cls(client, stream, agents=settings.agent_endpoints,
                   agent_ring_timeout=agent_ring_timeout)

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
        if kind == _LOCAL:
            return self._local(raw, at)
        if chan_id is not None and chan_id in self._legs:
            return self._leg_event(str(kind), self._legs[chan_id], at)
        if kind == "StasisStart" and AGENT_ARG in (raw.get("args") or []):
            log.warning("ARI: an agent leg we do not know entered the application; ignored")
            return []
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
            self._teardown(call)
            cause = "hangup" if call.hanging_up else "caller-hangup"
            log.info("ARI: call %s ended (%s)", call.call_id, cause)
            return [CallEnded(call.call_id, cause, at=at)]
        return []

    # --- agent legs -----------------------------------------------------------------------
    def _leg_event(self, kind: str, leg: _Leg, at: float) -> list[Event]:
        if kind == "StasisStart":  # the agent answered
            if leg.state == "ringing":
                leg.state = "connecting"
                self._spawn(self._connect(leg))
            return []
        if kind not in ("StasisEnd", "ChannelHangupRequest", "ChannelDestroyed"):
            return []
        return self._leg_over(leg, at)

    def _leg_over(self, leg: _Leg, at: float) -> list[Event]:
        """The agent leg ended: AgentUnavailable before it joined, AgentHungUp after."""
        if leg.state == "over":
            return []
        was, leg.state = leg.state, "over"
        self._legs.pop(leg.channel, None)  # its further events are nobody's
        if leg.call_id not in self._calls:
            return []
        if was == "connected":
            log.info("ARI: call %s: the agent hung up", leg.call_id)
            return [AgentHungUp(leg.call_id, at=at)]
        log.info("ARI: call %s: agent %s did not take the call", leg.call_id, leg.agent)
        self._spawn(self._hangup_leg(leg.channel))
        return [AgentUnavailable(leg.call_id, at=at)]

    def _local(self, raw: dict[str, Any], at: float) -> list[Event]:
        what = raw.get("what")
        leg = self._legs.get(str(raw.get("leg")))
        if what == "joined" and leg is not None and leg.state == "connecting":
            leg.state = "connected"
            log.info("ARI: call %s: agent %s answered", leg.call_id, leg.agent)
            return [AgentAnswered(leg.call_id, leg.agent, at=at)]
        if what == "failed" and leg is not None:
            if leg.state == "connected":
                return []
            return self._leg_over(leg, at)
        if what == "no-agent" and raw.get("call") in self._calls:
            return [AgentUnavailable(str(raw["call"]), at=at)]
        return []

    def _inject(self, **fields: str) -> None:
        """Queue an internal event behind the ARI events already received."""
        self.stream._queue.put_nowait({"type": _LOCAL, **fields})

    def _busy(self) -> set[str]:
        return {leg.agent for leg in self._legs.values() if leg.state != "over"}

    def _pick_agent(self) -> str | None:
        """The next free agent of the pool, round robin; None if all are busy."""
        busy = self._busy()
        for i in range(len(self._agents)):
            index = (self._next_agent + i) % len(self._agents)
            if self._agents[index] not in busy:
                self._next_agent = index + 1
                return self._agents[index]
        return None

    async def _bridge(self, call: _Call) -> None:
        agent = self._pick_agent()
        if agent is None:
            log.info("ARI: call %s: no free agent", call.call_id)
            self._inject(what="no-agent", call=call.call_id)
            return
        if call.bridge is None:
            call.bridge = str(uuid.uuid4())
            await self.client.create_bridge(call.bridge)
            self._check_alive(call)
            await self.client.add_to_bridge(call.bridge, [call.channel])
            self._check_alive(call)
        leg = _Leg(call.call_id, agent, str(uuid.uuid4()))
        self._legs[leg.channel] = leg  # before the POST: its events may overtake the reply
        log.info("ARI: call %s: ringing agent %s", call.call_id, agent)
        try:
            await self.client.originate(leg.channel, f"PJSIP/{agent}", self.stream.app,
                                        app_args=AGENT_ARG,
                                        timeout=round(self._ring_timeout))
        except TelephonyError as exc:
            log.warning("ARI: call %s: ringing agent %s failed: %s", call.call_id, agent, exc)
            self._inject(what="failed", leg=leg.channel)
            self._check_alive(call)
            return
        self._check_alive(call)
        self._spawn(self._ring_guard(leg))

    def _check_alive(self, call: _Call) -> None:
        """After an await: if the caller went meanwhile, undo what was made for it."""
        if call.call_id not in self._calls:
            self._teardown(call)
            raise CallGone(f"ARI: call {call.call_id} ended while bridging")

    async def _connect(self, leg: _Leg) -> None:
        call = self._calls.get(leg.call_id)
        try:
            if call is None or call.bridge is None:
                raise CallGone("the caller has gone")
            await self.client.add_to_bridge(call.bridge, [leg.channel])
        except TelephonyError as exc:
            log.warning("ARI: call %s: the agent could not join the caller: %s",
                        leg.call_id, exc)
            self._inject(what="failed", leg=leg.channel)
            return
        self._inject(what="joined", leg=leg.channel)

    async def _ring_guard(self, leg: _Leg) -> None:
        """Asterisk's originate timeout ends an unanswered leg; this is the backstop."""
        await asyncio.sleep(self._ring_timeout + 3.0)
        if leg.state == "ringing":
            self._inject(what="failed", leg=leg.channel)

    async def _hangup_leg(self, channel: str) -> None:
        try:
            await self.client.hangup(channel, "normal")
        except CallGone:
            pass
        except TelephonyError as exc:
            log.warning("ARI: hanging up an agent leg failed: %s", exc)

    def _teardown(self, call: _Call) -> None:
        """The caller has gone: hang up its agent legs and destroy its bridge."""
        for leg in [g for g in self._legs.values() if g.call_id == call.call_id]:
            leg.state = "over"
            self._legs.pop(leg.channel, None)
            self._spawn(self._hangup_leg(leg.channel))
        if call.bridge is not None:
            bridge, call.bridge = call.bridge, None
            self._spawn(self._destroy_bridge(bridge))

    async def _destroy_bridge(self, bridge: str) -> None:
        try:
            await self.client.destroy_bridge(bridge)
        except TelephonyError as exc:
            log.warning("ARI: destroying a bridge failed: %s", exc)

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
            await self._bridge(call)  # the verdict reaches the agent's screen, not Asterisk
        else:  # pragma: no cover - the union is exhausted above
            raise ProviderRejected(f"ARI: unknown command {type(command).__name__}")

    async def dial(self, call_id: str, number: str) -> None:
        """Call-back legs are not built yet (originate through a trunk endpoint)."""
        raise ProviderRejected("call-back dialling not built yet")
