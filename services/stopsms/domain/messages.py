"""What the platform writes to citizens: one SMS segment, in the language they used.

A confirmation says what was stopped (the sender, or all marketing) or allowed again, that it
holds at every operator and provider, and names the reference (the request's event id, short).
A HELP message lists the keywords; a one-time code says how long it is valid. Every text fits
one segment: 160 characters when the GSM-7 alphabet can write it, 70 (UTF-16 units) otherwise,
which is what Arabic costs — a unit test holds every text to it with the longest sender id.

Languages: French (also the answer to Darija written in Latin letters, as Moroccans read it),
Arabic, English.
"""

from __future__ import annotations

import re

from stopsms.v1 import events_pb2

LANGUAGES = ("fr", "ar", "en")
DEFAULT_LANGUAGE = "fr"
#: Characters of one GSM-7 segment, and of one UCS-2 segment (UTF-16 code units).
GSM7_SEGMENT, UCS2_SEGMENT = 160, 70

# GSM 03.38: the basic alphabet (one septet each) and its extension (an escape and a septet).
_GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡"
    "ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM7_EXTENSION = frozenset("^{}\\[~]|€\f")
_GSM7_ALL = _GSM7_BASIC | _GSM7_EXTENSION
#: An extension character costs two (the escape and the character).
_GSM7_EXTENSION_CHAR = re.compile("[" + re.escape("".join(sorted(_GSM7_EXTENSION))) + "]")
_ARABIC = re.compile(r"[\u0600-\u06ff\u0750-\u077f]")
_ENGLISH = re.compile(
    r"\b(unsubscribe|please|remove|no more|don'?t|do not|want|stop it|stop sending|opt out)\b",
    re.IGNORECASE,
)

# fmt: off
_CONFIRM_OUT_SENDER = {
    "fr": "StopSMS: fini la pub de {sender}, chez tous les operateurs et fournisseurs. Ref {ref}. Pour annuler, repondez START.",
    "ar": "StopSMS: توقف إشهار {sender} لدى كل مشغل ومزود. المرجع {ref}",
    "en": "StopSMS: no more marketing from {sender}, at every operator and provider. Ref {ref}. To undo, reply START.",
}
_CONFIRM_OUT_ALL = {
    "fr": "StopSMS: fini toute pub par SMS, chez tous les operateurs et fournisseurs. Ref {ref}. Pour annuler, repondez START.",
    "ar": "StopSMS: توقف كل إشهار بالرسائل لدى كل مشغل ومزود. المرجع {ref}",
    "en": "StopSMS: no more marketing SMS at all, at every operator and provider. Ref {ref}. To undo, reply START.",
}
_CONFIRM_IN_SENDER = {
    "fr": "StopSMS: {sender} peut de nouveau vous ecrire, chez tous les operateurs et fournisseurs. Ref {ref}. Pour arreter, repondez STOP.",
    "ar": "StopSMS: يُسمح بإشهار {sender} لدى كل مشغل ومزود. المرجع {ref}",
    "en": "StopSMS: {sender} may write to you again, at every operator and provider. Ref {ref}. To stop, reply STOP.",
}
_CONFIRM_IN_ALL = {
    "fr": "StopSMS: la pub par SMS est de nouveau permise, chez tous les operateurs et fournisseurs. Ref {ref}. Pour arreter, repondez STOP.",
    "ar": "StopSMS: يُسمح بالإشهار لدى كل مشغل ومزود. المرجع {ref}",
    "en": "StopSMS: marketing SMS are allowed again, at every operator and provider. Ref {ref}. To stop, reply STOP.",
}
_HELP = {
    "fr": "StopSMS: repondez STOP pour ne plus recevoir la pub de cet expediteur, STOP TOUT pour aucune pub, START pour la reprendre. Gratuit.",
    "ar": "StopSMS: أرسل STOP لوقف إشهار المرسل، STOP ALL لوقف الكل، START للعودة",
    "en": "StopSMS: reply STOP to end this sender's marketing, STOP ALL for all marketing, START to allow it again. Free.",
}
_CODE = {
    "fr": "StopSMS: votre code est {code}. Valable 5 minutes. Ne le donnez a personne.",
    "ar": "StopSMS: رمزك هو {code}، صالح 5 دقائق. لا تعطه لأحد.",
    "en": "StopSMS: your code is {code}. Valid 5 minutes. Do not share it.",
}
_COMPLAINT = {
    "fr": "StopSMS: plainte recue, ref {ref}. Elle est examinee et transmise a la CNDP si la loi n'a pas ete respectee. Merci.",
    "ar": "StopSMS: توصلنا بشكايتك {ref} وستُحال على CNDP عند المخالفة",
    "en": "StopSMS: complaint received, ref {ref}. It is examined and sent to the CNDP if the law was broken. Thank you.",
}
_COMPLAINT_ASK_SENDER = {
    "fr": "StopSMS: plainte recue, ref {ref}. Qui vous a envoye ce SMS? Repondez {ref} suivi du nom ou du numero affiche.",
    "ar": "StopSMS: شكاية {ref}. أرسل {ref} واسم المرسل أو رقمه",
    "en": "StopSMS: complaint received, ref {ref}. Who sent that SMS? Reply {ref} then the name or number shown.",
}
# fmt: on


