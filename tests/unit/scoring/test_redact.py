"""PII redaction: every kind, written and spoken, and the near misses that must stay."""

from __future__ import annotations

import pytest

from analytics.scoring.redact import Redactor, luhn_valid, verhoeff_valid

pytestmark = pytest.mark.unit

R = Redactor()


@pytest.mark.parametrize(
    ("text", "expected", "kinds"),
    [
        # cards (Luhn-valid), grouped, ungrouped, hyphenated, spoken
        ("my card is 4111 1111 1111 1111 thanks", "my card is [CARD] thanks", ["CARD"]),
        ("card 5500-0000-0000-0004", "card [CARD]", ["CARD"]),
        ("it is 4012888888881881.", "it is [CARD].", ["CARD"]),
        (
            "four one one one one one one one one one one one one one one one",
            "[CARD]",
            ["CARD"],
        ),
        # phones: Indian mobile, +91, 0-prefixed landline, international
        ("call me on 98450 12345", "call me on [PHONE]", ["PHONE"]),
        ("my number is +91 98450 12345", "my number is [PHONE]", ["PHONE"]),
        ("landline 080 2345 6789", "landline [PHONE]", ["PHONE"]),
        ("reach me at +1 415 555 0100", "reach me at [PHONE]", ["PHONE"]),
        ("or 0044 20 7946 0958", "or [PHONE]", ["PHONE"]),
        ("nine eight four five zero one two three four five is mine", "[PHONE] is mine", ["PHONE"]),
        # OTP / PIN, written and spoken, with double/triple
        ("the otp is 482913", "the otp is [OTP]", ["OTP"]),
        ("my otp is four two seven one", "my otp is [OTP]", ["OTP"]),
        ("pin double five three eight", "pin [OTP]", ["OTP"]),
        ("code is 4 2 7 1", "code is [OTP]", ["OTP"]),
        ("the pin is 1234", "the pin is [OTP]", ["OTP"]),
        # e-mail, written and spoken
        ("write to ravi.kumar@gmail.com please", "write to [EMAIL] please", ["EMAIL"]),
        ("it's ravi dot kumar at gmail dot com", "it's [EMAIL]", ["EMAIL"]),
        # Aadhaar (Verhoeff-valid), grouped and not
        ("my aadhaar is 2345 6789 0127", "my aadhaar is [AADHAAR]", ["AADHAAR"]),
        ("aadhaar 234567890127", "aadhaar [AADHAAR]", ["AADHAAR"]),
        # PAN
        ("pan ABCPE1234F", "pan [PAN]", ["PAN"]),
        ("my pan is abcpe1234f ok", "my pan is [PAN] ok", ["PAN"]),
        # several kinds at once
        (
            "card 4111111111111111 and otp 9921 to a@b.com",
            "card [CARD] and otp [OTP] to [EMAIL]",
            ["CARD", "EMAIL", "OTP"],
        ),
    ],
)
def test_redacts(text: str, expected: str, kinds: list[str]) -> None:
    assert R.redact(text) == (expected, kinds)


@pytest.mark.parametrize(
    "text",
    [
        "number 4111 1111 1111 1112",  # 16 digits failing Luhn
        "reference 12345678901234567",  # long reference, not a card
        "in 2024 I paid 5000 rupees",  # a year and an amount
        "I paid Rs 25000 last month",
        "the EMI is 12,500 per month",
        "my aadhaar is 2345 6789 0123",  # 12 digits failing Verhoeff
        "one of the two options, or three",
        "I waited for 45 minutes",
        "it costs 99.99 dollars",
        "flight AI 302 at 5 pm",
        "room 1204",
    ],
)
def test_near_misses_stay(text: str) -> None:
    assert R.redact(text) == (text, [])


def test_disabled_is_identity() -> None:
    text = "card 4111 1111 1111 1111"
    assert Redactor(enabled=False).redact(text) == (text, [])


def test_checksums() -> None:
    assert luhn_valid("4111111111111111")
    assert not luhn_valid("4111111111111112")
    assert verhoeff_valid("234567890127")
    assert not verhoeff_valid("234567890123")


def test_empty() -> None:
    assert R.redact("") == ("", [])
