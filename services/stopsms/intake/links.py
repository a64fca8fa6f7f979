"""StopSMS links: random codes, recorded on ``stopsms.links.v1``, resolved by every replica.

A code is 11 base62 characters drawn from the OS's CSPRNG (62¹¹ ≈ 2⁶⁵·⁵ codes), so links cannot
be guessed or enumerated. With the 19-character base ``https://stopsms.ma/`` a link is 30
characters, short enough for an SMS. Every intake replica indexes the whole (compacted) topic,
so a link works wherever the click lands and after any restart.
"""

from __future__ import annotations

import re
import secrets
import string

from stopsms.adapters.bus import Bus, CompactedTopicIndex
from stopsms.v1 import events_pb2

CODE_LENGTH = 11
_ALPHABET = string.digits + string.ascii_letters
_CODE = re.compile(rf"[0-9A-Za-z]{{{CODE_LENGTH}}}")


_CODE_SPACE = len(_ALPHABET) ** CODE_LENGTH


def new_code() -> str:
    """Draw a fresh random link code, uniformly over all 62¹¹ codes."""
    while True:
        number = int.from_bytes(secrets.token_bytes(9), "big") >> 6  # 66 random bits
        if number < _CODE_SPACE:  # reject the excess rather than bias the draw
            break
    digits = []
    for _ in range(CODE_LENGTH):
        number, digit = divmod(number, len(_ALPHABET))
        digits.append(_ALPHABET[digit])
    return "".join(digits)


def is_code(text: str) -> bool:
    """True when ``text`` has the shape of a link code."""
    return bool(_CODE.fullmatch(text))


class LinkDirectory(CompactedTopicIndex[events_pb2.StopLink]):
    """Every issued link by code, kept current from the links topic."""

    def __init__(self, bus: Bus, topic: str, **kwargs: object) -> None:
        super().__init__(bus, topic, events_pb2.StopLink.FromString, **kwargs)

    def remember(self, link: events_pb2.StopLink) -> None:
        """Hold a link this replica just issued."""
        self.put(link.code, link)
