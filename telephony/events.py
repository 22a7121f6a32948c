"""What happens on a call, in provider-neutral words: the events the IVR machine consumes.

An adapter (`telephony.ari`, `telephony.twilio`) turns what its provider reports into
these; the driver adds the results of the work it did for the machine (account lookups,
PIN checks, call-backs, agent hunting). Every event names the call by `call_id`, our own
id for the call, never a provider's, and carries `at`, the wall-clock time (seconds since
the epoch) at which the driver received it: time is an input to the machine, which never
reads a clock.

Caller ids and keypad digits can be CPNI or a PIN, so those fields are `repr=False`: no
`repr()`, `str()`, log line or exception message made from an event shows them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_KEYS = re.compile(r"[0-9*#]+")
_E164 = re.compile(r"\+[1-9][0-9]{1,14}")


def e164_or_none(text: str | None) -> str | None:
    """`text` if it is an E.164 number (+, then 2-15 digits), else None: what an adapter
    passes as `CallStarted.caller_id` for withheld, anonymous or malformed caller ids."""
    if text is not None and _E164.fullmatch(text):
        return text
    return None


@dataclass(frozen=True)
class CallStarted:
    """A new inbound call has arrived and is waiting to be answered."""

    call_id: str
    caller_id: str | None = field(repr=False)  # E.164, or None when withheld or unusable
    at: float = field(kw_only=True)

    def __post_init__(self) -> None:
        if self.caller_id is not None and not _E164.fullmatch(self.caller_id):
            raise ValueError("caller_id must be an E.164 number or None;"
                             " use e164_or_none() on what the provider reports")


@dataclass(frozen=True)
class Digits:
    """Keys the caller pressed, in order: one per event (ARI) or a batch (Twilio's Gather).
    A batch includes the terminator key if the caller pressed it."""

    call_id: str
    digits: str = field(repr=False)
    at: float = field(kw_only=True)

    def __post_init__(self) -> None:
        if not _KEYS.fullmatch(self.digits):
            raise ValueError("digits must be one or more of the keys 0-9, * and #")


@dataclass(frozen=True)
class PromptDone:
    """The prompt `prompt` finished playing, or was stopped by the caller's keys."""

    call_id: str
    prompt: str
    at: float = field(kw_only=True)


@dataclass(frozen=True)
class TimerExpired:
    """The timer `timer`, started by a StartTimer command and not cancelled, ran out."""

    call_id: str
    timer: str
    at: float = field(kw_only=True)


@dataclass(frozen=True)
class CallEnded:
    """The caller hung up, or the provider ended the call (`cause` says which)."""

    call_id: str
    cause: str
    at: float = field(kw_only=True)


@dataclass(frozen=True)
class AccountLookup:
    """The result of LookupAccountByCaller or LookupAccountByNumber: how many accounts
    matched, and the opaque reference of the account when exactly one did."""

    call_id: str
    account_ref: str | None
    matches: int
    at: float = field(kw_only=True)

    def __post_init__(self) -> None:
        if self.matches < 0:
            raise ValueError("matches cannot be negative")
        if (self.matches == 1) != (self.account_ref is not None):
            raise ValueError("account_ref is given exactly when one account matched")


@dataclass(frozen=True)
class PinChecked:
    """The result of CheckPin. `locked` means the account is locked now (this attempt
    locked it, or it was already locked and the PIN was not even compared): then `ok` is
    False whatever was entered. `attempts_left` before a lock, when the driver knows."""

    call_id: str
    ok: bool
    locked: bool
    attempts_left: int | None
    at: float = field(kw_only=True)

    def __post_init__(self) -> None:
        if self.ok and self.locked:
            raise ValueError("a PIN check cannot both succeed and find the account locked")


@dataclass(frozen=True)
class CallbackPlaced:
    """The call-back leg is dialling the number of record."""

    call_id: str
    at: float = field(kw_only=True)


@dataclass(frozen=True)
class CallbackAnswered:
    """The call-back leg was answered at the number of record."""

    call_id: str
    at: float = field(kw_only=True)


@dataclass(frozen=True)
class CallbackFailed:
    """The call-back leg could not be placed or was not answered (busy, no answer, ...)."""

    call_id: str
    cause: str
    at: float = field(kw_only=True)


@dataclass(frozen=True)
class AgentAnswered:
    """An agent answered and is now talking with the caller."""

    call_id: str
    agent: str
    at: float = field(kw_only=True)


@dataclass(frozen=True)
class AgentUnavailable:
    """No agent of the pool answered this round of BridgeToAgent."""

    call_id: str
    at: float = field(kw_only=True)


@dataclass(frozen=True)
class AgentHungUp:
    """The agent left the call; the caller is still on the line."""

    call_id: str
    at: float = field(kw_only=True)


Event = (CallStarted | Digits | PromptDone | TimerExpired | CallEnded | AccountLookup
         | PinChecked | CallbackPlaced | CallbackAnswered | CallbackFailed | AgentAnswered
         | AgentUnavailable | AgentHungUp)

EVENT_TYPES: tuple[type[Event], ...] = (
    CallStarted, Digits, PromptDone, TimerExpired, CallEnded, AccountLookup, PinChecked,
    CallbackPlaced, CallbackAnswered, CallbackFailed, AgentAnswered, AgentUnavailable,
    AgentHungUp)
