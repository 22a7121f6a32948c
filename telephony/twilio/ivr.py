"""The IVR over Twilio: each webhook is one step of the call's `IvrMachine`, whose snapshot
lives in PostgreSQL (`twilio_calls`) between webhooks, and the machine's commands become
the TwiML of the answer.

A step runs in one transaction with the call's row locked: restore the machine, feed it the
events the webhook means, do the driver's work (account lookups, the argon2id PIN check)
at once and feed the results back, render the provider commands as TwiML, store the new
snapshot, the step number and the TwiML. Every action URL in that TwiML carries the next
step number; a webhook with an older one (Twilio retried, or callbacks crossed) is answered
with the stored TwiML and changes nothing, so a PIN attempt is never counted twice.

How the neutral vocabulary maps onto Twilio's: `Play` + `CollectDigits` → `<Gather
input="dtmf" numDigits finishOnKey timeout>` around a `<Say>`, then a `<Redirect>` for
silence; Twilio drops the finishing # from `Digits`, so a gathered entry is fed as its keys
plus the digit timer running out, which ends an entry exactly as the # does. An
announcement (`Play` without keys) is `<Say>` then `<Redirect>` that reports its end.
`BridgeToAgent` → `<Dial record="record-from-answer-dual">` ringing every agent of
`twilio_agents` at once; the agent leg's `url` reports AgentAnswered, the Dial's action
AgentHungUp or AgentUnavailable. The wait between rounds of agent hunting is `<Pause>`.
The whole-IVR time limit is a deadline checked at every webhook.

Nothing typed is stored: the snapshot is taken only between entries, and PINs and account
numbers live in local variables of one step.
"""

from __future__ import annotations

import json
import logging
import math
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlencode

from twilio.twiml.voice_response import Dial, VoiceResponse

from ivr.driver import describe
from ivr.machine import PROMPTS, TIMER_AGENT, TIMER_DIGITS, IvrConfig, IvrMachine, State
from storage.audit import AccessLog, AuditEvent
from storage.customers import Customers
from storage.db import connect, translate_errors
from storage.errors import StorageError
from telephony.commands import (
    PROVIDER_COMMAND_TYPES,
    Answer,
    BridgeToAgent,
    CancelTimer,
    CheckPin,
    CollectDigits,
    Command,
    Hangup,
    LookupAccountByCaller,
    LookupAccountByNumber,
    PlaceCallback,
    Play,
    StartTimer,
    Verdict,
)
from telephony.events import (
    AccountLookup,
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
    PinChecked,
    PromptDone,
    TimerExpired,
    e164_or_none,
)

log = logging.getLogger(__name__)

Step = Literal["gather", "timeout", "announce", "agent-wait", "dial"]
STEPS: tuple[Step, ...] = ("gather", "timeout", "announce", "agent-wait", "dial")
_DEADLINE_TIMERS = ("ivr", "ring")   # timers Twilio cannot run for us: checked per webhook
_KEYS = set("0123456789*#")


@dataclass
class StepResult:
    """The TwiML to answer with, and what to do once the step is committed."""

    twiml: str
    verdicts: list[tuple[str, Verdict]] = field(default_factory=list)
    answered: list[tuple[str, str, Verdict]] = field(default_factory=list)  # call, agent
    callbacks: list[str] = field(default_factory=list)   # account refs to call back
    replayed: bool = False


