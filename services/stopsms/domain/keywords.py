"""What an SMS reply asks for: the keyword rules, as one readable table.

Moroccans answer marketing SMS in French, Arabic script, Darija in Latin letters (Arabizi, with
digits for letters) and English, and they type fast: any case, accents or none, punctuation and
emoji around, letters repeated, a polite word ("stop svp", "merci"), the sender's name after the
keyword. The rules below are applied to a normalised form of the text:

1. The keyword phrase (longest first) opens the message, once polite words are set aside: the
   message asks for that phrase's intent, whatever follows (a sender's name, a complaint). An
   opt-back-in, which re-exposes the citizen, must be the whole message (but for a sender name).
2. A short message (at most :data:`SHORT_MESSAGE` words) that ends with an opt-out phrase
   (or with one and the sender's name) is an opt-out: in real doubt the law favours the
   citizen ("je veux stop", "svp arretez").
3. HELP (help, aide, مساعدة, …) must be the whole message, like an opt-back-in; the platform
   answers it with the keywords.
4. Anything else, including a longer sentence that merely uses a keyword about something else
   ("comment arrêter mon réveil"), asks for nothing.

The scope is not decided here: it is the sender the reply went to, or global when it went to
the platform's own short code or said STOP ALL (DOMAIN.md).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from stopsms.v1 import intake_pb2

OPT_OUT = intake_pb2.INTENT_OPT_OUT
OPT_OUT_ALL = intake_pb2.INTENT_OPT_OUT_ALL
OPT_IN = intake_pb2.INTENT_OPT_IN
NONE = intake_pb2.INTENT_NONE
HELP = intake_pb2.INTENT_HELP

#: Keyword phrases, as written by people; each is normalised like the messages.
# fmt: off
PHRASES: dict[int, tuple[str, ...]] = {
    OPT_OUT_ALL: (
        "stop all", "stopall", "stop tout", "stop tous", "stop toutes", "arret tout",
        "stop everything", "unsubscribe all", "stop kolchi", "توقف الكل", "ايقاف الكل",
        "الغاء الكل",
    ),
    OPT_IN: ("start", "unstop", "non arret", "restart", "ابدأ", "ابدا"),
    HELP: ("help", "aide", "aidez moi", "info", "infos", "مساعدة", "مساعده", "3awni", "3awenni"),
    OPT_OUT: (
        "stop", "stopsms", "stop sms", "stoppez", "arret", "arrêt", "arreter", "arrêter",
        "arretez", "arrêtez", "desabonner", "désabonner", "desabonnement", "desinscrire",
        "désinscrire", "desinscription", "unsubscribe", "unsub", "optout", "opt out",
        "توقف", "قف", "إيقاف", "ايقاف", "الغاء", "إلغاء", "اوقف", "7bes", "hbes", "7abes",
        "wa9ef", "w9ef",
    ),
}
# fmt: on

#: Words that carry no request of their own: politeness, and what is being stopped.
FILLER = frozenset(
    "svp stp sil vous plait please pls plz merci thanks thank you thx afak 3afak lah ykhalik "
    "ykhlik سلام شكرا من فضلك عافاك sms msg message messages pub pubs publicite promo "
    "le la les des de the to it me them moi ces these".split()
)
#: A message this short that ends with an opt-out phrase is an opt-out.
SHORT_MESSAGE = 4
MAX_TEXT = 480

_NOT_WORD = re.compile(r"[^\w]+", re.UNICODE)
_REPEATS = re.compile(r"(\w)\1+", re.UNICODE)
_ARABIC_VARIANTS = str.maketrans({"ى": "ي", "ة": "ه", "ٱ": "ا"})


def normalise_text(text: str) -> str:
    """Lower case, no accents or Arabic diacritics, no punctuation or emoji, no repeated letters."""
    decomposed = unicodedata.normalize("NFKD", text[:MAX_TEXT].casefold())
    plain = "".join(c for c in decomposed if not unicodedata.combining(c) and c != "\u0640")
    words = _NOT_WORD.sub(" ", plain.translate(_ARABIC_VARIANTS).replace("_", " "))
    return _REPEATS.sub(r"\1", " ".join(words.split()))


@dataclass(frozen=True)
class Reading:
    """What a reply asks for, and why (for logs and the test table)."""

    intent: int
    reason: str


def _phrase_table() -> list[tuple[tuple[str, ...], int]]:
    table = {
        tuple(normalise_text(p).split()): intent
        for intent, phrases in PHRASES.items()
        for p in phrases
    }
    return sorted(table.items(), key=lambda item: -len(item[0]))  # longest phrase first


_TABLE = _phrase_table()
_FILLER = frozenset(normalise_text(w) for w in FILLER)


def _opening_phrase(words: list[str]) -> tuple[tuple[str, ...], int] | None:
    for phrase, intent in _TABLE:
        if tuple(words[: len(phrase)]) == phrase:
            return phrase, intent
    return None


def read_reply(text: str, sender_id: str = "") -> Reading:
    """Read an SMS reply; ``sender_id`` is where it was sent (its name may follow the keyword)."""
    words = [w for w in normalise_text(text).split() if w not in _FILLER]
    if not words:
        return Reading(NONE, "no words")
    sender = normalise_text(sender_id).split()
    opening = _opening_phrase(words)
    if opening is not None:
        phrase, intent = opening
        rest = words[len(phrase) :]
        if intent not in (OPT_IN, HELP):
            return Reading(intent, f"opens with {' '.join(phrase)!r}")
        if not rest or rest == sender:
            return Reading(intent, f"is {' '.join(phrase)!r}")
        if intent == OPT_IN:
            return Reading(NONE, "an opt-back-in must be the whole message")
    if len(words) <= SHORT_MESSAGE:
        for start in range(1, len(words)):
            found = _opening_phrase(words[start:])
            if found is None or found[1] in (OPT_IN, HELP):
                continue
            if words[start + len(found[0]) :] in ([], sender):
                return Reading(found[1], f"short message ending with {' '.join(found[0])!r}")
    return Reading(NONE, "no keyword opens the message")


def classify(text: str, sender_id: str = "") -> int:
    """Return the :class:`Intent` of an SMS reply's text."""
    return read_reply(text, sender_id).intent
