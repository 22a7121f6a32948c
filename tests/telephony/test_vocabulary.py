"""The provider-neutral vocabulary: secrets hidden, values checked, errors shallow, and no
provider words outside the adapters."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest

from telephony import errors
from telephony.commands import (
    DRIVER_COMMAND_TYPES,
    NOT_VERIFIED_BANNER,
    PROVIDER_COMMAND_TYPES,
    CheckPin,
    LookupAccountByCaller,
    LookupAccountByNumber,
    Verdict,
)
from telephony.events import (
    EVENT_TYPES,
    AccountLookup,
    CallStarted,
    Digits,
    PinChecked,
    e164_or_none,
)

PIN = "739154"
ACCOUNT = "99887766"
CALLER = "+15550007777"

# (object holding a secret, the secret)
HOLDERS: list[tuple[object, str]] = [
    (CallStarted("c1", CALLER, at=1.0), CALLER),
    (Digits("c1", PIN + "#", at=1.0), PIN),
    (CheckPin("acct-1", PIN), PIN),
    (LookupAccountByNumber(ACCOUNT), ACCOUNT),
    (LookupAccountByCaller(CALLER), CALLER),
]


@pytest.mark.parametrize(("holder", "secret"), HOLDERS,
                         ids=[type(h).__name__ for h, _ in HOLDERS])
def test_secret_fields_hidden(holder: object, secret: str) -> None:
    """repr and str of an event or command never show the PIN, account or phone number."""
    assert secret not in repr(holder) and secret not in str(holder)
    assert secret[1:] not in repr(holder)


# (constructor, arguments, keyword arguments, words the message must contain)
INVALID: list[tuple[Any, tuple[Any, ...], dict[str, Any], str]] = [
    (Digits, ("c1", PIN + "x"), {"at": 1.0}, "keys"),
    (Digits, ("c1", ""), {"at": 1.0}, "keys"),
    (CallStarted, ("c1", "5550007777"), {"at": 1.0}, "E.164"),
    (CallStarted, ("c1", "+0" + PIN), {"at": 1.0}, "E.164"),
    (AccountLookup, ("c1", None, 1), {"at": 1.0}, "account_ref"),
    (AccountLookup, ("c1", "acct-1", 0), {"at": 1.0}, "account_ref"),
    (AccountLookup, ("c1", None, -1), {"at": 1.0}, "negative"),
    (PinChecked, ("c1", True, True, None), {"at": 1.0}, "locked"),
    (Verdict, (True, None, None, 1.0, "a"), {}, "method"),
    (Verdict, (True, "pin", "failed", 1.0, "a"), {}, "method"),
    (Verdict, (True, "pin", None, 1.0, None), {}, "names the account"),
    (Verdict, (False, "pin", "failed", 1.0, "a"), {}, "reason"),
    (Verdict, (False, None, None, 1.0, "a"), {}, "reason"),
    (Verdict, (False, None, "bored", 1.0, "a"), {}, "reason"),
]


@pytest.mark.parametrize(("make", "args", "kwargs", "words"), INVALID,
                         ids=[f"{m.__name__}-{i}" for i, (m, *_) in enumerate(INVALID)])
def test_invalid_values_refused(make: Any, args: tuple[Any, ...], kwargs: dict[str, Any],
                                words: str) -> None:
    """A malformed event or verdict is refused with a message that never echoes a value."""
    with pytest.raises(ValueError, match=re.escape(words)) as info:
        make(*args, **kwargs)
    assert PIN not in str(info.value)


def test_every_event_needs_its_time() -> None:
    """Every event carries the time it arrived as a required keyword, never a default."""
    for kind in EVENT_TYPES:
        at = {f.name: f for f in dataclasses.fields(kind)}["at"]
        assert at.kw_only and at.default is dataclasses.MISSING, kind.__name__
    with pytest.raises(TypeError, match="at"):
        Digits("c1", "1")  # type: ignore[call-arg]


# (verdict, banner)
BANNERS = [
    (Verdict(True, "pin", None, 1.0, "a"), "VERIFIED (PIN)"),
    (Verdict(True, "callback", None, 1.0, "a"), "VERIFIED (CALL-BACK)"),
    *((Verdict(False, None, reason, 1.0, None), NOT_VERIFIED_BANNER)
      for reason in ("unknown_account", "locked", "failed", "hung_up", "declined")),
]


@pytest.mark.parametrize(("verdict", "banner"), BANNERS)
def test_agent_banner(verdict: Verdict, banner: str) -> None:
    """The agent sees how the caller was verified, or the do-not-disclose warning."""
    assert verdict.agent_banner() == banner


def test_not_verified_banner_words() -> None:
    """The warning is the issue's exact wording."""
    assert NOT_VERIFIED_BANNER == "NOT VERIFIED — do not disclose call detail information"


# (what the provider reports, what CallStarted gets)
CALLER_IDS = [("+15550007777", "+15550007777"), (None, None), ("anonymous", None),
              ("5550007777", None), ("+0123", None), ("+1", None),
              ("+1234567890123456", None), (" +15550007777", None)]


@pytest.mark.parametrize(("raw", "normalised"), CALLER_IDS)
def test_e164_or_none(raw: str | None, normalised: str | None) -> None:
    """Only E.164 caller ids survive; anything else becomes a withheld caller id."""
    assert e164_or_none(raw) == normalised


def test_command_kinds_partition() -> None:
    """Every command is either for the adapter or for the driver, never both."""
    assert not set(PROVIDER_COMMAND_TYPES) & set(DRIVER_COMMAND_TYPES)


@pytest.mark.parametrize("kind", [errors.ProviderUnavailable, errors.ProviderRejected,
                                  errors.CallGone])
def test_errors_are_one_shallow_family(kind: type[errors.TelephonyError]) -> None:
    """Every telephony error is a TelephonyError with its own exit code."""
    assert issubclass(kind, errors.TelephonyError)
    assert kind.__mro__[1] is errors.TelephonyError
    assert kind.exit_code != errors.TelephonyError.exit_code


ROOT = Path(__file__).resolve().parents[2]
PROVIDER_WORDS = re.compile(r"\b(channels?|bridges?|callsid|stasis|twiml)\b", re.IGNORECASE)


def test_no_provider_words_outside_adapters() -> None:
    """channel, bridge, CallSid and friends appear only in telephony/ari and telephony/twilio."""
    files = [*ROOT.joinpath("ivr").glob("*.py"), *ROOT.joinpath("telephony").glob("*.py")]
    assert len(files) >= 6
    offenders = [f"{f.name}: {m.group(0)}" for f in files
                 for m in PROVIDER_WORDS.finditer(f.read_text(encoding="utf-8"))]
    assert offenders == []
