"""The IVR driver: the only async code of `ivr`, between a phone provider and the machines.

`IvrDriver.run()` reads `provider.events()` and keeps one `IvrMachine` per call (made on
CallStarted, or for a call-back leg when the driver dials it). Each call has its own queue
and task, so the events of one call are handled strictly in order while different calls
run concurrently. Of the commands a machine returns, timers are started or cancelled at
once, the provider commands go to `provider.commands()` in one batch in order, and then
the driver does the rest of the work (account lookups, PIN checks in a thread, call-backs,
the verdict) and feeds the results back into the call's queue as events.

A provider that refuses a command (agent bridging not built yet) or finds the call gone
does not stop the driver: the call is ended (CallEnded "provider-error" for the machine,
a best-effort Hangup for the provider). When a machine is DONE or in ERROR its state is
dropped: timers cancelled, maps cleared. Logs name calls by our call id only; caller ids,
account numbers and PINs never appear in a log line, an exception or a repr.

`serve_ivr` connects to Asterisk through ARI with retries and runs the driver until it is
cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from pydantic import SecretStr

from callvault.config import Settings
from ivr.machine import IvrConfig, IvrMachine, State
from storage.audit import AccessLog, AuditEvent
from storage.customers import Customers
from telephony.commands import (
    PROVIDER_COMMAND_TYPES,
    CancelTimer,
    CheckPin,
    Command,
    Hangup,
    LookupAccountByCaller,
    LookupAccountByNumber,
    PlaceCallback,
    ProviderCommand,
    StartTimer,
    Verdict,
)
from telephony.errors import (
    CallGone,
    ProviderRejected,
    ProviderUnavailable,
    TelephonyError,
)
from telephony.events import (
    AccountLookup,
    AgentAnswered,
    CallbackFailed,
    CallEnded,
    CallStarted,
    Event,
    PinChecked,
    TimerExpired,
)
from telephony.protocol import RecordingSink, TelephonyProvider

logger = logging.getLogger(__name__)

OnVerdict = Callable[[str, Verdict], Awaitable[None] | None]
# (call id, agent endpoint, the call's verdict): an agent answered; the screen-pop
OnAgent = Callable[[str, str, Verdict], Awaitable[None] | None]
ACTOR = "callvault-ivr"
LATENCY_SAMPLES = 100_000   # the newest service latencies kept for the bench
_FINAL = (State.DONE, State.ERROR)


@dataclass(eq=False)
class _Call:
    """What the driver keeps for one live call."""

    call_id: str
    machine: IvrMachine
    queue: asyncio.Queue[Event] = field(default_factory=asyncio.Queue)
    task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"_Call({self.call_id!r}, {self.machine.state.name})"


def describe(verdict: Verdict) -> str:
    """The access-log detail of a verdict: how or why, never a number."""
    if verdict.verified:
        return f"verified {verdict.method}"
    return f"not verified: {verdict.reason}"


class IvrDriver:
    """Runs the IVR machines of every call of `provider`; see the module doc."""

    def __init__(self, provider: TelephonyProvider, customers: Customers, *,
                 config: IvrConfig | None = None, log: AccessLog | None = None,
                 on_verdict: OnVerdict | None = None, on_agent: OnAgent | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self._provider = provider
        self._on_agent = on_agent
        self._customers = customers
        self._config = config or IvrConfig()
        self._log = log
        self._on_verdict = on_verdict
        self._clock = clock
        self._calls: dict[str, _Call] = {}
        self._timers: dict[tuple[str, str], asyncio.TimerHandle] = {}  # (call id, name)
        self._latencies: deque[float] = deque(maxlen=LATENCY_SAMPLES)
        self.verdicts: dict[str, Verdict] = {}   # call id → verdict, for the last calls
        self._running = False

    def __repr__(self) -> str:
        return f"IvrDriver(active_calls={len(self._calls)})"

    # --- what tests and the bench look at ------------------------------------------------
    @property
    def active_calls(self) -> frozenset[str]:
        """The call ids whose machines are still live."""
        return frozenset(self._calls)

    @property
    def pending_timers(self) -> int:
        """Timers started and neither cancelled nor expired, over every live call."""
        return len(self._timers)

    def timers_of(self, call_id: str) -> frozenset[str]:
        """The names of the timers running for one call."""
        return frozenset(name for cid, name in self._timers if cid == call_id)

    @property
    def latencies(self) -> list[float]:
        """Service latencies in seconds, oldest first: from taking an event off its call's
        queue to handing the resulting provider commands to the provider (events that
        produced provider commands only; lookups and PIN checks happen after the hand-off)."""
        return list(self._latencies)

    # --- the main loop -------------------------------------------------------------------
    async def run(self) -> None:
        """Consume the provider's events until they end or this is cancelled; every call
        task and timer is stopped on the way out."""
        if self._running:
            raise RuntimeError("IvrDriver.run() is already running")
        self._running = True
        events = self._provider.events()
        try:
            async for event in events:
                self.dispatch(event)
        finally:
            self._running = False
            closer = getattr(events, "aclose", None)
            if closer is not None:
                with contextlib.suppress(Exception):
                    await closer()
            await self._stop_all()

    def dispatch(self, event: Event) -> None:
        """Hand one provider event to its call (a CallStarted makes the call)."""
        call = self._calls.get(event.call_id)
        if call is None:
            if not isinstance(event, CallStarted):
                logger.debug("IVR: %s for call %s, which is not live: ignored",
                          type(event).__name__, event.call_id)
                return
            call = self._open(IvrMachine(event.call_id, self._config))
        elif isinstance(event, CallStarted):
            logger.warning("IVR: a second CallStarted for call %s: ignored", event.call_id)
            return
        call.queue.put_nowait(event)

    def _open(self, machine: IvrMachine) -> _Call:
        call = _Call(machine.call_id, machine)
        self._calls[call.call_id] = call
        call.task = asyncio.create_task(self._serve(call), name=f"ivr-call-{call.call_id}")
        return call

    async def _stop_all(self) -> None:
        calls = list(self._calls.values())
        for call in calls:
            self._cancel_timers(call)
            if call.task is not None:
                call.task.cancel()
        for call in calls:
            if call.task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await call.task
        self._calls.clear()

    # --- one call --------------------------------------------------------------------------
    async def _serve(self, call: _Call) -> None:
        try:
            while call.machine.state not in _FINAL:
                event = await call.queue.get()
                began = time.perf_counter()
                try:
                    await self._execute(call, call.machine.handle(event), began)
                    if isinstance(event, AgentAnswered):
                        await self._agent_answered(call.call_id, event.agent)
                except Exception as exc:  # a bug or the database: end this call, not all
                    logger.error("IVR: call %s: %s while carrying out commands; ending it",
                              call.call_id, type(exc).__name__)
                    await self._end(call, "driver-error", hang_up=True)
            if call.machine.state is State.ERROR:
                logger.warning("IVR: call %s ended in error: %s", call.call_id,
                            call.machine.error)
        finally:
            self._cancel_timers(call)
            if self._calls.get(call.call_id) is call:
                del self._calls[call.call_id]

    async def _execute(self, call: _Call, commands: Sequence[Command],
                       began: float | None) -> None:
        """Timers at once, then the provider batch, then the driver's own work in order."""
        batch: list[ProviderCommand] = []
        work: list[Command] = []
        for command in commands:
            if isinstance(command, PROVIDER_COMMAND_TYPES):
                batch.append(command)
            elif isinstance(command, StartTimer):
                self._start_timer(call, command.name, command.seconds)
            elif isinstance(command, CancelTimer):
                handle = self._timers.pop((call.call_id, command.name), None)
                if handle is not None:
                    handle.cancel()
            else:
                work.append(command)
        failed: TelephonyError | None = None
        if batch:
            if began is not None:
                self._latencies.append(time.perf_counter() - began)
            try:
                await self._provider.commands(call.call_id, batch)
            except (CallGone, ProviderRejected, ProviderUnavailable) as exc:
                failed = exc
        for command in work:
            if failed is not None and not isinstance(command, Verdict):
                continue   # the call is ending: no lookups or checks for it
            await self._work(call, command)
        if failed is not None:
            logger.warning("IVR: call %s: provider failed (%s: %s); ending the call",
                        call.call_id, type(failed).__name__, failed)
            await self._end(call, "provider-error",
                            hang_up=not isinstance(failed, CallGone))

    async def _end(self, call: _Call, cause: str, *, hang_up: bool) -> None:
        """The call cannot go on: tell its machine it ended, and ask the provider to hang
        it up (best effort)."""
        if call.machine.state not in _FINAL:
            commands = call.machine.handle(CallEnded(call.call_id, cause, at=self._clock()))
            await self._execute(call, [c for c in commands
                                       if not isinstance(c, PROVIDER_COMMAND_TYPES)], None)
        if hang_up:
            try:
                await self._provider.commands(call.call_id, [Hangup(cause)])
            except TelephonyError as exc:
                logger.info("IVR: call %s: hanging up after an error failed (%s)",
                         call.call_id, type(exc).__name__)

    def _start_timer(self, call: _Call, name: str, seconds: float) -> None:
        key = (call.call_id, name)
        old = self._timers.pop(key, None)
        if old is not None:
            old.cancel()

        def expire() -> None:
            self._timers.pop(key, None)
            call.queue.put_nowait(TimerExpired(call.call_id, name, at=self._clock()))

        self._timers[key] = asyncio.get_running_loop().call_later(seconds, expire)

    def _cancel_timers(self, call: _Call) -> None:
        for key in [k for k in self._timers if k[0] == call.call_id]:
            self._timers.pop(key).cancel()

    # --- the driver's own work ---------------------------------------------------------------
    async def _work(self, call: _Call, command: Command) -> None:
        customers = self._customers
        call_id = call.call_id
        if isinstance(command, LookupAccountByCaller):
            refs = await asyncio.to_thread(customers.find_by_phone, command.caller_id)
            one = str(refs[0]) if len(refs) == 1 else None
            call.queue.put_nowait(AccountLookup(call_id, one, len(refs), at=self._clock()))
        elif isinstance(command, LookupAccountByNumber):
            ref = await asyncio.to_thread(customers.find_by_account, command.account_number)
            call.queue.put_nowait(AccountLookup(call_id, None if ref is None else str(ref),
                                                0 if ref is None else 1, at=self._clock()))
        elif isinstance(command, CheckPin):
            result = await asyncio.to_thread(customers.check_pin,
                                             uuid.UUID(command.account_ref), command.pin)
            call.queue.put_nowait(PinChecked(call_id, result.ok, result.locked,
                                             result.attempts_left, at=self._clock()))
        elif isinstance(command, PlaceCallback):
            await self._place_callback(command.account_ref)
        elif isinstance(command, Verdict):
            await self._verdict(call_id, command)
        else:  # pragma: no cover - the union is exhausted above
            raise TypeError(f"no driver work for {type(command).__name__}")

    async def _place_callback(self, account_ref: str) -> None:
        ref = uuid.UUID(account_ref)
        await asyncio.to_thread(self._customers.request_callback, ref)
        number = await asyncio.to_thread(self._customers.phone_of_record, ref)
        leg = self._open(IvrMachine.for_callback(str(uuid.uuid4()), account_ref,
                                                 self._config))
        logger.info("IVR: placing call-back leg %s", leg.call_id)
        try:
            await self._provider.dial(leg.call_id, number)
        except TelephonyError as exc:
            logger.warning("IVR: call-back leg %s could not be placed (%s: %s)",
                        leg.call_id, type(exc).__name__, exc)
            cause = "provider-rejected" if isinstance(exc, ProviderRejected) else "provider-error"
            leg.queue.put_nowait(CallbackFailed(leg.call_id, cause, at=self._clock()))

    async def _agent_answered(self, call_id: str, agent: str) -> None:
        verdict = self.verdicts.get(call_id)
        if self._on_agent is None or verdict is None:
            return
        try:
            result = self._on_agent(call_id, agent, verdict)
            if inspect.isawaitable(result):
                await result
        except Exception as exc:  # the desk is a convenience: the call goes on
            logger.error("IVR: call %s: the agent screen-pop failed (%s)", call_id,
                         type(exc).__name__)

    async def _verdict(self, call_id: str, verdict: Verdict) -> None:
        self.verdicts[call_id] = verdict
        while len(self.verdicts) > 1000:
            del self.verdicts[next(iter(self.verdicts))]
        logger.info("IVR: call %s: %s", call_id, describe(verdict))
        if self._on_verdict is not None:
            try:
                result = self._on_verdict(call_id, verdict)
                if inspect.isawaitable(result):
                    await result
            except Exception as exc:
                logger.error("IVR: call %s: the verdict callback failed (%s)", call_id,
                          type(exc).__name__)
        if self._log is not None:
            entry = AuditEvent(actor=ACTOR, role="system", action="verdict", outcome="ok",
                               origin=f"ivr call {call_id}", detail=describe(verdict))
            try:
                await asyncio.to_thread(self._log.append, entry)
            except Exception as exc:
                logger.error("IVR: call %s: the verdict could not be logged (%s)", call_id,
                          type(exc).__name__)


