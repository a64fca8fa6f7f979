"""StopSMS links: random codes, recorded on ``stopsms.links.v1``, resolved through the link store.

A code is 11 base62 characters drawn from the OS's CSPRNG (62¹¹ ≈ 2⁶⁵·⁵ codes), so links cannot
be guessed or enumerated. With the 19-character base ``https://stopsms.ma/`` a link is 30
characters, short enough for an SMS. No replica holds the links: every one asks the link store
(:mod:`stopsms.adapters.link_store`, in Redis; the console reads it too), which the replicas
fill from the topic together, so a link works wherever the click lands and after any restart,
and a replica's memory does not grow with the links issued.
"""

from __future__ import annotations

import re
import secrets
import string

from stopsms.adapters.link_store import LinkDirectory

__all__ = ["CODE_LENGTH", "LinkDirectory", "is_code", "new_code", "new_codes"]

CODE_LENGTH = 11
_ALPHABET = string.digits + string.ascii_letters
_CODE = re.compile(rf"[0-9A-Za-z]{{{CODE_LENGTH}}}")


_CODE_SPACE = len(_ALPHABET) ** CODE_LENGTH


def _spell(number: int) -> str:
    digits = []
    for _ in range(CODE_LENGTH):
        number, digit = divmod(number, len(_ALPHABET))
        digits.append(_ALPHABET[digit])
    return "".join(digits)


def new_code() -> str:
    """Draw a fresh random link code, uniformly over all 62¹¹ codes."""
    while True:
        number = int.from_bytes(secrets.token_bytes(9), "big") >> 6  # 66 random bits
        if number < _CODE_SPACE:  # reject the excess rather than bias the draw
            return _spell(number)


def new_codes(count: int) -> list[str]:
    """``count`` fresh codes, drawn as :func:`new_code` does, with one call to the OS's CSPRNG.

    A campaign of 10,000 links otherwise spends more time in 20,000 system calls for random
    bytes (codes and nonces) than in anything else.
    """
    randomness = secrets.token_bytes(9 * count)
    codes = []
    for i in range(count):
        number = int.from_bytes(randomness[9 * i : 9 * i + 9], "big") >> 6
        codes.append(_spell(number) if number < _CODE_SPACE else new_code())
    return codes


def is_code(text: str) -> bool:
    """True when ``text`` has the shape of a link code."""
    return bool(_CODE.fullmatch(text))
