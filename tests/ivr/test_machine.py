"""The IVR machine as tables: one transition per row, whole calls per path, and properties
that hold in every state (hang-up, unexpected events, batched keys, secrets)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ivr.machine import PROMPTS, TRANSITIONS, IvrConfig, IvrMachine, State
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

CID, CB = "call-1", "call-2"
REF = "acct-7f3a"
T = 1000.0
# Sentinels: a PIN, an account number and a caller id that must never be shown.
PIN = "739154"
ACCOUNT = "99887766"
CALLER = "+15550007777"
SECRETS = (PIN, ACCOUNT, CALLER, CALLER[1:])


def started(caller: str | None = CALLER) -> CallStarted:
    return CallStarted(CID, caller, at=T)


def keys(digits: str, call_id: str = CID) -> Digits:
    return Digits(call_id, digits, at=T)


def done(prompt: str, call_id: str = CID) -> PromptDone:
    return PromptDone(call_id, prompt, at=T)


def timer(name: str, call_id: str = CID) -> TimerExpired:
    return TimerExpired(call_id, name, at=T)


def found(n: int = 1) -> AccountLookup:
    return AccountLookup(CID, REF if n == 1 else None, n, at=T)


def checked(ok: bool, locked: bool = False) -> PinChecked:
    return PinChecked(CID, ok, locked, None, at=T)


def ended(call_id: str = CID) -> CallEnded:
    return CallEnded(call_id, "caller", at=T)


def answered(call_id: str = CID) -> AgentAnswered:
    return AgentAnswered(call_id, "agent-1", at=T)


def nobody(call_id: str = CID) -> AgentUnavailable:
    return AgentUnavailable(call_id, at=T)


def cb_placed() -> CallbackPlaced:
    return CallbackPlaced(CB, at=T)


def cb_answered() -> CallbackAnswered:
    return CallbackAnswered(CB, at=T)


V_PIN = Verdict(True, "pin", None, T, REF)
V_CALLBACK = Verdict(True, "callback", None, T, REF)


def no(reason: str, ref: str | None = REF) -> Verdict:
    return Verdict(False, None, reason, T, ref)  # type: ignore[arg-type]


ASK_ACCOUNT = [Play("enter-account", allow_digits=True), CollectDigits(17, "#", 7.0)]
RETRY_ACCOUNT = [Play("invalid-account", allow_digits=True), CollectDigits(17, "#", 7.0)]
ASK_PIN = [Play("enter-pin", allow_digits=True), CollectDigits(9, "#", 7.0)]
RETRY_PIN = [Play("invalid-pin", allow_digits=True), CollectDigits(9, "#", 7.0)]
ASK_CONFIRM = [Play("callback-confirm", allow_digits=True), CollectDigits(1, None, 7.0)]
DIGIT = StartTimer("digits", 7.0)
STOP_DIGIT = CancelTimer("digits")
IVR = StartTimer("ivr", 180.0)
STOP_IVR = CancelTimer("ivr")
ANNOUNCE = StartTimer("announce", 30.0)


def announce(prompt: str) -> list[Command]:
    return [Play(prompt, allow_digits=False), ANNOUNCE]


def to_agent(verdict: Verdict) -> list[Command]:
    return [Play("please-hold", allow_digits=False), BridgeToAgent(verdict)]


# Event prefixes that bring a fresh machine to a state.
AT_START: list[Event] = []
AT_IDENTIFY: list[Event] = [started()]
AT_ACCOUNT: list[Event] = [started(None)]
AT_ACCOUNT_WAITING: list[Event] = [*AT_ACCOUNT, done("enter-account")]
AT_LOOKUP: list[Event] = [*AT_ACCOUNT, keys(ACCOUNT + "#")]
AT_PIN: list[Event] = [started(), found()]
AT_PIN_WAITING: list[Event] = [*AT_PIN, done("enter-pin")]
AT_CHECKING: list[Event] = [*AT_PIN, keys(PIN + "#")]
AT_FORGOT: list[Event] = [*AT_PIN, keys("2#")]
AT_LOCKED: list[Event] = [*AT_CHECKING, checked(False, locked=True)]
AT_CONNECTING: list[Event] = [*AT_CHECKING, checked(True)]
AT_WAITING_AGENT: list[Event] = [*AT_CONNECTING, nobody()]
AT_WITH_AGENT: list[Event] = [*AT_CONNECTING, answered()]
AT_DONE: list[Event] = [*AT_WITH_AGENT, ended()]
CB_DIALING: list[Event] = []
CB_RINGING: list[Event] = [cb_placed()]
CB_CONFIRM: list[Event] = [cb_placed(), cb_answered()]
CB_CONFIRM_WAITING: list[Event] = [*CB_CONFIRM, done("callback-confirm", CB)]


def machine_at(prefix: Sequence[Event], callback: bool = False,
               config: IvrConfig | None = None) -> tuple[IvrMachine, list[Command]]:
    m = IvrMachine.for_callback(CB, REF, config) if callback else IvrMachine(CID, config)
    out: list[Command] = []
    for event in prefix:
        out += m.handle(event)
    return m, out


# (what it checks, prefix, on the call-back leg, event, commands, state afterwards)
TRANSITION_ROWS: list[tuple[str, list[Event], bool, Event, list[Command], State]] = [
    ("caller id known: answer and look it up", AT_START, False, started(),
     [Answer(), IVR, LookupAccountByCaller(CALLER)], State.IDENTIFY_BY_CALLER),
    ("caller id withheld: answer and ask for the account number", AT_START, False,
     started(None), [Answer(), IVR, *ASK_ACCOUNT], State.ENTER_ACCOUNT),
    ("caller id matches one account: ask for the PIN", AT_IDENTIFY, False, found(1),
     ASK_PIN, State.ENTER_PIN),
    ("caller id matches no account: ask for the account number", AT_IDENTIFY, False,
     found(0), ASK_ACCOUNT, State.ENTER_ACCOUNT),
    ("caller id matches two accounts: ask for the account number", AT_IDENTIFY, False,
     found(2), ASK_ACCOUNT, State.ENTER_ACCOUNT),
    ("the wait for the first key starts when the prompt ends", AT_ACCOUNT, False,
     done("enter-account"), [DIGIT], State.ENTER_ACCOUNT),
    ("a key during the prompt barges in and starts the key timer", AT_ACCOUNT, False,
     keys("9"), [DIGIT], State.ENTER_ACCOUNT),
    ("the end of some other prompt is ignored", AT_PIN, False, done("enter-account"),
     [], State.ENTER_PIN),
    ("account number and #: look it up, nothing typed kept", AT_ACCOUNT, False,
     keys(ACCOUNT + "#"), [DIGIT] * 8 + [STOP_DIGIT, LookupAccountByNumber(ACCOUNT)],
     State.LOOKUP_ACCOUNT),
    ("account number then silence: submitted as typed", [*AT_ACCOUNT, keys(ACCOUNT)], False,
     timer("digits"), [LookupAccountByNumber(ACCOUNT)], State.LOOKUP_ACCOUNT),
    ("too short an account number: asked again", AT_ACCOUNT, False, keys("12#"),
     [DIGIT, DIGIT, STOP_DIGIT, *RETRY_ACCOUNT], State.ENTER_ACCOUNT),
    ("silence at the account prompt: asked again", AT_ACCOUNT_WAITING, False,
     timer("digits"), ASK_ACCOUNT, State.ENTER_ACCOUNT),
    ("typed account found: ask for the PIN", AT_LOOKUP, False, found(1), ASK_PIN,
     State.ENTER_PIN),
    ("typed account not found: asked again", AT_LOOKUP, False, found(0), RETRY_ACCOUNT,
     State.ENTER_ACCOUNT),
    ("well-formed PIN and #: checked by the driver", AT_PIN, False, keys(PIN + "#"),
     [DIGIT] * 6 + [STOP_DIGIT, CheckPin(REF, PIN)], State.CHECKING_PIN),
    ("PIN then silence: checked as typed", [*AT_PIN, keys(PIN)], False, timer("digits"),
     [CheckPin(REF, PIN)], State.CHECKING_PIN),
    ("three-digit PIN: refused locally, not sent", AT_PIN, False, keys("123#"),
     [DIGIT] * 3 + [STOP_DIGIT, *RETRY_PIN], State.ENTER_PIN),
    ("nine-digit PIN: ends at the ninth key and is refused", AT_PIN, False,
     keys("123456789"), [DIGIT] * 8 + [STOP_DIGIT, *RETRY_PIN], State.ENTER_PIN),
    ("a star in the PIN: refused", AT_PIN, False, keys("12*45#"),
     [DIGIT] * 5 + [STOP_DIGIT, *RETRY_PIN], State.ENTER_PIN),
    ("silence at the PIN prompt: asked again", AT_PIN_WAITING, False, timer("digits"),
     ASK_PIN, State.ENTER_PIN),
    ("2 then #: forgot PIN, call back, verdict declined, goodbye", AT_PIN, False,
     keys("2#"), [DIGIT, STOP_DIGIT, PlaceCallback(REF), no("declined"),
                  *announce("forgot-pin-callback")], State.ANNOUNCING),
    ("2 then silence: forgot PIN too", [*AT_PIN, keys("2")], False, timer("digits"),
     [PlaceCallback(REF), no("declined"), *announce("forgot-pin-callback")],
     State.ANNOUNCING),
    ("goodbye played: hang up", AT_FORGOT, False, done("forgot-pin-callback"),
     [CancelTimer("announce"), STOP_IVR, Hangup("done")], State.DONE),
    ("goodbye never reported: hang up at the announce limit", AT_FORGOT, False,
     timer("announce"), [STOP_IVR, Hangup("done")], State.DONE),
    ("right PIN: verified by PIN and bridged with the verdict", AT_CHECKING, False,
     checked(True), [V_PIN, STOP_IVR, *to_agent(V_PIN)], State.CONNECTING_AGENT),
    ("wrong PIN: asked again with invalid-pin", AT_CHECKING, False, checked(False),
     RETRY_PIN, State.ENTER_PIN),
    ("locked: verdict locked, told so, then to an agent", AT_CHECKING, False,
     checked(False, locked=True), [no("locked"), *announce("account-locked")],
     State.ANNOUNCING),
    ("locked announcement over: bridged flagged not verified", AT_LOCKED, False,
     done("account-locked"), [CancelTimer("announce"), STOP_IVR, *to_agent(no("locked"))],
     State.CONNECTING_AGENT),
    ("keys while the PIN is checked are ignored", AT_CHECKING, False, keys("5"), [],
     State.CHECKING_PIN),
    ("IVR time limit: verdict failed, to an agent", AT_CHECKING, False, timer("ivr"),
     [no("failed"), *announce("not-verified")], State.ANNOUNCING),
    ("IVR time limit before identification: unknown_account", AT_ACCOUNT, False,
     timer("ivr"), [no("unknown_account", None), *announce("not-verified")],
     State.ANNOUNCING),
    ("an agent answers: with agent", AT_CONNECTING, False, answered(), [],
     State.WITH_AGENT),
    ("no agent this round: hold, and try again later", AT_CONNECTING, False, nobody(),
     [Play("no-agents", allow_digits=False), StartTimer("agent-wait", 20.0)],
     State.CONNECTING_AGENT),
    ("the hold is over: the next round", AT_WAITING_AGENT, False, timer("agent-wait"),
     [BridgeToAgent(V_PIN)], State.CONNECTING_AGENT),
    ("the agent leaves: hang up", AT_WITH_AGENT, False, AgentHungUp(CID, at=T),
     [Hangup("agent-left")], State.DONE),
    ("the caller leaves the agent: done, nothing to say", AT_WITH_AGENT, False, ended(),
     [], State.DONE),
    ("after the call everything is ignored", AT_DONE, False, checked(True), [], State.DONE),
    ("a timer cancelled on its way is ignored", AT_CHECKING, False, timer("digits"), [],
     State.CHECKING_PIN),
    ("unexpected: an account lookup during a PIN check", AT_CHECKING, False, found(1),
     [STOP_IVR, no("failed"), Hangup("error")], State.ERROR),
    ("unexpected: keys before the call started", AT_START, False, keys("1"),
     [no("failed", None), Hangup("error")], State.ERROR),
    ("unexpected: an event for another call", AT_PIN, False, keys("1", call_id="other"),
     [STOP_IVR, no("failed"), Hangup("error")], State.ERROR),
    ("unexpected: an agent answers with no bridge asked", AT_WAITING_AGENT, False,
     answered(), [CancelTimer("agent-wait"), Hangup("error")],
     State.ERROR),
    ("call-back leg dialling: ring timer", CB_DIALING, True, cb_placed(),
     [StartTimer("ring", 45.0)], State.CALLBACK_DIALING),
    ("call-back answered: ask to press 1", CB_RINGING, True, cb_answered(),
     [CancelTimer("ring"), IVR, *ASK_CONFIRM], State.CALLBACK_CONFIRM),
    ("1 on the call-back: verified by call-back and bridged", CB_CONFIRM, True,
     keys("1", CB), [V_CALLBACK, STOP_IVR, *to_agent(V_CALLBACK)], State.CONNECTING_AGENT),
    ("another key on the call-back: asked again", CB_CONFIRM, True, keys("7", CB),
     ASK_CONFIRM, State.CALLBACK_CONFIRM),
    ("call-back not answered in time: failed, hang up", CB_RINGING, True, timer("ring", CB),
     [Verdict(False, None, "failed", T, REF), Hangup("no-answer")], State.DONE),
    ("call-back could not be placed: failed", CB_RINGING, True,
     CallbackFailed(CB, "busy", at=T), [CancelTimer("ring"), no("failed")], State.DONE),
]


@pytest.mark.parametrize(("prefix", "callback", "event", "expected", "state"),
                         [row[1:] for row in TRANSITION_ROWS],
                         ids=[row[0] for row in TRANSITION_ROWS])
def test_transition(prefix: list[Event], callback: bool, event: Event,
                    expected: list[Command], state: State) -> None:
    """One event in one state gives exactly these commands and this next state."""
    m, _ = machine_at(prefix, callback)
    assert m.handle(event) == expected
    assert m.state is state


def verdicts(out: Sequence[Command]) -> list[Verdict]:
    return [c for c in out if isinstance(c, Verdict)]


WRONG = "582031"
NO_AGENT_CONFIG = IvrConfig(unverified_to_agent=False)

# (what it checks, on the call-back leg, config, events, final state, the one verdict,
#  the last command)
PATHS: list[tuple[str, bool, IvrConfig | None, list[Event], State, Verdict, Command | None]] = [
    ("identified by caller id, right PIN, agent answers", False, None,
     [*AT_CONNECTING, answered()], State.WITH_AGENT, V_PIN, None),
    ("account typed on the keypad, then the right PIN", False, None,
     [*AT_LOOKUP, found(1), keys(PIN + "#"), checked(True), answered()], State.WITH_AGENT,
     V_PIN, None),
    ("wrong PIN, then the right one", False, None,
     [*AT_PIN, keys(WRONG + "#"), checked(False), keys(PIN + "#"), checked(True)],
     State.CONNECTING_AGENT, V_PIN, BridgeToAgent(V_PIN)),
    ("three wrong PINs: the driver locks the account", False, None,
     [*AT_PIN, keys(WRONG + "#"), checked(False), keys(WRONG + "#"), checked(False),
      keys(WRONG + "#"), checked(False, locked=True), done("account-locked"), answered()],
     State.WITH_AGENT, no("locked"), None),
    ("three wrong PINs the driver does not lock: failed locally", False, None,
     [*AT_PIN, keys(WRONG + "#"), checked(False), keys(WRONG + "#"), checked(False),
      keys(WRONG + "#"), checked(False), done("not-verified")], State.CONNECTING_AGENT,
     no("failed"), BridgeToAgent(no("failed"))),
    ("three malformed PINs: failed, no PIN ever checked", False, None,
     [*AT_PIN, keys("1#"), keys("12#"), keys("123#"), done("not-verified")],
     State.CONNECTING_AGENT, no("failed"), BridgeToAgent(no("failed"))),
    ("silence three times at the PIN prompt: failed", False, None,
     [*AT_PIN_WAITING, timer("digits"), done("enter-pin"), timer("digits"),
      done("enter-pin"), timer("digits")], State.ANNOUNCING, no("failed"),
     StartTimer("announce", 30.0)),
    ("an account typed three times, never found: unknown_account", False, None,
     [*AT_LOOKUP, found(0), keys(ACCOUNT + "#"), found(0), keys(ACCOUNT + "#"), found(0),
      done("not-verified")], State.CONNECTING_AGENT, no("unknown_account", None),
     BridgeToAgent(no("unknown_account", None))),
    ("unknown account with agents off for unverified callers: goodbye", False,
     NO_AGENT_CONFIG,
     [*AT_LOOKUP, found(0), keys(ACCOUNT + "#"), found(0), keys(ACCOUNT + "#"), found(0),
      done("goodbye")], State.DONE, no("unknown_account", None), Hangup("done")),
    ("locked with agents off for unverified callers: goodbye", False, NO_AGENT_CONFIG,
     [*AT_LOCKED, done("account-locked")], State.DONE, no("locked"), Hangup("done")),
    ("forgot PIN: call-back placed, goodbye, hang up", False, None,
     [*AT_FORGOT, done("forgot-pin-callback"), ended()], State.DONE, no("declined"), None),
    ("no agent in three rounds: goodbye", False, None,
     [*AT_CONNECTING, nobody(), timer("agent-wait"), nobody(), timer("agent-wait"),
      nobody(), done("no-agents-goodbye")], State.DONE, V_PIN, Hangup("done")),
    ("call-back leg answered and confirmed", True, None,
     [*CB_CONFIRM, keys("1", CB), answered(CB)], State.WITH_AGENT, V_CALLBACK, None),
    ("call-back leg answered, never confirmed (a voicemail): hang up", True, None,
     [*CB_CONFIRM_WAITING, timer("digits", CB), done("callback-confirm", CB),
      timer("digits", CB), done("callback-confirm", CB), timer("digits", CB)],
     State.DONE, no("failed"), Hangup("unconfirmed")),
    ("call-back leg busy", True, None, [*CB_RINGING, CallbackFailed(CB, "busy", at=T)],
     State.DONE, no("failed"), no("failed")),
]


@pytest.mark.parametrize(("callback", "config", "events", "state", "verdict", "last"),
                         [row[1:] for row in PATHS], ids=[row[0] for row in PATHS])
def test_path(callback: bool, config: IvrConfig | None, events: list[Event], state: State,
              verdict: Verdict, last: Command | None) -> None:
    """A whole call ends in this state with exactly this one verdict."""
    m, out = machine_at(events, callback, config)
    assert m.state is state
    assert verdicts(out) == [verdict]
    assert m.verdict == verdict
    if last is not None:
        assert out[-1] == last


def test_pin_check_asked_only_for_well_formed_pins() -> None:
    """Malformed entries never reach the driver; each well-formed one is sent once."""
    _, out = machine_at([*AT_PIN, keys("1#"), keys(WRONG + "#"), checked(False),
                         keys(PIN + "#")])
    assert [c for c in out if isinstance(c, CheckPin)] == [CheckPin(REF, WRONG),
                                                           CheckPin(REF, PIN)]


def test_bridge_carries_the_banner_the_agent_sees() -> None:
    """The verdict bridged after a right PIN reads VERIFIED (PIN); after a lock, NOT VERIFIED."""
    _, out = machine_at(AT_CONNECTING)
    _, locked = machine_at([*AT_LOCKED, done("account-locked")])
    bridged = [c for c in out if isinstance(c, BridgeToAgent)]
    bridged_locked = [c for c in locked if isinstance(c, BridgeToAgent)]
    assert [b.verdict.agent_banner() for b in bridged] == ["VERIFIED (PIN)"]
    assert [b.verdict.agent_banner() for b in bridged_locked] == [
        "NOT VERIFIED — do not disclose call detail information"]


# Every live state, reached from a fresh machine: (name, prefix, on the call-back leg).
LIVE_STATES: list[tuple[str, list[Event], bool]] = [
    ("start", AT_START, False), ("identify", AT_IDENTIFY, False),
    ("account", AT_ACCOUNT, False), ("account waiting", AT_ACCOUNT_WAITING, False),
    ("account half typed", [*AT_ACCOUNT, keys("998")], False), ("lookup", AT_LOOKUP, False),
    ("pin", AT_PIN, False), ("pin half typed", [*AT_PIN, keys("739")], False),
    ("checking", AT_CHECKING, False), ("forgot", AT_FORGOT, False),
    ("locked", AT_LOCKED, False), ("connecting", AT_CONNECTING, False),
    ("waiting for an agent", AT_WAITING_AGENT, False), ("with agent", AT_WITH_AGENT, False),
    ("call-back dialling", CB_DIALING, True), ("call-back ringing", CB_RINGING, True),
    ("call-back confirm", CB_CONFIRM, True),
    ("call-back confirm waiting", CB_CONFIRM_WAITING, True),
]


def test_live_states_cover_the_table() -> None:
    """The state fixtures reach every state but DONE and ERROR, so the loops below are total."""
    reached = {machine_at(prefix, cb)[0].state for _, prefix, cb in LIVE_STATES}
    assert reached == set(State) - {State.DONE, State.ERROR}


@pytest.mark.parametrize(("prefix", "callback"), [row[1:] for row in LIVE_STATES],
                         ids=[row[0] for row in LIVE_STATES])
def test_hang_up_anywhere(prefix: list[Event], callback: bool) -> None:
    """Hanging up in any state gives one verdict in all (hung_up if none yet), stops every
    timer, and asks for nothing else."""
    m, before = machine_at(prefix, callback)
    after = m.handle(ended(CB if callback else CID))
    assert m.state is State.DONE
    assert m.timers == frozenset()
    assert all(isinstance(c, CancelTimer | Verdict) for c in after)
    assert len(verdicts(before + after)) == 1
    if not verdicts(before):
        assert verdicts(after)[0].reason == "hung_up"
    assert m.handle(keys("1", CB if callback else CID)) == []


def _samples(call_id: str) -> list[Event]:
    return [
        CallStarted(call_id, CALLER, at=T), CallStarted(call_id, None, at=T),
        Digits(call_id, "5", at=T), Digits(call_id, "#", at=T), Digits(call_id, "2", at=T),
        Digits(call_id, "1", at=T), PromptDone(call_id, "enter-pin", at=T),
        *(TimerExpired(call_id, name, at=T)
          for name in ("ivr", "digits", "announce", "ring", "agent-wait")),
        CallEnded(call_id, "caller", at=T),
        AccountLookup(call_id, REF, 1, at=T), AccountLookup(call_id, None, 0, at=T),
        PinChecked(call_id, True, False, None, at=T), PinChecked(call_id, False, True, 0, at=T),
        PinChecked(call_id, False, False, 2, at=T),
        CallbackPlaced(call_id, at=T), CallbackAnswered(call_id, at=T),
        CallbackFailed(call_id, "busy", at=T), AgentAnswered(call_id, "agent-1", at=T),
        AgentUnavailable(call_id, at=T), AgentHungUp(call_id, at=T),
    ]


@pytest.mark.parametrize(("prefix", "callback"), [row[1:] for row in LIVE_STATES],
                         ids=[row[0] for row in LIVE_STATES])
def test_any_event_in_any_state(prefix: list[Event], callback: bool) -> None:
    """No event raises; each leads where the table says or to ERROR with a hang-up, and
    the call still has at most one verdict, exactly one once it is over."""
    call_id = CB if callback else CID
    for event in [*_samples(call_id), Digits("other-call", "1", at=T)]:
        m, before = machine_at(prefix, callback)
        state, timers = m.state, m.timers
        after = m.handle(event)
        rule = TRANSITIONS[state].get(type(event))
        if isinstance(event, TimerExpired) and event.timer not in timers:
            assert (after, m.state) == ([], state)   # stale: cancelled on its way
        elif m.state is State.ERROR:
            assert after[-1] == Hangup("error")
            assert m.error is not None
        else:
            assert rule is not None
            assert m.state in rule.targets or m.state is state
        n = len(verdicts(before + after))
        assert n == 1 if m.state in (State.DONE, State.ERROR) else n <= 1


def test_every_prompt_has_its_words() -> None:
    """Every prompt any path plays is in PROMPTS, so both adapters can render it."""
    played = set()
    for _, callback, config, events, *_ in PATHS:
        _, out = machine_at(events, callback, config)
        played |= {c.prompt for c in out if isinstance(c, Play)}
    assert played <= set(PROMPTS)
    assert {"enter-account", "enter-pin", "invalid-pin", "account-locked",
            "forgot-pin-callback", "please-hold", "no-agents"} <= played


def test_secrets_never_shown() -> None:
    """The sentinel PIN, account number and caller id appear in no repr or str of any
    event, command, machine, state or error, on every path."""
    runs = [(events, cb, cfg) for _, cb, cfg, events, *_ in PATHS]
    runs += [(prefix, cb, None) for _, prefix, cb in LIVE_STATES]
    runs += [([*p, found(1)], False, None) for p in (AT_CHECKING, AT_PIN)]  # into ERROR
    # Key by key too, so the machine is looked at with a whole PIN typed but not yet sent.
    runs += [([k for e in events for k in (_per_key([e]) if isinstance(e, Digits) else [e])],
              cb, cfg) for events, cb, cfg in list(runs)]
    seen = 0
    for events, callback, config in runs:
        m = IvrMachine.for_callback(CB, REF, config) if callback else IvrMachine(CID, config)
        for event in events:
            out = m.handle(event)
            for thing in [event, *out, m, m.state, m.error, m.verdict]:
                for text in (repr(thing), str(thing)):
                    seen += 1
                    assert not any(secret in text for secret in SECRETS), text
    assert seen > 1000


def test_typed_entries_dropped_once_sent() -> None:
    """Once the lookup or the PIN check is asked for, the machine holds no typed digits."""
    for prefix in (AT_LOOKUP, AT_CHECKING):
        m, _ = machine_at(prefix)
        assert not any(s in repr(vars(m)) for s in (PIN, ACCOUNT))


def _per_key(events: Sequence[Event]) -> list[Event]:
    return [Digits(e.call_id, k, at=e.at) for e in events if isinstance(e, Digits)
            for k in e.digits]


@settings(max_examples=300, deadline=None)
@given(typed=st.text(alphabet="0123456789*#", min_size=1, max_size=30),
       cuts=st.lists(st.integers(min_value=1, max_value=29), max_size=6),
       prefix=st.sampled_from([AT_ACCOUNT, AT_PIN, AT_PIN_WAITING]),
       result=st.sampled_from([found(0), found(1), checked(False), checked(True)]))
def test_batched_keys_equal_single_keys(typed: str, cuts: list[int], prefix: list[Event],
                                        result: Event) -> None:
    """Keys in batches of any size (Twilio) give the same commands and state as one key
    per event (ARI), whatever follows."""
    bounds = sorted({c for c in cuts if c < len(typed)} | {0, len(typed)})
    batches = [keys(typed[a:b]) for a, b in itertools.pairwise(bounds)]
    m1, _ = machine_at(prefix)
    m2, _ = machine_at(prefix)
    out1 = [c for e in batches for c in m1.handle(e)]
    out2 = [c for e in _per_key(batches) for c in m2.handle(e)]
    assert out1 == out2
    assert m1.state is m2.state
    assert m1.handle(result) == m2.handle(result)
    assert m1.state is m2.state


@settings(max_examples=200, deadline=None)
@given(picks=st.lists(st.integers(min_value=0, max_value=30), max_size=25),
       callback=st.booleans())
def test_a_restored_snapshot_continues_exactly_like_the_machine(picks: list[int],
                                                                 callback: bool) -> None:
    """Any event sequence, the machine saved and restored through JSON between events
    whenever nothing is half typed (as Twilio's webhooks do), gives the same commands,
    states and verdict as the machine that never left memory."""
    import json

    call_id = CB if callback else CID
    samples = _samples(call_id)
    events = [samples[i % len(samples)] for i in picks]
    kept, _ = machine_at([], callback)
    moved, _ = machine_at([], callback)
    for event in events:
        assert kept.handle(event) == moved.handle(event)
        assert kept.state is moved.state and kept.verdict == moved.verdict
        assert kept.timers == moved.timers and kept.prompt == moved.prompt
        try:
            data = json.loads(json.dumps(moved.snapshot()))
        except ValueError:
            continue  # keys typed and not yet submitted: never stored
        assert "5" not in json.dumps(data.get("prompt")) and "buffer" not in data
        moved = IvrMachine.restore(data)


def test_snapshots_refuse_half_typed_entries_and_garbage() -> None:
    m, _ = machine_at(AT_PIN)
    m.handle(keys("2357"))
    with pytest.raises(ValueError, match="being typed"):
        m.snapshot()
    m.handle(keys("89#"))
    snap = m.snapshot()
    assert "2357" not in str(snap)
    for bad in ({}, {**snap, "v": 2}, {**snap, "state": "nowhere"},
                {**snap, "timers": ["bogus"]}, {**snap, "stage": "ssn"}):
        with pytest.raises(ValueError):
            IvrMachine.restore(bad)
