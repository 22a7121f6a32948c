"""Which PINs a customer may choose, and when failed PIN attempts lock an account.

Both are pure functions over plain values, so they are reviewed and tested as tables.
`check_new_pin` runs at provisioning (`customers add`, `customers set-pin`); the IVR
itself only checks the shape of an entry (`PIN_MIN`-`PIN_MAX` digits) before asking the
driver to verify it. `LockoutPolicy` is what the driver applies to the failures it counts
per account in PostgreSQL.

A refused PIN raises `WeakPin` naming the rule it broke, never the PIN. Rules, in order:
4 to 8 ASCII digits; not one repeated digit (0000); not a run up or down the digits,
wrapping from 9 to 0 (1234, 9876, 7890); not a short block repeated (1212, 123123); not
on the list of common PINs (keypad shapes such as 2580, popular numbers such as 6969);
not inside the account number or the phone number; and not date-like, because birthdays
and years are biographical: a year 1900-2099 (4 digits), MMDD or DDMM (4), MMDDYY, DDMMYY
or YYMMDD (6), MMDDYYYY, DDMMYYYY or YYYYMMDD with a year 1900-2099 (8). A day is 01-31
in any month, so the date rule also refuses a few impossible dates such as 0231.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

PIN_MIN, PIN_MAX = 4, 8
_PIN = re.compile(rf"[0-9]{{{PIN_MIN},{PIN_MAX}}}")

# The most chosen PINs not already caught by the rules above them: keypad columns and
# diagonals, and numbers people pick for their meaning.
COMMON_PINS = frozenset({
    "1004", "2000", "2001", "1122", "2580", "0852", "1379", "1397", "1470", "0741",
    "3690", "0963", "1590", "7410", "1478", "2468", "1357", "5683", "0007", "6969",
    "4200", "8520", "112233", "159753", "147258", "258369", "123654", "147852",
    "11223344", "13579", "24680",
})


class WeakPin(ValueError):
    """A PIN a customer may not choose; the message names the rule, never the PIN."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule


def _is_run(pin: str) -> bool:
    steps = {(int(b) - int(a)) % 10 for a, b in itertools.pairwise(pin)}
    return steps in ({1}, {9})


def _is_repeated_block(pin: str) -> bool:
    n = len(pin)
    return any(n % k == 0 and pin[:k] * (n // k) == pin for k in range(1, n // 2 + 1))


def _month_day(mm: str, dd: str) -> bool:
    return 1 <= int(mm) <= 12 and 1 <= int(dd) <= 31


def _year(yyyy: str) -> bool:
    return 1900 <= int(yyyy) <= 2099


def _is_date_like(pin: str) -> bool:
    if len(pin) == 4:
        return _year(pin) or _month_day(pin[:2], pin[2:]) or _month_day(pin[2:], pin[:2])
    if len(pin) == 6:
        return (_month_day(pin[:2], pin[2:4]) or _month_day(pin[2:4], pin[:2])
                or _month_day(pin[2:4], pin[4:]))
    if len(pin) == 8:
        return ((_month_day(pin[:2], pin[2:4]) and _year(pin[4:]))
                or (_month_day(pin[2:4], pin[:2]) and _year(pin[4:]))
                or (_year(pin[:4]) and _month_day(pin[4:6], pin[6:])))
    return False


def _digits(text: str) -> str:
    return "".join(ch for ch in text if "0" <= ch <= "9")


def check_new_pin(pin: str, account_number: str, phone: str) -> None:
    """Return if `pin` may be chosen for the account `account_number` whose number of
    record is `phone`; otherwise raise WeakPin saying which rule it breaks."""
    if not _PIN.fullmatch(pin):
        raise WeakPin("shape", f"a PIN is {PIN_MIN} to {PIN_MAX} digits, 0-9 only")
    if len(set(pin)) == 1:
        raise WeakPin("repeat", "a PIN may not be one digit repeated")
    if _is_run(pin):
        raise WeakPin("run", "a PIN may not be a run of consecutive digits")
    if _is_repeated_block(pin):
        raise WeakPin("pattern", "a PIN may not repeat a shorter pattern")
    if pin in COMMON_PINS:
        raise WeakPin("common", "that PIN is among the most commonly chosen")
    if pin in _digits(account_number):
        raise WeakPin("account", "a PIN may not appear in the account number")
    if pin in _digits(phone):
        raise WeakPin("phone", "a PIN may not appear in the phone number")
    if _is_date_like(pin):
        raise WeakPin("date", "a PIN may not look like a date or a year")


@dataclass(frozen=True)
class LockoutPolicy:
    """After `max_failures` failed PIN attempts on one account within `window_seconds`,
    the account is locked for `lock_seconds`: during the lock no PIN is compared and
    every check answers locked. The count is per account, across calls and instances."""

    max_failures: int = 3
    window_seconds: float = 900.0
    lock_seconds: float = 1800.0

    def __post_init__(self) -> None:
        if self.max_failures < 1 or self.window_seconds <= 0 or self.lock_seconds <= 0:
            raise ValueError("lockout needs max_failures >= 1 and positive durations")

    def decide(self, failures_in_window: int) -> bool:
        """Whether the account is to be locked, given the failures counted in the window
        ending now, the one just made included."""
        return failures_in_window >= self.max_failures

    def attempts_left(self, failures_in_window: int) -> int:
        """How many more failures the window allows before the lock (0 once locked)."""
        return max(0, self.max_failures - failures_in_window)

    def locked_until(self, now: float) -> float:
        """When a lock decided at `now` ends."""
        return now + self.lock_seconds
