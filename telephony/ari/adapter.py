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
CallStarted). Within one BridgeToAgent round every free agent is rung in turn (ring
timeout, next agent); AgentUnavailable comes when none of them answered. Results of our own
REST work (an agent joined, an originate failed) go through the events queue as internal
events, so they are ordered with Asterisk's own.

Recording (with a `RecordingSink`): when an agent has joined, the bridge's mixed audio is
recorded under the name `callvault-<call id>-<agent>`; the caller typed the PIN before the
bridge existed, so no PIN tone can be in it. When the call ends the recording is stopped,
streamed through ARI into a 0600 file of `record_dir`, handed to the sink (the vault
pipeline), and deleted from Asterisk only after the sink returned. A sink or fetch that
fails leaves Asterisk's copy; a sweep after every (re)subscription and every
`sweep_interval` seconds collects such leftovers, and those of a callvault that was killed
or an Asterisk that restarted, so no recording is lost.

Call-backs (`dial`): the number of record is dialled as `PJSIP/<number>@<callback_trunk>`
under a channel id of our own into our application (args "callback"): CallbackPlaced at
once, CallbackAnswered when it answers (its StasisStart), CallbackFailed when it ends
unanswered; after answering it is an ordinary call of the driver's call id.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import SecretStr

from callvault.config import Settings
from redaction.errors import RedactionError
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
    CallbackAnswered,
    CallbackFailed,
    CallbackPlaced,
    CallEnded,
    CallStarted,
    Digits,
    Event,
    PromptDone,
    e164_or_none,
)
from telephony.protocol import CallRecording, RecordingSink

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
    kind: Literal["inbound", "callback"] = "inbound"
    answered: bool = True                             # False: a call-back still ringing
    barge_in: set[str] = field(default_factory=set)  # playbacks a key stops
    hanging_up: bool = False
    bridge: str | None = None                         # ARI bridge id, once made
    tried: set[str] = field(default_factory=set)      # agents rung this round
    recording: str | None = None                      # stored recording name, once made


AGENT_ARG = "agent"               # Stasis args of an agent leg: never a caller
CALLBACK_ARG = "callback"         # Stasis args of a call-back leg
RECORDING_PREFIX = "callvault-"   # our recordings in Asterisk: callvault-<call id>-<agent>
BRIDGE_PREFIX = "callvault-"      # our bridges: callvault-<uuid>
MAX_RECORDING_BYTES = 2 << 30     # refuse to fetch more (about 37 h of 8 kHz PCM16)


def recording_name(call_id: str, agent: str) -> str:
    return f"{RECORDING_PREFIX}{call_id}-{agent}"


def parse_recording_name(name: str) -> tuple[str, str | None] | None:
    """(call id, agent) of one of our recording names, None for anybody else's."""
    if not name.startswith(RECORDING_PREFIX):
        return None
    rest = name[len(RECORDING_PREFIX):]
    try:
        call_id = str(uuid.UUID(rest[:36]))
    except ValueError:
        return None
    if call_id != rest[:36]:
        return None
    agent = rest[37:] if rest[36:37] == "-" else ""
    return call_id, agent or None
_LOCAL = "callvault.local"        # type of our own internal events in the queue
# Pauses before looking again at channels ARI could not show after reconnecting (it
# answers 503 for a moment while Asterisk loads its modules).
_RECHECK_PAUSES = (0.5, 1.0, 2.0)


@dataclass
class _Leg:
    """One ringing or answered agent leg of a call."""

    call_id: str
    agent: str
    channel: str
    state: str = "ringing"        # ringing → connecting → connected, or → over


_Owned = TypeVar("_Owned", _Call, _Leg)   # what holds one of our channels

@dataclass(frozen=True)
class _Playback:
    call_id: str
    prompt: str