class TwilioIvr:
    """Steps of Twilio calls against PostgreSQL; see the module doc."""

    def __init__(self, dsn: str, customers: Customers, public_url: str,
                 agents: dict[str, str], *, config: IvrConfig | None = None,
                 agent_ring_seconds: float = 20.0, log: AccessLog | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self._dsn = dsn
        self._customers = customers
        self._base = public_url.rstrip("/")
        self._agents = dict(agents)
        self._config = config or IvrConfig()
        self._ring = agent_ring_seconds
        self._log = log
        self._clock = clock

    # --- the webhooks' entry points (synchronous: run them in a thread) -------------------
    def incoming(self, call_sid: str, caller: str | None) -> StepResult:
        """`/twilio/voice`: a new inbound call (or Twilio retrying its first webhook)."""
        call_id = str(uuid.uuid4())
        machine = IvrMachine(call_id, self._config)
        with connect(self._dsn) as conn, translate_errors():
            row = conn.execute(
                "INSERT INTO twilio_calls (call_id, call_sid, kind, machine) VALUES"
                " (%s, %s, 'inbound', %s::jsonb) ON CONFLICT (call_sid) DO NOTHING"
                " RETURNING call_id", (call_id, call_sid, json.dumps(machine.snapshot()))
            ).fetchone()
            if row is None:
                conn.rollback()
                old = conn.execute("SELECT last_twiml FROM twilio_calls WHERE call_sid = %s",
                                   (call_sid,)).fetchone()
                return StepResult(str(old["last_twiml"]) if old else _hangup(), replayed=True)
            result = self._run(conn, call_id, machine, {}, 0,
                               [CallStarted(call_id, e164_or_none(caller), at=self._clock())])
            conn.commit()
        log.info("Twilio: call %s started", call_id)
        return self._logged(result)

    def step(self, call_sid: str, call_id: str, seq: int, kind: Step,
             params: dict[str, str]) -> StepResult:
        """A Gather action, a Redirect or a Dial action of call `call_id`, step `seq`."""
        with connect(self._dsn) as conn, translate_errors():
            row = self._lock(conn, call_sid, call_id)
            if row is None:
                return StepResult(_hangup(), replayed=True)
            if seq != row["seq"]:
                log.info("Twilio: call %s: step %d again (now %d); answered as before",
                         call_id, seq, row["seq"])
                return StepResult(str(row["last_twiml"]), replayed=True)
            machine = IvrMachine.restore(row["machine"], self._config)
            events = self._events(machine, call_id, kind, params, row["agent"])
            result = self._run(conn, call_id, machine, row["deadlines"], seq, events)
            conn.commit()
        return self._logged(result)

    def agent_answered(self, parent_sid: str, call_id: str, agent: str) -> StepResult:
        """The `url` of a `<Dial>` noun: the agent's phone answered."""
        if agent not in self._agents:
            return StepResult(_hangup(), replayed=True)
        with connect(self._dsn) as conn, translate_errors():
            row = self._lock(conn, parent_sid, call_id)
            if row is None or row["agent"] is not None:
                return StepResult(_hangup() if row is None else "<Response/>", replayed=True)
            machine = IvrMachine.restore(row["machine"], self._config)
            if machine.state is not State.CONNECTING_AGENT:
                return StepResult(_hangup(), replayed=True)  # too late: the caller has gone
            result = self._run(conn, call_id, machine, row["deadlines"], None,
                               [AgentAnswered(call_id, agent, at=self._clock())])
            conn.execute("UPDATE twilio_calls SET agent = %s WHERE call_id = %s",
                         (agent, call_id))
            conn.commit()
            result.twiml = str(VoiceResponse())  # empty: connect the agent to the caller
            return result

    def ended(self, call_sid: str, status: str, leg: str | None = None) -> StepResult:
        """A call status callback: the call is over (`status` completed, busy, ...). For a
        call-back leg (`leg`, our id) that never answered, the call-back failed."""
        with connect(self._dsn) as conn, translate_errors():
            if leg is not None:
                self._adopt(conn, leg, call_sid)
            row = conn.execute("SELECT * FROM twilio_calls WHERE call_sid = %s FOR UPDATE",
                               (call_sid,)).fetchone()
            if row is None:
                return StepResult("", replayed=True)
            machine = IvrMachine.restore(row["machine"], self._config)
            if machine.state in (State.DONE, State.ERROR):
                return StepResult("", replayed=True)
            call_id = str(row["call_id"])
            at = self._clock()
            event: Event = (CallbackFailed(call_id, status, at=at)
                            if machine.state is State.CALLBACK_DIALING
                            else CallEnded(call_id, status, at=at))
            result = self._run(conn, call_id, machine, row["deadlines"], None, [event])
            conn.commit()
        result.twiml = ""
        return self._logged(result)

    # --- call-back legs -----------------------------------------------------------------------
    def new_callback_leg(self, account_ref: str) -> tuple[str, str]:
        """Make the state of a call-back leg for `account_ref`: (our leg id, the number of
        record to dial, which the caller must not log)."""
        number = self._customers.phone_of_record(uuid.UUID(account_ref))
        leg = str(uuid.uuid4())
        machine = IvrMachine.for_callback(leg, account_ref, self._config)
        with connect(self._dsn) as conn, translate_errors():
            conn.execute("INSERT INTO twilio_calls (call_id, kind, machine) VALUES"
                         " (%s, 'callback', %s::jsonb)", (leg, json.dumps(machine.snapshot())))
            conn.commit()
        return leg, number

    def callback_placed(self, leg: str, call_sid: str | None) -> StepResult:
        """Twilio took the call-back (its CallSid), or refused it (None): CallbackPlaced
        or CallbackFailed for the leg's machine."""
        with connect(self._dsn) as conn, translate_errors():
            if call_sid is not None:
                self._adopt(conn, leg, call_sid)
            row = conn.execute("SELECT * FROM twilio_calls WHERE call_id = %s FOR UPDATE",
                               (leg,)).fetchone()
            if row is None:
                return StepResult("", replayed=True)
            machine = IvrMachine.restore(row["machine"], self._config)
            at = self._clock()
            event: Event = (CallbackPlaced(leg, at=at) if call_sid is not None
                            else CallbackFailed(leg, "provider-rejected", at=at))
            if machine.state is not State.CALLBACK_DIALING:
                return StepResult("", replayed=True)
            result = self._run(conn, leg, machine, row["deadlines"], None, [event])
            conn.commit()
        return self._logged(result)

    def callback_answered(self, call_sid: str, leg: str) -> StepResult:
        """The call-back's Url: the customer's phone answered; the first step of the leg."""
        with connect(self._dsn) as conn, translate_errors():
            self._adopt(conn, leg, call_sid)
            row = self._lock(conn, call_sid, leg)
            if row is None:
                return StepResult(_hangup(), replayed=True)
            if row["seq"] != 0:
                return StepResult(str(row["last_twiml"]), replayed=True)
            machine = IvrMachine.restore(row["machine"], self._config)
            events: list[Event] = [CallbackAnswered(leg, at=self._clock())]
            if machine.state is State.CALLBACK_DIALING and "ring" not in row["deadlines"]:
                # the Url came before our own CallbackPlaced (a fast answer): both now
                events.insert(0, CallbackPlaced(leg, at=self._clock()))
            result = self._run(conn, leg, machine, row["deadlines"], 0, events)
            conn.commit()
        return self._logged(result)

    @staticmethod
    def _adopt(conn: Any, leg: str, call_sid: str) -> None:
        """Give a call-back leg its CallSid, once (the first of Twilio's reply to the
        create, its Url request or its status callback to arrive)."""
        try:
            uuid.UUID(leg)
        except ValueError:
            return
        conn.execute("UPDATE twilio_calls SET call_sid = %s WHERE call_id = %s AND kind ="
                     " 'callback' AND call_sid IS NULL", (call_sid, leg))

    def recording_owner(self, call_sid: str | None, call_id: str
                        ) -> tuple[str | None, Verdict | None]:
        """(agent, verdict) of a call (whose CallSid is `call_sid`, when given); ValueError
        if there is no such call."""
        with connect(self._dsn) as conn, translate_errors():
            row = conn.execute("SELECT agent, machine, call_sid FROM twilio_calls"
                               " WHERE call_id = %s", (call_id,)).fetchone()
        if row is None or (call_sid is not None and row["call_sid"] != call_sid):
            raise ValueError("no such call")
        return row["agent"], IvrMachine.restore(row["machine"], self._config).verdict

    def _logged(self, result: StepResult) -> StepResult:
        """Put the step's verdicts on the access log, in the same thread as the step (a
        second trip to a busy thread pool would keep the caller waiting)."""
        for call_id, verdict in result.verdicts:
            detail = describe(verdict)
            log.info("Twilio: call %s: %s", call_id, detail)
            if self._log is None:
                continue
            try:
                self._log.append(AuditEvent(actor="callvault-ivr", role="system",
                                            action="verdict", outcome="ok",
                                            origin=f"twilio call {call_id}", detail=detail))
            except StorageError as exc:
                log.error("Twilio: call %s: the verdict could not be logged (%s)", call_id,
                          type(exc).__name__)
        return result

    # --- inside a step ----------------------------------------------------------------------
    @staticmethod
    def _lock(conn: Any, call_sid: str, call_id: str) -> Any:
        try:
            uuid.UUID(call_id)
        except ValueError:
            return None
        return conn.execute("SELECT * FROM twilio_calls WHERE call_id = %s AND call_sid = %s"
                            " FOR UPDATE", (call_id, call_sid)).fetchone()

    def _events(self, machine: IvrMachine, call_id: str, kind: Step,
                params: dict[str, str], agent: str | None) -> list[Event]:
        at = self._clock()
        out: list[Event] = []
        if kind in ("gather", "timeout", "announce") and machine.prompt is not None:
            out.append(PromptDone(call_id, machine.prompt, at=at))
        if kind == "gather":
            digits = params.get("Digits", "")
            if digits and set(digits) <= _KEYS and len(digits) <= 64:
                out.append(Digits(call_id, digits, at=at))
            out.append(TimerExpired(call_id, TIMER_DIGITS, at=at))
        elif kind == "timeout":
            out.append(TimerExpired(call_id, TIMER_DIGITS, at=at))
        elif kind == "agent-wait":
            out.append(TimerExpired(call_id, TIMER_AGENT, at=at))
        elif kind == "dial":
            answered = agent is not None and params.get("DialCallStatus") in ("completed",
                                                                              "answered")
            out.append(AgentHungUp(call_id, at=at) if answered
                       else AgentUnavailable(call_id, at=at))
        return out

    def _run(self, conn: Any, call_id: str, machine: IvrMachine, deadlines: dict[str, float],
             seq: int | None, events: Sequence[Event]) -> StepResult:
        """Feed `events` (after any deadline that has passed), do the driver work, render
        the TwiML and store the new state. `seq` None: not a step (no new step number)."""
        now = self._clock()
        deadlines = dict(deadlines)
        queue: list[Event] = [TimerExpired(call_id, name, at=now)
                              for name, when in sorted(deadlines.items()) if when <= now]
        for name in [e.timer for e in queue if isinstance(e, TimerExpired)]:
            deadlines.pop(name, None)
        queue += list(events)
        result = StepResult("")
        provider: list[Command] = []
        started: dict[str, float] = {}
        while queue:
            event = queue.pop(0)
            for command in machine.handle(event):
                if isinstance(command, PROVIDER_COMMAND_TYPES):
                    provider.append(command)
                elif isinstance(command, StartTimer):
                    started[command.name] = command.seconds
                    if command.name in _DEADLINE_TIMERS:
                        deadlines[command.name] = now + command.seconds
                elif isinstance(command, CancelTimer):
                    started.pop(command.name, None)
                    deadlines.pop(command.name, None)
                else:
                    queue += self._work(call_id, command, result)
        if isinstance(events[-1] if events else None, AgentAnswered):
            verdict = machine.verdict
            agent = events[-1].agent  # type: ignore[union-attr]
            if verdict is not None:
                result.answered.append((call_id, agent, verdict))
        if seq is None:  # not a step of the call's TwiML: its step number stays
            conn.execute("UPDATE twilio_calls SET machine = %s::jsonb, deadlines = %s::jsonb,"
                         " updated = now() WHERE call_id = %s",
                         (json.dumps(machine.snapshot()), json.dumps(deadlines), call_id))
            return result
        result.twiml = self._render(call_id, seq + 1, machine, provider, started)
        conn.execute(
            "UPDATE twilio_calls SET machine = %s::jsonb, seq = %s, last_twiml = %s,"
            " deadlines = %s::jsonb, updated = now() WHERE call_id = %s",
            (json.dumps(machine.snapshot()), seq + 1, result.twiml, json.dumps(deadlines),
             call_id))
        return result

    def _work(self, call_id: str, command: Command, result: StepResult) -> list[Event]:
        at = self._clock()
        customers = self._customers
        if isinstance(command, LookupAccountByCaller):
            refs = customers.find_by_phone(command.caller_id)
            return [AccountLookup(call_id, str(refs[0]) if len(refs) == 1 else None,
                                  len(refs), at=at)]
        if isinstance(command, LookupAccountByNumber):
            ref = customers.find_by_account(command.account_number)
            return [AccountLookup(call_id, None if ref is None else str(ref),
                                  0 if ref is None else 1, at=at)]
        if isinstance(command, CheckPin):
            checked = customers.check_pin(uuid.UUID(command.account_ref), command.pin)
            return [PinChecked(call_id, checked.ok, checked.locked, checked.attempts_left,
                               at=at)]
        if isinstance(command, PlaceCallback):
            customers.request_callback(uuid.UUID(command.account_ref))
            result.callbacks.append(command.account_ref)
            return []
        if isinstance(command, Verdict):
            result.verdicts.append((call_id, command))
            return []
        raise TypeError(f"no driver work for {type(command).__name__}")

    # --- TwiML ------------------------------------------------------------------------------
    def url(self, path: str, **query: str | int) -> str:
        return f"{self._base}{path}?{urlencode(query)}" if query else f"{self._base}{path}"

    def _render(self, call_id: str, seq: int, machine: IvrMachine,
                commands: Sequence[Command], started: dict[str, float]) -> str:
        resp = VoiceResponse()
        step: dict[str, str | int] = {"call": call_id, "seq": seq}
        keyed: str | None = None   # a prompt that keys may interrupt, waiting for its Gather
        for command in commands:
            if isinstance(command, Answer):
                continue
            if isinstance(command, Play):
                if command.allow_digits:
                    keyed = command.prompt
                else:
                    resp.say(PROMPTS[command.prompt])
            elif isinstance(command, CollectDigits):
                gather = resp.gather(
                    input="dtmf", num_digits=command.max_digits,
                    finish_on_key=command.terminator or "",
                    timeout=max(1, math.ceil(command.timeout)),
                    action=self.url("/twilio/step", **step, ev="gather"), method="POST",
                    action_on_empty_result=False)
                if keyed is not None:
                    gather.say(PROMPTS[keyed])
                    keyed = None
                resp.redirect(self.url("/twilio/step", **step, ev="timeout"), method="POST")
            elif isinstance(command, BridgeToAgent):
                resp.append(self._dial(call_id, step))
            elif isinstance(command, Hangup):
                resp.hangup()
        if keyed is not None:
            resp.say(PROMPTS[keyed])
        if machine.state is State.ANNOUNCING:
            resp.redirect(self.url("/twilio/step", **step, ev="announce"), method="POST")
        if TIMER_AGENT in started:
            resp.pause(length=max(1, math.ceil(started[TIMER_AGENT])))
            resp.redirect(self.url("/twilio/step", **step, ev="agent-wait"), method="POST")
        return str(resp)

    def _dial(self, call_id: str, step: dict[str, str | int]) -> Dial:
        dial = Dial(action=self.url("/twilio/step", **step, ev="dial"), method="POST",
                    timeout=max(5, math.ceil(self._ring)), record="record-from-answer-dual",
                    recording_status_callback=self.url("/twilio/recording", call=call_id),
                    recording_status_callback_method="POST",
                    recording_status_callback_event="completed")
        for name, target in self._agents.items():
            answered = self.url("/twilio/agent", call=call_id, agent=name)
            if target.startswith(("sip:", "sips:")):
                dial.sip(target, url=answered, method="POST")
            elif target.startswith("client:"):
                dial.client(target.removeprefix("client:"), url=answered, method="POST")
            else:
                dial.number(target, url=answered, method="POST")
        return dial


def _hangup() -> str:
    resp = VoiceResponse()
    resp.hangup()
    return str(resp)
