"""The caller-authentication IVR: one pure state machine per call, no I/O, no clock.

`IvrMachine.handle(event)` takes a `telephony.events` event and returns the
`telephony.commands` to carry out, in order; the driver does the work and feeds the
results back as events. Time enters only as `event.at` and as TimerExpired for timers
the machine started. What may happen in each state is one table, `TRANSITIONS`; an event
the table does not allow puts the machine in ERROR (verdict failed, hang up), it never
raises. Keys, prompt ends and stale timers that mean nothing in a state are ignored.

The flow (see the README for the diagram): answer; identify the account by caller id
(exactly one match) or by account number typed on the keypad; ask for a PIN; the driver
checks it and counts failures per account. The entry "2" at the PIN prompt asks for a
call-back to the number of record, whose leg `IvrMachine.for_callback` runs: the callee
presses 1 to be connected, which verifies by call-back (a voicemail that answers cannot
press 1). Every call gets exactly one Verdict; unverified callers still reach an agent
who sees NOT VERIFIED, unless `IvrConfig.unverified_to_agent` is off.

Keys are the same whether they come one per event (ARI) or in a batch (Twilio's
Gather): a batch is handled key by key. An entry ends at its terminator, at its length
limit, or when the digit timer runs out with keys typed (as Gather does); silence until
the timer runs out is a missed try. Typed account numbers and PINs live in the machine
only until the command that uses them is emitted, and never in its repr.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal, NamedTuple

from ivr.policy import PIN_MAX, PIN_MIN
from telephony.commands import (
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
    Reason,
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
)

# What each prompt says, so the ARI adapter can map ids to sound files and Twilio's
# renders the text with <Say>. No prompt reads back anything the caller typed.
PROMPTS: dict[str, str] = {
    "enter-account": "Please enter your account number, followed by the pound key.",
    "invalid-account": "Sorry, that account number was not recognised."
                       " Please enter your account number, followed by the pound key.",
    "enter-pin": "Please enter your PIN, followed by the pound key."
                 " If you have forgotten your PIN, press 2, then the pound key.",
    "invalid-pin": "Sorry, that PIN is not valid."
                   " Please enter your PIN, followed by the pound key.",
    "account-locked": "For your security, PIN entry for this account is temporarily"
                      " unavailable. An agent can still help you with general questions.",
    "not-verified": "We could not verify your identity."
                    " An agent can still help you with general questions.",
    "forgot-pin-callback": "We will call you back shortly at the telephone number on your"
                           " account. Goodbye.",
    "callback-confirm": "This is the call back you asked for."
                        " Press 1 to speak with an agent.",
    "please-hold": "Please hold while we connect you to an agent.",
    "no-agents": "All of our agents are busy. Please continue to hold.",
    "no-agents-goodbye": "Sorry, no agent is free to take your call."
                         " Please call again later. Goodbye.",
    "goodbye": "Thank you for calling. Goodbye.",
}

TIMER_IVR = "ivr"            # the whole IVR part of a call, until the verdict
TIMER_DIGITS = "digits"      # the wait for the next key of an entry
TIMER_ANNOUNCE = "announce"  # a final announcement whose end was never reported
TIMER_RING = "ring"          # a call-back leg that is not answered
TIMER_AGENT = "agent-wait"   # the pause between two rounds of agent hunting
TIMERS = (TIMER_IVR, TIMER_DIGITS, TIMER_ANNOUNCE, TIMER_RING, TIMER_AGENT)


class State(enum.Enum):
    """Where a call is in the IVR."""

    START = "start"                             # inbound call not yet seen
    IDENTIFY_BY_CALLER = "identify_by_caller"   # looking the caller id up
    ENTER_ACCOUNT = "enter_account"             # collecting the account number
    LOOKUP_ACCOUNT = "lookup_account"           # looking the typed number up
    ENTER_PIN = "enter_pin"                     # collecting the PIN
    CHECKING_PIN = "checking_pin"               # the driver is verifying the PIN
    CALLBACK_DIALING = "callback_dialing"       # call-back leg: ringing the number of record
    CALLBACK_CONFIRM = "callback_confirm"       # call-back leg: waiting for the 1 key
    ANNOUNCING = "announcing"                   # verdict reached, a last prompt plays
    CONNECTING_AGENT = "connecting_agent"       # hunting for a free agent
    WITH_AGENT = "with_agent"                   # talking with an agent
    DONE = "done"                               # over; everything further is ignored
    ERROR = "error"                             # an event the table forbids; hung up


@dataclass(frozen=True)
class IvrConfig:
    """The machine's limits; the driver builds one from Settings."""

    digit_timeout: float = 7.0       # seconds to wait for each key of an entry
    ivr_limit: float = 180.0         # seconds from answer to a verdict, at most
    max_tries: int = 3               # bad entries, silences, wrong PINs per entry stage
    account_min_digits: int = 4
    account_max_digits: int = 16
    ring_timeout: float = 45.0       # call-back leg unanswered
    announce_limit: float = 30.0     # longest final announcement
    agent_rounds: int = 3            # BridgeToAgent rounds before giving up
    agent_retry_wait: float = 20.0   # pause between rounds, the caller on hold
    unverified_to_agent: bool = True

    def __post_init__(self) -> None:
        if self.max_tries < 1 or self.agent_rounds < 1:
            raise ValueError("max_tries and agent_rounds must be at least 1")
        if not 1 <= self.account_min_digits <= self.account_max_digits:
            raise ValueError("account number lengths must satisfy 1 <= min <= max")
        if min(self.digit_timeout, self.ivr_limit, self.ring_timeout, self.announce_limit,
               self.agent_retry_wait) <= 0:
            raise ValueError("every timeout must be positive")


