"""CPNI detection over recognised words: labels by context, harmless numbers kept."""

from __future__ import annotations

from dataclasses import replace

import pytest

from redaction.detect import DetectPolicy, detect
from redaction.spans import Span, pad_and_merge, redacted_text
from redaction.transcribe import Word


def _words(text: str, *, channel: int = 0, t0: float = 0.0, step: float = 0.4) -> list[Word]:
    return [Word(w, t0 + i * step, t0 + i * step + step * 0.8, 1.0, channel)
            for i, w in enumerate(text.split())]


def _labels(text: str, **kw: object) -> list[str]:
    return [s.label for s in detect(_words(text), DetectPolicy(**kw))]  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("my account number is 4 5 6 7 8 9 1 2", "ACCOUNT_NUMBER"),
        ("the acct ending in 77 41 93", "ACCOUNT_NUMBER"),
        ("Sure, my PIN is 7 3 9 1.", "PIN"),
        ("the passcode is four eight two nine", "PIN"),
        ("My social security number is 123-45-6789.", "SSN"),
        ("last four of my social are double five two oh", "SSN"),
        ("The card is 4111 1111 1111 1111", "CARD_NUMBER"),
        ("it expires oh nine twenty seven", "CARD_EXPIRY"),
        ("the security code on the back is 314", "CARD_CVV"),
        ("the number I called was 555-867-5309", "PHONE_NUMBER"),
        ("you can reach me at 212 555 0148", "PHONE_NUMBER"),
        ("I made the call at 4:15 pm", "CALL_DATETIME"),
        ("the call lasted 42 minutes", "CALL_DURATION"),
        ("I was charged $84.20 last month", "BILL_AMOUNT"),
        ("it was eighty four dollars", "BILL_AMOUNT"),
        ("I live at 1420 Elm Street", "ADDRESS"),
        ("the code 98231 again", "PIN"),
        ("it's 123 45 6789", "SSN"),
        ("it's 4111 1111 1111 1111", "CARD_NUMBER"),
        ("it's 415 555 0192", "PHONE_NUMBER"),
        ("the reference 4471", "DIGITS"),
        ("let me read that back. 40 minutes.", "CALL_DURATION"),
        ("that lasted one and a half hours", "CALL_DURATION"),
        ("the call lasted about an hour", "CALL_DURATION"),
        ("we talked for an hour and a half", "CALL_DURATION"),
        ("it was on the 20th at 1pm", "CALL_DATETIME"),
        ("the call on the 14th in the afternoon", "CALL_DATETIME"),
        # near the harmless rules: a rate, and call detail said with "going" or "will"
        ("I pay 45 per month", "BILL_AMOUNT"),
        ("the call kept going for 40 minutes", "CALL_DURATION"),
        ("the bill will show a 45 minute call", "CALL_DURATION"),
    ],
)
def test_sensitive_numbers_are_labelled(text: str, label: str) -> None:
    """Each kind of CPNI is found and labelled from its context or its shape."""
    assert label in _labels(text)


@pytest.mark.parametrize(
    "text",
    [
        "for billing press one",
        "press 1 for billing, option 2 for sales",
        "there is a two minute wait",
        "one moment please",
        "I have two questions",
        "we offer twenty four seven support",
        "that is my number one priority",
        "please hold for a 2 minute wait",
        "I'm on the second floor and the signal is bad",
        "this is the third time I called about it",
        "my first call was fine",
        "I waited half an hour on hold",
        "I'll call you back in 5 minutes",
        "give me a minute",
        "there is a problem with my account, give me a second",
        "my card bill went up by a third",
    ],
)
def test_harmless_numbers_stay(text: str) -> None:
    """Numbers that carry no CPNI are not redacted."""
    assert _labels(text) == []


def test_cue_without_heard_digits_redacts_what_follows() -> None:
    """A PIN cue followed by words (digits the model mis-heard) still redacts them."""
    words = _words("my PIN is novel I'm too old and then thanks")
    spans = detect(words)
    assert [s.label for s in spans] == ["PIN"]
    assert spans[0].start >= words[1].end  # starts after the cue word "PIN"
    assert spans[0].end >= words[5].end  # and covers the mis-heard words


