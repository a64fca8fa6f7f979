"""The keyword table: real-looking SMS replies, what each asks for, and why."""

import csv
from pathlib import Path

import pytest

from stopsms.domain.keywords import HELP, NONE, OPT_IN, OPT_OUT, OPT_OUT_ALL, read_reply

# (reply text, sender it was sent to, expected intent, why)
# fmt: off
REPLIES = [
    ("STOP", "JUMIA", OPT_OUT, "the keyword itself"),
    ("stop", "JUMIA", OPT_OUT, "any case"),
    ("Stop", "JUMIA", OPT_OUT, "any case"),
    ("sToP", "JUMIA", OPT_OUT, "any case"),
    ("STOP.", "JUMIA", OPT_OUT, "trailing punctuation"),
    ("  stop  ", "JUMIA", OPT_OUT, "surrounding spaces"),
    ("stop!!!", "JUMIA", OPT_OUT, "exclamation marks"),
    ("¡¡STOP!!", "JUMIA", OPT_OUT, "punctuation on both sides"),
    ("🛑 STOP 🛑", "JUMIA", OPT_OUT, "emoji around"),
    ("stop 😡😡", "JUMIA", OPT_OUT, "emoji after"),
    ("stooooop", "JUMIA", OPT_OUT, "repeated letters"),
    ("STTTOPPP", "JUMIA", OPT_OUT, "repeated letters, upper case"),
    ("stop svp", "JUMIA", OPT_OUT, "polite word after"),
    ("svp stop", "JUMIA", OPT_OUT, "polite word before"),
    ("STOP merci", "JUMIA", OPT_OUT, "thanks after"),
    ("stop please", "JUMIA", OPT_OUT, "English politeness"),
    ("please stop", "JUMIA", OPT_OUT, "English politeness before"),
    ("Stop s'il vous plaît", "JUMIA", OPT_OUT, "French politeness with accent and apostrophe"),
    ("stop 3afak", "JUMIA", OPT_OUT, "Darija politeness"),
    ("STOPSMS", "JUMIA", OPT_OUT, "the mention written as one word"),
    ("stop sms", "JUMIA", OPT_OUT, "the mention in two words"),
    ("Stop SMS!", "JUMIA", OPT_OUT, "the mention with punctuation"),
    ("stop JUMIA", "JUMIA", OPT_OUT, "keyword followed by the sender's name"),
    ("STOP Marjane", "JUMIA", OPT_OUT, "another name after the keyword: still an opt-out, scope unchanged"),
    ("stop pub", "JUMIA", OPT_OUT, "what is stopped, named after"),
    ("stop les messages", "JUMIA", OPT_OUT, "what is stopped, in French"),
    ("ARRET", "JUMIA", OPT_OUT, "French keyword"),
    ("ARRÊT", "JUMIA", OPT_OUT, "French keyword with its accent"),
    ("arret svp", "JUMIA", OPT_OUT, "French keyword, polite"),
    ("Arrêtez!", "JUMIA", OPT_OUT, "imperative form"),
    ("arrêter", "JUMIA", OPT_OUT, "infinitive"),
    ("DESABONNER", "JUMIA", OPT_OUT, "unsubscribe in French"),
    ("désabonner", "JUMIA", OPT_OUT, "with its accent"),
    ("Désabonnement SVP", "JUMIA", OPT_OUT, "the noun"),
    ("DESINSCRIRE", "JUMIA", OPT_OUT, "another French form"),
    ("désinscription", "JUMIA", OPT_OUT, "its noun"),
    ("UNSUBSCRIBE", "JUMIA", OPT_OUT, "English"),
    ("unsubscribe me please", "JUMIA", OPT_OUT, "English sentence opening with the keyword"),
    ("توقف", "JUMIA", OPT_OUT, "Arabic: stop"),
    ("قف", "JUMIA", OPT_OUT, "Arabic: halt"),
    ("إيقاف", "JUMIA", OPT_OUT, "Arabic: stopping, with hamza"),
    ("ايقاف", "JUMIA", OPT_OUT, "Arabic: stopping, hamza omitted"),
    ("إلغاء", "JUMIA", OPT_OUT, "Arabic: cancel, with hamza"),
    ("الغاء", "JUMIA", OPT_OUT, "Arabic: cancel, hamza omitted"),
    ("تـوقـف", "JUMIA", OPT_OUT, "Arabic with tatweel"),
    ("تَوَقَّفْ", "JUMIA", OPT_OUT, "Arabic with diacritics"),
    ("توقف من فضلك", "JUMIA", OPT_OUT, "Arabic, polite"),
    ("شكرا توقف", "JUMIA", OPT_OUT, "Arabic, thanks first"),
    ("7bes", "JUMIA", OPT_OUT, "Arabizi: stop (حبس)"),
    ("hbes 3afak", "JUMIA", OPT_OUT, "Arabizi, polite"),
    ("wa9ef", "JUMIA", OPT_OUT, "Arabizi: stop (وقف)"),
    ("je veux stop", "JUMIA", OPT_OUT, "short message ending with the keyword"),
    ("i said STOP", "JUMIA", OPT_OUT, "short message ending with the keyword"),
    ("bghit stop", "JUMIA", OPT_OUT, "Darija: I want stop"),
    ("stop ces pubs svp", "JUMIA", OPT_OUT, "keyword, object, politeness"),
    ("stop harcelement", "JUMIA", OPT_OUT, "keyword then a complaint"),
    ("STOP ALL", "JUMIA", OPT_OUT_ALL, "global"),
    ("stop all", "JUMIA", OPT_OUT_ALL, "global, lower case"),
    ("STOPALL", "JUMIA", OPT_OUT_ALL, "global, one word"),
    ("stop tout", "JUMIA", OPT_OUT_ALL, "global in French"),
    ("STOP TOUT svp", "JUMIA", OPT_OUT_ALL, "global in French, polite"),
    ("arrêt tout", "JUMIA", OPT_OUT_ALL, "global with the French keyword"),
    ("توقف الكل", "JUMIA", OPT_OUT_ALL, "global in Arabic"),
    ("stop kolchi", "JUMIA", OPT_OUT_ALL, "global in Darija"),
    ("unsubscribe all", "JUMIA", OPT_OUT_ALL, "global in English"),
    ("START", "JUMIA", OPT_IN, "opt back in"),
    ("start", "JUMIA", OPT_IN, "opt back in, lower case"),
    ("Start svp", "JUMIA", OPT_IN, "opt back in, polite"),
    ("START JUMIA", "JUMIA", OPT_IN, "opt back in naming the sender it was sent to"),
    ("UNSTOP", "JUMIA", OPT_IN, "opt back in, English"),
    ("NON ARRET", "JUMIA", OPT_IN, "opt back in, French"),
    ("non arrêt", "JUMIA", OPT_IN, "opt back in, French with accent"),
    ("ابدأ", "JUMIA", OPT_IN, "opt back in, Arabic"),
    ("start the engine now", "JUMIA", NONE, "an opt-back-in must be unambiguous"),
    ("START MARJANE", "JUMIA", NONE, "an opt-back-in naming another sender is not for this one"),
    ("comment arrêter mon réveil", "JUMIA", NONE, "the word used about something else"),
    ("je ne peux pas arrêter de rire", "JUMIA", NONE, "a sentence, keyword in the middle"),
    ("where is the bus stop near the station", "JUMIA", NONE, "a sentence about a bus stop"),
    ("Merci pour l'offre, je passe demain", "JUMIA", NONE, "an answer to the offer"),
    ("OK", "JUMIA", NONE, "an acknowledgement"),
    ("oui", "JUMIA", NONE, "yes"),
    ("c'est combien ?", "JUMIA", NONE, "a question"),
    ("شكرا", "JUMIA", NONE, "thanks only"),
    ("merci", "JUMIA", NONE, "thanks only"),
    ("", "JUMIA", NONE, "empty"),
    ("😀😀", "JUMIA", NONE, "emoji only"),
    ("...", "JUMIA", NONE, "punctuation only"),
    ("stopper la voiture devant la maison", "JUMIA", NONE, "a word that only starts like the keyword"),
    ("je voudrais savoir comment desabonner mon fils de la salle", "JUMIA", NONE, "a long sentence"),
    ("1234", "JUMIA", NONE, "digits"),
    ("bonjour", "JUMIA", NONE, "a greeting"),
]
# fmt: on


