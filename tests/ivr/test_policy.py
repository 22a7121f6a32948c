"""PIN choice rules and the lockout decision as tables."""

from __future__ import annotations

import pytest

from ivr.policy import COMMON_PINS, LockoutPolicy, WeakPin, check_new_pin

ACCOUNT = "ACC-99887766"
PHONE = "+1 (555) 000-7777"

GOOD = ["4831", "7392", "58203", "503827", "9081736", "90817364", "0639", "4096"]

# (pin, the rule it breaks)
WEAK: list[tuple[str, str]] = [
    ("", "shape"), ("123", "shape"), ("123456789", "shape"), ("12a4", "shape"),
    ("12 34", "shape"), ("\u0664\u0668\u0663\u0661", "shape"), ("4831\n", "shape"),
    ("0000", "repeat"), ("1111", "repeat"), ("77777777", "repeat"),
    ("1234", "run"), ("0123", "run"), ("9876", "run"), ("7890", "run"), ("8901", "run"),
    ("3210", "run"), ("123456", "run"), ("87654321", "run"),
    ("1212", "pattern"), ("6969", "pattern"), ("123123", "pattern"), ("1010", "pattern"),
    ("12341234", "pattern"),
    ("2580", "common"), ("1004", "common"), ("2000", "common"), ("0852", "common"),
    ("159753", "common"),
    ("8877", "account"), ("99887766", "account"), ("5550", "phone"), ("0007777", "phone"),
    ("1985", "date"), ("2024", "date"), ("0412", "date"), ("3112", "date"),
    ("311299", "date"), ("041285", "date"), ("850412", "date"), ("19850412", "date"),
    ("04121985", "date"), ("31121999", "date"),
]


@pytest.mark.parametrize("pin", GOOD)
def test_good_pin_accepted(pin: str) -> None:
    """A PIN breaking no rule is accepted."""
    check_new_pin(pin, ACCOUNT, PHONE)


@pytest.mark.parametrize(("pin", "rule"), WEAK)
def test_weak_pin_refused(pin: str, rule: str) -> None:
    """A weak PIN is refused by the rule named, and the message never echoes it."""
    with pytest.raises(WeakPin) as info:
        check_new_pin(pin, ACCOUNT, PHONE)
    assert info.value.rule == rule
    assert isinstance(info.value, ValueError)
    if pin:
        assert pin not in str(info.value) and pin not in repr(info.value)


def test_common_pins_are_well_formed() -> None:
    """Every listed common PIN is of a shape a customer could otherwise choose."""
    assert all(p.isdigit() and 4 <= len(p) <= 8 for p in COMMON_PINS)


# (failures counted in the window, the one just made included; lock now?; attempts left)
LOCKOUT = [(0, False, 3), (1, False, 2), (2, False, 1), (3, True, 0), (7, True, 0)]


@pytest.mark.parametrize(("failures", "lock", "left"), LOCKOUT)
def test_lockout_decision(failures: int, lock: bool, left: int) -> None:
    """With the defaults, the third failure in the window locks the account."""
    policy = LockoutPolicy()
    assert policy.decide(failures) is lock
    assert policy.attempts_left(failures) == left


def test_lockout_defaults_and_until() -> None:
    """Defaults are 3 failures in 15 minutes locking for 30 minutes."""
    policy = LockoutPolicy()
    assert (policy.max_failures, policy.window_seconds, policy.lock_seconds) == (3, 900, 1800)
    assert policy.locked_until(1000.0) == 2800.0


@pytest.mark.parametrize("kwargs", [{"max_failures": 0}, {"window_seconds": 0},
                                    {"lock_seconds": -1}])
def test_lockout_refuses_nonsense(kwargs: dict[str, float]) -> None:
    """A policy that could never lock, or never unlock, is refused."""
    with pytest.raises(ValueError, match="lockout"):
        LockoutPolicy(**kwargs)  # type: ignore[arg-type]
