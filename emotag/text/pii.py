"""Mask personal data before anything is scored or stored.

Placeholders are lower-case ASCII in angle brackets so that later lower-casing leaves them intact and the
tokenizer can keep each one as a single token. Order matters: e-mails first (their local part may hold
digits), then 18-digit ID cards, then 16-19 digit bank cards (Luhn-checked, so order numbers survive),
then 11-digit mainland mobile numbers.
"""

from __future__ import annotations

import re

EMAIL_TOKEN = "<email>"
IDCARD_TOKEN = "<idcard>"
CARD_TOKEN = "<card>"
PHONE_TOKEN = "<phone>"
PLACEHOLDERS: tuple[str, ...] = (EMAIL_TOKEN, IDCARD_TOKEN, CARD_TOKEN, PHONE_TOKEN)

_ASCII_DIGIT = re.compile(r"[0-9]")  # the number patterns below are all re.ASCII
_EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}", re.ASCII)
# 18-digit resident ID: 6-digit region, birth date 18xx/19xx/20xx, 3 digits, check digit or X.
_IDCARD = re.compile(
    r"(?<![0-9])[1-9]\d{5}(?:18|19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}[0-9xX](?![0-9])",
    re.ASCII,
)
# Bank cards: 16-19 digits, optionally grouped by spaces or dashes in fours.
_CARD = re.compile(r"(?<![0-9])(?:\d{4}[ -]?){3}\d{4}(?:\d{1,3})?(?![0-9])", re.ASCII)
# Mainland mobile: 1[3-9] + 9 digits, optionally +86/86 prefixed and grouped 3-4-4.
_PHONE = re.compile(r"(?<![0-9])(?:\+?86[ -]?)?1[3-9]\d[ -]?\d{4}[ -]?\d{4}(?![0-9])", re.ASCII)


def luhn_ok(digits: str) -> bool:
    """The Luhn checksum that valid bank-card numbers satisfy."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _card(m: re.Match[str]) -> str:
    digits = re.sub(r"[ -]", "", m.group(0))
    return CARD_TOKEN if 16 <= len(digits) <= 19 and luhn_ok(digits) else m.group(0)


def mask_emails(text: str) -> str:
    """Replace e-mail addresses only: `normalize` masks these before URLs (``me@www.x.com`` is no URL)."""
    return _EMAIL.sub(EMAIL_TOKEN, text) if "@" in text else text


def mask_pii(text: str) -> str:
    """Replace e-mails, ID-card, bank-card and mobile numbers by placeholders."""
    text = mask_emails(text)
    if not _ASCII_DIGIT.search(text):  # every pattern below needs an ASCII digit
        return text
    text = _IDCARD.sub(IDCARD_TOKEN, text)
    text = _CARD.sub(_card, text)
    return _PHONE.sub(PHONE_TOKEN, text)
