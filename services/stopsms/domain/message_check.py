"""What a marketing text carries: the StopSMS mention, the platform's links, its SMS segments.

The regulator's rule is that every marketing SMS carries the StopSMS mention; a text without it
is, in its words, the informal sector. The accepted forms live here and nowhere else
(docs/senders.md shows them to PSVAs):

- a StopSMS link, ``StopSMS : https://<the platform's link site>/<code>`` (the word StopSMS,
  any case, with or without a colon, or "Stop SMS"), or the link alone after "STOP :";
- a reply keyword and a number, in French ("STOP au 3030", "Envoyez STOP au 3030", "STOP
  3030") or Arabic ("أرسل STOP إلى 3030", "ستوب إلى 3030", "للتوقف أرسل STOP الى 3030").

The platform's own link site is given by the caller (the intake's public base URL), so a link
to any other site does not count as a StopSMS link. Whether a link was issued for this sender,
and whether it expired, needs the link directory: :func:`read_text` only finds the codes.

The sender checks (declared, suspended, yours) need the sender register; the service puts
both together in a fixed order of problems.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from stopsms.domain.messages import GSM7_SEGMENT, segment_length

#: Characters of one part of a split message (the rest carries the join header).
GSM7_PART = 153
UCS2_PART = 67
#: Link codes: 11 letters or digits (intake/links.py draws them).
LINK_CODE = r"[0-9A-Za-z]{11}"
#: A short code or a phone number the citizen can reply to.
_REPLY_NUMBER = r"\+?\d[\d ]{2,14}\d"
_STOP_WORD = r"(?:stop|arr[eê]t|ستوب|توقف)"
#: The reply forms of the mention, in French and Arabic (case and accents as people type).
MENTION_REPLY_FORMS = (
    # "STOP au 3030", "Envoyez STOP au 3030", "STOP: 3030", "STOP 3030", "STOP au +212 6…"
    rf"\b{_STOP_WORD}\s*(?:au|a|à|:|=|->)?\s*{_REPLY_NUMBER}\b",
    # "أرسل STOP إلى 3030", "ستوب إلى 3030", "للتوقف أرسل STOP الى 3030"
    rf"{_STOP_WORD}\s*(?:إلى|الى|ل|على|:)\s*{_REPLY_NUMBER}",
)
_REPLY_MENTION = re.compile("|".join(f"(?:{form})" for form in MENTION_REPLY_FORMS), re.I)
_WORD_STOPSMS = re.compile(r"stop\s?sms|stop\s*:", re.I)
_URL = re.compile(r"(?:https?://)?(?:[\w-]+\.)+[\w-]+(?::\d+)?/\S*", re.I)


class Encoding:
    """How the network carries a text (the proto's MessageEncoding values)."""

    GSM7 = 1
    UCS2 = 2


@dataclass(frozen=True)
class TextReading:
    """What the text alone says."""

    has_mention: bool
    link_codes: tuple[str, ...]
    segments: int
    encoding: int


class LinkSite:
    """The platform's link site: recognises its links in a text and reads their codes."""

    def __init__(self, public_base_url: str) -> None:
        parts = urlsplit(public_base_url if "://" in public_base_url else f"//{public_base_url}")
        self.host = (parts.hostname or "").lower()
        self.port = parts.port
        self.path = parts.path.rstrip("/")
        self._code = re.compile(rf"^{re.escape(self.path)}/({LINK_CODE})/?$")

    def code_of(self, url: str) -> str | None:
        """The link code of ``url`` when it is one of the platform's links."""
        parts = urlsplit(url if "://" in url else f"//{url}")
        if (parts.hostname or "").lower() != self.host or parts.port != self.port:
            return None
        found = self._code.match(parts.path)
        return found.group(1) if found else None

    def codes_in(self, text: str) -> tuple[str, ...]:
        """The platform's link codes in ``text``, in order, each once."""
        return self._codes_of(_URL.finditer(text))

    def _codes_of(self, urls: Iterable[re.Match[str]]) -> tuple[str, ...]:
        codes: list[str] = []
        for match in urls:
            code = self.code_of(match.group().rstrip(".,;:!?)»\"'"))
            if code is not None and code not in codes:
                codes.append(code)
        return tuple(codes)


def segments_of(text: str) -> tuple[int, int]:
    """(SMS segments, encoding) of ``text``: split parts hold 153 GSM-7 or 67 UCS-2 characters."""
    length, limit = segment_length(text)
    encoding = Encoding.GSM7 if limit == GSM7_SEGMENT else Encoding.UCS2
    if length <= limit:
        return (1 if length else 0), encoding
    part = GSM7_PART if limit == GSM7_SEGMENT else UCS2_PART
    return -(-length // part), encoding


def has_reply_mention(text: str) -> bool:
    """Whether ``text`` tells the citizen to reply STOP to a number, in an accepted form."""
    return _REPLY_MENTION.search(text) is not None


def read_text(text: str, site: LinkSite) -> TextReading:
    """The mention, the platform's link codes and the cost of ``text``."""
    urls = list(_URL.finditer(text)) if "/" in text else []
    codes = site._codes_of(urls)  # noqa: SLF001 - the URLs are scanned once, here
    # the word StopSMS must be the text's own, not the link site's host name ("stopsms.ma")
    words = text
    if urls:
        cuts = [0, *(i for m in urls for i in m.span()), len(text)]
        words = " ".join(text[a:b] for a, b in zip(cuts[::2], cuts[1::2], strict=True))
    mention = has_reply_mention(words) or (bool(codes) and _WORD_STOPSMS.search(words) is not None)
    segments, encoding = segments_of(text)
    return TextReading(mention, codes, segments, encoding)
