"""CPNI detection: which stretches of a call must not be heard, and what each one is.

Reads the recognised words of every channel (merged in time order, so an agent's question
on one channel labels the caller's answer on the other) and returns `Span`s. A span is
labelled by the context around a run of digits: what was said before it ("my PIN is"),
what follows it ("dollars", "Street", "minutes") and its own shape (nine digits grouped
3-2-4). The policy fails closed: an unlabelled run of three or more digits is still
redacted as DIGITS, and a sensitive cue whose value the recogniser did not hear as digits
redacts the speech after it. Small numbers with no sensitive cue ("press one", "a two
minute wait") stay.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from difflib import SequenceMatcher
from typing import NamedTuple

from redaction.numbers import NumberRun, find_runs, normalise, unit_suffix
from redaction.spans import Span
from redaction.transcribe import Word

LABELS: dict[str, str] = {
    "ACCOUNT_NUMBER": "account numbers",
    "PIN": "PINs, passcodes and passwords",
    "SSN": "social security numbers, full or last four",
    "CARD_NUMBER": "payment card numbers",
    "CARD_EXPIRY": "payment card expiry dates",
    "CARD_CVV": "payment card security codes",
    "PHONE_NUMBER": "telephone numbers called, calling or of record",
    "CALL_DATETIME": "dates and times of calls",
    "CALL_DURATION": "durations of calls",
    "BILL_AMOUNT": "bill, charge and payment amounts",
    "ADDRESS": "street addresses and postcodes",
    "DIGITS": "any other run of three or more digits (fail closed)",
    "DTMF": "in-band keypad tones",
}

_MONTHS = ("january|february|march|april|may|june|july|august|september|october|november|"
           "december|jan|feb|mar|apr|jun|jul|aug|sep|sept|oct|nov|dec")
_WEEKDAYS = "monday|tuesday|wednesday|thursday|friday|saturday|sunday"
_DATE_WORD = re.compile(rf"(?:{_MONTHS}|{_WEEKDAYS}|yesterday|today|tonight|noon|midnight)")
_ORDINAL_WORDS = {"first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth",
                  "ninth", "tenth", "eleventh", "twelfth", "thirteenth", "fourteenth",
                  "fifteenth", "sixteenth", "seventeenth", "eighteenth", "nineteenth",
                  "twentieth", "thirtieth"}
# Context cues before a number, one pattern per label; matched on normalised words.
_BEFORE: dict[str, str] = {
    "ACCOUNT_NUMBER": r"account|acct|accounts|customer (?:number|id)|member (?:number|id)",
    "PIN": r"pin|pins|pin's|passcode|pass code|password|passphrase|secret|access code|"
           r"verification code|code is|code's|the code|security answer|maiden name|"
           r"memorable word",
    "SSN": r"social|ssn|s s n|security number|tax id|socials",
    "CARD_NUMBER": r"card|visa|mastercard|master card|amex|american express|discover|"
                   r"credit|debit|card's",
    "CARD_EXPIRY": r"expir\w*|exp|valid (?:thru|through|until)|good (?:thru|through)",
    "CARD_CVV": r"cvv|cvc|cv2|csc|security code|three digit code|on the back",
    "PHONE_NUMBER": r"phone|telephone|cell|mobile|landline|called|calling|dialed|dialled|dial|"
                    r"reach me|call me|callback|call back|text me|number i called|fax|"
                    r"my number(?: is|'s)?|the number(?: is|'s)?|numbers",
    "CALL_DATETIME": rf"{_MONTHS}|{_WEEKDAYS}|yesterday|today|tonight|last night|date|"
                     r"time|on the",
    "BILL_AMOUNT": r"bill|billed|bills|charge|charged|charges|owe|owed|balance|payment|pay|"
                   r"paid|fee|fees|cost|costs|amount|total|price|refund|invoice|due|"
                   r"statement|came to|comes to",
    "ADDRESS": r"live at|living at|live on|living on|address|ship (?:it )?to|send (?:it )?to|"
               r"mail (?:it )?to|moved to|located at|i'm at|i am at|we're at|we are at|"
               r"apartment|apt|suite|unit|zip|postal|postcode|box",
}
_BEFORE_RE = {k: re.compile(rf"(?<![\w'])(?:{v})(?![\w'])") for k, v in _BEFORE.items()}
# Ties between cues equally close to the number go to the earlier label here.
_PRIORITY = ("CARD_CVV", "CARD_EXPIRY", "SSN", "PIN", "CARD_NUMBER", "ACCOUNT_NUMBER",
             "BILL_AMOUNT", "ADDRESS", "PHONE_NUMBER", "CALL_DATETIME")
_MONEY_AFTER = {"dollars", "dollar", "bucks", "cents", "cent", "usd", "pounds", "euros"}
_STREET = {"street", "st", "avenue", "ave", "road", "rd", "lane", "ln", "drive", "dr",
           "boulevard", "blvd", "court", "ct", "way", "place", "pl", "terrace", "circle",
           "parkway", "highway", "hwy", "close", "crescent", "square", "alley", "route"}
_COMPASS = {"n", "s", "e", "w", "ne", "nw", "se", "sw", "north", "south", "east", "west",
            "northeast", "northwest", "southeast", "southwest"}
_UNIT_WORDS = {"apartment", "apt", "unit", "suite", "number", "flat", "no", "#", "floor"}
_UNIT_NUMBER_WORDS = {"one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
                      "ten", "a", "b", "c", "d"}
_TIME_AFTER = {"am", "pm", "a.m", "p.m", "oclock", "o'clock", "a", "p", "in"}
_DURATION_UNITS = {"minute", "minutes", "min", "mins", "hour", "hours", "hr", "hrs",
                   "second", "seconds", "sec", "secs"}
_HARMLESS_BEFORE = {"press", "option", "options", "select", "push", "say", "choose", "step",
                    "last", "first", "next", "number", "top", "of", "than", "chapter"}
_HARMLESS_AFTER = {"moment", "moments", "second", "sec", "minute", "question", "questions",
                   "thing", "things", "more", "time", "times", "of", "digit", "digits",
                   "day", "days", "week", "weeks", "month", "months", "year", "years",
                   "priority", "person", "people", "way", "ways", "or", "percent", "item",
                   "items", "option", "options"}
_WAIT_WORDS = {"wait", "waiting", "waited", "hold", "queue", "delay"}
# Time someone needs or will take, said by the same speaker just before the number: "give
# me 2 seconds", "I'll need about 5 minutes", "it'll take 10 minutes". Only contractions:
# "will" and "going" also come in call detail ("it kept going for 40 minutes").
_INTENT = {"need", "needs", "take", "takes", "give", "i'll", "we'll", "you'll", "it'll",
           "gonna"}
_NOT_A_DURATION = {"in", "within", "every", "next", "another", "few"}
# An ordinal that qualifies one of these is a rank, not a day of the month: "the third
# time", "on the second floor", "my first call".
_RANKED = {"time", "times", "floor", "call", "calls", "attempt", "try", "place", "page",
           "line", "notice", "letter", "level", "person", "one", "ones", "thing",
           "question", "step", "option", "choice", "item", "visit", "month", "week", "year",
           "day", "half", "quarter", "grade", "generation", "digit", "digits", "number",
           "reminder", "agent", "transfer", "issue", "problem"}
# Cues that announce a secret: if no number follows them, the speech after them is redacted
# anyway (the recogniser turned the digits into words).
_STRONG_CUE = re.compile(
    r"(?<![\w'])(?:(?:account|acct) (?:number|no|num|is|ending)|pin|passcode|pass code|"
    r"password|social|ssn|security number|card number|credit card|debit card|cvv|cvc|"
    r"security code|zip code|postal code|postcode|post code|area code|code|expir\w*|phone number|"
    r"number i called|reach me at|call me at|callback number|my number is|the number is|"
    r"live at|live on|living at|living on|address is|security answer|security question|"
    r"secret question|secret answer|maiden name|memorable word|ship (?:it )?to|"
    r"read (?:that|it|them|this) back|let me repeat|"
    r"repeat (?:that|it) back|how much|what (?:date|time|day)|what's the (?:date|time)|"
    r"what is the (?:date|time)|which day|when did|when was|how long)"
    r"(?![\w'])")
_CUE_LABEL = (("account", "ACCOUNT_NUMBER"), ("acct", "ACCOUNT_NUMBER"), ("pin", "PIN"),
              ("pass", "PIN"), ("social", "SSN"), ("ssn", "SSN"), ("security number", "SSN"),
              ("cvv", "CARD_CVV"), ("cvc", "CARD_CVV"), ("security code", "CARD_CVV"),
              ("zip", "ADDRESS"), ("postal", "ADDRESS"), ("post", "ADDRESS"),
              ("area", "PHONE_NUMBER"),
              ("code", "PIN"), ("read", "DIGITS"), ("repeat", "DIGITS"),
              ("how much", "BILL_AMOUNT"), ("how long", "CALL_DURATION"),
              ("date", "CALL_DATETIME"), ("time", "CALL_DATETIME"), ("day", "CALL_DATETIME"),
              ("when", "CALL_DATETIME"),
              ("expir", "CARD_EXPIRY"), ("card", "CARD_NUMBER"), ("live", "ADDRESS"),
              ("address", "ADDRESS"), ("ship", "ADDRESS"), ("answer", "PIN"),
              ("question", "PIN"), ("maiden", "PIN"), ("memorable", "PIN"))
_MIN_DIGITS = {"PIN": 4, "SSN": 4, "CARD_NUMBER": 12, "CARD_CVV": 3, "ACCOUNT_NUMBER": 5,
               "PHONE_NUMBER": 7, "CARD_EXPIRY": 3}
_SECONDS_PER_DIGIT = 0.4


class _Answer(NamedTuple):
    """The first number said after a cue word: when it starts, its label, its digits."""

    start: float
    label: str
    digits: int


@dataclass(frozen=True, slots=True)
class DetectPolicy:
    """Tunable parts of detection; the defaults are what the corpus tests measured."""

    context_tokens: int = 8
    context_seconds: float = 8.0
    cue_window_seconds: float = 3.0
    cue_gap: float = 0.5
    # Growth over look-alike words (`_grow`). Replayed over two corpora's words, 0.3 and
    # 1 s kept every item that 0.5 and 2 s kept and muted 3-12 % less clean speech; 0.2,
    # or no growth at all, lost items.
    unsure_below: float = 0.3
    grow_gap: float = 0.5
    grow_seconds: float = 1.0
    # A run of 3+ digits stamped shorter than this per digit is widened evenly to it:
    # Whisper stamps a number too short ("8094" at 13.92-14.60 s for 13.12-14.99).
    # Replayed over four corpora's words: 0.25 found 3 more of 117 flite items and 1 more
    # of 121 espeak-ng ones for +0.1 to +0.7 points of over-redaction; 0.3-0.4 found no
    # more and muted more; from 4 digits instead of 3, one item fewer.
    seconds_per_digit: float = 0.25
    min_digits_stretched: int = 3
    custom_terms: dict[str, tuple[str, ...]] = field(default_factory=dict)


def detect(words: Sequence[Word], policy: DetectPolicy | None = None,
           muted: Sequence[Span] = ()) -> list[Span]:
    """Find the sensitive spans in `words` (any channels, any order).

    `muted` lists audio already silenced (the verifier passes it): a cue followed by a muted
    stretch is satisfied, so the words that follow the silence are not redacted again.
    """
    policy = policy or DetectPolicy()
    ws = sorted(words, key=lambda w: (w.start, w.channel))
    toks = [_cue_word(normalise(w.text)) for w in ws]
    lanes: dict[int, list[int]] = {}  # each channel's word indices, in time order
    for i, w in enumerate(ws):
        lanes.setdefault(w.channel, []).append(i)
    spans: list[Span] = []
    answers: dict[int, _Answer] = {}     # cue word -> the first number said after it
    last: dict[int, tuple[str, int]] = {}      # each channel's last sensitive run: label, word
    for run in _runs_per_channel(ws, toks):
        label = _label(run, ws, toks, policy)
        if label is None:
            label = _continued(ws, toks, run, last.get(ws[run.first].channel))
        if label is None:
            continue
        start, end = ws[run.first].start, ws[run.last].end
        missing = _MIN_DIGITS.get(label, 0) - run.length
        if missing > 0:
            end = _extend_for_missing(ws, run.last, end + missing * _SECONDS_PER_DIGIT)
        if label == "ADDRESS":
            end = max(end, _street_end(ws, toks, run.last))
        if label == "CALL_DATETIME":
            end = max(end, _time_tail_end(ws, toks, run.last))
        if label in ("CALL_DATETIME", "CARD_EXPIRY"):
            start = min(start, _date_head_start(ws, toks, run.first))
        if label == "CALL_DURATION":
            start = min(start, _duration_head_start(ws, toks, run.first))
        if label in _LETTERED:
            start = min(start, _letter_prefix_start(ws, run.first))
        start, end = _stretch_to_length(ws, run, start, end, policy)
        start, end = _grow(ws, toks, lanes, run, start, end, policy)
        spans.append(Span(ws[run.first].channel, start, end, label))
        last[ws[run.first].channel] = (label, run.last)
        for i in _cues_before(ws, toks, run.first, policy):
            answers.setdefault(i, _Answer(ws[run.first].start, label, run.length))
    spans.extend(_uncovered_cues(ws, toks, answers, muted, policy))
    spans.extend(_custom_terms(ws, toks, policy))
    spans.extend(_worded_durations(ws, toks, lanes))
    spans.extend(_worded_times(ws, toks, lanes))
    spans.extend(_repeats(ws, toks, lanes, spans))
    return sorted(spans, key=lambda s: (s.channel, s.start))


# Words that join the pieces of one value said with a break: "4 4 1 and then 9 2".
_JOINERS = {"and", "then", "uh", "um", "er", "dash", "hyphen", "sorry", "next"}


def _continued(ws: Sequence[Word], toks: Sequence[str], run: NumberRun,
               prev: tuple[str, int] | None) -> str | None:
    """The label of the sensitive run (label, last word) this one continues, if only
    joining words and at most 1.5 s lie between their words."""
    if prev is None or ws[run.first].start - ws[prev[1]].end > 1.5:
        return None
    channel = ws[run.first].channel
    if any(ws[k].channel == channel and toks[k] not in _JOINERS
           for k in range(prev[1] + 1, run.first)):
        return None
    return prev[0]


def _stretch_to_length(ws: Sequence[Word], run: NumberRun, start: float, end: float,
                       policy: DetectPolicy) -> tuple[float, float]:
    """Widen a run stamped too short for its digits evenly on both sides."""
    stamped = ws[run.last].end - ws[run.first].start
    need = run.length * policy.seconds_per_digit
    if run.length < policy.min_digits_stretched or stamped >= need:
        return start, end
    half = (need - stamped) / 2
    return max(0.0, min(start, ws[run.first].start - half)), max(end, ws[run.last].end + half)


def _grow(ws: Sequence[Word], toks: Sequence[str], lanes: dict[int, list[int]], run: NumberRun,
          start: float, end: float, policy: DetectPolicy) -> tuple[float, float]:
    """Widen a sensitive run over the words the recogniser was unsure of around it.

    When a model mis-hears part of a digit string it writes look-alike words with low
    confidence ("havenated 0 .83"): those belong to the value. Growth stops at a confident
    word, a pause, or `policy.grow_seconds`.
    """
    same = lanes[ws[run.first].channel]
    pos_first, pos_last = bisect_left(same, run.first), bisect_left(same, run.last)
    edge = ws[run.last].end
    for i in same[pos_last + 1:]:
        w = ws[i]
        if (w.start - edge > policy.grow_gap or w.end - ws[run.last].end > policy.grow_seconds
                or w.probability >= policy.unsure_below):
            break
        edge = w.end
    end = max(end, edge)
    edge = ws[run.first].start
    for i in reversed(same[:pos_first]):
        w = ws[i]
        if (edge - w.end > policy.grow_gap or ws[run.first].start - w.start > policy.grow_seconds
                or w.probability >= policy.unsure_below or _STRONG_CUE.search(toks[i])):
            break
        edge = w.start
    return min(start, edge), end


def _runs_per_channel(ws: Sequence[Word], toks: Sequence[str]) -> Iterable[NumberRun]:
    """Number runs within each channel, split where the speaker paused for over 1.5 s."""
    for channel in sorted({w.channel for w in ws}):
        idx = [i for i, w in enumerate(ws) if w.channel == channel]
        pieces: list[list[int]] = [[]]
        for i in idx:
            if pieces[-1] and ws[i].start - ws[pieces[-1][-1]].end > 1.5:
                pieces.append([])
            pieces[-1].append(i)
        for piece in pieces:
            for run in find_runs([toks[i] for i in piece]):
                yield NumberRun(piece[run.first], piece[run.last], run.digits, run.money,
                                run.clock)


def _before(ws: Sequence[Word], toks: Sequence[str], first: int,
            policy: DetectPolicy) -> list[int]:
    """Indices of the context words said shortly before token `first`, on any channel."""
    t0 = ws[first].start
    out = [i for i in range(max(0, first - 3 * policy.context_tokens), first)
           if t0 - ws[i].end <= policy.context_seconds and toks[i]]
    return out[-policy.context_tokens:]


def _after(ws: Sequence[Word], toks: Sequence[str], last: int, n: int = 4) -> list[str]:
    ch = ws[last].channel
    out: list[str] = []
    for i in range(last + 1, len(ws)):
        if ws[i].channel == ch:
            out.append(toks[i])
            if len(out) == n:
                break
    return out


def _closest_cue(ctx: str) -> str | None:
    best: tuple[int, int] | None = None
    label: str | None = None
    for name, rx in _BEFORE_RE.items():
        for m in rx.finditer(ctx):
            key = (m.end(), -_PRIORITY.index(name))
            if best is None or key > best:
                best, label = key, name
    return label


def _label(run: NumberRun, ws: Sequence[Word], toks: Sequence[str],
           policy: DetectPolicy) -> str | None:
    before_idx = _before(ws, toks, run.first, policy)
    before = [toks[i] for i in before_idx]
    after = _after(ws, toks, run.last)
    glued = unit_suffix(toks[run.last])
    if glued is not None:
        after = [glued, *after]
    near = " ".join(before[-4:])
    ctx = " ".join(before)
    if run.money or (after and after[0] in _MONEY_AFTER):
        return "BILL_AMOUNT"
    if any(a in _STREET for a in after[:3]):
        return "ADDRESS"
    if run.clock or (after and after[0] in _TIME_AFTER and after[0] != "in"
                     and run.length <= 4):
        return "CALL_DATETIME"
    told = [*([glued] if glued else []), *_after_in_sentence(ws, toks, run.last, 6)]
    if run.length <= 3 and told[:1] in (["percent"], ["%"]):
        return None          # "100 percent": a share
    if (run.length == 3 and run.last - run.first == 2 and toks[run.first + 1] == "to"
            and len({w.channel for w in ws[run.first:run.last + 1]}) == 1
            and told and (told[0] in _HARMLESS_AFTER or told[0] == "business")):
        return None          # "3 to 5 business days": a range, not three digits
    if after[:3] in (["and", "a", "half"], ["and", "a", "quarter"]):
        after = after[3:]    # "one and a half hours"
    if (run.first == run.last and toks[run.first] in ("one", "1") and after
            and after[0] in ("sec", "second", "moment")):
        return None          # "one sec": a request to wait
    if after and after[0] in _DURATION_UNITS:
        # Durations said on a call are call detail unless they are about waiting, are
        # yet to come ("I'll be 5 minutes") or are a time zone ("3 hours behind"). What
        # follows counts only within the sentence: "seven minutes. Wait, I mean ..."
        own = [toks[k] for k in _sentence_head(ws, run.first, limit=3)]
        if (any(b in _WAIT_WORDS for b in before[-4:]) or any(a in _WAIT_WORDS for a in told)
                or (before and before[-1] in _NOT_A_DURATION)
                or any(b in _INTENT for b in own) or told[1:2] in (["behind"], ["ahead"])):
            return None
        return "CALL_DURATION"
    cue = _closest_cue(ctx)
    near_cue = _closest_cue(near)
    dated = _looks_like_date(run, toks, before, after)
    if _digits_247(run, toks):
        return None
    if run.length <= 2:
        if (after and after[0] in _RANKED and _is_ordinal(toks[run.last])
                and not _phrase_ends(ws, run.last)):
            return None
        if run.first == run.last and _is_ordinal(toks[run.first]):
            head = _sentence_head(ws, run.first, limit=1)
            if head and toks[head[0]] in ("a", "an"):
                return None   # "give me a second", "a third of it": a unit or a share
        if dated:
            return "CARD_EXPIRY" if near_cue == "CARD_EXPIRY" else "CALL_DATETIME"
        if (before and before[-1] in _HARMLESS_BEFORE) or (after and after[0] in _HARMLESS_AFTER):
            return None
        return near_cue
    if cue is not None and cue != "CALL_DATETIME":
        return cue
    if cue == "CALL_DATETIME" or dated:
        return "CALL_DATETIME"
    return _label_by_shape(run)


def _after_in_sentence(ws: Sequence[Word], toks: Sequence[str], last: int, n: int) -> list[str]:
    """Up to `n` words said after `last` by its speaker in the same sentence."""
    out: list[str] = []
    if ws[last].text.rstrip()[-1:] in (".", "?", "!"):
        return out
    for k in range(last + 1, len(ws)):
        if ws[k].channel != ws[last].channel:
            continue
        out.append(toks[k])
        if len(out) == n or ws[k].text.rstrip()[-1:] in (".", "?", "!"):
            break
    return out


def _looks_like_date(run: NumberRun, toks: Sequence[str], before: Sequence[str],
                     after: Sequence[str]) -> bool:
    """A month or weekday beside the number, "the 16th", or "at" a clock-like number."""
    if any(_DATE_WORD.fullmatch(t) for t in [*before[-2:], *after[:2]]):
        return True
    if after[:3] in _PART_OF_DAY:       # "the 14th in the afternoon", "at six at night"
        return True
    if _is_ordinal(toks[run.last]) and before and before[-1] == "the":
        return True
    if len(before) >= 2 and before[-1] in _CLOCK_LINKS and before[-2] in _CLOCK_PARTS:
        return True                     # "quarter past nine", "half past 3"
    return bool(before) and before[-1] == "at" and 1 <= run.length <= 4 and not run.money


_PART_OF_DAY = [["in", "the", p] for p in ("morning", "afternoon", "evening", "night")] + [
    ["at", "night"], ["this", "morning"], ["last", "night"]]


# Values that may start with letters the recogniser writes as a capitalised word: "my
# customer ID is CX 5590 221", "the account number is AC 4471".
_LETTERED = {"ACCOUNT_NUMBER", "PIN", "ADDRESS", "DIGITS"}


def _letter_prefix_start(ws: Sequence[Word], first: int) -> float:
    """Start of one to three capital letters said right before a run, as part of it."""
    prev = next((k for k in range(first - 1, -1, -1) if ws[k].channel == ws[first].channel),
                None)
    if prev is None or ws[first].start - ws[prev].end > 0.3:
        return ws[first].start
    text = ws[prev].text.strip().rstrip("-")
    if text.isalpha() and text.isupper() and len(text) <= 3 and text not in ("I", "OK"):
        return ws[prev].start
    return ws[first].start


# Words that may stand between a month or weekday and the number of its date or time:
# "Tuesday night around 9", "March the 3rd", "yesterday at 3:15".
_DATE_LINKS = {"at", "around", "about", "on", "the", "of", "in", "night", "morning",
               "afternoon", "evening", "early", "late", "last", "this", "next", "past"}


_CLOCK_LINKS = {"past", "to", "after", "til", "till"}
_CLOCK_PARTS = {"quarter", "half", "five", "ten", "twenty", "twenty-five"}


def _date_head_start(ws: Sequence[Word], toks: Sequence[str], first: int) -> float:
    """Start of the month, weekday or day word said just before a date or time ("March
    3rd", "last Tuesday night around 9"): it belongs to the value."""
    start = ws[first].start
    head = _sentence_head(ws, first, limit=5)
    for k in reversed(head):
        if _DATE_WORD.fullmatch(toks[k]):
            start = ws[k].start
        elif toks[k] not in _DATE_LINKS:
            break
    if len(head) >= 2 and toks[head[-1]] in _CLOCK_LINKS and toks[head[-2]] in _CLOCK_PARTS:
        start = min(start, ws[head[-2]].start)     # "quarter past nine", "ten past 4"
    lead = [k for k in head if ws[k].start < start]
    if lead and start < ws[first].start and toks[lead[-1]] in ("last", "this", "next", "past"):
        start = ws[lead[-1]].start
    return start


def _time_tail_end(ws: Sequence[Word], toks: Sequence[str], last: int) -> float:
    """End of "in the afternoon" / "p m" / "last Monday" / "of November" said right after
    a date or time."""
    ch = ws[last].channel
    idx = [i for i in range(last + 1, min(len(ws), last + 8)) if ws[i].channel == ch][:4]
    nxt = [toks[i] for i in idx]
    end = ws[last].end
    for n in (3, 2):
        if nxt[:n] in _PART_OF_DAY:
            return ws[idx[n - 1]].end
    if nxt[:1] == ["of"] and len(nxt) > 1 and _DATE_WORD.fullmatch(nxt[1]):
        return ws[idx[1]].end
    for k, t in enumerate(nxt[:3]):
        if t in ("am", "pm", "a", "p", "m", "a.m", "p.m") or _DATE_WORD.fullmatch(t):
            end = ws[idx[k]].end
        elif t not in ("earlier", "later", "this", "last", "on"):   # "earlier today"
            break
    return end


def _is_ordinal(tok: str) -> bool:
    return bool(re.search(r"\d(?:st|nd|rd|th)$", tok)) or tok in _ORDINAL_WORDS


def _phrase_ends(ws: Sequence[Word], i: int) -> bool:
    """Word `i` ends a phrase: punctuation, or a pause before its speaker's next word."""
    if ws[i].text.rstrip()[-1:] in (".", ",", "?", "!", ";", ":"):
        return True
    nxt = next((w for w in ws[i + 1:] if w.channel == ws[i].channel), None)
    return nxt is None or nxt.start - ws[i].end > 0.3


def _digits_247(run: NumberRun, toks: Sequence[str]) -> bool:
    """"twenty four seven" / "24/7" means always open, not a number to hide."""
    text = " ".join(toks[run.first:run.last + 1])
    return text in ("twenty four seven", "twenty-four seven", "24/7", "24 7", "24-7")


def _label_by_shape(run: NumberRun) -> str:
    n = run.length
    if n == 9:
        return "SSN"
    if 13 <= n <= 19:
        return "CARD_NUMBER"
    if n in (7, 10, 11):
        return "PHONE_NUMBER"
    return "DIGITS"


def _extend_for_missing(ws: Sequence[Word], last: int, until: float) -> float:
    """End of the words that follow a too-short run on its channel, up to time `until`."""
    ch, end = ws[last].channel, ws[last].end
    for w in ws[last + 1:]:
        if w.channel != ch:
            continue
        if w.start > until:
            break
        end = max(end, w.end)
    return max(end, min(until, end + 1.0))


def _street_end(ws: Sequence[Word], toks: Sequence[str], last: int) -> float:
    """End of the street name after a house number, with any flat or unit number."""
    ch = ws[last].channel
    idx = [i for i in range(last + 1, min(len(ws), last + 12)) if ws[i].channel == ch]
    end = ws[last].end
    suffix_at = next((n for n, i in enumerate(idx[:4]) if toks[i] in _STREET), None)
    if suffix_at is None:
        # No suffix heard: take the next words up to 1.5 s as the street name.
        for i in idx[:3]:
            if ws[i].start - end > 0.6 or ws[i].start > ws[last].end + 1.5:
                break
            end = ws[i].end
        return end
    end = ws[idx[suffix_at]].end
    rest = idx[suffix_at + 1:suffix_at + 4]
    if rest and toks[rest[0]] in _COMPASS:     # "Massachusetts Ave NW"
        end = ws[rest[0]].end
        rest = rest[1:]
    if rest and toks[rest[0]] in _UNIT_WORDS:
        for i in rest[1:]:
            if not any(c.isdigit() for c in toks[i]) and toks[i] not in _UNIT_NUMBER_WORDS:
                break
            end = ws[i].end
    return end


def _cues_before(ws: Sequence[Word], toks: Sequence[str], first: int,
                 policy: DetectPolicy) -> list[int]:
    return [i for i in _before(ws, toks, first, policy)
            if _cue_ending_at(toks, i) is not None]


# Cue words the recogniser mis-hears on poor audio ("the exploration date"): a word this
# close to one of them (similarity >= 0.82, same first letter) is read as it.
_FUZZY_CUES = ("account", "expiration", "expiry", "expires", "security", "social",
               "passcode", "password", "verification")


def _cue_word(tok: str) -> str:
    # Not memoised: a cache would keep a call's words (values among them) in memory
    # for the life of the worker.
    if len(tok) < 5 or not tok.isalpha():
        return tok
    for cue in _FUZZY_CUES:
        if tok[0] == cue[0] and not tok.startswith(cue) and \
                SequenceMatcher(None, tok, cue).ratio() >= 0.82:
            return cue
    return tok


def _cue_ending_at(toks: Sequence[str], i: int) -> re.Match[str] | None:
    """The strong cue whose last word is token `i` ("read that back" ends at "back")."""
    text = " ".join(toks[max(0, i - 3):i + 1])
    tail = len(text) - len(toks[i])
    found = [m for m in _STRONG_CUE.finditer(text) if m.end() > tail]
    return found[-1] if found else None


def _uncovered_cues(ws: Sequence[Word], toks: Sequence[str], answers: dict[int, _Answer],
                    muted: Sequence[Span], policy: DetectPolicy) -> list[Span]:
    """Redact the answer that follows a secret's cue.

    It applies only when no number was heard after the cue (the recogniser turned the
    digits into words); for a question, a number inside the question itself ("what's the
    time of the call?" heard as "the time one mark?") does not count, unless it is of the
    cue's kind, has three digits or more and comes within a second of the cue ("is this
    about the account ending in 2006?"). In a statement
    ("my PIN is ...") the answer is the rest of the cue's sentence, up to a pause
    (`cue_gap`) and at most `cue_window_seconds`. In a question, a request or a bare
    name of the value ("the code on the back of the card, please"), or when the sentence
    ends at the cue, the answer is the next phrase said after the sentence: the other
    party's if they speak first, and longer for long values (a card number).
    """
    out: list[Span] = []
    for i in range(len(ws)):
        m = _cue_ending_at(toks, i)
        if m is None:
            continue
        t_cue = ws[i].end
        if any(s.start <= t_cue + policy.cue_window_seconds and s.end >= t_cue for s in muted):
            continue  # the answer was already muted
        cue = m.group(0)
        label = next((lab for key, lab in _CUE_LABEL if key in cue), "PHONE_NUMBER")
        rest = _sentence_rest(ws, i, policy)
        head = _sentence_head(ws, i)
        sentence = " ".join(toks[k] for k in [*head, i, *rest])
        ends_asking = ws[rest[-1] if rest else i].text.rstrip().endswith("?")
        # "my PIN is ...", "my address is ..." (the cue's own last word may be the
        # verb), "let me repeat, <value>"
        verb = _stating_verb(toks, i, rest)
        stated = bool(rest) and (toks[rest[0]] in _COPULA or verb is not None
                                 or label == "DIGITS")
        after = ws[rest[-1]].end if rest else t_cue
        asking = ends_asking or bool(_ASK.search(sentence))
        answer = answers.get(i)
        if answer is not None and stated and not asking:
            # The number that followed is the value, or its end: words said between
            # the verb and it are its start ("the password is sunflower 1985").
            gap = [k for k in rest if (verb is None or k > verb)
                   and ws[k].start < answer.start - 0.01 and toks[k] not in _FILLER]
            if gap:
                out.append(Span(ws[i].channel, ws[gap[0]].start, ws[gap[-1]].end, label))
            continue
        own = answer is not None and _same_kind(answer.label, label)
        if answer is not None and (
                stated or answer.start >= after - 0.05 or (own and not asking)
                or (own and answer.digits >= 3 and answer.start - t_cue <= 1.0)):
            # The number that followed is the value: said after the sentence; or, when it
            # was taken for the cue's own kind of value, in a sentence that asks nothing
            # ("expiring date March of 25.") or, 3+ digits, right after the cue even in a
            # question ("the account ending in 2006, or?"). A number of another kind
            # ("what's the PIN for account 55123?") does not answer the cue.
            if label == "PIN" and asking and not stated:
                out.extend(_reply_before_number(ws, toks, i, after, answer.start, policy))
            continue
        if stated and not asking:
            out.append(Span(ws[i].channel, t_cue, ws[rest[-1]].end, label))
            if verb is None or verb == i or toks[rest[0]] in _COPULA:
                continue
            # A verb a few words on may only mention the value ("the passcode on the
            # account is needed to proceed"): the reply is muted as well.
        reply = _reply(ws, i, after, _ANSWER_SECONDS.get(label, policy.cue_window_seconds),
                       policy)
        if reply is None:
            out.append(Span(ws[i].channel, t_cue, t_cue + policy.cue_gap * 3, label))
        else:
            out.append(Span(reply[0], reply[1], reply[2], label))
    return out


# Words that make the sentence around a cue a question or a request: the value comes in
# the reply, not after the cue word.
_ASK = re.compile(r"(?<![\w'])(?:please|go ahead|ready|can (?:i|you|we)|could (?:i|you)|how|"
                  r"may i|would you|what|what's|whats|which|give me|read me|tell me|"
                  r"need|verify|confirm|have your|get your)(?![\w'])")
# A cue followed by one of these states its value ("my PIN is ..."); otherwise the cue
# names what is asked for ("the security code on the back of the card") and the value is
# in the reply.
_COPULA = {"is", "are", "was", "were", "be", "it's", "its", "would", "will", "should",
           "reads", "says", "ends", "ending", "starts", "of", "number"}
# Verbs a cue can end in ("address is", "my number is"): such a cue states its value.
# Not all of `_COPULA`: a cue ending in "number" ("the card number on file, please?")
# may still ask for it.
_CUE_VERBS = {"is", "are", "was", "were"}
# How long a reply can run, by label: a card number said in groups takes seconds.
_ANSWER_SECONDS = {"CARD_NUMBER": 8.0, "ACCOUNT_NUMBER": 5.0, "SSN": 5.0,
                   "PHONE_NUMBER": 5.0, "ADDRESS": 5.0}


_DATES = {"CARD_EXPIRY", "CALL_DATETIME"}


def _same_kind(heard: str, cued: str) -> bool:
    """A number labelled `heard` can be the value a cue for `cued` asks for."""
    return cued in (heard, "DIGITS") or {heard, cued} <= _DATES


def _stating_verb(toks: Sequence[str], i: int, rest: Sequence[int]) -> int | None:
    """Index of the verb by which the cue ending at `i` states its value: the cue's own
    last word ("my address is"), or one of the next few words ("the password on the
    account is ..."). None when the cue only names the value ("the code on the back of
    the card, please")."""
    if toks[i] in _CUE_VERBS or toks[i].endswith("'s") or toks[i] in ("at", "on", "to"):
        return i            # "my address is", "reach me at", "ship it to"
    return next((k for k in rest[:5] if toks[k] in _CUE_VERBS or toks[k] in ("it's", "its")),
                None)


def _reply_before_number(ws: Sequence[Word], toks: Sequence[str], i: int, after: float,
                         number: float, policy: DetectPolicy) -> list[Span]:
    """The words of a secret's reply said before the number that ended it: "could I get
    the password?" - "blue sky 42"."""
    reply = _reply(ws, i, after, policy.cue_window_seconds, policy)
    if reply is None:
        return []
    channel, start, end = reply
    gap: list[Word] = []
    for k in range(i + 1, len(ws)):       # words are in time order
        if ws[k].start >= min(end, number - 0.01):
            break
        if ws[k].channel == channel and ws[k].start >= start and toks[k] not in _FILLER:
            gap.append(ws[k])
    return [Span(channel, gap[0].start, gap[-1].end, "PIN")] if gap else []


def _sentence_rest(ws: Sequence[Word], i: int, policy: DetectPolicy) -> list[int]:
    """Indices of the words after `i` in its sentence: same speaker, up to terminal
    punctuation or a pause over `cue_gap`, within `cue_window_seconds`."""
    if ws[i].text.rstrip()[-1:] in (".", "?", "!"):
        return []
    out: list[int] = []
    edge = ws[i].end
    for k in range(i + 1, len(ws)):
        w = ws[k]
        if w.channel != ws[i].channel:
            continue
        if w.start - edge > policy.cue_gap or w.end - ws[i].end > policy.cue_window_seconds:
            break
        out.append(k)
        edge = w.end
        if w.text.rstrip()[-1:] in (".", "?", "!"):
            break
    return out


def _sentence_head(ws: Sequence[Word], i: int, limit: int = 12) -> list[int]:
    """Indices of the words before `i` in its sentence (same speaker, no pause)."""
    out: list[int] = []
    edge = ws[i].start
    for k in range(i - 1, -1, -1):
        w = ws[k]
        if w.channel != ws[i].channel:
            continue
        if edge - w.end > 1.0 or w.text.rstrip()[-1:] in (".", "?", "!") or len(out) >= limit:
            break
        out.insert(0, k)
        edge = w.start
    return out


def _reply(ws: Sequence[Word], i: int, after: float, length: float,
           policy: DetectPolicy) -> tuple[int, float, float] | None:
    """(channel, start, end) of the first phrase said after time `after`, by whoever
    speaks first within `cue_window_seconds`, at most `length` seconds long."""
    k = i + 1
    while k < len(ws) and ws[k].start < after - 0.05:
        k += 1
    if k == len(ws) or ws[k].start - after > policy.cue_window_seconds:
        return None
    channel, start, end = ws[k].channel, ws[k].start, ws[k].end
    for w in ws[k + 1:]:
        if w.start > start + length:
            break                       # words are in time order: nothing later fits
        if w.channel != channel:
            continue
        if w.start - end > policy.cue_gap or w.end - start > length:
            break
        end = w.end
    return channel, start, end


_FILLER = {"okay", "ok", "yes", "yeah", "so", "and", "sure", "um", "uh", "it's", "its",
           "that's", "thats", "it", "is", "the", "that", "right", "oh", "well", "alright"}


def _repeats(ws: Sequence[Word], toks: Sequence[str], lanes: dict[int, list[int]],
             spans: Sequence[Span]) -> list[Span]:
    """Read-backs: the same words said again elsewhere in the call, by either party.

    Agents read values back ("let me confirm: ...") and callers repeat them. When a
    recogniser mis-hears a value it tends to mis-hear its repetition the same way, so
    the words of a redacted stretch are redacted wherever they recur, with its label.
    Only distinctive stretches count: two words or more, and three or more unless one
    holds a digit.
    """
    content = {ch: [k for k in lane if toks[k]] for ch, lane in lanes.items()}
    mids = {ch: [(ws[k].start + ws[k].end) / 2 for k in c] for ch, c in content.items()}
    pairs: dict[tuple[str, str], list[tuple[int, int]]] = {}   # two words -> where said
    for ch, c in content.items():
        for pos in range(len(c) - 1):
            pairs.setdefault((toks[c[pos]], toks[c[pos + 1]]), []).append((ch, pos))

    def inside(sp: Span) -> list[int]:
        c, m = content.get(sp.channel, []), mids.get(sp.channel, [])
        return c[bisect_left(m, sp.start):bisect_right(m, sp.end)]

    muted = {k for sp in spans for k in inside(sp)}
    out: list[Span] = []
    for sp in spans:
        if sp.source != "asr":
            continue
        sig = [toks[k] for k in inside(sp)]
        while sig and sig[0] in _FILLER:
            sig.pop(0)
        while sig and sig[-1] in _FILLER:
            sig.pop()
        digits = any(c.isdigit() for t in sig for c in t)
        if len(sig) < 2 or (len(sig) < 3 and not digits):
            continue
        for ch, pos in pairs.get((sig[0], sig[1]), ()):
            seq = content[ch][pos:pos + len(sig)]
            if len(seq) < len(sig) or [toks[k] for k in seq] != sig:
                continue
            if all(k in muted for k in seq):
                continue
            out.append(Span(ch, ws[seq[0]].start, ws[seq[-1]].end, sp.label))
    return out


_CALL_LENGTH_CUE = {"lasted", "last", "lasting", "duration", "call", "calls", "talked",
                    "talk", "spoke", "phone", "line", "long", "length", "connected"}
_WORDED_AMOUNT = {"a", "an", "half", "quarter"}


def _duration_head_start(ws: Sequence[Word], toks: Sequence[str], first: int) -> float:
    """Start of "an hour and" said before "20 minutes": the larger unit of one length."""
    head = _sentence_head(ws, first, limit=3)
    if (len(head) == 3 and toks[head[2]] == "and" and toks[head[1]] in ("hour", "hours")
            and toks[head[0]] in _WORDED_AMOUNT | {"one"}):
        return ws[head[0]].start
    return ws[first].start


def _worded_durations(ws: Sequence[Word], toks: Sequence[str],
                      lanes: dict[int, list[int]]) -> list[Span]:
    """Call lengths said with no digit at all: "it lasted about an hour", "the call was
    half an hour", "we talked for an hour and a half". Only after a word about the call's
    length, and never about waiting ("I waited half an hour on hold")."""
    out: list[Span] = []
    for same in lanes.values():
        for pos, i in enumerate(same):
            if toks[i] not in ("hour", "hours", "minute", "minutes") or pos == 0:
                continue
            first = pos
            while first > 0 and toks[same[first - 1]] in _WORDED_AMOUNT and pos - first < 3:
                first -= 1
            if first == pos:
                continue                   # "two hours" is a number run: detect() has it
            before = [toks[k] for k in same[max(0, first - 6):first]]
            after = [toks[k] for k in same[pos + 1:pos + 4]]
            if (not any(b in _CALL_LENGTH_CUE for b in before)
                    or any(t in _WAIT_WORDS for t in [*before[-4:], *after])
                    or (before and before[-1] in _NOT_A_DURATION)):
                continue
            last = pos + 3 if after[:3] in (["and", "a", "half"], ["and", "a", "quarter"]) \
                else pos
            last = min(last, len(same) - 1)
            out.append(Span(ws[i].channel, ws[same[first]].start, ws[same[last]].end,
                            "CALL_DURATION"))
    return out


def _worded_times(ws: Sequence[Word], toks: Sequence[str],
                  lanes: dict[int, list[int]]) -> list[Span]:
    """Times said with no digit: "the call was at noon", "around midnight"."""
    return [Span(ws[i].channel, ws[i].start, ws[i].end, "CALL_DATETIME")
            for same in lanes.values() for pos, i in enumerate(same)
            if toks[i] in ("noon", "midnight") and pos > 0
            and toks[same[pos - 1]] in ("at", "around", "about", "after", "before", "by", "past")]


def _custom_terms(ws: Sequence[Word], toks: Sequence[str], policy: DetectPolicy) -> list[Span]:
    out: list[Span] = []
    for label, phrases in policy.custom_terms.items():
        for phrase in phrases:
            target = [normalise(p) for p in phrase.split()]
            n = len(target)
            for i in range(len(toks) - n + 1):
                if toks[i:i + n] == target and len({ws[k].channel for k in
                                                    range(i, i + n)}) == 1:
                    out.append(Span(ws[i].channel, ws[i].start, ws[i + n - 1].end, label,
                                    "custom"))
    return out
