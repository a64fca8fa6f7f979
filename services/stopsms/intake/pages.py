"""The HTML of the link page, in French or Arabic (right to left), without JavaScript.

Every page is complete on its own: plain forms, a meta refresh while the change propagates,
labels and contrast that a screen reader and a keyboard can use, and a switch to the other
language. Texts live in one table per language so a translation never touches the markup.
"""

from __future__ import annotations

from collections.abc import Callable
from html import escape

from aiohttp import web

LANGUAGES = ("fr", "ar")

Text = Callable[..., str]

TEXTS: dict[str, dict[str, str]] = {
    "fr": {
        "switch": "العربية",
        "confirm": "Vous ne recevrez plus de SMS publicitaires de <b>{sender}</b> une fois confirmé.",
        "stopped": "Vous ne recevez plus de SMS publicitaires de <b>{sender}</b>.",
        "stop_sender": "Ne plus recevoir les SMS de {sender}",
        "stop_all": "Stopper tous les SMS publicitaires",
        "restart_by_sms": (
            "Pour recevoir à nouveau les SMS de <b>{sender}</b>, répondez <b>START</b> par SMS "
            "au message reçu de {sender}, depuis votre téléphone, ou passez par "
            '<a href="/preferences">vos préférences</a> avec un code reçu par SMS.'
        ),
        "undo": "Annuler cet arrêt",
        "undo_note": "Vous pouvez annuler depuis ce navigateur pendant {minutes} minutes.",
        "undo_gone": (
            "Cette annulation n'est plus possible. Pour recevoir à nouveau les SMS de "
            "<b>{sender}</b>, répondez <b>START</b> par SMS au message reçu de {sender}."
        ),
        "done_undo": "C'est annulé : votre demande d'arrêt est levée.",
        "done_opt_out": "C'est enregistré : vous ne recevrez plus de SMS publicitaires de <b>{sender}</b>.",
        "done_opt_out_all": "C'est enregistré : vous ne recevrez plus aucun SMS publicitaire.",
        "done_opt_in": "C'est enregistré : vous recevrez à nouveau les SMS de <b>{sender}</b>.",
        "reference": "Votre référence",
        "progress": "Appliqué par {ops} opérateurs sur {ops_total} et {psvas} prestataires sur {psvas_total}.",
        "progress_wait": "Transmission aux opérateurs et prestataires en cours…",
        "progress_done": "Tous les opérateurs et prestataires concernés l'ont appliqué.",
        "expired": (
            "Ce lien a expiré. Pour ne plus recevoir de SMS de <b>{sender}</b>, répondez "
            "<b>STOP</b> au SMS reçu de {sender}."
        ),
        "not_found": (
            "Ce lien StopSMS n'existe pas ou a expiré depuis longtemps. Vérifiez qu'il est "
            "complet. Pour ne plus recevoir les SMS d'un expéditeur, répondez <b>STOP</b> à "
            "son SMS."
        ),
        "bad_action": "Cette action n'existe pas.",
        "unavailable": "Le service est momentanément indisponible. Réessayez dans un instant.",
        "too_many": "Trop de tentatives. Réessayez dans une minute.",
        "footer": "StopSMS — plateforme mutualisée des opérateurs et prestataires SMS (loi 09-08).",
    },
    "ar": {
        "switch": "Français",
        "confirm": "بعد التأكيد، لن تتلقى الرسائل الإشهارية من <b>{sender}</b>.",
        "stopped": "لم تعد تتلقى الرسائل الإشهارية من <b>{sender}</b>.",
        "stop_sender": "إيقاف رسائل {sender}",
        "stop_all": "إيقاف جميع الرسائل الإشهارية",
        "restart_by_sms": (
            "لاستقبال رسائل <b>{sender}</b> من جديد، أرسل <b>START</b> من هاتفك ردا على رسالة "
            "{sender}، أو استعمل "
            '<a href="/preferences?lang=ar">تفضيلاتك</a> برمز يصلك عبر رسالة قصيرة.'
        ),
        "undo": "إلغاء هذا الإيقاف",
        "undo_note": "يمكنك الإلغاء من هذا المتصفح خلال {minutes} دقيقة.",
        "undo_gone": (
            "لم يعد الإلغاء ممكنا. لاستقبال رسائل <b>{sender}</b> من جديد، أرسل <b>START</b> ردا "
            "على رسالة {sender}."
        ),
        "done_undo": "تم الإلغاء: رُفع طلب الإيقاف.",
        "done_opt_out": "تم التسجيل: لن تتلقى الرسائل الإشهارية من <b>{sender}</b>.",
        "done_opt_out_all": "تم التسجيل: لن تتلقى أي رسالة إشهارية بعد الآن.",
        "done_opt_in": "تم التسجيل: ستتلقى رسائل <b>{sender}</b> من جديد.",
        "reference": "مرجعك",
        "progress": "طبقه {ops} من أصل {ops_total} متعاملين و{psvas} من أصل {psvas_total} مقدمي خدمات.",
        "progress_wait": "جارٍ الإرسال إلى المتعاملين ومقدمي الخدمات…",
        "progress_done": "طبقه جميع المتعاملين ومقدمي الخدمات المعنيين.",
        "expired": (
            "انتهت صلاحية هذا الرابط. لإيقاف رسائل <b>{sender}</b>، أرسل <b>STOP</b> ردا على "
            "رسالة {sender}."
        ),
        "not_found": (
            "رابط StopSMS هذا غير موجود أو انتهت صلاحيته منذ مدة. تحقق من أنه كامل. لإيقاف رسائل "
            "مرسل ما، أرسل <b>STOP</b> ردا على رسالته."
        ),
        "bad_action": "هذا الإجراء غير موجود.",
        "unavailable": "الخدمة غير متاحة مؤقتا. أعد المحاولة بعد لحظات.",
        "too_many": "محاولات كثيرة. أعد المحاولة بعد دقيقة.",
        "footer": "StopSMS — منصة مشتركة بين المتعاملين ومقدمي خدمات الرسائل (القانون 09-08).",
    },
}