def _unsure(text: str, unsure: dict[str, float]) -> list[Word]:
    """Words 0.4 s apart; those named in `unsure` get that recogniser confidence."""
    return [replace(w, probability=unsure.get(w.text, 1.0)) for w in _words(text)]


def test_span_grows_over_unsure_words_beside_the_digits() -> None:
    """Look-alike words the model was unsure of next to a value are part of it; growth
    stops at a confident word, at a word of middling confidence, and after 1 s."""
    words = _unsure("my account number is 4 5 6 7 8 9 havenated bell seriously thanks",
                    {"havenated": 0.1, "bell": 0.2})
    (span,) = detect(words)
    assert span.label == "ACCOUNT_NUMBER"
    assert span.end == pytest.approx(words[11].end)       # through "bell"
    assert span.end < words[12].start                      # not "seriously"

    middling = _unsure("my account number is 4 5 6 7 8 9 havenated bell thanks",
                       {"havenated": 0.1, "bell": 0.4})
    (span,) = detect(middling)
    assert span.end == pytest.approx(middling[10].end)    # stops before "bell" (0.4)

    long_tail = _unsure("my account number is 4 5 6 7 8 9 uh huh ha ah eh mm", {
        t: 0.1 for t in ("uh", "huh", "ha", "ah", "eh", "mm")})
    (span,) = detect(long_tail)
    assert long_tail[9].end + 0.75 < span.end <= long_tail[9].end + 1.0


def _timed(*phrases: tuple[int, float, str]) -> list[Word]:
    """Words of (channel, start, text) phrases, 0.3 s a word."""
    out: list[Word] = []
    for channel, t0, text in phrases:
        out += _words(text, channel=channel, t0=t0, step=0.3)
    return out


def _said(words: list[Word], span: Span) -> str:
    return " ".join(w.text for w in words
                    if w.channel == span.channel and span.start <= w.start < span.end)


def test_cue_that_names_the_value_redacts_the_reply() -> None:
    """"The security code on the back." asks for the value: the reply that follows is
    redacted, not the rest of the question."""
    words = _timed((0, 0.0, "and the three digit security code on the back."),
                   (0, 3.5, "sure X1 L L L"), (0, 6.0, "thanks that went through"))
    spans = detect(words)
    assert [(s.label, _said(words, s)) for s in spans] == [("CARD_CVV", "sure X1 L L L")]


def test_stated_value_satisfies_a_cue_ending_in_its_verb() -> None:
    """"My address is 654 Main ..." states the value: once it is found, the caller's next
    sentence is not taken for the answer, and a garbled statement is still redacted."""
    words = _timed((1, 0.0, "my address is 654 main battery man."),
                   (1, 3.5, "I'm on the second floor."))
    assert [(s.label, _said(words, s)) for s in detect(words)] == [
        ("ADDRESS", "654 main battery man.")]
    garbled = _timed((1, 0.0, "my address is sick if he for man."),
                     (1, 3.5, "I'm on the second floor."))
    assert [(s.label, _said(garbled, s)) for s in detect(garbled)] == [
        ("ADDRESS", "sick if he for man.")]
    # A cue ending in "number" can still ask: a number inside the question is no answer.
    asked = _timed((0, 0.0, "can you read me the card number on the 2 cards please"),
                   (1, 4.0, "sure it is sick seven bun"))
    assert "sure it is sick seven bun" in [_said(asked, s) for s in detect(asked)]


def test_question_on_one_channel_redacts_the_reply_on_the_other() -> None:
    """A request on the agent's channel: the caller's reply is redacted, for as long as a
    card number takes, and the agent's own words stay."""
    words = _timed((1, 0.0, "go ahead with the card number when you're ready."),
                   (0, 4.0, "fifty four sixteen twenty two fifty four fifty five oh nine"),
                   (1, 9.0, "thank you"))
    spans = detect(words)
    assert {s.channel for s in spans} == {0}
    assert _said(words, spans[0]).startswith("fifty four sixteen")
    assert spans[0].end >= words[-3].end   # all the caller's words, 3.6 s of them


