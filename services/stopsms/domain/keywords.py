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
4. A sentence that asks, in other words, not to be written to any more is an opt-out
   (:data:`SENTENCES`): French ("merci de ne plus m'envoyer de SMS"), English ("stop sending me
   texts"), Darija in Latin letters with digits for sounds ("bghit n7bes had lmsajat", "baraka
   3lia") and in Arabic script ("حبسو هاد الميساجات"), and Modern Standard Arabic ("لا أريد
   تلقي هذه الرسائل"); unless it is negated ("n'arrêtez pas", "don't stop", "ما تحبسوش").
   Darija's stop verbs (7bes, w9ef, حبس, وقف) also mean "wait" and "stand": they ask to stop
   only alone, with what or whom to stop, or after a request (:func:`_darija_stop`).
5. Anything else, including a longer sentence that merely uses a keyword about something else
   ("comment arrêter mon réveil"), asks for nothing.

How people type is forgiven for opt-outs, never for an opt-back-in: letters spaced or dotted
apart ("s t o p", "S.T.O.P"), digits for look-alike letters ("st0p", "5TOP"), and one typo
(a letter wrong, missing, added or two swapped: "stpo", "desabonner" → "desaboner") in a
keyword of four letters or more. START must be written as it is, since an opt-back-in read
wrongly exposes a person to marketing again; when a reply mixes both, the opt-out wins.

The scope is not decided here: it is the sender the reply went to, or global when it went to
the platform's own short code or said STOP ALL (DOMAIN.md).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
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
        "توقف", "قف", "إيقاف", "ايقاف", "الغاء", "إلغاء", "اوقف",
    ),
}
# fmt: on

#: Politeness: the only words an opt-back-in may carry besides its keyword and the sender.
POLITE = frozenset(
    "svp stp sil vous plait please pls plz merci thanks thank you thx afak 3afak lah ykhalik "
    "ykhlik سلام شكرا من فضلك عافاك".split()
)
#: Words that carry no request of their own: politeness, and what is being stopped.
FILLER = POLITE | frozenset(
    "sms msg message messages pub pubs publicite promo "
    "le la les des de the to it me them moi ces these".split()
)
#: Phrases that open with a keyword but mean something else ("arrêt de bus", "stop by").
OTHER_MEANINGS = (
    "stop by",
    "stop ou encore",
    "stop over",
    "arret de bus",
    "arret d autobus",
    "arretez vous",
    "arrete toi",
    "توقف الحافلة",
    "توقف القطار",
)
#: A message this short that ends with an opt-out phrase is an opt-out.
SHORT_MESSAGE = 4
#: Typing slips (a typo, look-alike digits) are forgiven in a reply of this many words at most.
FORGIVING_WORDS = 2
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
_POLITE = frozenset(normalise_text(w) for w in POLITE)
_OTHER_MEANINGS = tuple(normalise_text(p) for p in OTHER_MEANINGS)
#: Real words one typo away from a keyword: never read as the keyword ("shop" is not "stop").
REAL_WORDS = frozenset({"shop", "step", "slop", "stow", "atop", "arest"})
#: Digits and signs typed for the letters they look like (st0p, 5TOP, $top): tried only where
#: the word as written means nothing, so Darija's digits for sounds (7bes, wa9ef) stay.
_LOOK_ALIKES = str.maketrans("013457", "oieast")


def _look_alike(word: str) -> str:
    return word.translate(_LOOK_ALIKES) if any(c.isdigit() for c in word) else word


def _one_typo(word: str, keyword: str) -> bool:
    """Whether ``word`` is ``keyword`` with one letter wrong, missing, added, or two swapped."""
    if word == keyword or abs(len(word) - len(keyword)) > 1:
        return word == keyword
    if len(word) == len(keyword):
        diff = [i for i, (a, b) in enumerate(zip(word, keyword, strict=True)) if a != b]
        if len(diff) == 1:
            return True
        return (
            len(diff) == 2
            and diff[1] == diff[0] + 1
            and word[diff[0]] == keyword[diff[1]]
            and word[diff[1]] == keyword[diff[0]]
        )
    shorter, longer = sorted((word, keyword), key=len)
    return any(longer[:i] + longer[i + 1 :] == shorter for i in range(len(longer)))


