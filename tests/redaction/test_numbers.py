"""The number normaliser: spoken and written digits in every form become digit strings."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from num2words import num2words

from redaction.numbers import find_runs, normalise, words_to_digits

_DIGIT_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def _tokens(text: str) -> list[str]:
    return [t for t in (normalise(w) for w in text.replace(",", " ").split()) if t]


def _runs(text: str) -> list[str]:
    toks = _tokens(text)
    return [r.digits for r in find_runs(toks)]


@pytest.mark.parametrize(
    ("text", "digits"),
    [
        ("four five six seven", ["4567"]),
        ("forty five sixty seven", ["4567"]),
        ("one hundred and six", ["106"]),
        ("double five two oh", ["5520"]),
        ("triple seven one", ["7771"]),
        ("oh nine twenty seven", ["0927"]),
        ("123-45-6789.", ["123456789"]),
        ("$84.20", ["8420"]),
        ("456, 78912", ["45678912"]),
        ("4, 5, 6, 7, 8, 9, 1, 2,", ["45678912"]),
        ("5 to 3 oh", ["5230"]),
        ("twenty twenty seven", ["2027"]),
        ("one thousand four hundred twenty", ["1420"]),
        ("the 14th", ["14"]),
        ("March third", ["3"]),
        ("10:30", ["1030"]),
    ],
)
def test_known_forms(text: str, digits: list[str]) -> None:
    """Each common way of saying or writing a number spells the right digits."""
    assert _runs(text) == digits


@pytest.mark.parametrize("text", ["456m8i12", "M8I12", "4s6b1"])
def test_misheard_hybrids_count_as_digits(text: str) -> None:
    """Letter-digit hybrids the recogniser writes for digits are runs of that length."""
    runs = find_runs(_tokens(text))
    assert len(runs) == 1 and runs[0].length == len(text)


@pytest.mark.parametrize(
    "text",
    ["oh, okay", "I want to go for it", "thank you so much", "won the game", "o"],
)
def test_words_alone_are_not_numbers(text: str) -> None:
    """Homophones and 'oh' count only beside real numbers, never on their own."""
    assert _runs(text) == []


def test_homophone_only_between_numbers() -> None:
    """'press 1 for billing' keeps 'for' as a word; '5 for 3' reads it as a digit."""
    assert _runs("press 1 for billing") == ["1"]
    assert _runs("5 for 3") == ["543"]


def test_money_and_clock_flags() -> None:
    """Currency and clock notation are flagged for the labeller."""
    toks = _tokens("it was $12.99 at 4:15")
    runs = find_runs(toks)
    assert [r.money for r in runs] == [True, False]
    assert [r.clock for r in runs] == [False, True]


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=999_999))
def test_cardinal_words_round_trip(n: int) -> None:
    """Any cardinal as num2words writes it ('one thousand, four hundred and twenty')."""
    assert words_to_digits(_tokens(num2words(n))) == str(n)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 9), min_size=1, max_size=19), st.booleans())
def test_digit_by_digit_round_trip(digits: list[int], oh_for_zero: bool) -> None:
    """A string read digit by digit, zero as 'oh' or 'zero', is one run of those digits."""
    words = ["oh" if d == 0 and oh_for_zero else _DIGIT_WORDS[d] for d in digits]
    expected = "".join(map(str, digits))
    if words[0] == "oh" and len(words) == 1:
        assert _runs(" ".join(words)) == []
    else:
        assert _runs(" ".join(words)) == [expected]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 9), min_size=2, max_size=12))
def test_double_and_triple(digits: list[int]) -> None:
    """Runs of equal digits said as 'double'/'triple' spell the same digits."""
    words: list[str] = []
    i = 0
    while i < len(digits):
        same = 1
        while i + same < len(digits) and digits[i + same] == digits[i] and same < 3:
            same += 1
        if same >= 2:
            words += ["double" if same == 2 else "triple", _DIGIT_WORDS[digits[i]]]
        else:
            words.append(_DIGIT_WORDS[digits[i]])
        i += same
    assert _runs(" ".join(words)) == ["".join(map(str, digits))]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(10, 99), min_size=1, max_size=5))
def test_grouped_pairs(pairs: list[int]) -> None:
    """Numbers said in pairs ('forty five sixty seven') concatenate their groups."""
    text = " ".join(num2words(p) for p in pairs)
    assert _runs(text) == ["".join(map(str, pairs))]


@settings(max_examples=200, deadline=None)
@given(st.integers(1000, 10**12), st.sampled_from([" ", "-", ", "]))
def test_written_digits_with_separators(n: int, sep: str) -> None:
    """Written digits grouped by spaces, dashes or commas form one run of the same digits."""
    s = str(n)
    groups = [s[i:i + 3] for i in range(0, len(s), 3)]
    assert "".join(_runs(sep.join(groups))) == s


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=60))
@example("\u0e50")          # a Thai zero: once passed through as a "digit" of its own
@example("x\u00b2 4\u00b2")  # superscript two: a digit to str.isdigit(), not a decimal
def test_arbitrary_text_never_crashes(text: str) -> None:
    """Hostile strings give runs whose digits are digits or 'x', never an exception."""
    for run in find_runs(_tokens(text)):
        assert run.digits and set(run.digits) <= set("0123456789x")


def test_digits_of_other_scripts_are_read_as_digits() -> None:
    """A value written in Arabic-Indic or Thai digits is still a value (fail closed)."""
    assert _runs("\u0664\u0665\u0666\u0667") == ["4567"]
    assert _runs("\u0e51\u0e52\u0e53") == ["123"]