def test_read_back_cue_redacts_what_is_read_back() -> None:
    """"Let me read that back." announces a value, even one heard as words."""
    words = _timed((0, 0.0, "let me read that back."), (0, 2.0, "novel ice cream tree"),
                   (0, 4.0, "is that right"))
    assert [_said(words, s) for s in detect(words)] == ["novel ice cream tree"]


def test_statement_after_repeat_cue_and_reply_to_how_much() -> None:
    """"Let me repeat, <value>" redacts the value in the same sentence; "how much was the
    bill?" redacts the other party's reply."""
    words = _timed((0, 0.0, "let me repeat, let's make Anne Ren Dogler."), (0, 4.0, "okay"))
    assert [_said(words, s) for s in detect(words)] == ["let's make Anne Ren Dogler."]
    words = _timed((0, 0.0, "how much was the bill?"), (1, 2.0, "oh I'm feeling so good."),
                   (0, 5.0, "thank you"))
    assert [(s.channel, s.label, _said(words, s)) for s in detect(words)] == [
        (1, "BILL_AMOUNT", "oh I'm feeling so good.")]


def test_misheard_cue_word_still_cues() -> None:
    """"The exploration date" is the expiration date: the reply is redacted; words merely
    like a cue ("experience", "accountant") are not read as one."""
    words = _timed((0, 0.0, "and the exploration date?"), (0, 2.0, "Poland or Taiwan."),
                   (0, 4.0, "thanks"))
    assert [(s.label, _said(words, s)) for s in detect(words)] == [
        ("CARD_EXPIRY", "Poland or Taiwan.")]
    assert _labels("my accountant has the experience I need") == []


def test_number_inside_a_question_does_not_answer_it() -> None:
    """"What's the time of the call?" heard as "the time one mark?": the "one" in the
    question does not stand for the answer, so the reply is still redacted."""
    words = _timed((0, 0.0, "what's the time one mark?"),
                   (0, 2.5, "the axis is being earlier tonight."), (0, 5.5, "okay"))
    said = [_said(words, s) for s in detect(words)]
    assert "the axis is being earlier tonight." in said


@pytest.mark.parametrize(("text", "said"), [
    ("we spoke on the 14th in the afternoon. okay", "14th in the afternoon."),
    ("it was at 7 in the morning. thanks", "7 in the morning."),
    ("I called at 5 p m yesterday", "5 p m yesterday"),   # the day is the call's too
    ("I have at 6 .15 earlier today, is that right?", "6 .15 earlier today,"),
])
def test_time_of_day_words_go_with_the_time(text: str, said: str) -> None:
    """"In the afternoon" after a number makes it a time of day, and is redacted with it."""
    words = _timed((0, 0.0, text))
    spans = detect(words)
    assert [(s.label, _said(words, s)) for s in spans] == [("CALL_DATETIME", said)]


def test_repeated_words_of_a_redacted_value_are_redacted_again() -> None:
    """A mis-heard value read back later is heard the same way: it is muted there too,
    with the first mention's label; a one-word echo is not enough."""
    words = _timed((0, 0.0, "what's the code on the card please?"),
                   (0, 3.0, "okay time's here then 2."),
                   (0, 6.0, "I have a question about my plan."),
                   (0, 10.0, "so time's here then 2 is that right"),
                   (0, 14.0, "then we are done"))
    spans = detect(words)
    assert [_said(words, s) for s in spans] == ["okay time's here then 2.",
                                                "time's here then 2"]
    assert {s.label for s in spans} == {"PIN"}


def test_cue_satisfied_by_existing_mute() -> None:
    """In verification, a cue followed by already-muted audio is not a leak."""
    words = _words("my account number is and I want to check my bill")
    muted = [Span(0, 1.7, 3.0, "ACCOUNT_NUMBER")]
    assert detect(words, muted=muted) == []


def test_question_on_one_channel_labels_answer_on_other() -> None:
    """The agent's question on channel 0 labels the caller's bare answer on channel 1."""
    words = _words("can I get your social please", channel=0) + _words(
        "sure it's 5 5 2 0", channel=1, t0=3.0)
    spans = detect(words)
    assert [(s.channel, s.label) for s in spans] == [(1, "SSN")]


