"""Synthetic call-recording corpus with known sensitive spans, and an audio-only redaction scorer.

Tests build their own corpus at test time with ``espeak-ng`` so that the exact position of every
sensitive phrase is known:

* Every utterance is synthesized as separate *pieces* (``espeak-ng -v VOICE -s SPEED -p PITCH
  -w piece.wav TEXT``): context words, the sensitive value, more context.  Each piece is trimmed
  of leading/trailing silence and the pieces are joined with 40-250 ms gaps, utterances with
  0.4-1.5 s, so an :class:`Item` span is exactly the span of its piece.
* Voices (8 English accents x ~55 variants), speed, pitch, phrasing and the way numbers are said
  are drawn from a seeded :class:`random.Random`: one seed, one corpus.
* Each channel then goes through the telephone band (sox ``sinc 300-3400`` and ``rate``, which
  are delay-compensated so spans stay exact) with white or pink line noise at 20-35 dB SNR and a
  random gain; DTMF bursts are mixed into silent gaps; the file is written as mu-law, A-law or
  PCM-16 WAV at 8 or 16 kHz, mono or dual-channel (agent and caller on their own channel).

:func:`score` then measures a redactor purely from its output audio: per channel and 10 ms frame
it compares the redacted file with the original; a frame is *muted* when
``RMS(out - in) > 0.5 * RMS(in)`` (silence, a beep or noise all count, re-quantisation does not).
Durations only count *voiced* frames (RMS above 8 dB over the channel's noise floor).

Usage::

    clips = build_corpus(tmp_path, seed=7, n_clips=12)
    total = merge_scores(score(c, redact(c.path)) for c in clips)
    assert total.recall() > 0.95 and total.over_redaction() < 0.05
"""

from __future__ import annotations

import functools
import math
import os
import random
import re
import subprocess
import tempfile
import zlib
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
import soundfile as sf

FloatArray = npt.NDArray[np.float64]

HARMLESS = "HARMLESS"
LABELS: tuple[str, ...] = (
    "ACCOUNT_NUMBER",
    "PIN",
    "SSN",
    "CARD_NUMBER",
    "CARD_EXPIRY",
    "CARD_CVV",
    "PHONE_NUMBER",
    "CALL_DATETIME",
    "CALL_DURATION",
    "BILL_AMOUNT",
    "ADDRESS",
)
SUBTYPES: dict[str, str] = {"ulaw": "ULAW", "alaw": "ALAW", "pcm16": "PCM_16"}

FRAME_SECONDS = 0.01
MUTED_RATIO = 0.5  # a frame is muted when RMS(out - in) > MUTED_RATIO * RMS(in)
ITEM_MUTED_FRACTION = 0.9  # an item is muted when >= 90 % of its voiced frames are muted
HARMLESS_KEPT_FRACTION = 0.1  # a harmless item is kept when < 10 % of it is muted

_ESPEAK_RATE = 22050
_BASE_VOICES = (
    "en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-us-nyc", "en-gb-x-gbclan",
    "en-gb-x-gbcwmd"
)  # fmt: skip
# Voice variants that sound like a (synthetic) human talker; robotic, whispering and heavily
# clipping variants are left out.
_VARIANTS = (
    "",
    "f1", "f2", "f3", "f4", "f5",
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8",
    "klatt", "klatt2", "klatt3", "klatt4", "croak",
    "aunty", "Annie", "Alicia", "Andrea", "belinda", "linda", "steph", "steph2", "anika",
    "grandma", "grandpa", "max", "Michael", "edward", "john", "david", "Andy", "quincy",
    "travis", "victor", "zac", "sandro", "shelby", "Denis", "Lee", "Mike", "norbert", "paul",
    "rob", "robert", "adam", "caleb", "benjamin", "boris", "Mario",
)  # fmt: skip


# --------------------------------------------------------------------------------------------
# Public data types
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    """A labelled span of synthesized speech on one channel."""

    label: str  # one of LABELS, or HARMLESS for numbers that must stay
    start: float  # seconds, where the synthesized words begin (silence trimmed)
    end: float
    text: str  # the words spoken (for debugging only)


@dataclass(frozen=True)
class Clip:
    """One synthetic call recording and everything known about its content."""

    path: Path
    sample_rate: int
    channels: int
    channel_items: tuple[tuple[Item, ...], ...]
    speech: tuple[tuple[tuple[float, float], ...], ...]
    dtmf: tuple[tuple[tuple[float, float, str], ...], ...]


@dataclass(frozen=True)
class Score:
    """How well a redacted file removed the sensitive content of a clip."""

    items_total: int
    items_muted: int
    dtmf_total: int
    dtmf_muted: int
    harmless_total: int
    harmless_kept: int
    clean_speech_seconds: float
    over_redacted_seconds: float
    missed: tuple[Item, ...] = field(default=())

    def recall(self) -> float:
        """Fraction of sensitive items that were muted (1.0 when there are none)."""
        return self.items_muted / self.items_total if self.items_total else 1.0

    def dtmf_recall(self) -> float:
        """Fraction of DTMF tones that were muted (1.0 when there are none)."""
        return self.dtmf_muted / self.dtmf_total if self.dtmf_total else 1.0

    def over_redaction(self) -> float:
        """Fraction of clean (non-sensitive) voiced speech that was muted."""
        if self.clean_speech_seconds <= 0.0:
            return 0.0
        return self.over_redacted_seconds / self.clean_speech_seconds


# --------------------------------------------------------------------------------------------
# Saying numbers
# --------------------------------------------------------------------------------------------

_ONES = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
    "nineteen"
)  # fmt: skip
_TENS = ("_", "_", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
_ORD_ONES = (
    "zeroth", "first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth",
    "tenth", "eleventh", "twelfth", "thirteenth", "fourteenth", "fifteenth", "sixteenth",
    "seventeenth", "eighteenth", "nineteenth"
)  # fmt: skip
_ORD_TENS = (
    "_", "_", "twentieth", "thirtieth", "fortieth", "fiftieth", "sixtieth", "seventieth",
    "eightieth", "ninetieth"
)  # fmt: skip
_MONTHS = (
    "January", "February", "March", "April", "May", "June", "July", "August", "September",
    "October", "November", "December"
)  # fmt: skip
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def _words(n: int, *, british: bool = False) -> str:
    """Cardinal number in words, e.g. 1420 -> 'one thousand four hundred twenty'."""
    if n < 0:
        raise ValueError(n)
    if n < 20:
        return _ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens] + (" " + _ONES[ones] if ones else "")
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        head = _ONES[hundreds] + " hundred"
        if not rest:
            return head
        return head + (" and " if british else " ") + _words(rest)
    for size, name in ((10**9, "billion"), (10**6, "million"), (1000, "thousand")):
        if n >= size:
            top, rest = divmod(n, size)
            head = _words(top, british=british) + " " + name
            if not rest:
                return head
            joiner = " and " if british and rest < 100 else " "
            return head + joiner + _words(rest, british=british)
    raise AssertionError("unreachable")


def _ordinal_words(n: int) -> str:
    if n < 20:
        return _ORD_ONES[n]
    tens, ones = divmod(n, 10)
    if not ones:
        return _ORD_TENS[tens]
    return _TENS[tens] + " " + _ORD_ONES[ones]


