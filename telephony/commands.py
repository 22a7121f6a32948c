"""What the IVR asks for, in provider-neutral words: the commands the machine emits.

Commands come in two kinds. `ProviderCommand`s act on the call and go to the adapter
(`TelephonyProvider.commands`), which renders them in its provider's terms: Asterisk sound
files and REST calls, or Twilio's `<Say>`, `<Gather>`, `<Dial>`. `DriverCommand`s are work
the driver does itself and answers with an event: timers (TimerExpired), account lookups
(AccountLookup), PIN checks (PinChecked), call-backs (CallbackPlaced/Answered/Failed), and
the verdict it records and shows the agent. Commands carry no call id: they are handed
over together with the call they belong to. A list is carried out in order.

PINs, account numbers and phone numbers are `repr=False`: no `repr()`, `str()`, log line
or exception message made from a command shows them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

Method = Literal["pin", "callback"]
Reason = Literal["unknown_account", "locked", "failed", "hung_up", "declined"]
METHODS: tuple[Method, ...] = get_args(Method)
REASONS: tuple[Reason, ...] = get_args(Reason)

NOT_VERIFIED_BANNER = "NOT VERIFIED — do not disclose call detail information"
_METHOD_WORDS: dict[Method, str] = {"pin": "PIN", "callback": "CALL-BACK"}


@dataclass(frozen=True)
class Verdict:
    """How the caller was authenticated, decided once per call and shown to the agent.

    Verified: `method` is how, `reason` is None. Not verified: `method` is None and
    `reason` says why: the account was not identified (unknown_account), it is locked,
    authentication failed (wrong or no PIN, time limit), the caller hung up, or the caller
    declined (chose a call-back instead). `at` is when the verdict was reached, `account_ref`
    the opaque reference of the identified account, if any.
    """

    verified: bool
    method: Method | None
    reason: Reason | None
    at: float
    account_ref: str | None

    def __post_init__(self) -> None:
        if self.verified and (self.method not in METHODS or self.reason is not None):
            raise ValueError("a verified verdict has a method and no reason")
        if not self.verified and (self.method is not None or self.reason not in REASONS):
            raise ValueError("an unverified verdict has a reason and no method")
        if self.verified and self.account_ref is None:
            raise ValueError("a verified verdict names the account")

    def agent_banner(self) -> str:
        """The line the agent sees before saying anything to the caller."""
        if self.verified and self.method is not None:
            return f"VERIFIED ({_METHOD_WORDS[self.method]})"
        return NOT_VERIFIED_BANNER


# Commands for the adapter.

@dataclass(frozen=True)
class Answer:
    """Answer the inbound call."""


@dataclass(frozen=True)
class Play:
    """Play the prompt `prompt` (an id from `ivr.machine.PROMPTS`). With `allow_digits`,
    a key pressed while it plays stops it (barge-in) and is reported as Digits; either
    way its end is reported as PromptDone."""

    prompt: str
    allow_digits: bool


@dataclass(frozen=True)
class CollectDigits:
    """The caller is now typing an entry of at most `max_digits` keys, ended early by
    `terminator` (None: no terminator). Providers that collect keys themselves (Twilio's
    `<Gather numDigits finishOnKey timeout>`) report the keys as one Digits batch, keeping
    the terminator if pressed; others (ARI) report each key as it comes. `timeout` is the
    wait for each key; the machine runs its own digit timer as well, so an adapter
    without collection of its own may ignore this command."""

    max_digits: int
    terminator: str | None
    timeout: float


@dataclass(frozen=True)
class BridgeToAgent:
    """Connect the caller to a free agent of the pool, who is told `verdict`; answered by
    AgentAnswered, or AgentUnavailable when nobody answers this round."""

    verdict: Verdict


@dataclass(frozen=True)
class Hangup:
    """End the call; `reason` is a short word for the log ("done", "error", ...)."""

    reason: str


# Commands for the driver.

@dataclass(frozen=True)
class StartTimer:
    """Start, or restart, the timer `name`; report TimerExpired after `seconds`."""

    name: str
    seconds: float


@dataclass(frozen=True)
class CancelTimer:
    """Stop the timer `name`; a TimerExpired already on its way is ignored by the machine."""

    name: str


@dataclass(frozen=True)
class LookupAccountByCaller:
    """Find the accounts whose number of record is `caller_id`; answer AccountLookup."""

    caller_id: str = field(repr=False)


@dataclass(frozen=True)
class LookupAccountByNumber:
    """Find the account with this account number; answer AccountLookup."""

    account_number: str = field(repr=False)


@dataclass(frozen=True)
class CheckPin:
    """Verify `pin` against the account's argon2id hash in constant time, count a failure
    against the account's lockout window, and answer PinChecked. A locked account is
    answered `locked=True` without comparing the PIN."""

    account_ref: str
    pin: str = field(repr=False)


@dataclass(frozen=True)
class PlaceCallback:
    """Call the account's number of record back on a new call, run by
    `IvrMachine.for_callback` under a new call id."""

    account_ref: str


ProviderCommand = Answer | Play | CollectDigits | BridgeToAgent | Hangup
DriverCommand = (StartTimer | CancelTimer | LookupAccountByCaller | LookupAccountByNumber
                 | CheckPin | PlaceCallback | Verdict)
Command = ProviderCommand | DriverCommand

PROVIDER_COMMAND_TYPES: tuple[type[ProviderCommand], ...] = (
    Answer, Play, CollectDigits, BridgeToAgent, Hangup)
DRIVER_COMMAND_TYPES: tuple[type[DriverCommand], ...] = (
    StartTimer, CancelTimer, LookupAccountByCaller, LookupAccountByNumber, CheckPin,
    PlaceCallback, Verdict)