def _same_word(word: str, keyword: str, forgiving: bool) -> bool:
    if word == keyword:
        return True
    if not forgiving:
        return False
    seen = _look_alike(word)
    if seen == keyword:
        return True
    return (
        len(keyword) >= 4
        and len(seen) >= 4
        and seen.isalpha()
        and seen not in REAL_WORDS
        and _one_typo(seen, keyword)
    )


def _opening_phrase(
    words: list[str], *, forgiving: bool = True
) -> tuple[tuple[str, ...], int] | None:
    for phrase, intent in _TABLE:
        if len(words) < len(phrase):
            continue
        lenient = forgiving and intent in (OPT_OUT, OPT_OUT_ALL)
        if all(_same_word(w, k, lenient) for w, k in zip(words, phrase, strict=False)):
            return phrase, intent
    return None


def _spelled_out(words: list[str]) -> list[str]:
    """Letters typed apart ("s t o p", "S.T.O.P" once normalised) joined back into a word."""
    joined: list[str] = []
    run: list[str] = []
    for word in [*words, ""]:
        if len(word) == 1:
            run.append(word)
            continue
        joined += ["".join(run)] if len(run) >= 3 else run
        run = []
        if word:
            joined.append(word)
    return joined


# Sentences that ask to be left alone. They run on the normalised text (lower case, no
# accents, apostrophes as spaces, a letter never doubled: "arrêtez" is "aretez",
# "messages" is "mesages"), so the forms below are written that way.
_THINGS = (
    r"(?:(?:l ?)?(?:sms|mesages?|msgs?|pubs?|publicites?|promos?|textos?|texts?|ads|spam"
    r"|notifications?|msajat|mesajat|mesagat|mesageat|mesaget)|rsayl|ر?سائل|الرسائل|رسايل|الرسايل"
    r"|ميساجات|الميساجات|المساجات|اشهار|الاشهار|اعلانات|الاعلانات|البروموسيون|هاد الشي|هادشي)"
)
#: "I want" in French, as people write it when they would rather not get something.
_WISH = r"(?:veu[xt]|voudrais|souhaite|desire|aimerais)"
_SENTENCES_SOURCE: tuple[tuple[str, str], ...] = (
    # French
    ("plus de …", rf"\b(?:plus|pas) de {_THINGS}"),
    (
        "ne m'envoyez plus",
        r"\b(?:ne|n)\b(?: \w+){0,2} (?:envoy|ecri|contact|apel|deranj|harcel|spam|sms)\w* plus\b",
    ),
    (
        "je ne veux plus",
        rf"\bje (?:ne )?{_WISH} plus (?:recevoir|rien|de|vos|ces|les|aucun|etre)\b",
    ),
    (
        "je ne veux pas recevoir",
        rf"\bje ne {_WISH} pas (?:recevoir|de|vos|ces|les) (?:\w+ )?{_THINGS}",
    ),
    (
        "arrêtez de m'envoyer",
        r"\b(?:aret\w*|ces\w*|stop\w*) (?:de|d) (?:m |me |nous )?(?:envoy|ecri|spam|harcel|contact|apel|deranj)",
    ),
    (
        "merci de ne plus",
        r"\b(?:merci|veuil\w*|priere|prière|svp|stp) (?:de |d )?(?:ne plus|ne pas|ne jamais|aret|ces|me desinscri|me desabon|me retir|suprim|retir|efac|enlev)",
    ),
    (
        "supprimez mon numéro",
        r"\b(?:retir|suprim|efac|enlev|ray)\w* (?:moi|mon numero|mon num|mon contact|mes coordon\w*|mon nom|mon tel\w*)\b",
    ),
    ("laissez-moi tranquille", r"\blais\w* moi tranquil\w*"),
    ("j'en ai marre", rf"\bj en ai mare de (?:vos |ces |tes |\w+ )?{_THINGS}"),
    (
        "me désabonner",
        r"\b(?:me|nous) (?:desabon\w*|desinscri\w*)|\b(?:desabon|desinscri)\w* (?:moi|nous)\b",
    ),
    # English
    (
        "stop sending me",
        r"\b(?:stop|quit|cease) (?:sending|texting|mesaging|spaming|contacting|caling|emailing) (?:me|us|this|these|those|messages|texts)\b",
    ),
    (
        "remove me",
        r"\b(?:remove|take|delete|erase) (?:me|my number|my phone|my details|my contact)(?: \w+){0,2} (?:from|of|off)\b|\b(?:remove|delete|erase) my (?:number|phone|details)\b",
    ),
    (
        "i don't want these",
        rf"\b(?:dont|don t|do not|never) (?:want|need|send)\b(?: \w+){{0,3}} {_THINGS}",
    ),
    ("no more texts", rf"\bno more {_THINGS}"),
    ("opt me out", r"\b(?:opt me out|unsubscribe me|take me of)\b"),
    ("leave me alone", r"\bleave me alone\b"),
    # Darija in Latin letters (digits for sounds: 3 ع, 7 ح, 9 ق)
    # "baraka" (enough) opens the message: later, or before other words, it is a blessing
    # ("baraka lah fik") or "enough" about anything ("baraka ghir kas d atay")
    (
        "baraka",
        r"^(?:(?:ok|wa|iwa|safi|ya) )*baraka(?:$| 3l\w*| 3lya| mn | men | min | ma | 3afak| afak| svp| stp| merci| please)",
    ),
    (
        "ma bghitch",
        rf"\bma ?bghi(?:t|na)?(?:ch|x|sh|ich)\b(?: \w+)?(?: {_THINGS}|$| had| hadchi| nwsl| nwsol| twsl| tsift| ytsift)",
    ),
    (
        "ma tsiftouch",
        r"\bma ?t?(?:i|e)?s(?:i|e)ft\w*(?:ch|x|sh)\b|\bma ?tb9a\w*(?:ch|x|sh)\b"
        r"|\bma ?t?(?:i|e)?s(?:i|e)ft\w* (?:\w+ )?walo\b",
    ),
    (
        "ma b9itch baghi",
        rf"\bma ?b9i(?:t|na)?(?:ch|x|sh) ba?ghi\w*(?: \w+)?(?: {_THINGS}|$| had| hadchi| nwsl| twsl| tsift| ytsift)",
    ),
    (
        "7ayed rakmi",
        r"\b(?:7ayd|7ayed|7iyed|7yd|hayed|msa7|ms7|mse7|m7i|m7iw)\w* (?:rakmi|ra9mi|r9mi|nmra|nemra|nemrti|nmrti|numero|num|rqmi|rekmi)\b",
    ),
    # Darija in Arabic script
    ("باراكا", r"^(?:صافي )?(?:باراكا|براكا)(?:$| من | عليا| عافاك| الله يخليك$)"),
    ("ما بغيتش", r"(?:^| )(?:ما ?بغيتش|ما ?بغيناش)(?: |$)"),
    (
        "ما تصيفطوش",
        r"(?:^| )ما ?تصيفط\w*ش(?: |$)|(?:^| )ما ?تبقا\w*ش(?: |$)|(?:^| )ما ?تصيفط\w* (?:\w+ )?والو(?: |$)",
    ),
    (
        "حيد رقمي",
        r"(?:^| )(?:حيد|حيدو|مسح|مسحو|احذف|احذفو|امسح|امسحو)\w* (?:رقمي|الرقم ديالي|نمرتي|النمره ديالي|رقم)",
    ),
    # Modern Standard Arabic
    (
        "لا أريد",
        rf"(?:^| )(?:لا اريد|لا ارغب|لا اود|لا نريد)(?: في)? (?:تلقي|استقبال|هذه|هذا|اي|رسائل|الرسائل|الاشتراك|الاعلانات|{_THINGS})",
    ),
    (
        "توقفوا عن",
        r"(?:^| )(?:توقفوا|توقف|كفوا|كف|امتنعوا) عن (?:ارسال|مراسلتي|الارسال|ازعاجي|الازعاج|مراسلتنا)",
    ),
    (
        "الرجاء التوقف",
        r"(?:^| )(?:الرجاء|ارجو|اطلب|من فضلكم|يرجي|نرجو) (?:التوقف|الغاء|ايقاف|عدم|حذف|وقف|الكف)",
    ),
    ("إلغاء الاشتراك", rf"(?:^| )(?:الغاء|ايقاف|وقف) (?:الاشتراك|اشتراكي|{_THINGS})"),
    ("أوقفوا الرسائل", rf"(?:^| )(?:اوقفوا|اوقف|اوقفو) (?:هذه |هاد )?(?:{_THINGS}|الارسال)"),
    ("كفى", rf"^(?:كفي|كفايه|يكفي)(?:$| من (?:هذه |هاد )?{_THINGS})"),
)
# fmt: on
#: The sentences, compiled: (what they are, the pattern).
SENTENCES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (name, re.compile(pattern)) for name, pattern in _SENTENCES_SOURCE
)
#: A request not to stop: it asks for nothing ("n'arrêtez pas", "don't stop", "ما تحبسوش").
NEGATED = re.compile(
    r"\b(?:n|ne) (?:\w+ )?(?:aret|stop|ces)\w* (?:pas|jamais)\b|\bne pas (?:aret|stop)"
    r"|\b(?:don t|dont|do not|never|can t|cant|cannot|won t) (?:stop|quit|unsubscribe)"
    r"|\bma ?t?(?:7bs|hbs|w9f|wa9f|7ebs)\w*(?:ch|x|sh)\b"
    r"|(?:^| )ما ?ت(?:حبس|وقف)\w*ش(?: |$)|(?:^| )لا (?:تتوقف|توقف|تتوقفوا|توقفوا)(?: |$)"
)


