"""The HTML of the link page, in French and Arabic, readable without JavaScript."""

from __future__ import annotations

from html import escape

_STYLE = """
body{font-family:system-ui,sans-serif;max-width:34rem;margin:2rem auto;padding:0 1rem;
color:#111;background:#fff;line-height:1.5}
section{border:1px solid #ccc;border-radius:.5rem;padding:1rem;margin:1rem 0}
section[lang=ar]{direction:rtl;text-align:right}
button{font-size:1.05rem;padding:.6rem 1rem;margin:.3rem 0;border-radius:.4rem;
border:1px solid #333;
background:#05713a;color:#fff;cursor:pointer;width:100%}
button.secondary{background:#fff;color:#111}
.ok{color:#064}.muted{color:#444;font-size:.9rem}
"""


def _page(title: str, body: str, status_note: str = "") -> str:
    return (
        "<!doctype html><html lang=fr><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width,initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>StopSMS</h1>{status_note}{body}"
        "<p class=muted>StopSMS — plateforme mutualisée des opérateurs et prestataires SMS "
        "(loi 09-08).</p></body></html>"
    )


def _form(code: str, action: str, fr: str, ar: str, secondary: bool = False) -> str:
    cls = ' class="secondary"' if secondary else ""
    return (
        f'<form method=post action="/{escape(code)}"><input type=hidden name=action '
        f'value="{escape(action)}"><button{cls} type=submit>{escape(fr)}<br>'
        f"<bdi lang=ar dir=rtl>{escape(ar)}</bdi></button></form>"
    )


def confirm_page(code: str, sender: str, suppressed: bool) -> str:
    """GET of a valid link: what will happen, and the buttons (a GET changes nothing)."""
    s = escape(sender)
    if suppressed:
        fr = f"<p class=ok>Vous ne recevez plus de SMS publicitaires de <b>{s}</b>.</p>"
        ar = f"<p class=ok>لم تعد تتلقى الرسائل الإشهارية من <b>{s}</b>.</p>"
        forms = _form(
            code,
            "opt_in",
            f"Recevoir à nouveau les SMS de {sender}",
            f"استقبال رسائل {sender} من جديد",
            secondary=True,
        )
    else:
        fr = f"<p>Confirmez pour ne plus recevoir de SMS publicitaires de <b>{s}</b>.</p>"
        ar = f"<p>أكد لإيقاف الرسائل الإشهارية من <b>{s}</b>.</p>"
        forms = _form(
            code, "opt_out", f"Ne plus recevoir les SMS de {sender}", f"إيقاف رسائل {sender}"
        )
    forms += _form(
        code,
        "opt_out_all",
        "Stopper tous les SMS publicitaires",
        "إيقاف جميع الرسائل الإشهارية",
        secondary=True,
    )
    return _page(
        f"StopSMS — {sender}",
        f"<section lang=fr>{fr}</section><section lang=ar dir=rtl>{ar}</section>{forms}",
    )


def done_page(sender: str, action: str, request_id: str, event_id: str) -> str:
    """After POST: the request is recorded; the citizen keeps its reference."""
    s = escape(sender)
    if action == "opt_in":
        fr, ar = (
            f"Vous recevrez à nouveau les SMS de <b>{s}</b>.",
            f"ستتلقى رسائل <b>{s}</b> من جديد.",
        )
    elif action == "opt_out_all":
        fr, ar = (
            "Vous ne recevrez plus aucun SMS publicitaire.",
            "لن تتلقى أي رسالة إشهارية بعد الآن.",
        )
    else:
        fr, ar = (
            f"Vous ne recevrez plus de SMS publicitaires de <b>{s}</b>.",
            f"لن تتلقى رسائل <b>{s}</b> الإشهارية بعد الآن.",
        )
    ref = (
        f"<p class=muted>Référence · المرجع : <code>{escape(request_id)}</code> "
        f"({escape(event_id)})</p>"
    )
    return _page(
        "StopSMS — c'est fait",
        f"<section lang=fr><p class=ok>C'est enregistré. {fr}</p>"
        "<p>Tous les opérateurs et prestataires sont prévenus en quelques secondes.</p></section>"
        f"<section lang=ar dir=rtl><p class=ok>تم التسجيل. {ar}</p>"
        "<p>يتم إشعار جميع المتعاملين ومقدمي الخدمات خلال ثوانٍ.</p></section>" + ref,
    )


def expired_page(sender: str) -> str:
    """An expired link still lets the citizen object: how to reply STOP."""
    s = escape(sender)
    return _page(
        "StopSMS — lien expiré",
        f"<section lang=fr><p>Ce lien a expiré. Pour ne plus recevoir de SMS de <b>{s}</b>, "
        f"répondez <b>STOP</b> au message reçu de {s}.</p></section>"
        f"<section lang=ar dir=rtl><p>انتهت صلاحية هذا الرابط. لإيقاف رسائل <b>{s}</b>، "
        f"أرسل <b>STOP</b> ردا على رسالة {s}.</p></section>",
    )


def error_page(fr: str, ar: str) -> str:
    """A 4xx/5xx page that says what went wrong, in both languages."""
    return _page(
        "StopSMS — erreur",
        f"<section lang=fr><p>{escape(fr)}</p></section>"
        f"<section lang=ar dir=rtl><p>{escape(ar)}</p></section>",
    )