async def serve_ivr(settings: Settings, customers: Customers, log: AccessLog | None, *,
                    password: SecretStr | None = None, config: IvrConfig | None = None,
                    on_verdict: OnVerdict | None = None, on_agent: OnAgent | None = None,
                    recordings: RecordingSink | None = None,
                    backoff_initial: float = 1.0, backoff_max: float = 30.0,
                    drivers: list[IvrDriver] | None = None) -> None:
    """Serve the IVR on the Asterisk of `settings` until cancelled. ARI down or refusing
    our credentials at start is one log line per attempt and a capped backoff, never an
    exception; once started, the events stream reconnects by itself. With `recordings`,
    agent conversations are recorded and handed to that sink. `drivers`, if given, holds
    the driver currently running (for verdict look-ups, tests and the bench)."""
    from telephony.ari.adapter import AriProvider
    from telephony.ari.sandbox import ari_password

    secret = password or ari_password(settings)
    delay = backoff_initial
    attempt = 0
    while True:
        attempt += 1
        provider = AriProvider.from_settings(settings, secret, recordings=recordings)
        try:
            await provider.start()
        except (ProviderUnavailable, ProviderRejected) as exc:
            logger.error(
                "IVR: cannot start on ARI at %s (attempt %d, %s: %s); trying again in %.1f s",
                settings.ari_url, attempt, type(exc).__name__, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, backoff_max)
            continue
        logger.info("IVR: serving ARI application %r at %s",
                                         settings.ari_app, settings.ari_url)
        delay, attempt = backoff_initial, 0
        try:
            driver = IvrDriver(provider, customers, config=config, log=log,
                               on_verdict=on_verdict, on_agent=on_agent)
            if drivers is not None:
                drivers[:] = [driver]   # the current one only: old verdicts go with it
            await driver.run()
        finally:
            await provider.close()
        logger.warning("IVR: the events of ARI at %s ended; starting again", settings.ari_url)
        await asyncio.sleep(delay)