def language_of(language: str) -> str:
    """One of :data:`LANGUAGES`, from a BCP 47 tag (``ar-MA`` is Arabic); French otherwise."""
    base = language.split("-", 1)[0].strip().lower()
    return base if base in LANGUAGES else DEFAULT_LANGUAGE


def reply_language(text: str) -> str:
    """The language to answer a reply in: Arabic script → ar; English words → en; else fr.

    Darija written in Latin letters is answered in French, as Moroccans read it.
    """
    if _ARABIC.search(text):
        return "ar"
    if _ENGLISH.search(text):
        return "en"
    return DEFAULT_LANGUAGE


def short_reference(event_id: str) -> str:
    """The reference a citizen is given: the first 8 characters of the event id, upper case."""
    return event_id.replace("-", "")[:8].upper()


def confirmation(language: str, action: int, sender_id: str, event_id: str) -> str:
    """What a confirmed request did, for its scope (empty sender: all marketing)."""
    opted_out = action == events_pb2.ACTION_OPT_OUT
    if sender_id:
        table = _CONFIRM_OUT_SENDER if opted_out else _CONFIRM_IN_SENDER
    else:
        table = _CONFIRM_OUT_ALL if opted_out else _CONFIRM_IN_ALL
    return table[language_of(language)].format(sender=sender_id, ref=short_reference(event_id))


def help_text(language: str) -> str:
    """The keywords the platform understands."""
    return _HELP[language_of(language)]


def complaint_text(language: str, reference: str, *, ask_sender: bool) -> str:
    """A complaint's acknowledgement; asks for the sender when the operator could not tell."""
    texts = _COMPLAINT_ASK_SENDER if ask_sender else _COMPLAINT
    return texts[language_of(language)].format(ref=reference)


def code_text(language: str, code: str) -> str:
    """A one-time code's message."""
    return _CODE[language_of(language)].format(code=code)


def segment_length(text: str) -> tuple[int, int]:
    """(length as the network counts it, the segment's limit) for ``text``."""
    if _GSM7_ALL.issuperset(text):  # one pass in C: this runs for every text of a campaign
        return len(text) + len(_GSM7_EXTENSION_CHAR.findall(text)), GSM7_SEGMENT
    return len(text.encode("utf-16-le")) // 2, UCS2_SEGMENT


def fits_one_segment(text: str) -> bool:
    """Whether ``text`` is one SMS segment."""
    length, limit = segment_length(text)
    return length <= limit