# Darija's verbs for "stop" (7bes, w9ef, حبس, وقف) also mean "wait", "hold on" and "stop
# here" ("7bes chwiya ghadi nji", "w9fi 3and lposta", both from the Darija Open Dataset's
# sentences). Such a verb asks to stop the messages only when it stands alone (with
# politeness), names what to stop or whom ("7bsou had sms", "7bsou 3liya"), or follows a
# request ("bghit n7bes", "3afak 7bes", "safi 7bsou").
_STOP_VERB = re.compile(
    r"(?:n|t)?(?:7a?be?s|7ebs|ha?be?s|hebs|wa?9e?f|wa?qe?f)\w*|ن?حبس\w*|ن?وقف\w*"
)
_STOPPED_THING = re.compile(
    rf"^(?:{_THINGS}|had ?(?:chi|shi)|hadchi|hadshi|3li(?:a|ya|ia|na|ina|yna|h|ha)|3lya|3lina"
    r"|عليا|علينا|علي|هادشي)$"
)
_THIS = frozenset("had l hadi hado هاد هادي هادو هذه هذا".split())
#: Words that make the verb a request when they come before it.
_ASKING = frozenset(
    "bghit bghina baghi baghin bghit 3afak 3afakom afak ykhalik ykhalikom safi baraka please "
    "svp stp pls plz ok wa بغيت بغينا باغي عافاك عافاكم صافي باراكا يخليك فضلك".split()
)
#: Words that carry nothing but the verb's object or its politeness.
_LEFT_ALONE = _POLITE | _ASKING | _THIS | frozenset("lia liya lina ليا لينا".split())