_Stage = Literal["account", "pin", "confirm"]


class _Entry(NamedTuple):
    state: State
    first_prompt: str
    retry_prompt: str
    terminator: str | None


_ENTRIES: dict[_Stage, _Entry] = {
    "account": _Entry(State.ENTER_ACCOUNT, "enter-account", "invalid-account", "#"),
    "pin": _Entry(State.ENTER_PIN, "enter-pin", "invalid-pin", "#"),
    "confirm": _Entry(State.CALLBACK_CONFIRM, "callback-confirm", "callback-confirm", None),
}
FORGOT_PIN_ENTRY = "2"
CONFIRM_KEY = "1"

_Then = Literal["agent", "hangup"]
_Handler = Callable[["IvrMachine", Any], list[Command]]


class IvrMachine:
    """The IVR of one call (or of one call-back leg, see `for_callback`)."""

    def __init__(self, call_id: str, config: IvrConfig | None = None) -> None:
        self.call_id = call_id
        self.error: str | None = None   # why the machine is in ERROR; never holds a secret
        self._config = config or IvrConfig()
        self._state = State.START
        self._verdict: Verdict | None = None
        self._account_ref: str | None = None
        self._timers: set[str] = set()
        self._stage: _Stage = "account"
        self._buffer = ""               # the entry being typed: an account number or a PIN
        self._tries = 0
        self._prompt: str | None = None  # the entry prompt last played
        self._announcing: str | None = None
        self._then: _Then = "hangup"
        self._rounds = 0
        self._bridging = False

    @classmethod
    def for_callback(cls, call_id: str, account_ref: str,
                     config: IvrConfig | None = None) -> IvrMachine:
        """The machine of a call-back leg placed for `account_ref` under a new `call_id`;
        it starts dialling and expects CallbackPlaced, CallbackAnswered or CallbackFailed."""
        machine = cls(call_id, config)
        machine._account_ref = account_ref
        machine._state = State.CALLBACK_DIALING
        machine._stage = "confirm"
        return machine

    def __repr__(self) -> str:
        return f"IvrMachine(call_id={self.call_id!r}, state={self._state.name})"

    @property
    def state(self) -> State:
        """The current state."""
        return self._state

    def snapshot(self) -> dict[str, Any]:
        """The machine as JSON-able data, so another process can continue the call (Twilio:
        whichever instance receives the next webhook). Nothing typed is in it: taken
        mid-entry (keys typed, no submit yet) it raises ValueError, as those keys are a
        PIN or an account number, which are never stored."""
        if self._buffer:
            raise ValueError("an entry is being typed; a snapshot would hold its keys")
        verdict = self._verdict
        return {"v": 1, "call_id": self.call_id, "state": self._state.value,
                "verdict": None if verdict is None else {
                    "verified": verdict.verified, "method": verdict.method,
                    "reason": verdict.reason, "at": verdict.at,
                    "account_ref": verdict.account_ref},
                "account_ref": self._account_ref, "timers": sorted(self._timers),
                "stage": self._stage, "tries": self._tries, "prompt": self._prompt,
                "announcing": self._announcing, "then": self._then, "rounds": self._rounds,
                "bridging": self._bridging, "error": self.error}

    @classmethod
    def restore(cls, data: dict[str, Any], config: IvrConfig | None = None) -> IvrMachine:
        """The machine `snapshot()` described (ValueError if the data is not one)."""
        try:
            if data.get("v") != 1:
                raise ValueError("unknown snapshot version")
            machine = cls(str(data["call_id"]), config)
            machine._state = State(data["state"])
            v = data["verdict"]
            machine._verdict = None if v is None else Verdict(
                bool(v["verified"]), v["method"], v["reason"], float(v["at"]),
                v["account_ref"])
            machine._account_ref = data["account_ref"]
            timers = set(data["timers"])
            if not timers <= set(TIMERS):
                raise ValueError("unknown timer")
            machine._timers = timers
            if data["stage"] not in _ENTRIES or data["then"] not in ("agent", "hangup"):
                raise ValueError("unknown stage")
            machine._stage = data["stage"]
            machine._tries = int(data["tries"])
            machine._prompt = data["prompt"]
            machine._announcing = data["announcing"]
            machine._then = data["then"]
            machine._rounds = int(data["rounds"])
            machine._bridging = bool(data["bridging"])
            machine.error = data["error"]
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a machine snapshot ({type(exc).__name__})") from None
        return machine

    @property
    def prompt(self) -> str | None:
        """The prompt whose end the machine is waiting for, if any: the entry prompt
        while collecting an entry, the announcement while announcing."""
        if self._state is State.ANNOUNCING:
            return self._announcing
        if self._state in (State.ENTER_ACCOUNT, State.ENTER_PIN, State.CALLBACK_CONFIRM):
            return self._prompt
        return None

    @property
    def verdict(self) -> Verdict | None:
        """The call's verdict once reached (it was emitted as a command then)."""
        return self._verdict

    @property
    def timers(self) -> frozenset[str]:
        """The timers started and neither cancelled nor expired."""
        return frozenset(self._timers)

    def handle(self, event: Event) -> list[Command]:
        """Advance on `event` and return the commands to carry out, in order."""
        if self._state in (State.DONE, State.ERROR):
            return []
        if event.call_id != self.call_id:
            return self._fail(f"{type(event).__name__} for another call", event.at)
        if isinstance(event, Digits) and len(event.digits) > 1:
            out: list[Command] = []
            for key in event.digits:
                out += self.handle(replace(event, digits=key))
            return out
        if isinstance(event, TimerExpired):
            if event.timer not in self._timers:
                return []   # cancelled while it was on its way
            self._timers.discard(event.timer)
        rule = TRANSITIONS[self._state].get(type(event))
        if rule is None:
            return self._fail(f"unexpected {type(event).__name__} in {self._state.name}",
                              event.at)
        before = self._state
        out = rule.handler(self, event)
        if self._state not in rule.targets and self._state is not State.ERROR:
            raise AssertionError(f"{type(event).__name__} took {before.name} to"
                                 f" {self._state.name}, which TRANSITIONS does not list")
        return out

    # Helpers shared by the handlers.

    def _start(self, name: str, seconds: float) -> list[Command]:
        self._timers.add(name)
        return [StartTimer(name, seconds)]

    def _cancel(self, *names: str) -> list[Command]:
        out: list[Command] = []
        for name in names:
            if name in self._timers:
                self._timers.discard(name)
                out.append(CancelTimer(name))
        return out

    def _cancel_all(self) -> list[Command]:
        return self._cancel(*TIMERS)

    def _decide(self, verdict: Verdict) -> list[Command]:
        if self._verdict is not None:
            return []
        self._verdict = verdict
        return [verdict]

    def _unverified(self, reason: Reason, at: float) -> list[Command]:
        return self._decide(Verdict(False, None, reason, at, self._account_ref))

    def _verified(self, method: Literal["pin", "callback"], at: float) -> list[Command]:
        return self._decide(Verdict(True, method, None, at, self._account_ref))

    def _fail(self, why: str, at: float) -> list[Command]:
        self.error = why
        self._buffer = ""
        out = self._cancel_all() + self._unverified("failed", at) + [Hangup("error")]
        self._state = State.ERROR
        return out

    def _hangup(self, reason: str, at: float) -> list[Command]:
        out = self._cancel_all() + self._unverified("failed", at) + [Hangup(reason)]
        self._state = State.DONE
        return out

    def _enter(self, stage: _Stage) -> list[Command]:
        self._stage = stage
        self._tries = 0
        return self._ask(_ENTRIES[stage].first_prompt)

    def _ask(self, prompt: str) -> list[Command]:
        entry = _ENTRIES[self._stage]
        self._state = entry.state
        self._buffer = ""
        self._prompt = prompt
        return [*self._cancel(TIMER_DIGITS), Play(prompt, allow_digits=True),
                CollectDigits(self._max_keys(), entry.terminator, self._config.digit_timeout)]

    def _max_keys(self) -> int:
        # One key more than a valid entry, so an overlong entry ends and is refused
        # rather than silently cut to a valid length.
        if self._stage == "account":
            return self._config.account_max_digits + 1
        if self._stage == "pin":
            return PIN_MAX + 1
        return 1

    def _retry(self, at: float, prompt: str | None = None) -> list[Command]:
        self._tries += 1
        if self._tries >= self._config.max_tries:
            return self._give_up(at)
        return self._ask(prompt or _ENTRIES[self._stage].retry_prompt)

    def _give_up(self, at: float) -> list[Command]:
        out = self._unverified("failed" if self._account_ref else "unknown_account", at)
        if self._stage == "confirm":
            # Nobody pressed 1 on the call-back leg: perhaps a voicemail; nothing to say.
            return out + self._hangup("unconfirmed", at)
        if self._config.unverified_to_agent:
            return out + self._announce("not-verified", "agent")
        return out + self._announce("goodbye", "hangup")

    def _announce(self, prompt: str, then: _Then) -> list[Command]:
        self._state = State.ANNOUNCING
        self._buffer = ""
        self._announcing = prompt
        self._then = then
        return [*self._cancel(TIMER_DIGITS), Play(prompt, allow_digits=False),
                *self._start(TIMER_ANNOUNCE, self._config.announce_limit)]

    def _proceed(self, at: float) -> list[Command]:
        if self._then == "agent":
            return self._to_agent()
        return self._hangup("done", at)

    def _to_agent(self) -> list[Command]:
        assert self._verdict is not None
        self._state = State.CONNECTING_AGENT
        self._rounds = 1
        self._bridging = True
        return [*self._cancel_all(), Play("please-hold", allow_digits=False),
                BridgeToAgent(self._verdict)]

    def _submit(self, at: float) -> list[Command]:
        entry, self._buffer = self._buffer, ""
        out = self._cancel(TIMER_DIGITS)
        if self._stage == "account":
            if (entry.isdigit() and entry.isascii() and self._config.account_min_digits
                    <= len(entry) <= self._config.account_max_digits):
                self._state = State.LOOKUP_ACCOUNT
                return [*out, LookupAccountByNumber(entry)]
            return out + self._retry(at)
        if self._stage == "pin":
            assert self._account_ref is not None
            if entry == FORGOT_PIN_ENTRY:
                return [*out, PlaceCallback(self._account_ref),
                        *self._unverified("declined", at),
                        *self._announce("forgot-pin-callback", "hangup")]
            if entry.isdigit() and entry.isascii() and PIN_MIN <= len(entry) <= PIN_MAX:
                self._state = State.CHECKING_PIN
                return [*out, CheckPin(self._account_ref, entry)]
            return out + self._retry(at)
        if entry == CONFIRM_KEY:
            return out + self._verified("callback", at) + self._to_agent()
        return out + self._retry(at)

    # Handlers, one per (state, event type) in TRANSITIONS.

    def _ignore(self, event: Event) -> list[Command]:
        return []

    def _on_call_started(self, ev: CallStarted) -> list[Command]:
        out: list[Command] = [Answer(), *self._start(TIMER_IVR, self._config.ivr_limit)]
        if ev.caller_id is None:
            return out + self._enter("account")
        self._state = State.IDENTIFY_BY_CALLER
        return [*out, LookupAccountByCaller(ev.caller_id)]

    def _on_caller_lookup(self, ev: AccountLookup) -> list[Command]:
        if ev.matches == 1:
            self._account_ref = ev.account_ref
            return self._enter("pin")
        return self._enter("account")

    def _on_number_lookup(self, ev: AccountLookup) -> list[Command]:
        if ev.matches == 1:
            self._account_ref = ev.account_ref
            return self._enter("pin")
        return self._retry(ev.at)

    def _on_key(self, ev: Digits) -> list[Command]:
        entry = _ENTRIES[self._stage]
        if ev.digits == entry.terminator:
            return self._submit(ev.at)
        self._buffer += ev.digits
        if len(self._buffer) >= self._max_keys():
            return self._submit(ev.at)
        return self._start(TIMER_DIGITS, self._config.digit_timeout)

    def _on_entry_prompt_done(self, ev: PromptDone) -> list[Command]:
        # The wait for the first key starts when the prompt ends, unless the caller
        # already barged in, or this is the end of an earlier, interrupted prompt.
        if ev.prompt != self._prompt or self._buffer or TIMER_DIGITS in self._timers:
            return []
        return self._start(TIMER_DIGITS, self._config.digit_timeout)

    def _on_timer(self, ev: TimerExpired) -> list[Command]:
        if ev.timer == TIMER_DIGITS:
            if self._buffer:
                return self._submit(ev.at)
            return self._retry(ev.at, _ENTRIES[self._stage].first_prompt)
        if ev.timer == TIMER_IVR:
            if self._state is State.ANNOUNCING:
                return []   # the verdict is in; the announcement ends on its own
            return self._give_up(ev.at)
        if ev.timer == TIMER_ANNOUNCE:
            return self._proceed(ev.at)
        if ev.timer == TIMER_RING:
            return self._hangup("no-answer", ev.at)
        # TIMER_AGENT: the next round of agent hunting.
        self._rounds += 1
        self._bridging = True
        assert self._verdict is not None
        return [BridgeToAgent(self._verdict)]

    def _on_pin_checked(self, ev: PinChecked) -> list[Command]:
        if ev.ok:
            return self._verified("pin", ev.at) + self._to_agent()
        if ev.locked:
            out = self._unverified("locked", ev.at)
            return out + self._announce("account-locked",
                                        "agent" if self._config.unverified_to_agent
                                        else "hangup")
        return self._retry(ev.at)

    def _on_announce_done(self, ev: PromptDone) -> list[Command]:
        if ev.prompt != self._announcing:
            return []
        return self._cancel(TIMER_ANNOUNCE) + self._proceed(ev.at)

    def _on_callback_placed(self, ev: CallbackPlaced) -> list[Command]:
        return self._start(TIMER_RING, self._config.ring_timeout)

    def _on_callback_answered(self, ev: CallbackAnswered) -> list[Command]:
        return (self._cancel(TIMER_RING) + self._start(TIMER_IVR, self._config.ivr_limit)
                + self._enter("confirm"))

    def _on_callback_failed(self, ev: CallbackFailed) -> list[Command]:
        out = self._cancel_all() + self._unverified("failed", ev.at)
        self._state = State.DONE
        return out

    def _on_agent_answered(self, ev: AgentAnswered) -> list[Command]:
        if not self._bridging:
            return self._fail("AgentAnswered without a BridgeToAgent", ev.at)
        self._bridging = False
        self._state = State.WITH_AGENT
        return self._cancel_all()

    def _on_agent_unavailable(self, ev: AgentUnavailable) -> list[Command]:
        if not self._bridging:
            return self._fail("AgentUnavailable without a BridgeToAgent", ev.at)
        self._bridging = False
        if self._rounds >= self._config.agent_rounds:
            return self._announce("no-agents-goodbye", "hangup")
        return [Play("no-agents", allow_digits=False),
                *self._start(TIMER_AGENT, self._config.agent_retry_wait)]

    def _on_agent_hung_up(self, ev: AgentHungUp) -> list[Command]:
        return self._hangup("agent-left", ev.at)

    def _on_call_ended(self, ev: CallEnded) -> list[Command]:
        self._buffer = ""
        out = self._cancel_all() + self._unverified("hung_up", ev.at)
        self._state = State.DONE
        return out


