"""Moroccan mobile numbers: parse every written form into E.164, reject everything else.

Citizens and parties write the same number as ``06 12 34 56 78``, ``+212 6-12-34-56-78``,
``00212612345678`` or ``212612345678``. Everything downstream (pseudonyms, sealing) works on the
single E.164 form ``+2126XXXXXXXX`` / ``+2127XXXXXXXX``, so one person is one subject whatever
channel they came from.
"""

from __future__ import annotations

import re

#: Longest input we even look at: anything longer is not a phone number, and refusing it early
#: keeps oversized payloads out of the parser and out of error messages.
MAX_INPUT_LENGTH = 32

_SEPARATORS = re.compile(r"[\s.\-/()]")
_NATIONAL = re.compile(r"[67][0-9]{8}", re.ASCII)
#: The spellings almost every list uses, recognised by one expression: the fast path of
#: :func:`e164_or_none` (a property test holds it to :func:`normalise_msisdn`).
USUAL_SPELLING = re.compile(r"(?:\+212|00212|212|0)([67][0-9]{8})", re.ASCII)
#: Arabic-Indic and Eastern Arabic-Indic digits, as Arabic keyboards write them, read as the
#: same digits: one number, one subject, whatever script it was typed in.
_DIGITS = str.maketrans("٠١٢٣٤٥٦٧٨٩۰۱۲۳۴۵۶۷۸۹", "01234567890123456789")


class InvalidNumber(ValueError):
    """The input is not a Moroccan mobile number; the message says why, without echoing it."""


def normalise_msisdn(raw: str) -> str:
    """Return the E.164 form of a Moroccan mobile number, or raise :class:`InvalidNumber`.

    Accepted: ``06…``/``07…`` (local), ``+212``, ``00212`` and ``212`` prefixes, optionally with a
    ``(0)`` trunk prefix after the country code, with spaces, dots, dashes or slashes anywhere.
    Landlines (05…), foreign numbers and short codes are refused: StopSMS covers mobile lines.
    """
    if not isinstance(raw, str) or not raw.strip():
        raise InvalidNumber("the number is empty")
    if len(raw) > MAX_INPUT_LENGTH:
        raise InvalidNumber(f"the number is longer than {MAX_INPUT_LENGTH} characters")
    digits = _SEPARATORS.sub("", raw.strip().translate(_DIGITS))
    if digits.startswith("+"):
        if not digits.startswith("+212"):
            raise InvalidNumber("only Moroccan numbers (+212) are covered")
        national = digits[4:]
    elif digits.startswith("00"):
        if not digits.startswith("00212"):
            raise InvalidNumber("only Moroccan numbers (00212) are covered")
        national = digits[5:]
    elif digits.startswith("212") and len(digits) in (12, 13):
        national = digits[3:]
    elif digits.startswith("0"):
        national = digits[1:]
    else:
        raise InvalidNumber("the number has no recognisable prefix (06, 07, +212, 00212 or 212)")
    if national.startswith("0") and len(national) == 10:
        national = national[1:]  # "+212 (0)6…": the trunk zero written after the country code
    if not (national.isascii() and national.isdigit()):
        raise InvalidNumber("the number contains characters other than digits and separators")
    if len(national) != 9:
        raise InvalidNumber("a Moroccan mobile number has 9 digits after the country code")
    if not _NATIONAL.fullmatch(national):
        raise InvalidNumber("not a mobile number: Moroccan mobiles start with 6 or 7")
    return "+212" + national


def e164_or_none(raw: str) -> str | None:
    """The E.164 form of a number, or None when it is not a Moroccan mobile number.

    The batch form of :func:`normalise_msisdn` (a campaign list of a million numbers): the usual
    spellings are recognised by one regular expression, and anything else goes through
    :func:`normalise_msisdn`, which has the final word.
    """
    usual = USUAL_SPELLING.fullmatch(raw)
    if usual is not None:
        return "+212" + usual.group(1)
    try:
        return normalise_msisdn(raw)
    except InvalidNumber:
        return None
