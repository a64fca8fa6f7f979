"""What an SMS reply asks for: STOP, STOP ALL, START.

A first, deliberately small classifier: the plain keywords in any case, with surrounding spaces
and punctuation. The complete multilingual rules (French, Arabic script, Arabizi, polite words)
replace it in one table-driven module of their own.
"""

from __future__ import annotations

import re
import unicodedata

from stopsms.v1 import intake_pb2

_NOISE = re.compile(r"[^\w\s]", re.UNICODE)
_SPACES = re.compile(r"\s+")

_PHRASES: dict[str, int] = {
    "STOP": intake_pb2.INTENT_OPT_OUT,
    "STOPSMS": intake_pb2.INTENT_OPT_OUT,
    "STOP SMS": intake_pb2.INTENT_OPT_OUT,
    "STOP ALL": intake_pb2.INTENT_OPT_OUT_ALL,
    "STOPALL": intake_pb2.INTENT_OPT_OUT_ALL,
    "STOP TOUT": intake_pb2.INTENT_OPT_OUT_ALL,
    "START": intake_pb2.INTENT_OPT_IN,
}


def normalise_text(text: str) -> str:
    """Upper-case, strip accents and punctuation, fold runs of spaces."""
    decomposed = unicodedata.normalize("NFKD", text)
    plain = "".join(c for c in decomposed if not unicodedata.combining(c))
    return _SPACES.sub(" ", _NOISE.sub(" ", plain)).strip().upper()


def classify(text: str) -> int:
    """Return the :class:`Intent` of an SMS reply's text."""
    return _PHRASES.get(normalise_text(text[:480]), intake_pb2.INTENT_NONE)