_STYLE = """
body{font-family:system-ui,"Noto Naskh Arabic",sans-serif;max-width:34rem;margin:2rem auto;
padding:0 1rem;color:#111;background:#fff;line-height:1.6;font-size:1.05rem}
header{display:flex;justify-content:space-between;align-items:baseline}
a{color:#0a4f8a}a:focus,button:focus{outline:3px solid #e07b00;outline-offset:2px}
section{border:1px solid #767676;border-radius:.5rem;padding:1rem;margin:1rem 0}
button{font:inherit;padding:.7rem 1rem;margin:.3rem 0;border-radius:.4rem;width:100%;
border:2px solid #05713a;background:#05713a;color:#fff;cursor:pointer}
button.secondary{background:#fff;color:#111;border-color:#333}
.ok{color:#05512a}.muted{color:#444;font-size:.9rem}code{font-size:1rem}
"""


def choose_language(query: str | None, accept_language: str | None) -> str:
    """The page's language: ``?lang=`` first, then the browser's preference, else French."""
    if query in LANGUAGES:
        return query
    for part in (accept_language or "").split(","):
        tag = part.split(";")[0].strip().lower()[:2]
        if tag in LANGUAGES:
            return tag
    return "fr"


def _t(lang: str, key: str, **values: str | int) -> str:
    safe = {k: escape(str(v)) for k, v in values.items()}
    return TEXTS[lang][key].format(**safe)


def page(lang: str, body: str, *, switch_href: str, refresh_seconds: int | None = None) -> str:
    """A whole page in ``lang``, with the language switch and, if asked, a meta refresh."""
    other = "ar" if lang == "fr" else "fr"
    direction = "rtl" if lang == "ar" else "ltr"
    refresh = f'<meta http-equiv="refresh" content="{refresh_seconds}">' if refresh_seconds else ""
    return (
        f'<!doctype html><html lang="{lang}" dir="{direction}"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"{refresh}<title>StopSMS</title><style>{_STYLE}</style></head><body>"
        f'<header><h1>StopSMS</h1><a href="{escape(switch_href)}" hreflang="{other}" '
        f'lang="{other}">{TEXTS[lang]["switch"]}</a></header><main>{body}</main>'
        f'<footer><p class="muted">{_t(lang, "footer")}</p></footer></body></html>'
    )


