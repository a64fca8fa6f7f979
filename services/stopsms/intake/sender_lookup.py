"""The public lookup of senders, ``/expediteur``: declared or not, who sends, how to stop.

A citizen types what their phone showed ("JUMIA", "3030"); an alias finds its sender. A declared
sender shows its public name, the company that answers for it, its CNDP declaration, whether the
regulator allows it, the operators and providers that send for it, and how to stop it (reply
STOP to its short code, or the citizen's own page). An undeclared one says so and how to
complain. Nothing personal is shown or asked: the page reads only the register (in memory, as
every intake replica holds it) and the directory's party names. French and Arabic, no
JavaScript, like every page of the site.
"""

from __future__ import annotations

from collections.abc import Callable
from html import escape
from urllib.parse import urlencode

from aiohttp import web

from stopsms.domain.parties import InvalidSender, PartiesDirectory, check_sender_id
from stopsms.domain.senders import SenderRegister
from stopsms.intake import pages
from stopsms.v1 import senders_pb2

PATH = "/expediteur"

TEXTS: dict[str, dict[str, str]] = {
    "fr": {
        "title": "Qui m'envoie ce SMS ?",
        "intro": (
            "Tapez le nom ou le numéro qui s'affiche comme expéditeur du SMS publicitaire : "
            "vous saurez s'il est déclaré et comment ne plus recevoir ses messages."
        ),
        "field": "Nom ou numéro de l'expéditeur",
        "search": "Vérifier",
        "invalid": "« {q} » n'est pas un nom ou un numéro d'expéditeur.",
        "declared": "<b>{name}</b> est un expéditeur déclaré.",
        "entity": "Société responsable",
        "declaration": "Déclaration à la CNDP",
        "also": "Apparaît aussi comme",
        "sent_by": "Envoyé par",
        "status": "Statut",
        "status_active": "autorisé",
        "status_pending": "déclaré, en attente de l'examen de la CNDP",
        "status_suspended": "suspendu par la CNDP",
        "status_revoked": "retiré par la CNDP",
        "how_reply": "Pour ne plus recevoir ses SMS, répondez <b>STOP</b> au <b>{code}</b>.",
        "how_reply_message": "Pour ne plus recevoir ses SMS, répondez <b>STOP</b> à son message.",
        "how_page": (
            'Vous pouvez aussi tout gérer depuis <a href="/preferences?lang=fr">vos '
            "préférences</a>, avec un code reçu par SMS."
        ),
        "undeclared": "<b>{q}</b> n'est pas un expéditeur déclaré.",
        "complain": (
            "Un SMS publicitaire d'un expéditeur non déclaré, ou sans la mention StopSMS, est "
            "interdit. Vous pouvez le signaler à la CNDP (www.cndp.ma, rubrique plaintes) en "
            "gardant le message, et répondre <b>STOP</b> à ce message."
        ),
    },
    "ar": {
        "title": "من يرسل لي هذه الرسالة؟",
        "intro": (
            "اكتب الاسم أو الرقم الذي يظهر كمرسل للرسالة الإشهارية: ستعرف هل هو مصرح به "
            "وكيف توقف رسائله."
        ),
        "field": "اسم المرسل أو رقمه",
        "search": "تحقق",
        "invalid": "«{q}» ليس اسم مرسل ولا رقمه.",
        "declared": "<b>{name}</b> مرسل مصرح به.",
        "entity": "الشركة المسؤولة",
        "declaration": "التصريح لدى اللجنة الوطنية (CNDP)",
        "also": "يظهر أيضا باسم",
        "sent_by": "يرسل عبر",
        "status": "الوضعية",
        "status_active": "مرخص",
        "status_pending": "مصرح به، في انتظار دراسة اللجنة الوطنية",
        "status_suspended": "موقوف من طرف اللجنة الوطنية",
        "status_revoked": "مسحوب من طرف اللجنة الوطنية",
        "how_reply": 'لإيقاف رسائله، أرسل <b>STOP</b> إلى <b dir="ltr">{code}</b>.',
        "how_reply_message": "لإيقاف رسائله، أرسل <b>STOP</b> ردا على رسالته.",
        "how_page": (
            'يمكنك أيضا التحكم في كل شيء من <a href="/preferences?lang=ar">تفضيلاتك</a> '
            "برمز يصلك عبر رسالة قصيرة."
        ),
        "undeclared": "<b>{q}</b> ليس مرسلا مصرحا به.",
        "complain": (
            "الرسالة الإشهارية من مرسل غير مصرح به، أو بدون إشارة StopSMS، ممنوعة. يمكنك "
            "التبليغ عنها لدى اللجنة الوطنية (www.cndp.ma، قسم الشكايات) مع الاحتفاظ بالرسالة، "
            "وإرسال <b>STOP</b> ردا عليها."
        ),
    },
}

