"""Detection over wording the corpus generator does not use.

The corpus (`tests/support/corpus.py`) says each kind of value in a few hundred ways, but
its sentences come from one set of templates, and detection was tuned on them. These are
contact-centre lines written apart from those templates, in the form Whisper writes
clearly heard speech (numerals, hyphens, "$", "PM"), so they test the rules alone, as a
perfect recogniser would leave them; how well the recogniser hears is the corpus test's
business (`test_recall.py`).

`[...]` marks the words that must be muted: the value itself, not its unit ("[47]
minutes") nor its cue. " || " ends a speaker's turn; the next turn is on the other channel
(a dual-channel call). The first two sets were written, measured and the rules mended
against them; the third to the sixth were each written after the mends before
them and measured once before their own, as held-out checks (the README gives the
figures). Whisper's formatting of clearly spoken values ("10.45 p.m.", "12/03/2025",
"$1,299.00", "Ave NW") is in the fourth, British wording ("ring me on", "quid") in the
sixth.
"""

from __future__ import annotations

import pytest

from redaction.detect import detect
from redaction.spans import Span
from redaction.transcribe import Word

FIRST = [
    "Sure, it's [4-1-5, 3-3-2, 9-8-7-1].",
    "My callback number is [917-555-0123].",
    "You can call me back on [07700 900 461].",
    "Can I get the best number to reach you? || Yeah, [310-555-2298].",
    "The last four of my social are [6621].",
    "Last 4 of the SSN? || [4-4-0-9].",
    "Could you verify the last four digits of your Social Security number? || Sure, [8, 8, 1, 3].",
    "My social is [078-05-1120].",
    "I need your account number please. || Okay, it's [7, 7, 4, 2, 1, 9, 0, 0, 3].",
    "The account number on the bill is [AC 4471 9920].",
    "Your account ends in [3309], correct?",
    "Account ending [5521].",
    "It's account [88120443].",
    "My PIN is [2580].",
    "Can you give me your four digit PIN? || [1-9-7-3].",
    "And your security passcode? || It's [5, 5, 0, 8].",
    "The passcode I set up was [one two one two].",
    "My password is [bluebird77].",
    "The password on the account is [Sunflower 1985].",
    "Card number? || Sure, [4532 7788 1234 5678].",
    "It's a Visa, [4111-1111-1111-1111].",
    "I'd like to pay with my Mastercard, [5500 0000 0000 0004].",
    "Expiration date? || [08/27].",
    "It expires in [August 2027].",
    "Exp. [1126].",
    "What's the CVV? || [441].",
    "The three digits on the back are [9-0-2].",
    "Security code is [7, 3, 1].",
    "I called [1-800-555-0199] on March 3rd and I didn't make that call.",
    "There's a call here to [202-555-0147] that I don't recognize.",
    "Who did I call on the 5th? The number was [646-555-0102].",
    "The call was made on [March 3rd] at [10:45 PM].",
    "I see a call on [December 12th] that lasted [47] minutes.",
    "I called my mom [last Tuesday night around 9].",
    "That was on the [14th of November].",
    "It says I called at [11:32 AM].",
    "Can you tell me when that call was made? || It was [yesterday at 3:15].",
    "The call lasted [2] hours and [13] minutes.",
    "It was a [38-minute] call.",
    "How long was that call? || About [20] minutes.",
    "It shows [1] hour, [4] minutes.",
    "My bill is [$130.42] this month.",
    "Why is my bill [212] dollars?",
    "I was charged [$59.99] for something I didn't order.",
    "My last payment was [84] bucks.",
    "The charge is a [hundred and twelve] dollars and [fifty] cents.",
    "It went up to [$97] from [$75].",
    "The balance due is [$1,204.18].",
    "I'd like to make a payment of [$150].",
    "I live at [1420 Elm Street].",
    "My address is [22 Maple Avenue, Apartment 3B].",
    "The service address is [500 West 42nd Street].",
    "It's [17 Oak Lane], Springfield.",
    "We moved to [3 Harbor View Road].",
    "The zip code is [94107].",
    "My zip is [1-0-0-0-1].",
    "Please update my address to [88 Pine Court].",
    "Can you confirm the address on file? || [410 South Main Street].",
    "The PO box is PO Box [7710].",
    "OK, so that's [4-5-3-2, 7-7-8-8, 1-2-3-4, 5-6-7-8], right?",
    "Let me read that back. [917-555-0123]?",
    "My PIN is [four four one nine].",
    "The account number is [four five six seven eight nine one two].",
    "My social's [five five five, two two, one one one one].",
    "The card ends in [4242].",
    "Last four of the card are [1881].",
    "The number on the account is [617-555-0177].",
    "My phone number is [(415) 555-0192].",
    "I'm calling from [555-0142].",
    "Date and time of the call? || [June 2nd] at [7] in the evening.",
    "The call on the [20th] at [1 PM] wasn't me.",
    "I got a call at [2:30 in the morning] from that number.",
    "I was on the phone for [an hour and a half].",
    "It lasted like [3] hours.",
    "You charged me [$45] for roaming.",
    "The overage fee was [$12.50].",
    "It was [twenty-nine ninety-nine] a month.",
    "My card number is [4 5 3 2, 7 7 8 8, 1 2 3 4, 5 6 7 8].",
    "My account PIN is [8-8-3-1].",
    "The verification code is [613 992].",
    "The code you texted me was [48 21 77].",
    "My account number is [A-C-7-7-4-2].",
    "The billing address is [12 Rue Street], [Apt 5].",
]