def _form(code: str, lang: str, action: str, label: str, secondary: bool = False) -> str:
    cls = ' class="secondary"' if secondary else ""
    return (
        f'<form method="post" action="/{escape(code)}?lang={lang}">'
        f'<input type="hidden" name="action" value="{escape(action)}">'
        f'<button{cls} type="submit">{escape(label)}</button></form>'
    )


def confirm_page(lang: str, code: str, sender: str, suppressed: bool) -> str:
    """GET of a valid link: what will happen, and the buttons (a GET changes nothing)."""
    if suppressed:  # opting back in takes a channel that proves the number: an SMS reply
        text = (
            f'<section><p class="ok">{_t(lang, "stopped", sender=sender)}</p>'
            f"<p>{_t(lang, 'restart_by_sms', sender=sender)}</p></section>"
        )
        forms = ""
    else:
        text = f"<section><p>{_t(lang, 'confirm', sender=sender)}</p></section>"
        forms = _form(code, lang, "opt_out", TEXTS[lang]["stop_sender"].format(sender=sender))
    forms += _form(code, lang, "opt_out_all", TEXTS[lang]["stop_all"], True)
    return page(lang, text + forms, switch_href=f"/{code}?lang={'ar' if lang == 'fr' else 'fr'}")


def done_page(
    lang: str,
    code: str,
    action: str,
    sender: str,
    request_id: str,
    progress: tuple[int, int, int, int] | None,
    done: bool,
    undo_minutes: int | None = None,
) -> str:
    """After POST: what was recorded, the reference, and how far it has propagated.

    ``undo_minutes``: this browser may still undo its opt-out (intake.undo); the button posts
    back to the link with the undo cookie.
    """
    if progress is None:
        status = _t(lang, "progress_wait")
    else:
        ops, ops_total, psvas, psvas_total = progress
        status = _t(
            lang, "progress", ops=ops, ops_total=ops_total, psvas=psvas, psvas_total=psvas_total
        )
        if done:
            status += " " + _t(lang, "progress_done")
    body = (
        f'<section><p class="ok">{_t(lang, "done_" + action, sender=sender)}</p>'
        f'<p>{_t(lang, "reference")} : <code dir="ltr">{escape(request_id)}</code></p></section>'
        f'<section aria-live="polite"><p id="progress">{status}</p></section>'
    )
    if undo_minutes is not None:
        body += (
            f'<section><p class="muted">{_t(lang, "undo_note", minutes=undo_minutes)}</p>'
            f"{_form(code, lang, 'undo', TEXTS[lang]['undo'], True)}</section>"
        )
    other = "ar" if lang == "fr" else "fr"
    return page(
        lang,
        body,
        switch_href=f"/{code}/done/{action}?lang={other}",
        refresh_seconds=None if done else 2,
    )


def message_page(lang: str, key: str, switch_href: str, **values: str) -> str:
    """A page with one message: expired, not found, unavailable, too many attempts."""
    return page(
        lang, f"<section><p>{_t(lang, key, **values)}</p></section>", switch_href=switch_href
    )


def html_response(text: str, status: int = 200) -> web.Response:
    """A page of the intake site, with the headers every page carries (no cache, no frames)."""
    return web.Response(
        text=text,
        status=status,
        content_type="text/html",
        charset="utf-8",
        headers={
            "Cache-Control": "no-store",
            "X-Robots-Tag": "noindex",
            "Referrer-Policy": "no-referrer",
            "X-Frame-Options": "DENY",
            "Content-Security-Policy": (
                "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'"
            ),
        },
    )