def test_the_table_is_large_enough() -> None:
    assert len(REPLIES) >= 80
    assert {intent for _, _, intent, _ in REPLIES} == {OPT_OUT, OPT_OUT_ALL, OPT_IN, NONE}


@pytest.mark.parametrize(
    ("text", "sender", "intent", "why"), REPLIES, ids=[r[3] + ": " + r[0] for r in REPLIES]
)
def test_each_reply_is_read_as_people_mean_it(
    text: str, sender: str, intent: int, why: str
) -> None:
    reading = read_reply(text, sender)
    assert reading.intent == intent, f"{why}: read as {reading}"


# The large table: how Moroccans answer marketing SMS, in French, Arabic, Darija in both
# scripts and English, half of it ordinary replies and near-misses (tests/data/replies.tsv,
# also measured by bench/classifier.py).
TABLE = Path(__file__).resolve().parents[1] / "data" / "replies.tsv"
INTENTS = {
    "OPT_OUT": OPT_OUT,
    "OPT_OUT_ALL": OPT_OUT_ALL,
    "OPT_IN": OPT_IN,
    "HELP": HELP,
    "NONE": NONE,
}


def labelled_replies() -> list[tuple[str, str, str, str, str]]:
    with TABLE.open(newline="") as table:
        lines = (line for line in table if not line.startswith("#"))
        return [tuple(row) for row in csv.reader(lines, delimiter="\t")]  # type: ignore[misc]


LABELLED = labelled_replies()


def test_the_labelled_table_is_large_mixed_and_half_negative() -> None:
    assert len(LABELLED) >= 400
    negatives = [row for row in LABELLED if row[2] in ("NONE", "HELP")]
    assert len(negatives) >= len(LABELLED) * 0.45
    assert {row[3] for row in LABELLED} == {"fr", "ar", "darija-latin", "darija-arabic", "en"}


@pytest.mark.parametrize(
    ("text", "sender", "expected", "language", "note"),
    LABELLED,
    ids=[f"{row[3]}: {row[0]}" for row in LABELLED],
)
def test_each_labelled_reply_is_read_as_meant(
    text: str, sender: str, expected: str, language: str, note: str
) -> None:
    reading = read_reply(text, sender)
    assert reading.intent == INTENTS[expected], f"{note or language}: read as {reading}"