FIRST_HARMLESS = [
    "Press 1 for billing.",
    "For sales, press 2. For support, press 3.",
    "Please hold, your estimated wait time is 4 minutes.",
    "I have 2 questions about my bill.",
    "We're open 24/7.",
    "This is the 3rd time I've called.",
    "I'll be with you in just a second.",
    "Give me one moment.",
    "I've been a customer for 10 years.",
    "I have 3 lines on my account.",
    "Can you add 2 more lines?",
    "I want the 5G plan.",
    "Is it an iPhone 15?",
    "I'm on the second floor.",
    "Thank you for calling, my name is Sarah.",
    "Is there anything else I can help you with today?",
    "Let me transfer you to the right department.",
    "We can give you a 10% discount.",
    "The plan includes unlimited texts.",
    "I'll send you a text in a few minutes.",
    "My first question is about roaming.",
    "It'll take 3 to 5 business days.",
    "Have a great day.",
    "Can I put you on hold for a minute or two?",
    "Number one, I want to cancel.",
    "Option 4 please.",
    "I'm calling about my internet.",
    "We have a 30-day return policy.",
    "You'll get a confirmation email.",
]

SECOND = [
    "Can I have the account holder's date of birth and the account number?"
    " || Yeah, account number is [3-3-0-1-9-8-4-2].",
    "What's the PIN on the account? || Oh, it's [1-2-3-4].",
    "And what is the four-digit security PIN? || [Nine, nine, eight, seven].",
    "Okay, go ahead with the PIN. || [6-6-0-2].",
    "My PIN? It's [2-4-6-8].",
    "I think my PIN is [0-0-0-7].",
    "PIN number is [4455].",
    "Um, the passcode should be [7-1-7-1].",
    "It's [double 7, 3, 4].",
    "My passcode's [hunter2].",
    "Can you verify the account with the last four of your social? || Yeah, it's [2-2-0-9].",
    "The last four are [1-8-0-0].",
    "My Social is [123-45-6789].",
    "Social Security number, [5-1-2, 3-3, 8-8-7-2].",
    "The card I want to use is [5105 1051 0510 5100].",
    "My Amex is [3782 822463 10005].",
    "The card ends with [0-0-0-4].",
    "Expiry [09/26], CVV [123].",
    "It expires [11 of 28].",
    "Valid through [October 2029].",
    "The code on the back is [8-8-2].",
    "The three-digit code is [5-0-5].",
    "The number I'm calling about is [212-555-0187].",
    "I have calls to [+44 20 7946 0958] that I didn't make.",
    "The call at [2:47 AM] on the [9th] wasn't me.",
    "You called me on [Friday at 6:15] and I was charged.",
    "I got a text on the [3rd of June].",
    "There's a call on [Jan 5th].",
    "The call on [4/12] lasted [63] minutes.",
    "My total this month is [$88.17].",
    "I paid [$200] on the [15th].",
    "Your balance is [$312.55].",
    "My bill said [149.99].",
    "My current amount due is [seventy-four] dollars.",
    "There's a [$35] late fee.",
    "I live at [742 Evergreen Terrace].",
    "Ship it to [1600 Pennsylvania Avenue], please.",
    "My address is [12 High Street, Flat 4].",
    "I moved to [221B Baker Street].",
    "The zip code on file is [30301].",
    "My postcode is [SW1A 1AA].",
    "My account number is [1-2-3-4-5, 6-7-8-9-0].",
    "My customer ID is [CX 5590 221].",
    "The account number ends in [7-7-2-1].",
    "I'm calling about account [55-19-0042].",
    "Callback number is [5-5-5, 0-1-9-9].",
    "You can reach me at [617.555.0143].",
    "My cell is [415 555 2671].",
    "Text me at [206-555-0111].",
    "The phone number on the account is [area code 3-0-3, 5-5-5, 0-1-2-2].",
]