_STATUS = {
    senders_pb2.SENDER_STATUS_ACTIVE: "status_active",
    senders_pb2.SENDER_STATUS_PENDING: "status_pending",
    senders_pb2.SENDER_STATUS_SUSPENDED: "status_suspended",
    senders_pb2.SENDER_STATUS_REVOKED: "status_revoked",
}


def _t(lang: str, key: str, **values: str) -> str:
    return TEXTS[lang][key].format(**{k: escape(v) for k, v in values.items()})


def _row(lang: str, key: str, value: str) -> str:
    return f"<dt>{_t(lang, key)}</dt><dd>{value}</dd>"


def _reply_code(sender_id: str, aliases: list[str]) -> str | None:
    """The short code a citizen replies STOP to: the sender's own, or a short-code alias."""
    for candidate in (sender_id, *aliases):
        if candidate.isdigit() and len(candidate) <= 6:
            return candidate
    return None


def lookup_body(
    lang: str, query: str, register: SenderRegister, directory: PartiesDirectory
) -> tuple[str, int]:
    """The page's body for ``query``, and its HTTP status.

    The answer comes first, so a phone shows it without scrolling; the form follows.
    """
    form = (
        f"<section><h2>{_t(lang, 'title')}</h2><p>{_t(lang, 'intro')}</p>"
        f'<form method="get" action="{PATH}"><input type="hidden" name="lang" value="{lang}">'
        f'<p><label for="q">{_t(lang, "field")}</label><br>'
        f'<input id="q" name="q" type="text" required maxlength="32" dir="ltr" '
        f'value="{escape(query)}" style="font:inherit;width:100%;padding:.5rem;'
        'box-sizing:border-box"></p>'
        f'<button type="submit">{_t(lang, "search")}</button></form></section>'
    )
    if not query.strip():
        return form, 200
    try:
        named = check_sender_id(query, required=True)
    except InvalidSender:
        return f'<section id="answer"><p>{_t(lang, "invalid", q=query)}</p></section>' + form, 400
    sender_id = directory.resolve_sender(named)
    record = register.get(sender_id)
    if record is None and not directory.is_declared(sender_id):
        answer = (
            f'<section id="answer"><p>{_t(lang, "undeclared", q=named)}</p>'
            f"<p>{_t(lang, 'complain')}</p></section>"
        )
        return answer + form, 200
    senders_of = [p.name for p in directory if p.sends_for(sender_id)]
    name = record.display_name if record is not None and record.display_name else sender_id
    aliases = [a for a in (record.aliases if record is not None else []) if a != named]
    if named != sender_id:
        aliases = [sender_id, *aliases]
    rows = ""
    if record is not None:
        rows += _row(lang, "status", _t(lang, _STATUS.get(record.status, "status_pending")))
        if record.legal_entity and not record.legal_entity.startswith("("):
            rows += _row(lang, "entity", escape(record.legal_entity))
        if record.cndp_declaration:
            rows += _row(
                lang, "declaration", f'<span dir="ltr">{escape(record.cndp_declaration)}</span>'
            )
    if aliases:
        rows += _row(
            lang, "also", ", ".join(f'<span dir="ltr">{escape(a)}</span>' for a in aliases)
        )
    if senders_of:
        rows += _row(lang, "sent_by", escape(", ".join(sorted(senders_of))))
    code = _reply_code(sender_id, list(record.aliases) if record is not None else [])
    how = _t(lang, "how_reply", code=code) if code else _t(lang, "how_reply_message")
    answer = (
        f'<section id="answer"><p class="ok">{_t(lang, "declared", name=name)}</p>'
        f"<dl>{rows}</dl><p>{how}</p><p>{_t(lang, 'how_page')}</p></section>"
    )
    return answer + form, 200


def add_sender_lookup_routes(
    app: web.Application,
    *,
    language: Callable[[web.Request], str],
    register: Callable[[], SenderRegister],
    directory: PartiesDirectory,
) -> None:
    """Add ``/expediteur`` to the intake site (before the link routes: /{code})."""

    async def lookup(request: web.Request) -> web.Response:
        lang = language(request)
        query = request.query.get("q", "")[:64]
        body, status = lookup_body(lang, query, register(), directory)
        other = "ar" if lang == "fr" else "fr"
        switch = f"{PATH}?{urlencode({'lang': other, 'q': query} if query else {'lang': other})}"
        return pages.html_response(pages.page(lang, body, switch_href=switch), status)

    app.router.add_get(PATH, lookup)