def _ordinal_numeral(n: int) -> str:
    if 10 <= n % 100 <= 20:
        suffix = "th"
    else:
        suffix = {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _digit_word(d: str, zero: str) -> str:
    return zero if d == "0" else _ONES[int(d)]


def _say_digits(ds: str, rng: random.Random, zero: str) -> str:
    """Digit by digit, sometimes with 'double five' / 'triple seven'."""
    compress = rng.random() < 0.5
    out: list[str] = []
    i = 0
    while i < len(ds):
        j = i
        while j < len(ds) and ds[j] == ds[i]:
            j += 1
        run = j - i
        word = _digit_word(ds[i], zero)
        while run > 0:
            if compress and run >= 3 and rng.random() < 0.7:
                out.append("triple " + word)
                run -= 3
            elif compress and run >= 2:
                out.append("double " + word)
                run -= 2
            else:
                out.append(word)
                run -= 1
        i = j
    return " ".join(out)


def _say_pair(pair: str, rng: random.Random, zero: str, *, after_nonzero: bool) -> str:
    if pair == "00":
        if after_nonzero and rng.random() < 0.6:
            return "hundred"
        return f"{zero} {zero}" if rng.random() < 0.6 else f"double {zero}"
    if pair[0] == "0":
        return f"{zero} {_digit_word(pair[1], zero)}"
    return _words(int(pair))


def _say_pairs(ds: str, rng: random.Random, zero: str) -> str:
    """Grouped into pairs: '4567' -> 'forty five sixty seven', '456' -> 'four fifty six'."""
    chunks: list[str] = []
    rest = ds
    prev = ""  # digits of the previous chunk
    if len(rest) % 2 == 1:
        if len(rest) >= 3 and rest[0] != "0" and rng.random() < 0.35:
            chunks.append(_words(int(rest[:3])))  # 'four hundred fifty six'
            prev, rest = rest[:3], rest[3:]
        else:
            chunks.append(_digit_word(rest[0], zero))
            prev, rest = rest[0], rest[1:]
    for k in range(0, len(rest), 2):
        pair = rest[k : k + 2]
        # 'forty five hundred', 'four hundred' -- but not 'forty hundred' or 'oh hundred'
        hundred_ok = len(prev) in (1, 2) and prev[0] != "0" and prev[-1] != "0"
        chunks.append(_say_pair(pair, rng, zero, after_nonzero=hundred_ok))
        prev = pair
    return " ".join(chunks)


_DIGIT_STYLES = ("digits", "digits", "digits", "pairs", "pairs", "numeral", "numeral", "spaced")


def _say_group(ds: str, rng: random.Random, style: str, zero: str) -> str:
    if style == "digits":
        return _say_digits(ds, rng, zero)
    if style == "pairs":
        return _say_pairs(ds, rng, zero)
    if style == "numeral":
        return ds  # espeak reads it as a number, e.g. '4567' -> 'four thousand ...'
    if style == "spaced":
        return " ".join(ds)  # '4 5 6 7' -> digit by digit
    if style == "words":
        return _words(int(ds)) if ds[0] != "0" else _say_digits(ds, rng, zero)
    raise ValueError(style)


def _split(ds: str, groups: Sequence[int]) -> list[str]:
    out: list[str] = []
    pos = 0
    for g in groups:
        out.append(ds[pos : pos + g])
        pos += g
    if pos < len(ds):
        out.append(ds[pos:])
    return [g for g in out if g]


def _say_digit_string(
    ds: str, groups: Sequence[int], rng: random.Random, *, dash: bool = False
) -> str:
    """Say a string of digits in one of many ways.

    Digit by digit ('four five six', with 'oh'/'zero' and 'double'/'triple'), in pairs
    ('forty five sixty seven', 'forty five hundred'), as written digits that espeak-ng reads as a
    number ('4567', '456 78912', '123-45-6789') or digit by digit ('4 5 6 7'), or in words; one
    style for the whole string or one per group.
    """
    if len(ds) <= 10 and rng.random() < 0.08:
        return ds
    zero = rng.choice(("zero", "oh"))
    parts = _split(ds, groups)
    uniform = rng.random() < 0.7
    style = rng.choice(_DIGIT_STYLES)
    styles = [style if uniform else rng.choice(_DIGIT_STYLES) for _ in parts]
    if len(parts) == 1 and len(ds) <= 4 and rng.random() < 0.15:
        styles = ["words"]
    said = [_say_group(p, rng, s, zero) for p, s in zip(parts, styles, strict=True)]
    if all(s == "numeral" for s in styles):
        sep = "-" if dash and rng.random() < 0.7 else " "
    else:
        sep = rng.choice((", ", " ", ", "))
    return sep.join(said)


def _rand_digits(n: int, rng: random.Random, *, first_nonzero: bool = False) -> str:
    out: list[str] = []
    for i in range(n):
        if out and rng.random() < 0.18:
            out.append(out[-1])  # repeated digits exercise 'double' / 'triple'
        elif i == 0 and first_nonzero:
            out.append(str(rng.randint(1, 9)))
        else:
            out.append(str(rng.randint(0, 9)))
    return "".join(out)


def _random_groups(n: int, rng: random.Random) -> list[int]:
    if rng.random() < 0.25:
        return [n]
    groups: list[int] = []
    left = n
    while left > 0:
        g = min(left, rng.choice((2, 3, 3, 4, 4)))
        groups.append(g)
        left -= g
    return groups


# --------------------------------------------------------------------------------------------
# Values per label
# --------------------------------------------------------------------------------------------


def _value_account(variant: str, rng: random.Random) -> str:
    if variant == "last4":
        return _say_digit_string(_rand_digits(4, rng), rng.choice(([4], [2, 2])), rng)
    n = rng.randint(6, 12)
    ds = _rand_digits(n, rng, first_nonzero=rng.random() < 0.7)
    said = _say_digit_string(ds, _random_groups(n, rng), rng)
    if rng.random() < 0.12:
        letters = " ".join(rng.choice("ABCDEFGHKMNPRSTXZ") for _ in range(rng.randint(1, 2)))
        said = f"{letters}, {said}"
    return said


def _value_pin(variant: str, rng: random.Random) -> str:
    n = rng.choice((4, 4, 4, 4, 5, 6, 6, 8))
    groups = rng.choice(([n], [n], [2] * (n // 2) or [n]))
    return _say_digit_string(_rand_digits(n, rng), groups, rng)


def _value_ssn(variant: str, rng: random.Random) -> str:
    if variant == "last4":
        return _say_digit_string(_rand_digits(4, rng), rng.choice(([4], [2, 2])), rng)
    ds = str(rng.randint(100, 899)) + _rand_digits(6, rng)
    if rng.random() < 0.2:
        return f"{ds[:3]}-{ds[3:5]}-{ds[5:]}"
    return _say_digit_string(ds, (3, 2, 4), rng, dash=True)


def _value_card(variant: str, rng: random.Random) -> str:
    if variant == "last4":
        return _say_digit_string(_rand_digits(4, rng), rng.choice(([4], [2, 2])), rng)
    brand = rng.random()
    if brand < 0.15:  # Amex, 4-6-5
        ds = "3" + rng.choice("47") + _rand_digits(13, rng)
        groups: Sequence[int] = (4, 6, 5)
    else:
        prefix = "4" if brand < 0.6 else ("5" + rng.choice("12345") if brand < 0.85 else "6011")
        ds = prefix + _rand_digits(16 - len(prefix), rng)
        groups = (4, 4, 4, 4)
    if rng.random() < 0.15:
        return " ".join(_split(ds, groups))  # '4111 2222 3333 4444' as written digits
    return _say_digit_string(ds, groups, rng)


def _value_expiry(variant: str, rng: random.Random) -> str:
    month = rng.randint(1, 12)
    year = rng.randint(25, 33)
    mm = f"{month:02d}"
    year_words = _words(year)
    form = rng.randrange(10)
    if form == 0:
        return f"{mm}/{year}"  # '09/27'
    if form == 1:
        return f"{month}/{year}"
    if form == 2:
        return f"oh {_ONES[month]} {year_words}" if month < 10 else f"{_words(month)} {year_words}"
    if form == 3:
        return f"{_words(month)} {year_words}"
    if form == 4:
        return f"{_MONTHS[month - 1]} twenty {year_words}"
    if form == 5:
        return f"{_MONTHS[month - 1]} 20{year}"
    if form == 6:
        zero = rng.choice(("zero", "oh"))
        return f"{_say_digits(mm, rng, zero)} slash {_say_digits(str(year), rng, zero)}"
    if form == 7:
        return f"{mm} {year}"
    if form == 8:
        return f"{_MONTHS[month - 1]} of {rng.choice(('20' + str(year), year_words))}"
    return f"{_say_digits(mm, rng, 'zero')}, {_say_digits(str(year), rng, 'zero')}"


def _value_cvv(variant: str, rng: random.Random) -> str:
    n = 4 if rng.random() < 0.2 else 3
    return _say_digit_string(_rand_digits(n, rng), [n], rng)


def _value_phone(variant: str, rng: random.Random) -> str:
    kind = rng.random()
    area = str(rng.randint(2, 9)) + _rand_digits(2, rng)
    exchange = str(rng.randint(2, 9)) + _rand_digits(2, rng)
    line = _rand_digits(4, rng)
    if kind < 0.1:  # toll free
        area = rng.choice(("800", "888", "877", "866"))
        written = rng.random() < 0.3
        if written:
            return f"1-{area}-{exchange}-{line}"
        area_said = {
            "800": "eight hundred",
            "888": "triple eight",
            "877": "eight seven seven",
            "866": "eight double six",
        }[area]
        lead = rng.choice(("one ", "one, ", ""))
        rest = _say_digit_string(exchange + line, (3, 4), rng)
        return f"{lead}{area_said}, {rest}"
    if kind < 0.3:  # seven digits
        if rng.random() < 0.25:
            return f"{exchange}-{line}"
        return _say_digit_string(exchange + line, (3, 4), rng, dash=True)
    if rng.random() < 0.2:
        return rng.choice(
            (f"({area}) {exchange}-{line}", f"{area}-{exchange}-{line}",
             f"{area} {exchange} {line}")
        )  # fmt: skip
    said = _say_digit_string(area + exchange + line, (3, 3, 4), rng, dash=True)
    if kind > 0.95:
        said = "plus one " + said
    elif rng.random() < 0.3 and not said[:1].isdigit():
        # US style: area code and exchange digit by digit, line number in pairs
        zero = rng.choice(("oh", "zero"))
        said = ", ".join(
            (_say_digits(area, rng, zero), _say_digits(exchange, rng, zero),
             _say_pairs(line, rng, zero))
        )  # fmt: skip
    return said


def _time_of_day(rng: random.Random) -> str:
    hour = rng.randint(1, 12)
    minute = rng.choice((0, 0, 5, 10, 15, 20, 30, 30, 45, rng.randint(1, 59)))
    pm = rng.random() < 0.6
    form = rng.randrange(9)
    if pm:
        ampm_said = rng.choice(("p m", "pm", "in the afternoon"))
    else:
        ampm_said = rng.choice(("a m", "am", "in the morning"))
    if form == 0:
        return f"{hour}:{minute:02d}" + (" " + ampm_said if rng.random() < 0.5 else "")
    if form == 1:
        if minute == 0:
            m_said = rng.choice(("o'clock", ""))
        elif minute < 10:
            m_said = "oh " + _ONES[minute]
        else:
            m_said = _words(minute)
        said = f"{_words(hour)} {m_said}".strip()
        return said + (" " + ampm_said if rng.random() < 0.6 else "")
    if form == 2:
        return f"{hour} {ampm_said}"
    if form == 3:
        return f"{_words(hour)} {ampm_said}"
    if form == 4:
        nxt = hour % 12 + 1
        return rng.choice(
            (f"quarter past {_words(hour)}", f"half past {_words(hour)}",
             f"quarter to {_words(nxt)}", f"ten past {_words(hour)}")
        )  # fmt: skip
    if form == 5:
        h24 = hour % 12 + (12 if pm else 0)
        return f"{h24}:{minute:02d}"
    if form == 6:
        return f"{_words(hour)} in the {'evening' if pm else 'morning'}"
    if form == 7:
        return rng.choice(("noon", "midnight", "noon", f"{_words(hour)} thirty"))
    return f"{_words(hour)} {_words(minute) if minute >= 10 else 'fifteen'}"


def _date_phrase(rng: random.Random) -> str:
    month = rng.randrange(12)
    day = rng.randint(1, 28 if month == 1 else 30)
    form = rng.randrange(14)
    if form == 0:
        return f"on {_MONTHS[month]} {_ordinal_words(day)}"
    if form == 1:
        return f"on {_MONTHS[month]} {_ordinal_numeral(day)}"
    if form == 2:
        return f"{_MONTHS[month]} {day}"
    if form == 3:
        return f"on the {_ordinal_numeral(day)}"
    if form == 4:
        return f"on the {_ordinal_words(day)}"
    if form == 5:
        return f"on the {_ordinal_words(day)} of {_MONTHS[month]}"
    if form == 6:
        return "yesterday"
    if form == 7:
        return f"last {rng.choice(_WEEKDAYS)}"
    if form == 8:
        return f"on {rng.choice(_WEEKDAYS)}"
    if form == 9:
        return f"on {month + 1}/{day}"
    if form == 10:
        year = rng.randint(2022, 2025)
        year_said = str(year) if rng.random() < 0.5 else f"twenty {_words(year - 2000)}"
        return f"on {_MONTHS[month]} {_ordinal_numeral(day)}, {year_said}"
    if form == 11:
        return f"{rng.choice(_WEEKDAYS)} the {_ordinal_numeral(day)}"
    if form == 12:
        return rng.choice(("the day before yesterday", f"{_words(rng.randint(2, 9))} days ago"))
    return f"on {_MONTHS[month]} {_words(day)}"


def _value_datetime(variant: str, rng: random.Random) -> str:
    r = rng.random()
    if r < 0.3:
        return _date_phrase(rng)
    if r < 0.45:
        when = rng.choice(("this morning", "today", "tonight", "earlier today", "last night"))
        prep = rng.choice(("at", "at", "around"))
        if rng.random() < 0.5:
            return f"{when} {prep} {_time_of_day(rng)}"
        return f"{prep} {_time_of_day(rng)} {when}"
    prep = rng.choice(("at", "at", "at", "around", "about"))
    if r < 0.9:
        return f"{_date_phrase(rng)} {prep} {_time_of_day(rng)}"
    return f"{prep} {_time_of_day(rng)} {_date_phrase(rng)}"


def _value_duration(variant: str, rng: random.Random) -> str:
    minutes = rng.choice((rng.randint(1, 15), rng.randint(10, 59), rng.randint(2, 9)))
    hours = rng.randint(1, 3)
    seconds = rng.randint(5, 59)
    numeral = rng.random() < 0.35
    m_said = str(minutes) if numeral else _words(minutes)
    if variant == "adj":  # 'a forty minute call'
        form = rng.randrange(5)
        if form == 0:
            return f"{m_said}-minute"
        if form == 1:
            return f"{_words(hours)} hour"
        if form == 2:
            return f"{_words(seconds)} second"
        return f"{m_said} minute"
    form = rng.randrange(12)
    unit = "minute" if minutes == 1 else "minutes"
    if form <= 3:
        return f"{m_said} {unit}"
    if form == 4:
        return f"{m_said} mins" if minutes > 1 else "one minute"
    if form == 5:
        hour_said = rng.choice(("an hour", "one hour")) if hours == 1 else f"{_words(hours)} hours"
        return f"{hour_said} and {_words(minutes)} {unit}"
    if form == 6:
        h_unit = "hour" if hours == 1 else "hours"
        return f"{hours} {h_unit} {minutes} minutes" if numeral else f"{_words(hours)} {h_unit}"
    if form == 7:
        return f"{_words(seconds) if not numeral else seconds} seconds"
    if form == 8:
        return f"{m_said} {unit} and {_words(seconds)} seconds"
    if form == 9:
        return rng.choice(
            ("half an hour", "an hour and a half", f"{_words(hours)} and a half hours",
             "a minute and a half", "about an hour")
        )  # fmt: skip
    if form == 10:
        return f"{_words(minutes)} {unit} {_words(seconds)}"
    return f"{_words(rng.randint(61, 180))} seconds"


def _value_amount(variant: str, rng: random.Random) -> str:
    dollars = rng.choice((rng.randint(5, 150), rng.randint(5, 150), rng.randint(100, 999),
                          rng.randint(1000, 2500)))  # fmt: skip
    cents = 0 if rng.random() < 0.25 else rng.randint(1, 99)
    d_words = _words(dollars, british=rng.random() < 0.3)
    form = rng.randrange(12)
    if form == 0:
        d_fmt = f"{dollars:,}"
        return f"${d_fmt}.{cents:02d}" if cents else f"${d_fmt}"
    if form == 1:
        c_part = f" and {_words(cents)} {'cent' if cents == 1 else 'cents'}" if cents else ""
        return f"{d_words} dollars{c_part}"
    if form == 2:
        return f"{dollars} dollars" + (f" and {cents} cents" if cents else "")
    if form == 3:
        return f"{dollars} dollars {cents:02d}" if cents else f"{dollars} dollars even"
    if form == 4:
        if not cents:
            return f"{d_words} dollars even"
        c_said = _words(cents) if cents >= 10 else "oh " + _ONES[cents]
        return f"{d_words} {c_said}"  # 'eighty four twenty'
    if form == 5:
        return f"{_words(cents)} cents" if cents else f"{_words(dollars % 100 or 50)} cents"
    if form == 6:
        return f"{d_words} bucks"
    if form == 7 and dollars >= 100 and dollars < 1000:
        return f"a hundred and {_words(rng.randint(1, 99))} dollars"
    if form == 8:
        return f"{dollars}.{cents:02d}"
    if form == 9:
        return f"{d_words} dollars and {_words(cents) if cents else 'zero'} cents"
    if form == 10:
        return f"{d_words} dollars {_words(cents) if cents else ''}".strip()
    return f"{d_words} dollars"


_STREETS = (
    "Elm", "Maple", "Oak", "Cedar", "Pine", "Baker", "Washington", "Lincoln", "Sunset", "Park",
    "Lake", "Hill", "Main", "Church", "Highland", "Jefferson", "Madison", "Willow", "Chestnut",
    "Riverside", "Mill", "Spring", "Valley", "Franklin", "Cherry", "Walnut", "Broad", "Center",
    "Prospect", "Meadow", "Harbor", "Forest", "Bridge", "Grove"
)  # fmt: skip
_STREET_TYPES = (
    "Street", "Street", "Street", "Avenue", "Avenue", "Road", "Road", "Drive", "Lane", "Boulevard",
    "Court", "Place", "Way", "Terrace", "Circle", "Parkway"
)  # fmt: skip


def _value_address(variant: str, rng: random.Random) -> str:
    if variant == "zip":
        return _say_digit_string(_rand_digits(5, rng, first_nonzero=True), [5], rng)
    if rng.random() < 0.07:
        return f"P O Box {_say_digit_string(_rand_digits(rng.randint(3, 4), rng), [4], rng)}"
    number = rng.choice((rng.randint(1, 99), rng.randint(100, 999), rng.randint(1000, 9999)))
    ds = str(number)
    form = rng.randrange(6)
    if form in (0, 1):
        num_said = ds
    elif form == 2:
        num_said = _say_pairs(ds, rng, rng.choice(("oh", "zero")))
    elif form == 3:
        num_said = _say_digits(ds, rng, "oh")
    else:
        num_said = _words(number)
    if rng.random() < 0.12:
        n = rng.randint(1, 99)
        street = f"{_ordinal_numeral(n) if rng.random() < 0.5 else _ordinal_words(n)} Street"
        if rng.random() < 0.4:
            street = rng.choice(("West", "East", "North", "South")) + " " + street
    else:
        street = f"{rng.choice(_STREETS)} {rng.choice(_STREET_TYPES)}"
    said = f"{num_said} {street}"
    if rng.random() < 0.35:
        unit = rng.randint(1, 40)
        unit_said = str(unit) if rng.random() < 0.5 else _words(unit)
        said += rng.choice(
            (f", apartment {unit_said}", f", apt {unit}{rng.choice('ABCD')}",
             f", unit {unit_said}", f", suite {rng.randint(1, 9)}00", f" number {unit_said}",
             f", apartment {unit}{rng.choice('ABCD')}")
        )  # fmt: skip
    return said


_VALUE_MAKERS = {
    "ACCOUNT_NUMBER": _value_account,
    "PIN": _value_pin,
    "SSN": _value_ssn,
    "CARD_NUMBER": _value_card,
    "CARD_EXPIRY": _value_expiry,
    "CARD_CVV": _value_cvv,
    "PHONE_NUMBER": _value_phone,
    "CALL_DATETIME": _value_datetime,
    "CALL_DURATION": _value_duration,
    "BILL_AMOUNT": _value_amount,
    "ADDRESS": _value_address,
}


def make_value(label: str, rng: random.Random, variant: str = "") -> str:
    """A random spoken form of a random value for ``label`` (variants: last4, adj, zip)."""
    return _VALUE_MAKERS[label](variant, rng)


# --------------------------------------------------------------------------------------------
# Wording: templates
#
#   (a|b|)   choose one alternative (may be empty)
#   {LABEL} or {LABEL:variant}   a sensitive value, synthesized as its own piece
#   [one|1]  a HARMLESS number, synthesized as its own piece
#   {V}      in answers / read-backs: the value being asked about
# --------------------------------------------------------------------------------------------

_STATEMENTS: dict[str, tuple[tuple[str, str], ...]] = {
    "ACCOUNT_NUMBER": (
        ("C", "my account number is {ACCOUNT_NUMBER}"),
        ("C", "the account is {ACCOUNT_NUMBER}"),
        ("C", "(yeah, |)acct ending in {ACCOUNT_NUMBER:last4}"),
        ("C", "it's account {ACCOUNT_NUMBER}"),
        ("C", "I'm calling about account {ACCOUNT_NUMBER}(, I can't log in| and the charges|)"),
        ("C", "(hi|hello), yeah, account number {ACCOUNT_NUMBER}"),
        ("C", "{ACCOUNT_NUMBER} is my account number"),
        ("C", "the account ends in {ACCOUNT_NUMBER:last4}"),
        ("C", "(um, |)so it's {ACCOUNT_NUMBER} on the account"),
        ("C", "I have the bill right here, the account number says {ACCOUNT_NUMBER}"),
        ("C", "my customer number, (that's|it's) {ACCOUNT_NUMBER}"),
        ("C", "account {ACCOUNT_NUMBER}, (and the |)pin (is |){PIN}"),
        ("A", "I have account {ACCOUNT_NUMBER} pulled up(| now| here)"),
        ("A", "I'm looking at account number {ACCOUNT_NUMBER}"),
        ("A", "is this about the account ending in {ACCOUNT_NUMBER:last4}?"),
    ),
    "PIN": (
        ("C", "my pin's {PIN}"),
        ("C", "(the|my) passcode is {PIN}"),
        ("C", "the code is {PIN}"),
        ("C", "passcode, {PIN}"),
        ("C", "{PIN}, that's my pin"),
        ("C", "I set the pin to {PIN}(| last year| when I signed up)"),
        ("C", "(I think|I believe) the security pin is {PIN}"),
        ("C", "pin number {PIN}"),
        ("A", "I've reset your pin to {PIN}"),
        ("A", "your temporary passcode is {PIN}"),
    ),
    "SSN": (
        ("C", "my social is {SSN}"),
        ("C", "last four of my social (is|are) {SSN:last4}"),
        ("C", "social security number {SSN}"),
        ("C", "my S S N is {SSN}"),
        ("C", "{SSN}, that's my social"),
        ("C", "the social on the account should be {SSN}"),
        ("C", "it's {SSN:last4}, the last four"),
        ("A", "I have the last four of the social as {SSN:last4}"),
    ),
    "CARD_NUMBER": (
        ("C", "the card number is {CARD_NUMBER}"),
        ("C", "I'll pay with card {CARD_NUMBER}"),
        ("C", "it's a visa, {CARD_NUMBER}"),
        ("C", "(use|put it on) the card ending in {CARD_NUMBER:last4}"),
        ("C", "(okay|alright), the number on the card is {CARD_NUMBER}"),
        ("C", "my credit card is {CARD_NUMBER}"),
        ("C", "(mastercard|debit card), {CARD_NUMBER}"),
        ("C", "put it on {CARD_NUMBER}(| please)"),
        ("C", "the card is {CARD_NUMBER}, expires {CARD_EXPIRY}"),
        ("C", "{CARD_NUMBER}, expiration {CARD_EXPIRY}, and the code is {CARD_CVV}"),
        ("A", "I have the card ending in {CARD_NUMBER:last4} on file"),
        ("A", "do you want to use the (visa|card) ending {CARD_NUMBER:last4}?"),
    ),
    "CARD_EXPIRY": (
        ("C", "expires {CARD_EXPIRY}"),
        ("C", "the expiration (date |)is {CARD_EXPIRY}"),
        ("C", "it expires {CARD_EXPIRY}"),
        ("C", "expiry date {CARD_EXPIRY}"),
        ("C", "it's good through {CARD_EXPIRY}"),
        ("C", "valid thru {CARD_EXPIRY}"),
        ("C", "exp date, {CARD_EXPIRY}"),
        ("A", "and that card expires {CARD_EXPIRY}, correct?"),
    ),
    "CARD_CVV": (
        ("C", "(the |)security code on the back is {CARD_CVV}"),
        ("C", "the C V V is {CARD_CVV}"),
        ("C", "C V V {CARD_CVV}"),
        ("C", "the [three|3] digits on the back are {CARD_CVV}"),
        ("C", "the code on the back, {CARD_CVV}"),
        ("C", "security code {CARD_CVV}"),
        ("C", "(and |)the CVC is {CARD_CVV}"),
        ("C", "it's {CARD_CVV} on the back"),
    ),
    "PHONE_NUMBER": (
        ("C", "the number I called was {PHONE_NUMBER}"),
        ("C", "you can reach me at {PHONE_NUMBER}"),
        ("C", "my cell is {PHONE_NUMBER}"),
        ("C", "call me back on {PHONE_NUMBER}(| please| if we get cut off)"),
        ("C", "my number's {PHONE_NUMBER}"),
        ("C", "I keep getting calls from {PHONE_NUMBER}"),
        ("C", "I never called {PHONE_NUMBER}(, that's not me|)"),
        ("C", "the line on the account is {PHONE_NUMBER}"),
        ("C", "(the |)best callback number is {PHONE_NUMBER}"),
        ("C", "I dialed {PHONE_NUMBER} (twice|a few times|and it didn't go through)"),
        ("A", "I see an outgoing call to {PHONE_NUMBER}"),
        ("A", "there's a call from {PHONE_NUMBER} on your record"),
        ("A", "the number (on file|we have) is {PHONE_NUMBER}"),
        ("A", "you called {PHONE_NUMBER} {CALL_DATETIME}"),
    ),
    "CALL_DATETIME": (
        ("C", "I made a call {CALL_DATETIME}(| and got charged for it)"),
        ("C", "there's a charge for a call {CALL_DATETIME}"),
        ("C", "(it was|that was) {CALL_DATETIME}"),
        ("C", "I called (you guys|customer service|my sister) {CALL_DATETIME}"),
        ("C", "the call {CALL_DATETIME} (got dropped|never connected)"),
        ("C", "someone called me {CALL_DATETIME}"),
        ("A", "I see a call {CALL_DATETIME}"),
        ("A", "your last call was {CALL_DATETIME}"),
        ("A", "we show a call placed {CALL_DATETIME}"),
        ("A", "the record shows a call {CALL_DATETIME} to {PHONE_NUMBER}"),
    ),
    "CALL_DURATION": (
        ("C", "it lasted {CALL_DURATION}"),
        ("C", "the call lasted {CALL_DURATION}"),
        ("C", "I was on the phone for {CALL_DURATION}"),
        ("C", "it was a {CALL_DURATION:adj} call(| to my mom| overseas)"),
        ("C", "we talked for (like |about |){CALL_DURATION}"),
        ("C", "that call was only {CALL_DURATION}"),
        ("A", "the call lasted {CALL_DURATION}"),
        ("A", "it shows a duration of {CALL_DURATION}"),
        ("A", "that was a {CALL_DURATION:adj} call"),
        ("A", "I see a call {CALL_DATETIME} that lasted {CALL_DURATION}"),
    ),
    "BILL_AMOUNT": (
        ("C", "I was charged {BILL_AMOUNT}"),
        ("C", "my bill came to {BILL_AMOUNT}"),
        ("C", "there's a charge of {BILL_AMOUNT}(| I don't recognize)"),
        ("C", "why is my bill {BILL_AMOUNT} this month?"),
        ("C", "I (already |)paid {BILL_AMOUNT} (last week|on the first|already)"),
        ("C", "it's usually (around |about |){BILL_AMOUNT}"),
        ("C", "I want to pay {BILL_AMOUNT} today"),
        ("C", "I got charged {BILL_AMOUNT} for a {CALL_DURATION:adj} call {CALL_DATETIME}"),
        ("A", "your (balance|current balance) is {BILL_AMOUNT}"),
        ("A", "the total due is {BILL_AMOUNT}"),
        ("A", "I can credit you {BILL_AMOUNT}"),
        ("A", "you were charged {BILL_AMOUNT} for that call"),
        ("A", "the payment of {BILL_AMOUNT} (went through|is posted)"),
    ),
    "ADDRESS": (
        ("C", "I live at {ADDRESS}"),
        ("C", "ship it to {ADDRESS}"),
        ("C", "my address is {ADDRESS}"),
        ("C", "(send|mail) it to {ADDRESS}(| please)"),
        ("C", "the billing address is {ADDRESS}"),
        ("C", "it's {ADDRESS}"),
        ("C", "we moved to {ADDRESS}(| last month)"),
        ("C", "the service address is {ADDRESS}"),
        ("C", "{ADDRESS}, zip code {ADDRESS:zip}"),
        ("C", "I'm at {ADDRESS}, and my (cell|number) is {PHONE_NUMBER}"),
        ("A", "I have your address as {ADDRESS}"),
        ("A", "we'll send the new phone to {ADDRESS}"),
        ("A", "is {ADDRESS} still (your|the) address?"),
    ),
}

_ASKS: dict[str, tuple[tuple[str, str], ...]] = {
    "ACCOUNT_NUMBER": (
        ("can I get the account number(| please)?", ""),
        ("what's the account number?", ""),
        ("and your account number?", ""),
        ("could you read me the account number (on your bill|at the top of the bill)?", ""),
        ("which account is this regarding?", ""),
        ("I'll need your account number to pull that up", ""),
        ("what are the last [four|4] digits of the account?", "last4"),
    ),
    "PIN": (
        ("what's your [four|4] digit pin?", ""),
        ("could you give me your passcode?", ""),
        ("I'll need the security pin on the account", ""),
        ("can you verify the pin for me?", ""),
        ("and the passcode?", ""),
    ),
    "SSN": (
        ("can you verify the last [four] of your social?", "last4"),
        ("what's your social security number?", ""),
        ("to verify your identity, what's your social?", ""),
        ("could I get the last [four|4] digits of the social?", "last4"),
    ),
    "CARD_NUMBER": (
        ("what card would you like to use?", ""),
        ("go ahead with the card number when you're ready", ""),
        ("can I get the long number on the front of the card?", ""),
        ("what's the card number?", ""),
        ("which card, what are the last [four] digits?", "last4"),
    ),
    "CARD_EXPIRY": (
        ("and the expiration date?", ""),
        ("when does it expire?", ""),
        ("what's the expiry on the card?", ""),
        ("month and year of expiration please", ""),
    ),
    "CARD_CVV": (
        ("and the [three|3] digit security code on the back?", ""),
        ("what's the C V V?", ""),
        ("I'll need the security code(| as well)", ""),
        ("the code on the back of the card please", ""),
    ),
    "PHONE_NUMBER": (
        ("what's the best number to reach you?", ""),
        ("which number are you calling about?", ""),
        ("what number did you call?", ""),
        ("and the phone number on the account?", ""),
    ),
    "CALL_DATETIME": (
        ("when was the call?", ""),
        ("what date and time was that?", ""),
        ("do you remember when you made that call?", ""),
    ),
    "CALL_DURATION": (
        ("how long was the call?", ""),
        ("do you know how long it lasted?", ""),
        ("how long were you on the phone?", ""),
    ),
    "BILL_AMOUNT": (
        ("how much would you like to pay today?", ""),
        ("what amount were you charged?", ""),
        ("how much was the bill?", ""),
    ),
    "ADDRESS": (
        ("what's the service address?", ""),
        ("can you confirm the billing address?", ""),
        ("where should we ship it?", ""),
        ("what's the zip code on the account?", "zip"),
    ),
}

_ANSWERS = (
    "{V}",
    "{V}",
    "sure, it's {V}",
    "yeah, it's {V}",
    "it's {V}",
    "um, {V}",
    "okay, {V}",
    "that would be {V}",
    "let me see, {V}",
    "hang on. okay, {V}",
    "{V}, I think",
    "I believe it's {V}",
    "yes, {V}",
    "uh, it should be {V}",
    "{V}. did you get that?",
)
_READBACKS = (
    "so that's {V}(, correct|, is that right|)?",
    "I have {V}, is that correct?",
    "{V}, (got it|perfect|thank you)",
    "let me (repeat|read) that back, {V}",
    "okay, {V}",
    "just to confirm, {V}?",
)
_CONFIRMS = ("yes", "yep", "that's right", "correct", "uh huh, yes", "yes, that's it", "mm hmm")
_CORRECTIONS = ("(no|sorry, no|actually), it's {V}", "no, {V}", "wait, I mean {V}")

_OPENINGS: tuple[tuple[tuple[str, str], ...], ...] = (
    (
        ("A", "thank you for calling (customer care|support|the billing team|callvault wireless),"
              " (my name is|this is) (Sarah|Mike|Jordan|Priya|Tom|Ana),"
              " how can I help you(| today)?"),
        ("C", "(hi|hello|hey|yeah hi), I (have a question about my bill|think I was overcharged"
              "|need to update my payment info|can't make calls from my phone"
              "|want to check some calls on my account)"),
    ),
    (
        ("A", "(good morning|good afternoon|hi there), you've reached customer service,"
              " who am I speaking with?"),
        ("C", "hi, this is (Dana|Chris|Maria|Alex|Pat), I'm calling about my (bill|service|phone)"),
    ),
    (
        ("A", "thanks for holding, how may I help?"),
        ("C", "(yeah, |)so I have a problem with my (account|last bill|phone line)"),
    ),
)  # fmt: skip

_FILLERS: tuple[tuple[tuple[str, str], ...], ...] = (
    (("A", "(okay|alright|sure|no problem), let me (pull that up|take a look|check that)"),),
    (("A", "I'm sorry to hear that"), ("C", "(yeah|it's fine|thanks)")),
    (("C", "(yeah|yes|uh huh|right|okay)"),),
    (("C", "I (just|really) want to (get this sorted out|understand these charges"
           "|know why it happened)"),),
    (("A", "I understand, that's frustrating"),),
    (("C", "for some reason it won't connect"), ("A", "let's see what we can do about that")),
    (("C", "I'm going to need to talk to someone about it"),),
    (("A", "bear with me while the system loads"),),
    (("C", "can you hear me okay?"), ("A", "yes, I can hear you (fine|clearly)")),
    (("A", "I've made a note on the account"),),
    (("C", "to be honest I'm not sure, my wife usually handles it"),),
    (("A", "is there anything else I can help with?"), ("C", "yes, actually")),
    (("A", "the system is a little slow today, thank you for your patience"),),
    (("C", "that's too much for me to pay for a plan like this"),),
)  # fmt: skip

_HARMLESS_SCENES: tuple[tuple[tuple[str, str], ...], ...] = (
    (("A", "[one|1] moment please"),),
    (("A", "(just |okay, |)give me a [second]"),),
    (("A", "bear with me [one] second"),),
    (("C", "I have [two|2] questions(| about my bill)"),),
    (("A", "your satisfaction is our number [one] priority"),),
    (("A", "we (have|offer) [twenty four seven|24 7] support(| online| if you need anything)"),),
    (("C", "[first] of all, this is the [third] time I've called"),),
    (("A", "(to hear your balance|for billing), press [one|1]."
           " (for technical support|for anything else), press [two|2]."),),
    (("C", "I picked option [two|2] (but it hung up|in the menu)"),),
    (("C", "I had a [two|ten|twenty|2] minute wait (on hold|before someone answered)"),),
    (("C", "I've been a customer for (like |about |)[ten|fifteen|12] years"),),
    (("C", "we have [three|four|3] lines on the plan"),),
    (("A", "I'll need to ask you [two|three|2] (security|verification) questions"),),
    (("A", "it takes [three] to [five] business days"),),
    (("C", "[one] more thing"),),
    (("A", "I'll call you back in [five|ten|5] minutes if we get disconnected"),),
    (("C", "my [two] kids use the other phones"),),
    (("A", "step [one|1], turn the phone off and on again"),),
    (("A", "you're caller number [three] in the queue"),),
    (("C", "I'm on the [second] floor, the signal is bad"),),
)  # fmt: skip

_CLOSINGS: tuple[tuple[tuple[str, str], ...], ...] = (
    (
        ("A", "is there anything else I can help you with today?"),
        ("C", "(no|nope), that's (all|it), thanks"),
        ("A", "(thanks for calling|have a great day|take care), (bye|goodbye)"),
    ),
    (("C", "okay, thank you so much, bye"), ("A", "you're welcome, goodbye")),
)

_DTMF_PROMPTS = (
    "(please |)(enter|key in|type) your (pin|account number|zip code|card number)"
    " (on the keypad|using your phone's keypad|now)(, followed by the pound key|)"
)
_DTMF_THANKS = ("(thank you|thanks|got it)(, you're verified|, that went through|)",)

_DTMF_FREQS = {
    "1": (697, 1209), "2": (697, 1336), "3": (697, 1477),
    "4": (770, 1209), "5": (770, 1336), "6": (770, 1477),
    "7": (852, 1209), "8": (852, 1336), "9": (852, 1477),
    "*": (941, 1209), "0": (941, 1336), "#": (941, 1477),
}  # fmt: skip


@dataclass
class _Seg:
    text: str
    label: str | None  # None for context words


@dataclass
class _Turn:
    speaker: str  # "A" (agent) or "C" (caller)
    segs: list[_Seg]
    dtmf: str = ""  # non-empty: a DTMF burst instead of speech


_ALT_RE = re.compile(r"\(([^()]*)\)")
_TOKEN_RE = re.compile(r"\{([A-Z_]+)(?::([a-z0-9]+))?\}|\[([^\]]+)\]")
_LEADING_PUNCT = " ,;:.!-"


def _expand(template: str, rng: random.Random) -> str:
    while True:
        m = _ALT_RE.search(template)
        if m is None:
            return template
        choice = rng.choice(m.group(1).split("|"))
        template = template[: m.start()] + choice + template[m.end() :]


def _context(text: str) -> _Seg | None:
    text = text.strip().lstrip(_LEADING_PUNCT).rstrip(" ,;:-")
    if not any(ch.isalnum() for ch in text):
        return None
    return _Seg(text, None)


def _fill(template: str, rng: random.Random, values: dict[str, str]) -> list[_Seg]:
    """Turn a template into pieces; values (keyed 'LABEL:variant') are shared across calls."""
    text = _expand(template, rng)
    segs: list[_Seg] = []
    pos = 0
    for m in _TOKEN_RE.finditer(text):
        ctx = _context(text[pos : m.start()])
        if ctx is not None:
            segs.append(ctx)
        if m.group(1):
            label, variant = m.group(1), m.group(2) or ""
            key = f"{label}:{variant}"
            if key not in values:
                values[key] = make_value(label, rng, variant)
            segs.append(_Seg(values[key], label))
        else:
            segs.append(_Seg(rng.choice(m.group(3).split("|")), HARMLESS))
        pos = m.end()
    ctx = _context(text[pos:])
    if ctx is not None:
        segs.append(ctx)
    return segs


def _scripted(scene: Sequence[tuple[str, str]], rng: random.Random) -> list[_Turn]:
    values: dict[str, str] = {}
    return [_Turn(speaker, _fill(t, rng, values)) for speaker, t in scene]


def _label_scene(label: str, rng: random.Random, *, short: bool = False) -> list[_Turn]:
    """A short exchange containing at least one ``label`` item, in a random style."""
    values: dict[str, str] = {}
    mode = 0.0 if short else rng.random()
    if mode < 0.45 or label not in _ASKS:
        statements = _STATEMENTS[label]
        if short:  # one value, no extras
            statements = tuple(st for st in statements if st[1].count("{") == 1) or statements
        speaker, template = rng.choice(statements)
        turns = []
        if speaker == "C" and not short and rng.random() < 0.3:
            ask, _variant = rng.choice(_ASKS[label])
            turns.append(_Turn("A", _fill(ask, rng, {})))
        turns.append(_Turn(speaker, _fill(template, rng, values)))
        return turns
    ask, variant = rng.choice(_ASKS[label])
    placeholder = "{" + label + (":" + variant if variant else "") + "}"
    turns = [_Turn("A", _fill(ask, rng, values))]
    answer = rng.choice(_ANSWERS).replace("{V}", placeholder)
    turns.append(_Turn("C", _fill(answer, rng, values)))
    if mode > 0.7:
        readback = rng.choice(_READBACKS).replace("{V}", placeholder)
        turns.append(_Turn("A", _fill(readback, rng, values)))
        if rng.random() < 0.2:
            fresh: dict[str, str] = {}
            fix = rng.choice(_CORRECTIONS).replace("{V}", placeholder)
            turns.append(_Turn("C", _fill(fix, rng, fresh)))
            fixed = "(okay|my apologies), {V}".replace("{V}", placeholder)
            turns.append(_Turn("A", _fill(fixed, rng, fresh)))
        else:
            turns.append(_Turn("C", _fill(rng.choice(_CONFIRMS), rng, values)))
    return turns


def _dtmf_scene(rng: random.Random, *, short: bool = False) -> list[_Turn]:
    digits = "".join(rng.choice("0123456789*#") for _ in range(rng.randint(3, 8)))
    turns = [
        _Turn("A", _fill("(please |)enter your pin" if short else _DTMF_PROMPTS, rng, {})),
        _Turn("C", [], dtmf=digits),
    ]
    if not short:
        turns.append(_Turn("A", _fill(rng.choice(_DTMF_THANKS), rng, {})))
    return turns


# --------------------------------------------------------------------------------------------
# Synthesis
# --------------------------------------------------------------------------------------------


@functools.cache
def available_voices() -> tuple[str, ...]:
    """espeak-ng voice strings ('base' or 'base+variant') that exist on this machine."""
    listing = subprocess.run(
        ["espeak-ng", "--voices=en"], check=True, capture_output=True, text=True
    ).stdout
    langs = {line.split()[1] for line in listing.splitlines()[1:] if len(line.split()) > 1}
    version = subprocess.run(
        ["espeak-ng", "--version"], check=True, capture_output=True, text=True
    ).stdout
    m = re.search(r"Data at:\s*(\S+)", version)
    variant_dir = Path(m.group(1)) / "voices" / "!v" if m else None
    bases = [b for b in _BASE_VOICES if b in langs]
    variants = [
        v for v in _VARIANTS if not v or (variant_dir is not None and (variant_dir / v).is_file())
    ]
    if not bases:
        raise RuntimeError("espeak-ng has no English voices")
    return tuple(b + ("+" + v if v else "") for b in bases for v in variants)


@dataclass(frozen=True)
class _Speaker:
    voice: str
    speed: int
    pitch: int
    gain_db: float


def _random_speaker(rng: random.Random, avoid: str = "") -> _Speaker:
    voices = [v for v in available_voices() if v != avoid] or list(available_voices())
    return _Speaker(
        voice=rng.choice(voices),
        speed=rng.randint(135, 195),
        pitch=rng.randint(32, 68),
        gain_db=rng.uniform(-4.0, 4.0),
    )


def _trim(x: FloatArray, threshold: float = 0.01) -> FloatArray:
    """Drop leading/trailing silence (below 1 % of full scale, like sox `silence ... 1%`)."""
    loud = np.flatnonzero(np.abs(x) > threshold)
    if loud.size == 0:
        raise RuntimeError("espeak-ng produced no audible speech")
    return x[int(loud[0]) : int(loud[-1]) + 1]


SYNTHS = ("espeak-ng", "flite")
# flite's built-in English voices: two diphone voices and three statistical ones. The
# limited-domain awb_time (it only says times) is left out.
_FLITE_VOICES = ("slt", "rms", "awb", "kal16", "kal")


class _Synth:
    """Speaks one piece. espeak-ng is the corpus's own synthesizer; flite gives voices the
    detection was never tuned on (the same texts, timing and line, other speech)."""

    def __init__(self, workdir: Path, engine: str = "espeak-ng") -> None:
        if engine not in SYNTHS:
            raise ValueError(f"unknown synthesizer {engine!r}")
        self.workdir = workdir
        self.engine = engine
        self.count = 0

    def __call__(self, text: str, voice: str, speed: int, pitch: int) -> FloatArray:
        self.count += 1
        wav = self.workdir / f"piece{self.count:05d}.wav"
        if self.engine == "flite":
            # One espeak-ng voice string (one speaker of the call) is always one flite
            # voice; speed becomes a duration stretch; flite's pitch is its voice's own.
            fv = _FLITE_VOICES[zlib.crc32(voice.encode()) % len(_FLITE_VOICES)]
            cmd = ["flite", "-voice", fv, "--setf", f"duration_stretch={175 / speed:.3f}",
                   "-t", text, "-o", str(wav)]
        else:
            cmd = ["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(wav),
                   text]
        subprocess.run(cmd, check=True, capture_output=True)
        data, rate = sf.read(str(wav), dtype="float64")
        wav.unlink()
        x = np.asarray(data, dtype=np.float64)
        if rate != _ESPEAK_RATE:
            if self.engine == "espeak-ng":
                raise RuntimeError(f"unexpected espeak-ng sample rate {rate}")
            x = _resample(x, rate, _ESPEAK_RATE)
        return _trim(x)


def _sox(x: FloatArray, rate: int, to: int, effects: Sequence[str]) -> FloatArray:
    """(samples, channels) float audio through sox's ``effects``, from ``rate`` to ``to``."""
    n_ch = x.shape[1]
    raw = ["-t", "raw", "-e", "floating-point", "-b", "32", "-c", str(n_ch)]
    cmd = ["sox", "-V1", "-D", *raw, "-r", str(rate), "-", *raw, "-r", str(to), "-", *effects]
    data = np.ascontiguousarray(x, dtype=np.float32).tobytes()
    proc = subprocess.run(cmd, input=data, capture_output=True, check=True)
    return np.frombuffer(proc.stdout, dtype=np.float32).astype(np.float64).reshape(-1, n_ch)


def _resample(x: FloatArray, rate: int, to: int) -> FloatArray:
    """Mono ``x`` from ``rate`` to ``to`` with sox (its default, delay-compensated)."""
    return _sox(x[:, None], rate, to, ["rate", str(to)])[:, 0]


def _band_limit_resample(x: FloatArray, rate: int) -> FloatArray:
    """Telephone band (300-3400 Hz) and resampling to ``rate`` with sox (delay-compensated).

    ``x`` is (samples, channels) at the espeak-ng rate; the result has the same channels.
    """
    y = _sox(x, _ESPEAK_RATE, rate, ["sinc", "300-3400", "rate", "-v", str(rate)])
    n = round(x.shape[0] * rate / _ESPEAK_RATE)
    if y.shape[0] < n:
        y = np.concatenate([y, np.zeros((n - y.shape[0], x.shape[1]))])
    return y[:n]


def _noise(n: int, nprng: np.random.Generator, pink: bool) -> FloatArray:
    white = nprng.standard_normal(n)
    if not pink:
        return white
    spectrum = np.fft.rfft(white)
    freqs = np.arange(spectrum.size, dtype=np.float64)
    freqs[0] = 1.0
    shaped = np.fft.irfft(spectrum / np.sqrt(freqs), n)
    return np.asarray(shaped / (np.std(shaped) + 1e-12), dtype=np.float64)


def _dtmf_tone(digit: str, n: int, rate: int, level_db: float, twist_db: float) -> FloatArray:
    low, high = _DTMF_FREQS[digit]
    t = np.arange(n, dtype=np.float64) / rate
    rms = 10.0 ** (level_db / 20.0)
    ratio = 10.0 ** (twist_db / 20.0)  # high-group amplitude relative to low group
    a_low = rms * math.sqrt(2.0 / (1.0 + ratio**2))
    tone = a_low * np.sin(2 * np.pi * low * t) + a_low * ratio * np.sin(2 * np.pi * high * t)
    ramp = min(n // 4, int(0.004 * rate))
    if ramp > 0:
        env = np.ones(n)
        win = 0.5 - 0.5 * np.cos(np.pi * np.arange(ramp) / ramp)
        env[:ramp] = win
        env[n - ramp :] = win[::-1]
        tone *= env
    return np.asarray(tone, dtype=np.float64)


@dataclass
class _Placed:
    channel: int
    pos: int  # sample at the espeak rate
    audio: FloatArray
    gain: float
    label: str | None
    text: str


@dataclass
class _Burst:
    channel: int
    start: float  # seconds
    digits: str
    tone_s: list[float]
    gap_s: list[float]
    level_db: float
    twist_db: float


def build_clip(
    out_dir: Path,
    rng: random.Random,
    *,
    name: str = "clip",
    sample_rate: int = 8000,
    channels: int = 1,
    encoding: str = "ulaw",
    with_dtmf: bool = False,
    required_labels: Sequence[str] = (),
    min_seconds: float = 8.0,
    max_seconds: float = 40.0,
    synth: str = "espeak-ng",
) -> Clip:
    """Synthesize one call into ``out_dir/name.wav`` and return what it contains."""
    if channels not in (1, 2):
        raise ValueError(f"channels must be 1 or 2, not {channels}")
    subtype = SUBTYPES[encoding]
    target = rng.uniform(min_seconds, max_seconds)
    agent = _random_speaker(rng)
    caller = _random_speaker(rng, avoid=agent.voice)
    if channels == 1:
        chan = {"A": 0, "C": 0}
    else:
        agent_ch = rng.randrange(2)
        chan = {"A": agent_ch, "C": 1 - agent_ch}
    speakers = {"A": agent, "C": caller}
    er = _ESPEAK_RATE
    placed: list[_Placed] = []
    bursts: list[_Burst] = []
    cursor = last_end = 0
    tail = int(rng.uniform(0.3, 1.0) * er)

    with tempfile.TemporaryDirectory(prefix="corpus-") as tmp:
        speak = _Synth(Path(tmp), synth)

        def render(turns: list[_Turn]) -> int:
            pos = cursor
            for k, turn in enumerate(turns):
                if k:
                    pos += int(rng.uniform(0.4, 1.5) * er)
                ch = chan[turn.speaker]
                if turn.dtmf:
                    tone_s = [rng.uniform(0.06, 0.12) for _ in turn.dtmf]
                    gap_s = [rng.uniform(0.06, 0.12) for _ in turn.dtmf[1:]]
                    bursts.append(_Burst(
                        ch, pos / er, turn.dtmf, tone_s, gap_s,
                        level_db=rng.uniform(-20.0, -10.0), twist_db=rng.uniform(-3.0, 3.0),
                    ))  # fmt: skip
                    pos += int((sum(tone_s) + sum(gap_s)) * er) + 1
                    continue
                spk = speakers[turn.speaker]
                speed = min(200, max(130, spk.speed + rng.randint(-12, 12)))
                pitch = min(70, max(30, spk.pitch + rng.randint(-6, 6)))
                gain = 10.0 ** ((spk.gain_db + rng.uniform(-1.5, 1.5)) / 20.0)
                for j, seg in enumerate(turn.segs):
                    if j:
                        pos += int((0.04 + 0.21 * rng.random() ** 1.5) * er)
                    s_speed = speed
                    if seg.label not in (None, HARMLESS) and rng.random() < 0.6:
                        s_speed = max(130, speed - rng.randint(0, 25))  # slower for numbers
                    audio = speak(seg.text, spk.voice, s_speed, pitch)
                    placed.append(_Placed(ch, pos, audio, gain, seg.label, seg.text))
                    pos += len(audio)
            return pos

        budget = max_seconds * er - tail  # speech must end before this sample
        lead = int(rng.uniform(0.2, 1.0) * er)
        # Plan the call; in the rare case that a required scene found no room, plan it again.
        for _plan in range(8):
            placed.clear()
            bursts.clear()
            dropped = False
            cursor = last_end = lead
            queue = list(required_labels)
            rng.shuffle(queue)
            queue.insert(0, HARMLESS)  # every call has a harmless number (popped last)
            dtmf_pending = with_dtmf
            if len(queue) + dtmf_pending <= 4 and rng.random() < 0.6:
                last_end = render(_scripted(rng.choice(_OPENINGS), rng))
                cursor = last_end + int(rng.uniform(0.4, 1.5) * er)
            optional = True  # may still add scenes that are not required
            force = False  # the next scene must be a required one
            while True:
                elapsed = (last_end + tail) / er
                if (elapsed >= target or not optional) and not queue and not dtmf_pending:
                    break
                label = ""
                urgent = force or not optional
                if queue and (urgent or rng.random() < 0.55 or elapsed > 0.25 * target):
                    label = queue.pop()
                elif dtmf_pending and (urgent or rng.random() < 0.3 or elapsed > 0.4 * target):
                    label = "DTMF"
                    dtmf_pending = False
                force = False
                # time kept free for the required scenes still to come
                reserve = int((6.0 * len(queue) + (8.0 if dtmf_pending else 0.0)) * er)
                # little room left per required scene: go straight to the short forms
                tight = (budget - cursor) / er < 11.0 * (len(queue) + dtmf_pending + 1)
                # A scene that would run past max_seconds is taken back; a required one is
                # re-drawn (shorter after a few tries) until it fits.
                for attempt in range(16):
                    short = tight or attempt >= 3
                    if label == "DTMF":
                        turns = _dtmf_scene(rng, short=short)
                    elif label == HARMLESS:
                        turns = _scripted(rng.choice(_HARMLESS_SCENES), rng)
                    elif label:
                        turns = _label_scene(label, rng, short=short)
                    else:
                        r = rng.random()
                        if r < 0.75:
                            turns = _label_scene(rng.choice(LABELS), rng)
                        elif r < 0.9:
                            turns = _scripted(rng.choice(_HARMLESS_SCENES), rng)
                        else:
                            turns = _scripted(rng.choice(_FILLERS), rng)
                    n_placed, n_bursts = len(placed), len(bursts)
                    end = render(turns)
                    if end <= budget - reserve * (1.0, 0.5, 0.0)[min(attempt // 5, 2)]:
                        break
                    del placed[n_placed:]
                    del bursts[n_bursts:]
                    end = -1
                    if not label:
                        break
                if end < 0:  # did not fit
                    if label:  # a required scene is dropped: plan the call again
                        dropped, optional = True, False
                    elif queue or dtmf_pending:  # make room: required scenes first
                        force = True
                    else:  # the call is full
                        optional = False
                    continue
                last_end = end
                cursor = end + int(rng.uniform(0.4, 1.5) * er)
                said = {seg.label for turn in turns for seg in turn.segs}
                queue = [q for q in queue if q not in said]  # already covered by this scene
            if rng.random() < 0.5:
                n_placed = len(placed)
                end = render(_scripted(rng.choice(_CLOSINGS), rng))
                if end <= budget:
                    last_end = end
                else:
                    del placed[n_placed:]
            if not dropped:
                break

    total22 = last_end + tail
    n_out = round(total22 * sample_rate / er)
    nprng = np.random.default_rng(rng.getrandbits(63))
    out = np.zeros((n_out, channels), dtype=np.float64)
    items: list[list[Item]] = [[] for _ in range(channels)]
    speech: list[list[tuple[float, float]]] = [[] for _ in range(channels)]
    dtmf: list[list[tuple[float, float, str]]] = [[] for _ in range(channels)]
    for p in placed:
        t0, t1 = p.pos / er, (p.pos + len(p.audio)) / er
        speech[p.channel].append((t0, t1))
        if p.label is not None:
            items[p.channel].append(Item(p.label, t0, t1, p.text))

    for ch in range(channels):
        # speech and line noise both go through the telephone band
        buf = np.zeros((total22, 2), dtype=np.float64)
        for p in placed:
            if p.channel == ch:
                buf[p.pos : p.pos + len(p.audio), 0] += p.gain * p.audio
        buf[:, 1] = _noise(total22, nprng, pink=rng.random() < 0.5)
        band = _band_limit_resample(buf, sample_rate)
        y, noise = band[:, 0], band[:, 1]
        voiced = np.zeros(n_out, dtype=bool)
        for t0, t1 in speech[ch]:
            voiced[int(t0 * sample_rate) : math.ceil(t1 * sample_rate)] = True
        speech_rms = float(np.sqrt(np.mean(y[voiced] ** 2))) if voiced.any() else 0.1
        level = 10.0 ** (rng.uniform(-30.0, -16.0) / 20.0)  # random gain
        y = y * (level / max(speech_rms, 1e-9))
        peak = float(np.max(np.abs(y))) if y.size else 0.0
        if peak > 0.9:
            y *= 0.9 / peak
        snr_db = rng.uniform(20.0, 35.0)
        speech_rms = float(np.sqrt(np.mean(y[voiced] ** 2))) if voiced.any() else level
        noise_rms = float(np.sqrt(np.mean(noise**2))) or 1.0
        y += noise * (speech_rms / 10.0 ** (snr_db / 20.0) / noise_rms)
        out[:, ch] = y

    for b in bursts:
        t = b.start
        for k, digit in enumerate(b.digits):
            i0 = round(t * sample_rate)
            n = round(b.tone_s[k] * sample_rate)
            n = min(n, n_out - i0)
            out[i0 : i0 + n, b.channel] += _dtmf_tone(digit, n, sample_rate, b.level_db, b.twist_db)
            dtmf[b.channel].append((i0 / sample_rate, (i0 + n) / sample_rate, digit))
            t += b.tone_s[k] + (b.gap_s[k] if k < len(b.gap_s) else 0.0)

    np.clip(out, -0.999, 0.999, out=out)
    path = out_dir / f"{name}.wav"
    sf.write(str(path), out, sample_rate, subtype=subtype, format="WAV")
    return Clip(
        path=path,
        sample_rate=sample_rate,
        channels=channels,
        channel_items=tuple(tuple(sorted(c, key=lambda i: i.start)) for c in items),
        speech=tuple(tuple(sorted(c)) for c in speech),
        dtmf=tuple(tuple(sorted(c)) for c in dtmf),
    )


def build_corpus(
    out_dir: Path,
    *,
    seed: int,
    n_clips: int,
    encodings: Sequence[str] = ("ulaw", "pcm16", "alaw"),
    rates: Sequence[int] = (8000, 16000),
    stereo_fraction: float = 0.25,
    dtmf_fraction: float = 0.3,
    synth: str = "espeak-ng",
) -> list[Clip]:
    """Build ``n_clips`` calls in ``out_dir``; the same seed always gives the same corpus.

    Every label in LABELS is required somewhere in the corpus (spread round-robin over the
    clips, at most 4 per clip, so from 3 clips on every label appears), encodings and rates are
    cycled so that all of them appear, and the stereo and DTMF clips are
    ``round(n_clips * fraction)`` clips picked at random. ``synth`` picks the speech:
    ``"espeak-ng"`` (the corpus's own) or ``"flite"`` (voices detection was not tuned on).
    """
    if n_clips <= 0:
        return []
    for enc in encodings:
        if enc not in SUBTYPES:
            raise ValueError(f"unknown encoding {enc!r}")
    out_dir.mkdir(parents=True, exist_ok=True)
    available_voices()  # probe once, before the worker threads
    master = random.Random(f"callvault-corpus:{seed}")
    encs, rts, labels = list(encodings), list(rates), list(LABELS)
    master.shuffle(encs)
    master.shuffle(rts)
    master.shuffle(labels)
    stereo = set(master.sample(range(n_clips), round(n_clips * stereo_fraction)))
    with_dtmf = set(master.sample(range(n_clips), round(n_clips * dtmf_fraction)))

    def one(i: int) -> Clip:
        rate, enc, channels = rts[i % len(rts)], encs[i % len(encs)], 2 if i in stereo else 1
        return build_clip(
            out_dir,
            random.Random(f"callvault-corpus:{seed}:{i}"),
            name=f"call{i:03d}_{rate // 1000}k_{'stereo' if channels == 2 else 'mono'}_{enc}",
            sample_rate=rate,
            channels=channels,
            encoding=enc,
            with_dtmf=i in with_dtmf,
            required_labels=[lab for j, lab in enumerate(labels) if j % n_clips == i][:4],
            synth=synth,
        )

    workers = max(1, min(n_clips, os.cpu_count() or 1, 8))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, range(n_clips)))


# --------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------


def _frame_rms(x: FloatArray, frame: int) -> FloatArray:
    n = len(x) // frame
    frames = x[: n * frame].reshape(n, frame)
    return np.asarray(np.sqrt(np.mean(frames * frames, axis=1)), dtype=np.float64)


def _speech_threshold(rms_in: FloatArray) -> float:
    """Frames above this RMS count as voiced: 8 dB over the channel's noise floor."""
    positive = rms_in[rms_in > 0]
    floor = float(np.percentile(positive, 10)) if positive.size else 0.0
    return max(2.5 * floor, 1e-4)


def _span_fraction(
    start: float, end: float, centers: FloatArray, voiced: npt.NDArray[np.bool_],
    muted: npt.NDArray[np.bool_],
) -> float:  # fmt: skip
    inside = (centers >= start) & (centers < end)
    if not inside.any():
        nearest = int(np.argmin(np.abs(centers - (start + end) / 2))) if centers.size else -1
        return float(muted[nearest]) if nearest >= 0 else 0.0
    sel = inside & voiced
    if not sel.any():
        sel = inside
    return float(np.mean(muted[sel]))


def score(clip: Clip, redacted: Path) -> Score:
    """Measure, from the audio only, how ``redacted`` muted the content of ``clip``."""
    original, rate_in = sf.read(str(clip.path), dtype="float64", always_2d=True)
    output, rate_out = sf.read(str(redacted), dtype="float64", always_2d=True)
    assert rate_in == rate_out == clip.sample_rate, (rate_in, rate_out, clip.sample_rate)
    assert original.shape == output.shape, (original.shape, output.shape)
    assert original.shape[1] == clip.channels
    frame = round(clip.sample_rate * FRAME_SECONDS)
    totals = [0, 0, 0, 0, 0, 0]
    clean = over = 0.0
    missed: list[Item] = []
    for ch in range(clip.channels):
        x = np.asarray(original[:, ch], dtype=np.float64)
        y = np.asarray(output[:, ch], dtype=np.float64)
        rms_in = _frame_rms(x, frame)
        rms_diff = _frame_rms(y - x, frame)
        muted = rms_diff > MUTED_RATIO * rms_in
        voiced = rms_in > _speech_threshold(rms_in)
        starts = np.arange(rms_in.size, dtype=np.float64) * FRAME_SECONDS
        ends = starts + FRAME_SECONDS
        centers = starts + FRAME_SECONDS / 2
        excluded = np.zeros(rms_in.size, dtype=bool)
        for item in clip.channel_items[ch]:
            fraction = _span_fraction(item.start, item.end, centers, voiced, muted)
            if item.label == HARMLESS:
                totals[4] += 1
                totals[5] += fraction < HARMLESS_KEPT_FRACTION
                continue
            excluded |= (starts < item.end) & (ends > item.start)
            totals[0] += 1
            if fraction >= ITEM_MUTED_FRACTION:
                totals[1] += 1
            else:
                missed.append(item)
        for start, end, _digit in clip.dtmf[ch]:
            excluded |= (starts < end) & (ends > start)
            totals[2] += 1
            totals[3] += _span_fraction(start, end, centers, voiced, muted) >= ITEM_MUTED_FRACTION
        in_speech = np.zeros(rms_in.size, dtype=bool)
        for start, end in clip.speech[ch]:
            in_speech |= (centers >= start) & (centers < end)
        clean_frames = in_speech & ~excluded & voiced
        clean += float(np.count_nonzero(clean_frames)) * FRAME_SECONDS
        over += float(np.count_nonzero(clean_frames & muted)) * FRAME_SECONDS
    return Score(
        items_total=totals[0],
        items_muted=totals[1],
        dtmf_total=totals[2],
        dtmf_muted=totals[3],
        harmless_total=totals[4],
        harmless_kept=totals[5],
        clean_speech_seconds=clean,
        over_redacted_seconds=over,
        missed=tuple(missed),
    )


def merge_scores(scores: Iterable[Score]) -> Score:
    """Sum several scores (e.g. one per clip) into one."""
    merged = Score(0, 0, 0, 0, 0, 0, 0.0, 0.0, ())
    for s in scores:
        merged = Score(
            items_total=merged.items_total + s.items_total,
            items_muted=merged.items_muted + s.items_muted,
            dtmf_total=merged.dtmf_total + s.dtmf_total,
            dtmf_muted=merged.dtmf_muted + s.dtmf_muted,
            harmless_total=merged.harmless_total + s.harmless_total,
            harmless_kept=merged.harmless_kept + s.harmless_kept,
            clean_speech_seconds=merged.clean_speech_seconds + s.clean_speech_seconds,
            over_redacted_seconds=merged.over_redacted_seconds + s.over_redacted_seconds,
            missed=merged.missed + s.missed,
        )
    return merged