SECOND_HARMLESS = [
    "I've been waiting 45 minutes on hold.",
    "I'm 35 years old.",
    "The two of us share the plan.",
    "I have an iPhone 14 Pro.",
    "Call me in 10 minutes.",
    "You are caller number 3 in the queue.",
    "We upgraded to 5G last year.",
    "Press 9 to repeat this menu.",
    "Your call is important to us, please stay on the line.",
    "I'd like to speak to a supervisor.",
    "Thanks so much, you've been a big help.",
    "I'll need about 5 minutes to look into this.",
    "It's been 2 weeks since I reported it.",
    "We have 4 phones on the family plan.",
    "Step 1 is to restart the router.",
    "My daughter is 12.",
    "We'll credit your account.",
    "The outage lasted all day.",
    "I got 3 texts about it.",
    "Could you spell your last name?",
]

THIRD = [
    "Yeah, so my account number, hold on, it's [6-6-1-0-2-4-8-8].",
    "Uh, the account's [45 90 12 77].",
    "It should be under account number [A-1-7-7-3-2].",
    "So it's [9, 0, 2, 1], that's my pin.",
    "My pin, uh, [3, 3, 7, 1].",
    "I set the passcode to [five five five one] last week.",
    "Okay, the password, it's [rosebud], all lowercase.",
    "Last four of my Social, [0, 0, 4, 2].",
    "Yeah, social is [six one two, four four, nine nine one zero].",
    "Um, it's a Visa ending in [9-9-1-0].",
    "Card number's [4-0-0-0, 1-2-3-4, 5-6-7-8, 9-0-1-0].",
    "It's [4000 1234 5678 9010], expiration [12/25], and the CVV is [4-1-7].",
    "Okay, the expiration date is [May of '27].",
    "Security code, [2-2-9].",
    "Yeah, I called [555-0100] like six times.",
    "I keep getting charged for calls to [1-900-555-0111].",
    "Can you check the calls to [813-555-0190]?",
    "That call to my sister on [Sunday] at [8:30].",
    "It was around [midnight] on the [2nd].",
    "The call was at like [quarter past nine] in the morning.",
    "I was on the phone with them for [three] hours.",
    "That call went for [57] minutes.",
    "It's saying [$64.99] but my plan is [$45].",
    "Why did my bill go up [twenty] dollars?",
    "It was like a [hundred and fifty] bucks.",
    "I was charged [$9.99] twice.",
    "I owe [$322]?",
    "The address is [19 Queen's Road], uh, apartment [12].",
    "I'm at [4 Birch Close].",
    "My billing zip is [6-0-6-1-4].",
    "So I'm at [550] Market, [Suite 300].",
    "My number's [(312) 555-0176].",
    "The number you have on file, [773-555-0199], is wrong.",
    "Call me back at [3-1-2, 5-5-5, 0-1-0-0].",
    "I'll read back the card, [4000 1234 5678 9010].",
    "So just to confirm, PIN [7-7-0-3], right?",
    "You said the account was [88-41-0093]?",
]

THIRD_HARMLESS = [
    "It's been like 3 days without service.",
    "I called you guys 4 times this week.",
    "I've had this number for 20 years.",
    "Option 3 was the one I wanted.",
    "Sorry, one sec.",
    "We're a family of 5.",
    "Press zero for an operator.",
    "It'll be about 2 to 3 weeks for the new phone.",
    "That's 100 percent my fault.",
    "Your order will ship in 1 to 2 days.",
    "Thank you, have a good one.",
    "I'll call back in an hour.",
    "I want the 2 gig plan.",
    "It's my first time calling.",
    "Hang on one second.",
]

