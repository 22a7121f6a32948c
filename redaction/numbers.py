"""The number normaliser: finds runs of spoken or written digits in recognised words.

Callers say numbers in many ways and the recogniser writes them in more: "4 5 6 7",
"456, 78912", "forty five sixty seven", "oh nine", "double five", "123-45-6789", "$84.20",
"3rd", and mis-heard hybrids such as "M8I12". This module turns a sequence of word tokens
into `NumberRun`s: maximal stretches of tokens that encode digits, with the digit string
they spell. It knows nothing of what the number means; `detect` labels runs by context.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field

_UNITS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13,
    "fourteen": 14, "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18,
    "nineteen": 19, "oh": 0, "o": 0, "nil": 0, "nought": 0, "naught": 0,
}
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fourty": 40, "fifty": 50, "sixty": 60,
         "seventy": 70, "eighty": 80, "ninety": 90}
_ORDINALS = {
    "first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6, "seventh": 7,
    "eighth": 8, "ninth": 9, "tenth": 10, "eleventh": 11, "twelfth": 12, "thirteenth": 13,
    "fourteenth": 14, "fifteenth": 15, "sixteenth": 16, "seventeenth": 17, "eighteenth": 18,
    "nineteenth": 19, "twentieth": 20, "thirtieth": 30,
}
_SCALES = {"hundred": 100, "thousand": 1000, "million": 1_000_000, "grand": 1000}
_REPEATS = {"double": 2, "triple": 3, "treble": 3}
# Words the recogniser writes for a digit it mis-heard; trusted only between two numbers.
_HOMOPHONES = {"to": "2", "too": "2", "for": "4", "fore": "4", "won": "1", "ate": "8",
               "free": "3", "tree": "3", "sex": "6", "nein": "9", "niner": "9", "ho": "0",
               "i'm": "9", "time": "9", "fine": "9", "mine": "9", "wine": "9", "sick": "6",
               "seven's": "7", "no": "0", "know": "0", "then": "10", "won't": "1"}
# "oh" and "o" are zero only next to another number ("oh nine"), never alone ("oh, okay").
_WEAK_ZERO = {"oh", "o"}

_NUMERIC = re.compile(r"^\$?\d[\d,.\-:/]*(?:st|nd|rd|th|s|am|pm|%)?$", re.ASCII)
_MIXED = re.compile(r"^(?=.*\d)[a-z0-9\-]{3,}$", re.ASCII)
_DIGITS = frozenset("0123456789")
_STRIP = re.compile(r"^[^\w$]+|[^\w%]+$")


@dataclass(frozen=True, slots=True)
class NumberRun:
    """Tokens first..last (inclusive) spell `digits`; 'x' marks an unreadable character."""

    first: int
    last: int
    digits: str = field(repr=False)
    money: bool = False
    clock: bool = False

    @property
    def length(self) -> int:
        return len(self.digits)


def normalise(token: str) -> str:
    """Lower-case a recognised word, write any script's digits as ASCII ("๒" -> "2") and
    strip the punctuation Whisper attaches to it."""
    token = "".join(str(unicodedata.decimal(c)) if c.isdecimal() and not c.isascii() else c
                    for c in token)
    return _STRIP.sub("", token.strip().lower())


def _is_word_number(tok: str) -> bool:
    parts = tok.split("-")
    return bool(parts) and all(
        p in _UNITS or p in _TENS or p in _ORDINALS or p in _SCALES or p in _REPEATS
        for p in parts
    )


def token_kind(tok: str) -> str:
    """Classify a normalised token: numeric, mixed, word, weak, homophone, and, or other."""
    if not tok:
        return "other"
    if _NUMERIC.match(tok):
        return "numeric"
    if tok in _WEAK_ZERO:
        return "weak"
    if _is_word_number(tok):
        return "word"
    if tok in _HOMOPHONES:
        return "homophone"
    if tok in ("and", "point", "dot", "dash", "hyphen"):
        return "and"
    if _MIXED.match(tok):
        return "mixed"
    if "-" in tok and _is_word_number(tok.split("-", maxsplit=1)[0]) and unit_suffix(tok):
        return "mixed"  # "forty-minute"
    return "other"


def _numeric_digits(tok: str) -> str:
    body = re.sub(r"(st|nd|rd|th|s|am|pm|%)$", "", tok)
    return re.sub(r"[^0-9]", "", body)


def _mixed_digits(tok: str) -> str:
    """Digits of a hybrid token; 'x' for letters, except whole words joined by a hyphen.

    "456m8i12" -> "456x8x12" (letters the model wrote for digits), but "7-minute" -> "7"
    and "forty-minute" is a number word followed by its unit.
    """
    parts = tok.split("-")
    if len(parts) > 1:
        kept = [p for p in parts if not (p.isalpha() and len(p) >= 3 and not
                                          _is_word_number(p))]
        return "".join(_mixed_digits(p) if any(c in _DIGITS for c in p) else
                       words_to_digits([p]) for p in kept if p)
    return "".join(c if c in _DIGITS else "x" for c in tok if c.isalnum())


def unit_suffix(tok: str) -> str | None:
    """The word glued to a number by a hyphen ("7-minute" -> "minute"), if any."""
    parts = tok.split("-")
    tail = parts[-1]
    return tail if len(parts) > 1 and tail.isalpha() and not _is_word_number(tail) else None


def words_to_digits(tokens: Sequence[str]) -> str:
    """Spell a sequence of number tokens as digits, group by group.

    "forty five sixty seven" -> "4567", "one hundred twenty" -> "120", "double five" ->
    "55", "four fifteen" -> "415", "twenty twenty seven" -> "2027", "oh nine" -> "09".
    """
    out: list[str] = []
    total = 0      # value of completed thousands groups within the current number
    group = 0      # value below the next scale word
    open_num = False
    last = ""      # kind of the last word: unit, teen, tens, hundred, scale
    repeat = 1

    def close() -> None:
        nonlocal total, group, open_num, last
        if open_num:
            out.append(str(total + group))
        total, group, open_num, last = 0, 0, False, ""

    for raw in tokens:
        for tok in raw.split("-"):
            if not tok:
                continue
            if tok in _REPEATS:
                close()
                repeat = _REPEATS[tok]
                continue
            if _NUMERIC.match(tok):
                close()
                out.append(_numeric_digits(tok) * repeat)
                repeat = 1
                continue
            if tok in _HOMOPHONES:
                close()
                out.append(_HOMOPHONES[tok] * repeat)
                repeat = 1
                continue
            value = _UNITS.get(tok, _ORDINALS.get(tok))
            if value is not None:
                kind = "unit" if value < 10 else "teen"
                if repeat > 1:
                    close()
                    out.append(str(value) * repeat)
                    repeat = 1
                    continue
                # "twenty five" joins; "four five", "four fifteen" and "five hundred" ... "six"
                # after a finished hundred group joins too ("one hundred six").
                if open_num and ((last == "tens" and kind == "unit") or last == "hundred"
                                 or (last == "scale" and group == 0)):
                    group += value
                    last = kind
                else:
                    close()
                    group, open_num, last = value, True, kind
                continue
            if tok in _TENS:
                if open_num and (last == "hundred" or (last == "scale" and group == 0)):
                    group += _TENS[tok]
                else:
                    close()
                    group, open_num = _TENS[tok], True
                last = "tens"
                continue
            if tok in _SCALES:
                scale = _SCALES[tok]
                if not open_num:
                    group, open_num = 1, True
                if scale == 100:
                    group = group * 100
                    last = "hundred"
                else:
                    total, group = total + group * scale, 0
                    last = "scale"
                continue
    close()
    return "".join(out)


def find_runs(tokens: Sequence[str]) -> list[NumberRun]:
    """Maximal runs of number tokens in normalised `tokens`, with the digits they spell.

    "and" joins two number words ("one hundred and six"); homophones ("to", "for") and the
    weak zeros ("oh") count only between or beside other numbers, so "press 1 for billing"
    keeps its "for" and "oh, okay" is no number.
    """
    kinds = [token_kind(t) for t in tokens]
    strong = {"numeric", "word", "mixed"}
    joinable = strong | {"weak"}
    runs: list[NumberRun] = []
    i = 0
    while i < len(tokens):
        if kinds[i] not in strong and not (kinds[i] == "weak" and _next_strong(kinds, i)):
            i += 1
            continue
        j = i
        while j + 1 < len(tokens):
            k = kinds[j + 1]
            joins = k in ("homophone", "and") and j + 2 < len(tokens) and kinds[j + 2] in joinable
            if not (k in joinable or joins):
                break
            j += 1
        span = tokens[i:j + 1]
        parts = [_mixed_digits(t) if kinds[i + n] == "mixed" else t
                 for n, t in enumerate(span) if kinds[i + n] != "and"]
        digits = "".join(p if p and set(p) <= set("0123456789x") else words_to_digits([p])
                         for p in _group_words(parts))
        money = any(t.startswith("$") for t in span)
        clock = any(":" in t or t.endswith(("am", "pm")) for t in span)
        if digits:
            runs.append(NumberRun(i, j, digits, money, clock))
        i = j + 1
    return runs


def _next_strong(kinds: list[str], i: int) -> bool:
    """Whether token i+1 is a number, or an "oh" that itself leads to a number."""
    return i + 1 < len(kinds) and (kinds[i + 1] in ("numeric", "word", "mixed") or (
        kinds[i + 1] == "weak" and (_next_strong(kinds, i + 1) or i + 2 == len(kinds)
                                    or kinds[i + 2] != "weak")))


def _group_words(parts: list[str]) -> list[str]:
    """Keep consecutive number words together so `words_to_digits` sees whole numbers."""
    out: list[str] = []
    buf: list[str] = []
    for p in parts:
        if p and set(p) <= set("0123456789x"):
            if buf:
                out.append(words_to_digits(buf))
                buf = []
            out.append(p)
        else:
            buf.append(p)
    if buf:
        out.append(words_to_digits(buf))
    return out