class Rule(NamedTuple):
    """What an event does in a state: the handler, and the states it may lead to."""

    handler: _Handler
    targets: frozenset[State]


def _rule(handler: _Handler, *targets: State) -> Rule:
    return Rule(handler, frozenset(targets))


_S = State
_M = IvrMachine
_LIVE = frozenset(_S) - {_S.DONE, _S.ERROR}
_AFTER_ACCOUNT = (_S.ENTER_ACCOUNT, _S.LOOKUP_ACCOUNT, _S.ANNOUNCING)
_AFTER_PIN = (_S.ENTER_PIN, _S.CHECKING_PIN, _S.ANNOUNCING)
_AFTER_CONFIRM = (_S.CALLBACK_CONFIRM, _S.CONNECTING_AGENT, _S.DONE)

# The whole protocol: for each state, the events it accepts. Every live state also
# accepts CallEnded (to DONE), and ignores keys and prompt ends unless listed.
TRANSITIONS: dict[State, dict[type[Any], Rule]] = {
    _S.START: {CallStarted: _rule(_M._on_call_started, _S.IDENTIFY_BY_CALLER,
                                  _S.ENTER_ACCOUNT)},
    _S.IDENTIFY_BY_CALLER: {
        AccountLookup: _rule(_M._on_caller_lookup, _S.ENTER_PIN, _S.ENTER_ACCOUNT),
        TimerExpired: _rule(_M._on_timer, _S.ANNOUNCING)},
    _S.ENTER_ACCOUNT: {
        Digits: _rule(_M._on_key, *_AFTER_ACCOUNT),
        PromptDone: _rule(_M._on_entry_prompt_done, _S.ENTER_ACCOUNT),
        TimerExpired: _rule(_M._on_timer, *_AFTER_ACCOUNT)},
    _S.LOOKUP_ACCOUNT: {
        AccountLookup: _rule(_M._on_number_lookup, _S.ENTER_PIN, _S.ENTER_ACCOUNT,
                             _S.ANNOUNCING),
        TimerExpired: _rule(_M._on_timer, _S.ANNOUNCING)},
    _S.ENTER_PIN: {
        Digits: _rule(_M._on_key, *_AFTER_PIN),
        PromptDone: _rule(_M._on_entry_prompt_done, _S.ENTER_PIN),
        TimerExpired: _rule(_M._on_timer, *_AFTER_PIN)},
    _S.CHECKING_PIN: {
        PinChecked: _rule(_M._on_pin_checked, _S.CONNECTING_AGENT, _S.ANNOUNCING,
                          _S.ENTER_PIN),
        TimerExpired: _rule(_M._on_timer, _S.ANNOUNCING)},
    _S.CALLBACK_DIALING: {
        CallbackPlaced: _rule(_M._on_callback_placed, _S.CALLBACK_DIALING),
        CallbackAnswered: _rule(_M._on_callback_answered, _S.CALLBACK_CONFIRM),
        CallbackFailed: _rule(_M._on_callback_failed, _S.DONE),
        TimerExpired: _rule(_M._on_timer, _S.DONE)},
    _S.CALLBACK_CONFIRM: {
        Digits: _rule(_M._on_key, *_AFTER_CONFIRM),
        PromptDone: _rule(_M._on_entry_prompt_done, _S.CALLBACK_CONFIRM),
        TimerExpired: _rule(_M._on_timer, *_AFTER_CONFIRM)},
    _S.ANNOUNCING: {
        PromptDone: _rule(_M._on_announce_done, _S.ANNOUNCING, _S.CONNECTING_AGENT, _S.DONE),
        TimerExpired: _rule(_M._on_timer, _S.ANNOUNCING, _S.CONNECTING_AGENT, _S.DONE)},
    _S.CONNECTING_AGENT: {
        AgentAnswered: _rule(_M._on_agent_answered, _S.WITH_AGENT),
        AgentUnavailable: _rule(_M._on_agent_unavailable, _S.CONNECTING_AGENT, _S.ANNOUNCING),
        TimerExpired: _rule(_M._on_timer, _S.CONNECTING_AGENT)},
    _S.WITH_AGENT: {AgentHungUp: _rule(_M._on_agent_hung_up, _S.DONE)},
    _S.DONE: {},
    _S.ERROR: {},
}
for _state in _LIVE:
    TRANSITIONS[_state][CallEnded] = _rule(_M._on_call_ended, _S.DONE)
    if _state is not _S.START:
        TRANSITIONS[_state].setdefault(Digits, _rule(_M._ignore, _state))
        TRANSITIONS[_state].setdefault(PromptDone, _rule(_M._ignore, _state))