FOURTH = [
    "The call was on [March 3rd, 2025].",
    "It was [10.45 p.m.] on [12/03/2025].",
    "That's on [3/12] at [9 a.m.]",
    "Yes, the [3rd of March], around [10 p.m.]",
    "What's the password on the account? || It's [marmalade].",
    "Could I get the password, please? || [Blue sky 42].",
    "Do you have a verbal password on the account? || Yes, [pineapple].",
    "Can you give me the security answer? || Uh, [Fluffy].",
    "What's your mother's maiden name? || [Henderson].",
    "My card number is [4532-7788-1234-5678].",
    "The CVV is [0-4-1].",
    "The expiry is [0-4 slash 2-8].",
    "My phone is [415-555-0192], that's my cell.",
    "The number that called me was [1 (800) 555-0110].",
    "I made a call to Mexico on the [4th].",
    "My account number is [0-0-1-7-7-4-5-9-2-2].",
    "Account? || [7741-0093-22].",
    "It's [$1,299.00] for the phone.",
    "My bill was [$89.99], and then [$104.50] the next month.",
    "The total's a [hundred] dollars even.",
    "I'm at [12 Main St.], [Apt. 4B].",
    "I live on [Elm Street], number [42].",
    "My address: [4400 Massachusetts Ave NW], Washington.",
    "The zip is [9-0-2-1-0].",
    "The PIN is [3-3-3-3].",
    "It's [3, 4, 1, 2], my PIN.",
    "My SSN is [5-5-5-1-2-3-4-5-6].",
    "I was on for [an] hour and [20] minutes.",
    "The call was [12] minutes and [30] seconds long.",
]

FOURTH_HARMLESS = [
    "Can you hold for 2 minutes?",
    "My phone is 3 years old.",
    "There are 2 charges I don't understand.",
    "I'm calling for the second time today.",
    "I bought it 2 months ago.",
    "That's the 1st thing I checked.",
    "The screen is 6.1 inches.",
    "It's a 2-year contract.",
    "I've had the same number since high school.",
]

FIFTH = [
    "I see your last payment of [$84.20] on [November 3rd].",
    "I see a [14]-minute call to [212-555-0101] on the [3rd] at [4:02 PM].",
    "Your plan is [$70] a month.",
    "My account number is [4-5-6], uh, [7-8-9-0].",
    "It's [5-5-5]... sorry, [5-5-6-0-1-2-3].",
    "My password is [B-L-U-E-4-2].",
    "The last 4 digits are [8-8-2-1].",
    "My date of birth is [4/12/1985].",
    "It was [eighty-four twenty].",
    "The call was from [7:05] to [7:52 PM].",
    "My bill is usually like [60], but this month it's [140].",
    "I was charged twice, [29.99] each.",
    "I pay [45] a month.",
    "It was around [3] in the afternoon.",
    "The call was at [noon].",
    "My new PIN will be [9-1-1-9].",
    "Change my PIN to [4-3-2-1], please.",
    "The old address was [77 Sunset Boulevard].",
    "Please send the bill to PO Box [1234].",
    "My husband's number is [503-555-0123].",
    "Can you tell me the last 4 of the card on file? || It ends in [1-1-2-2].",
    "What's the billing zip? || [2-0-0-0-1].",
    "And the expiration? || [Oh-nine, twenty-six].",
    "I don't remember my PIN. Maybe it's [1987]?",
    "My account number, I have it here, [901-44-778].",
    "The verification code was [six two eight four one nine].",
    "My passcode is my dog's name, [Biscuit].",
]

FIFTH_HARMLESS = [
    "Give me 2 seconds to pull that up.",
    "I'll be 5 minutes.",
    "We're 3 hours behind you.",
    "It's 70 degrees here.",
    "My laptop runs Windows 10.",
    "I'm on iOS 17.",
    "Those are the top 3 reasons people call.",
    "There are 9 of us in the house.",
    "I'll give you a call back tomorrow.",
    "Your ticket has been escalated to tier 2.",
]

SIXTH = [
    "My postcode is [M1 1AE].",
    "I'm in flat [3], [22 Victoria Road].",
    "The bill was [£45.50] this month.",
    "It came to [45] quid.",
    "Ring me on [07700 900123].",
    "Your last bill was [62] dollars and [40] cents.",
    "The call to [555-0199] lasted [12] minutes.",
    "It's [4 4 1] and then [9 2].",
    "The [5th of May] at [half past 3].",
    "My account is [two three four, five six seven, eight nine].",
    "I think the account number is [2-3-4-5-6-7]. || And the PIN? || [0-9-0-9].",
    "Sorry, what was the card number again? || [4-1-1-1, 1-1-1-1, 1-1-1-1, 1-1-1-1].",
    "Can you confirm the phone number we have on file? || Sure, it's [7-1-8, 5-5-5, 0-1-4-4].",
    "What's the amount you'd like to pay? || [Fifty] dollars.",
    "When did you make that call? || [Last Thursday], around [6].",
    "How long did it last? || Maybe [10] minutes.",
    "My security answer is [Springfield Elementary].",
    "The answer to my security question is [Rex].",
    "Your balance of [$56.12] is due on the [21st].",
    "I'll read back your address: [1200 Ocean Drive], [unit 5].",
]