def _darija_stop(words: list[str], sender: Sequence[str]) -> bool:
    """Whether a Darija "stop" verb in ``words`` (normalised) asks to stop the messages."""
    for at, word in enumerate(words):
        if not _STOP_VERB.fullmatch(word):
            continue
        before, after = words[:at], [w for w in words[at + 1 :] if w not in sender]
        things = [w for w in after[:3] if w not in _THIS]
        if things and _STOPPED_THING.match(things[0]):
            return True
        if " ".join(after[:3]).startswith(("had chi", "had shi", "هاد الشي")):
            return True
        if before and before[-1] in _ASKING and len(words) <= SHORT_MESSAGE + 2:
            return all(w in _LEFT_ALONE or w in _FILLER for w in after)
        if all(w in _LEFT_ALONE or w in _FILLER for w in before + after):
            return True
    return False


def _sentence(text: str, sender: Sequence[str] = ()) -> str | None:
    """The name of the opt-out sentence ``text`` (normalised) asks in, or None."""
    if NEGATED.search(text):
        return None
    for name, pattern in SENTENCES:
        if pattern.search(text):
            return name
    if _darija_stop(text.split(), sender):
        return "a Darija stop verb"
    return None


def read_reply(text: str, sender_id: str = "") -> Reading:
    """Read an SMS reply; ``sender_id`` is where it was sent (its name may follow the keyword)."""
    normalised = normalise_text(_signs_as_letters(text))
    words = _spelled_out([w for w in normalised.split() if w not in _FILLER])
    if not words:
        return Reading(NONE, "no words")
    sender = normalise_text(sender_id).split()
    asked = _sentence(" ".join(_spelled_out(normalised.split())), sender)
    # typing slips are forgiven in a short reply, not in a sentence ("stopper la voiture")
    forgiving = len(words) <= FORGIVING_WORDS
    opening = _opening_phrase(words, forgiving=forgiving)
    if opening is not None and normalised.startswith(_OTHER_MEANINGS):
        return Reading(NONE, "the keyword opens a phrase that means something else")
    if opening is not None:
        phrase, intent = opening
        rest = words[len(phrase) :]
        if intent not in (OPT_IN, HELP):
            if NEGATED.search(normalised):
                return Reading(NONE, "a keyword in a request not to stop")
            return Reading(intent, f"opens with {' '.join(phrase)!r}")
        if intent == OPT_IN and _mentions_opt_out(rest, asked, forgiving):
            return Reading(OPT_OUT, "an opt-back-in mixed with an opt-out: the opt-out wins")
        if intent == OPT_IN:
            # strict: the keyword as typed, with nothing but politeness and the sender's name
            typed = [w for w in normalised.split() if w not in _POLITE]
            if typed[: len(phrase)] == list(phrase) and typed[len(phrase) :] in ([], sender):
                return Reading(OPT_IN, f"is {' '.join(phrase)!r}")
            return Reading(NONE, "an opt-back-in must be the whole message, as typed")
        if not rest or rest == sender:
            return Reading(intent, f"is {' '.join(phrase)!r}")
    if len(words) <= SHORT_MESSAGE and not NEGATED.search(normalised):
        for start in range(1, len(words)):
            found = _opening_phrase(words[start:], forgiving=forgiving)
            if found is None or found[1] in (OPT_IN, HELP):
                continue
            if words[start + len(found[0]) :] in ([], sender):
                return Reading(found[1], f"short message ending with {' '.join(found[0])!r}")
    if asked is not None:
        return Reading(OPT_OUT, f"a sentence asking to stop ({asked})")
    return Reading(NONE, "no keyword opens the message")


def _mentions_opt_out(words: list[str], asked: str | None, forgiving: bool) -> bool:
    if asked is not None:
        return True
    for start in range(len(words)):
        found = _opening_phrase(words[start:], forgiving=forgiving)
        if found is not None and found[1] in (OPT_OUT, OPT_OUT_ALL):
            return True
    return False


_SIGNS = re.compile(r"(?<=[a-z])[$@]|[$@](?=[a-z])", re.IGNORECASE)


def _signs_as_letters(text: str) -> str:
    """``$`` and ``@`` typed inside a word for s and a ("$top", "st@p")."""
    return _SIGNS.sub(lambda m: "s" if m.group() == "$" else "a", text)


def classify(text: str, sender_id: str = "") -> int:
    """Return the :class:`Intent` of an SMS reply's text."""
    return read_reply(text, sender_id).intent