class AriProvider:
    """The Asterisk adapter. `async with AriProvider.from_settings(settings) as ari:` proves
    the credentials, subscribes the application, and closes everything on the way out."""

    def __init__(self, client: AriClient, stream: AriEventStream, *,
                 clock: Callable[[], float] = time.time, agents: Sequence[str] = (),
                 agent_ring_timeout: float = 20.0, callback_trunk: str = "callback-trunk",
                 callback_ring_timeout: float = 45.0,
                 recordings: RecordingSink | None = None, record_dir: Path | None = None,
                 sweep_interval: float = 60.0,
                 max_recording_seconds: float = 4 * 3600.0) -> None:
        if agent_ring_timeout < 1 or callback_ring_timeout < 1:
            raise ValueError("ring timeouts must be at least 1 s")
        if recordings is not None and record_dir is None:
            raise ValueError("recording needs a record_dir for the fetched files")
        self.client = client
        self.stream = stream
        self._clock = clock
        self._agents = tuple(agents)
        self._ring_timeout = agent_ring_timeout
        self._trunk = callback_trunk
        self._callback_ring = callback_ring_timeout
        self._sink = recordings
        self._record_dir = record_dir
        self._sweep_interval = sweep_interval
        self._max_recording = max(1, round(max_recording_seconds))
        self._collecting: set[str] = set()        # recording names being collected
        self._wanted: set[str] = set()            # ...that a sweep met while in flight
        self.collected: deque[str] = deque(maxlen=1000)  # calls whose recording was handed over
        self._refused: set[str] = set()           # recordings the sink refused for good
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
                      agent_ring_timeout: float | None = None,
                      recordings: RecordingSink | None = None,
                      sweep_interval: float = 60.0) -> AriProvider:
        """The provider for `settings` (`password`: `ari_password(settings)` in the
        sandbox, the configured secret in production). With `recordings`, agent calls are
        recorded and fetched into `state_dir/spool/incoming`."""
        client = AriClient(settings.ari_url, settings.ari_user, password,
                           timeout=request_timeout)
        stream = AriEventStream(settings.ari_url, settings.ari_user, password,
                                settings.ari_app, backoff_initial=backoff_initial,
                                backoff_max=backoff_max)
        return cls(client, stream, agents=settings.agent_endpoints,
                   agent_ring_timeout=agent_ring_timeout or settings.agent_ring_seconds,
                   callback_trunk=settings.callback_trunk, recordings=recordings,
                   record_dir=settings.spool_dir / "incoming", sweep_interval=sweep_interval,
                   max_recording_seconds=settings.max_duration_seconds)

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
        if self._record_dir is not None:
            self._record_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.stream.start()
        if self._sink is not None and self._sweep_interval > 0:
            self._spawn(self._sweep_forever())

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
                async for ended in self._reconcile():
                    yield ended
                await self._end_orphans()
                if self._sink is not None:
                    self._spawn(self._sweep())
                continue
            for event in self._translate(raw):
                yield event

    async def _reconcile(self) -> AsyncIterator[Event]:
        """After a (re)subscription: end the calls whose channels Asterisk no longer has
        (it restarted, or they ended while nobody listened), so no call waits forever. A
        channel that cannot be looked at (ARI still waking up) is looked at again after
        a pause, a few times, before it is left to the next reconnection. Lookups of a
        round run together, and what a round ends is yielded before the next pause."""
        calls, legs = list(self._calls.values()), list(self._legs.values())
        why: dict[str, str] = {}
        for pause in (0.0, *_RECHECK_PAUSES):
            if not calls and not legs:
                break
            await asyncio.sleep(pause)
            if not self.stream.connected.is_set():
                return  # lost again: the next subscription reconciles afresh
            gone_calls, calls = await self._look(calls, why)
            ended: list[Event] = []
            for call in gone_calls:
                if call.channel in self._by_channel:
                    self._forget(call.channel)
                    self._teardown(call)
                    log.info("ARI: call %s ended while the events stream was down",
                             call.call_id)
                    ended.append(CallEnded(call.call_id, "provider-lost", at=self._clock()))
            # agents who left while nobody listened (not those torn down just above)
            gone_legs, legs = await self._look(
                [g for g in legs if g.channel in self._legs], why)
            for leg in gone_legs:
                ended += self._leg_over(leg, self._clock())
            for event in ended:
                yield event
        for call in calls:
            log.warning("ARI: cannot check call %s after reconnecting: %s", call.call_id,
                        why.get(call.channel, ""))
        for leg in [g for g in legs if g.channel in self._legs]:
            log.warning("ARI: cannot check an agent leg of call %s after reconnecting: %s",
                        leg.call_id, why.get(leg.channel, ""))

    async def _look(self, items: Sequence[_Owned], why: dict[str, str],
                    ) -> tuple[list[_Owned], list[_Owned]]:
        """Look up the channels of `items` together: (those Asterisk no longer has, those
        it could not say about, with the reason in `why`); the rest it still has."""
        async def gone(channel: str) -> bool | None:
            try:
                await self.client.get_channel(channel)
            except CallGone:
                return True
            except TelephonyError as exc:
                why[channel] = str(exc)
                return None
            return False

        verdicts = await asyncio.gather(*(gone(item.channel) for item in items))
        return ([i for i, v in zip(items, verdicts, strict=True) if v],
                [i for i, v in zip(items, verdicts, strict=True) if v is None])

    async def _end_orphans(self) -> None:
        """End what an earlier callvault process left in Asterisk: our bridges nobody here
        owns (destroying one stops its recording, which the sweep then collects) and
        channels in our application that this process does not know (their IVR state is
        gone with that process). One callvault serves one ARI application."""
        try:
            _, body = await self.client.request("GET", "bridges", "list bridges")
            _, chans = await self.client.request("GET", "channels", "list channels")
        except TelephonyError as exc:
            log.warning("ARI: cannot look for calls left by an earlier process (%s)",
                        type(exc).__name__)
            return
        owned = {c.bridge for c in self._calls.values()}
        for bridge in json.loads(body or b"[]"):
            ident = str(bridge.get("id", "")) if isinstance(bridge, dict) else ""
            if ident.startswith(BRIDGE_PREFIX) and ident not in owned:
                log.warning("ARI: destroying a bridge left by an earlier process")
                await self._destroy_bridge(ident)
        known = set(self._by_channel) | set(self._legs)
        for chan in json.loads(chans or b"[]"):
            if not isinstance(chan, dict):
                continue
            plan = chan.get("dialplan") or {}
            ours = plan.get("app_name") == "Stasis" and str(
                plan.get("app_data", "")).split(",")[0] == self.stream.app
            if ours and chan.get("id") not in known:
                log.warning("ARI: hanging up a channel left by an earlier process")
                await self._hangup_leg(str(chan["id"]))

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
            log.warning("ARI: an agent leg we do not know entered the application; hung up")
            if chan_id is not None:
                self._spawn(self._hangup_leg(str(chan_id)))
            return []
        if kind == "StasisStart" and chan_id is not None:
            if chan_id in self._by_channel:
                known = self._by_channel[chan_id]
                if known.kind == "callback" and not known.answered:
                    known.answered = True
                    log.info("ARI: call-back %s answered", known.call_id)
                    return [CallbackAnswered(known.call_id, at=at)]
                return []
            if CALLBACK_ARG in (raw.get("args") or []):
                log.warning("ARI: a call-back leg we do not know entered the application;"
                            " hung up")
                self._spawn(self._hangup_leg(str(chan_id)))
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
            if not call.answered:
                log.info("ARI: call-back %s was not answered", call.call_id)
                return [CallbackFailed(call.call_id, "no-answer", at=at)]
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
        call = self._calls[leg.call_id]
        following = self._pick_agent(exclude=call.tried)
        if following is not None:
            self._spawn(self._ring_quietly(call, following))
            return []
        return [AgentUnavailable(leg.call_id, at=at)]

    def _local(self, raw: dict[str, Any], at: float) -> list[Event]:
        what = raw.get("what")
        leg = self._legs.get(str(raw.get("leg")))
        if what == "joined" and leg is not None and leg.state == "connecting":
            leg.state = "connected"
            log.info("ARI: call %s: agent %s answered", leg.call_id, leg.agent)
            call = self._calls.get(leg.call_id)
            for playback in [p for p, pb in self._playbacks.items()
                             if pb.call_id == leg.call_id]:
                self._spawn(self._stop(playback))  # "please hold" is over: they talk now
            if self._sink is not None and call is not None and call.recording is None \
                    and call.bridge is not None:
                call.recording = recording_name(call.call_id, leg.agent)
                self._spawn(self._start_recording(call, call.bridge, call.recording))
            return [AgentAnswered(leg.call_id, leg.agent, at=at)]
        if what == "callback-placed" and raw.get("call") in self._calls:
            return [CallbackPlaced(str(raw["call"]), at=at)]
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

    def _pick_agent(self, exclude: set[str] | None = None) -> str | None:
        """The next free agent of the pool not in `exclude` (marked in it), round robin;
        None if all are busy or excluded."""
        busy = self._busy() | (exclude if exclude is not None else set())
        for i in range(len(self._agents)):
            index = (self._next_agent + i) % len(self._agents)
            if self._agents[index] not in busy:
                self._next_agent = index + 1
                if exclude is not None:
                    exclude.add(self._agents[index])
                return self._agents[index]
        return None

    async def _bridge(self, call: _Call) -> None:
        call.tried = set()
        agent = self._pick_agent(exclude=call.tried)
        if agent is None:
            log.info("ARI: call %s: no free agent", call.call_id)
            self._inject(what="no-agent", call=call.call_id)
            return
        if call.bridge is not None:
            await self._ring(call, agent)
            return
        call.bridge = f"{BRIDGE_PREFIX}{uuid.uuid4()}"
        await self.client.create_bridge(call.bridge)
        self._check_alive(call)
        # Ring first: Asterisk answers addChannel only once the caller's current prompt
        # ("please hold") has ended, and the agent need not wait for that.
        await self._ring(call, agent)
        await self.client.add_to_bridge(call.bridge, [call.channel])
        self._check_alive(call)

    async def _ring_quietly(self, call: _Call, agent: str) -> None:
        """Ring the next agent of a round from the background: the caller may be gone."""
        with contextlib.suppress(CallGone):
            await self._ring(call, agent)

    async def _ring(self, call: _Call, agent: str) -> None:
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
            self._spawn(self._hangup_leg(leg.channel))  # a timed-out originate may ring
            self._check_alive(call)
            return
        if call.call_id not in self._calls:  # the caller left while the POST was in flight
            self._spawn(self._hangup_leg(leg.channel))
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
        """The caller has gone: hang up its agent legs, destroy its bridge, collect its
        recording."""
        agents = [g for g in self._legs.values() if g.call_id == call.call_id]
        for leg in agents:
            leg.state = "over"
            self._legs.pop(leg.channel, None)
            self._spawn(self._hangup_leg(leg.channel))
        if call.recording is not None:
            name, call.recording = call.recording, None
            self._spawn(self._collect(name, stop=True))
        if call.bridge is not None:
            bridge, call.bridge = call.bridge, None
            self._spawn(self._destroy_bridge(bridge))

    # --- recordings ---------------------------------------------------------------------
    async def _start_recording(self, call: _Call, bridge: str, name: str) -> None:
        try:
            # capped at what the vault accepts, so an orphaned recording still ends
            await self.client.record_bridge(bridge, name, max_seconds=self._max_recording)
            log.info("ARI: call %s: recording the agent conversation", call.call_id)
        except TelephonyError as exc:
            # The conversation goes on unrecorded: say so loudly, it is a compliance gap.
            log.error("ARI: call %s: the recording could not be started (%s: %s)",
                      call.call_id, type(exc).__name__, exc)

    async def _collect(self, name: str, *, stop: bool) -> bool:
        """Stop (if asked), fetch, hand to the sink, then delete one recording; True if it
        reached the sink. Failures leave Asterisk's copy for the next sweep; one that a
        sweep met in flight is tried again at once."""
        parsed = parse_recording_name(name)
        if parsed is None or self._sink is None or self._record_dir is None \
                or name in self._refused:
            return False
        if name in self._collecting:
            # In flight, perhaps waiting on an Asterisk that has since restarted: should
            # that attempt fail, it goes again at once (see `finally`).
            self._wanted.add(name)
            return False
        call_id, agent = parsed
        self._collecting.add(name)
        local = self._record_dir / f"{name}.wav"
        transient = handed = False
        try:
            if stop:
                await self.client.stop_recording(name)
            for _ in range(100):  # at most about 10 s for Asterisk to close the file
                if not await self.client.recording_is_live(name):
                    break
                await asyncio.sleep(0.1)
            else:
                log.warning("ARI: recording of call %s is still live; left for later", call_id)
                return False
            local.unlink(missing_ok=True)
            size = await self.client.fetch_stored_recording(name, local,
                                                            max_bytes=MAX_RECORDING_BYTES)
            await self._sink(CallRecording(call_id, agent, local))
            handed = True
            self.collected.append(call_id)
            await self.client.delete_stored_recording(name)
            log.info("ARI: call %s: recording (%d bytes) handed to the vault and deleted "
                     "from Asterisk", call_id, size)
            return True
        except CallGone:
            log.warning("ARI: recording of call %s is not in Asterisk (nothing was "
                        "recorded, or it was collected already)", call_id)
            return False
        except (RedactionError, ProviderRejected) as exc:  # bad audio, too big: for good
            self._refused.add(name)
            log.error("ARI: recording of call %s refused by the vault (%s: %s); it stays "
                      "in Asterisk for an operator", call_id, type(exc).__name__, exc)
            return False
        except Exception as exc:  # storage down, Asterisk gone: keep Asterisk's copy
            transient = True
            log.warning("ARI: recording of call %s not collected yet (%s); Asterisk keeps "
                        "it for the next sweep", call_id, type(exc).__name__)
            return False
        finally:
            local.unlink(missing_ok=True)
            self._collecting.discard(name)
            if name in self._wanted:
                self._wanted.discard(name)
                # Not when the vault has it and only Asterisk's delete failed: the next
                # sweep finishes that (handing it over again is idempotent).
                if transient and not handed:
                    self._spawn(self._collect(name, stop=False))

    async def _sweep(self) -> int:
        """Collect every recording of ours that Asterisk holds and no live call owns."""
        try:
            names = await self.client.stored_recordings()
        except TelephonyError as exc:
            log.warning("ARI: cannot list stored recordings (%s)", type(exc).__name__)
            return 0
        owned = {c.recording for c in self._calls.values()}
        collected = 0
        for name in names:
            if name not in owned and parse_recording_name(name) is not None:
                collected += await self._collect(name, stop=False)
        return collected

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self._sweep_interval)
            if self.stream.connected.is_set():
                try:
                    await self._sweep()
                except Exception as exc:  # the next round tries again
                    log.error("ARI: the recording sweep failed (%s)", type(exc).__name__)

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
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("ARI: background work failed (%s)", type(task.exception()).__name__)

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
        """Dial the E.164 `number` through the call-back trunk as call `call_id`; see the
        module doc. Raises (and forgets the leg) if Asterisk refuses to originate."""
        if e164_or_none(number) is None:
            raise ProviderRejected("ARI dial: the number of record is not an E.164 number")
        if call_id in self._calls:
            raise ProviderRejected(f"ARI dial: call id {call_id} is already in use")
        call = _Call(call_id, str(uuid.uuid4()), kind="callback", answered=False)
        self._calls[call_id] = call
        self._by_channel[call.channel] = call
        self._inject(what="callback-placed", call=call_id)  # ordered before its StasisStart
        log.info("ARI: call-back %s dialling", call_id)
        try:
            await self.client.originate(call.channel, f"PJSIP/{number}@{self._trunk}",
                                        self.stream.app, app_args=CALLBACK_ARG,
                                        timeout=round(self._callback_ring))
        except TelephonyError:
            if call.channel in self._by_channel:
                self._forget(call.channel)
            # a timed-out originate may still have been placed: make sure it is not ringing
            self._spawn(self._hangup_leg(call.channel))
            raise