SIXTH_HARMLESS = [
    "Cheers, thanks for your help.",
    "I've got 2 kids on my plan.",
    "Is there a 5 pound fee for that?",
    "Number 2, I want to change my plan.",
    "I'll hold, no problem.",
    "It rang about 5 times and then cut off.",
    "I waited 20 minutes for someone to answer.",
    "There are 3 things I need help with.",
]

# Lines Whisper wrote for the flite corpus (README, "Voices the corpus does not use").
HEARD_ON_FLITE = [
    "I have at [6 .15] earlier [today], is that correct?",
    "No, it's on the [22nd] round, [12] in the afternoon.",
    "Just to confirm, [seven] minutes. Wait, I mean, [an] hour and [two] minutes.",
]

# Values a review of the mends found left audible by them (a number of another kind taken
# for a cue's answer, "per", wait words on the other side of the call, ...): all are muted.
REVIEWED = [
    "What's the PIN for account 55123? || [Biscuit].",
    "Can I have the password for account 55123? || [bluebird].",
    "Could you verify your social for account 55123? || [won to three for]",
    "Okay, and the passcode on account 5 5 1 2 3. || [Biscuit].",
    "It's [4111 1111 1111 1111] per my records",
    "I called [212 555 0148] per your advice",
    "it's [123 45 6789]. Per your request, that's my social.",
    "I pay [45] per month",
    "The fee is [12] per line",
    "The call lasted [42] minutes and I need a refund",
    "I need to dispute a [42] minute call",
    "It was a [38] minute call, can you give me a credit?",
    "Will the [42] minute call be refunded?",
    "The call was going for [42] minutes",
    "That call was really long. || Okay, I'll note that. || [42] minutes, I think.",
    "The passcode on the account is needed to proceed. || Sure, [Biscuit].",
    "I live at [4 4 2 1] and then [9 2]",
    "The call was at [quarter past nine]",
    "We spoke at [half past 3]",
    "it was about [ten past 4]",
]


def _call(line: str) -> tuple[list[Word], list[bool]]:
    """Words 0.32 s long every 0.4 s, turns 0.8 s apart; and which are marked sensitive."""
    words: list[Word] = []
    marked: list[bool] = []
    t = 0.0
    turns = line.split(" || ")
    for n, turn in enumerate(turns):
        inside = False
        for tok in turn.split():
            inside = inside or "[" in tok
            words.append(Word(tok.replace("[", "").replace("]", ""), t, t + 0.32, 0.9, n % 2))
            marked.append(inside)
            inside = inside and "]" not in tok
            t += 0.4
        t += 0.8
    return words, marked


def _muted(spans: list[Span], w: Word) -> float:
    return sum(max(0.0, min(s.end, w.end) - max(s.start, w.start))
               for s in spans if s.channel == w.channel) / (w.end - w.start)


@pytest.mark.parametrize("line", [*FIRST, *SECOND, *THIRD, *FOURTH, *FIFTH, *SIXTH,
                                  *HEARD_ON_FLITE, *REVIEWED])
def test_every_marked_word_is_muted(line: str) -> None:
    """Each word of each value is muted (>= 90 % of it), from the rules alone."""
    words, marked = _call(line)
    assert any(marked), "a sensitive line must mark its value"
    spans = detect(words)
    left = [n for n, (w, m) in enumerate(zip(words, marked, strict=True))
            if m and _muted(spans, w) < 0.9]
    assert not left, f"words {left} of the value are still heard"


@pytest.mark.parametrize("line", [*FIRST_HARMLESS, *SECOND_HARMLESS, *THIRD_HARMLESS,
                                  *FOURTH_HARMLESS, *FIFTH_HARMLESS, *SIXTH_HARMLESS])
def test_harmless_lines_are_left_alone(line: str) -> None:
    """Numbers that carry no CPNI ("press 1", "3 to 5 business days") stay audible."""
    words, _ = _call(line)
    assert detect(words) == []