def test_custom_terms_from_settings() -> None:
    """A deployment's own phrases (e.g. plan names) are redacted under their label."""
    policy = DetectPolicy(custom_terms={"PLAN_NAME": ("unlimited plus",)})
    spans = detect(_words("I am on the Unlimited Plus plan"), policy)
    assert [(s.label, s.source) for s in spans] == [("PLAN_NAME", "custom")]


def test_span_repr_and_word_repr_hold_no_value() -> None:
    """Records print without the words they cover."""
    w = Word("4111111111111111", 0.0, 1.0)
    assert "4111" not in repr(w)


def test_pad_and_merge() -> None:
    """Spans are padded, clipped to the file and merged when they touch."""
    spans = [Span(0, 1.0, 2.0, "PIN"), Span(0, 2.3, 3.0, "PIN"), Span(1, 0.1, 0.5, "SSN")]
    merged = pad_and_merge(spans, before=0.2, after=0.2, duration=3.1)
    assert [(s.channel, round(s.start, 2), round(s.end, 2)) for s in merged] == [
        (0, 0.8, 3.1), (1, 0.0, 0.7)]


def test_redacted_text_replaces_values() -> None:
    """The transcript keeps ordinary words and shows [LABEL] for sensitive ones."""
    words = _words("my PIN is 7 3 9 1 thanks")
    spans = detect(words)
    text = redacted_text(words, spans, 0)
    assert "[PIN]" in text and "thanks" in text
    assert not any(d in text for d in "7391")


def test_a_number_stamped_too_short_is_widened_evenly() -> None:
    """Whisper stamps a long number too short ("8094" over 0.68 s for 1.87 s of speech):
    a run of 3+ digits gets at least 0.25 s a digit, half each side; a short word stays."""
    words = [Word("reference", 12.18, 12.48), Word("8094.", 13.92, 14.60), Word("So", 15.78, 15.92)]
    (span,) = detect(words)
    assert span.end - span.start == pytest.approx(1.0)
    assert span.start == pytest.approx(13.92 - 0.16) and span.end == pytest.approx(14.60 + 0.16)
    (span,) = detect([Word("4", 1.0, 1.1), Word("4", 1.1, 1.2), Word("1", 1.2, 1.3),
                      Word("9", 1.3, 2.5)])
    assert (span.start, span.end) == (1.0, 2.5)          # already 1.5 s: left alone


def test_a_value_heard_in_the_cue_s_own_sentence_satisfies_it() -> None:
    """The value said in the cue's sentence is the answer, so the next sentence is not:
    in a statement ("expiring date March of 25."), and in a question when 3+ digits come
    right after the cue ("is this about the account ending in 2006, or?"). Both were
    heard on the flite corpus, and the next sentence was muted."""
    stated = _timed((0, 0.0, "Expiring date March of 25."),
                    (0, 3.0, "Step one. Turn the phone off and on again."))
    assert [_said(stated, s) for s in detect(stated)] == ["March of 25."]
    asked = _timed((0, 0.0, "Is this about the account ending in 2006 or?"),
                   (1, 3.5, "I'm on the second floor, the signal is bad."))
    spans = detect(asked)
    assert any("2006" in _said(asked, s) for s in spans)
    assert all(s.channel == 0 for s in spans)       # the caller's reply stays audible


def test_capital_letters_before_an_id_are_part_of_it() -> None:
    """"CX 559022": the letters said right before the digits are muted with them; "I"
    and "OK" are words, not letters of an ID."""
    words = [Word("my", 0.0, 0.3), Word("reference", 0.4, 0.9), Word("CX", 1.1, 1.4),
             Word("559022", 1.5, 3.5)]                 # 6 digits over 2 s: no stretching
    assert [(s.start, s.end) for s in detect(words)] == [(1.1, 3.5)]
    words[2] = Word("OK", 1.1, 1.4)
    assert [(s.start, s.end) for s in detect(words)] == [(1.5, 3.5)]
