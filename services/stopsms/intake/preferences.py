"""The citizen's own page, ``/preferences``: prove the number with a code, then see and change.

No JavaScript, French or Arabic (``?lang=`` or the browser's preference, with a switch):

1. ``GET /preferences``: the number.
2. ``POST /preferences/code``: a one-time code is sent to it by SMS (:mod:`stopsms.intake.codes`,
   delivered by the operator through the outbound topic); the page asks for it.
3. ``POST /preferences/verify``: a right code opens a 15-minute session (cookie).
4. ``GET /preferences/me``: every opt-out on record for the number (global and each declared
   sender, with the date and the reference of the latest request for it, kept by intake as it
   accepts requests: :class:`~stopsms.intake.submission.RedisRequestReferences`), and the
   changes: stop all marketing, stop one more sender, opt back
   in for a sender, lift the global opt-out.
5. ``POST /preferences/me``: the change is an ordinary request (channel WEB, party
   ``citizen-web``), decided, propagated and proven like any other, and confirmed by SMS;
   opting back in here is allowed because the code proved the number.
6. ``GET /preferences/receipt/<event id>``: the proof of propagation of a request made in the
   session — when each operator and provider applied it — as a page or, with
   ``?format=json``, a download.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from html import escape
from typing import Any

from aiohttp import web
from google.protobuf import json_format

from stopsms.adapters.kafka import PublishFailed
from stopsms.domain.ids import CITIZEN_WEB_PARTY_ID
from stopsms.domain.numbers import InvalidNumber, normalise_msisdn
from stopsms.domain.parties import InvalidSender, canonical_sender_id, check_sender_id
from stopsms.intake import pages
from stopsms.intake.citizen_messages import CitizenMessages
from stopsms.intake.codes import (
    CODE_SECONDS,
    SESSION_COOKIE,
    SESSION_SECONDS,
    Check,
    OneTimeCodes,
    Refusal,
)
from stopsms.intake.pages import html_response as _html
from stopsms.intake.submission import RequestSubmitter, Subject
from stopsms.v1 import events_pb2, registry_pb2

log = logging.getLogger(__name__)


# fmt: off
TEXTS: dict[str, dict[str, str]] = {
    "fr": {
        "intro": "Voyez et changez vos préférences SMS publicitaires, chez tous les opérateurs et prestataires.",
        "number": "Votre numéro de mobile",
        "send_code": "Recevoir un code par SMS",
        "code_sent": "Un code à 6 chiffres a été envoyé par SMS à ce numéro. Il est valable {minutes} minutes.",
        "code": "Le code reçu",
        "verify": "Valider",
        "wrong_code": "Ce code n'est pas le bon. Il vous reste {tries} essai(s).",
        "expired_code": "Ce code a expiré ou a déjà servi. Demandez-en un nouveau.",
        "locked": "Trop d'essais ou de codes pour ce numéro. Réessayez dans une heure.",
        "address_limit": "Trop de demandes depuis cette connexion. Réessayez plus tard.",
        "bad_number": "Ce n'est pas un numéro de mobile marocain.",
        "on_record": "Ce qui est enregistré pour votre numéro",
        "nothing": "Aucune préférence enregistrée : vous pouvez recevoir la publicité des expéditeurs déclarés.",
        "global_on": "Toute la publicité par SMS est arrêtée depuis le {since}.",
        "sender_on": "{sender} : arrêté depuis le {since}.",
        "sender_off": "{sender} : autorisé de nouveau depuis le {since}.",
        "ref": "référence {ref}",
        "stop_all": "Arrêter toute la publicité par SMS",
        "stop_sender": "Arrêter un expéditeur",
        "sender": "Nom de l'expéditeur",
        "allow_sender": "Autoriser de nouveau {sender}",
        "lift_global": "Lever l'arrêt de toute la publicité",
        "done": "C'est enregistré et confirmé par SMS. Référence : {ref}.",
        "receipt": "Preuve de transmission",
        "receipt_wait": "Transmission aux opérateurs et prestataires en cours…",
        "applied": "{party} : appliqué le {at}",
        "pending": "{party} : en cours",
        "download": "Télécharger la preuve (JSON)",
        "back": "Retour à mes préférences",
        "complain": "Signaler un SMS publicitaire reçu (plainte)",
        "bad_sender": "Ce nom d'expéditeur n'est pas valable.",
        "unavailable": "Le service est momentanément indisponible. Réessayez dans un instant.",
        "session_over": "Votre session a pris fin. Recommencez avec un nouveau code.",
        "not_yours": "Cette preuve n'est pas celle d'une demande faite dans votre session.",
    },
    "ar": {
        "intro": "اطلع على تفضيلاتك بشأن الرسائل الإشهارية وغيّرها لدى كل المتعاملين ومقدمي الخدمات.",
        "number": "رقم هاتفك المحمول",
        "send_code": "تلقي رمز عبر رسالة قصيرة",
        "code_sent": "أُرسل رمز من 6 أرقام إلى هذا الرقم. صالح لمدة {minutes} دقائق.",
        "code": "الرمز المتلقى",
        "verify": "تأكيد",
        "wrong_code": "الرمز غير صحيح. تبقى لك {tries} محاولة.",
        "expired_code": "انتهت صلاحية هذا الرمز أو استُعمل. اطلب رمزا جديدا.",
        "locked": "محاولات أو رموز كثيرة لهذا الرقم. أعد المحاولة بعد ساعة.",
        "address_limit": "طلبات كثيرة من هذا الاتصال. أعد المحاولة لاحقا.",
        "bad_number": "هذا ليس رقم هاتف محمول مغربيا.",
        "on_record": "ما هو مسجل لرقمك",
        "nothing": "لا تفضيلات مسجلة: يمكنك تلقي إشهار المرسلين المصرح بهم.",
        "global_on": "أُوقف كل إشهار بالرسائل منذ {since}.",
        "sender_on": "{sender}: موقوف منذ {since}.",
        "sender_off": "{sender}: مسموح من جديد منذ {since}.",
        "ref": "المرجع {ref}",
        "stop_all": "إيقاف كل الإشهار بالرسائل",
        "stop_sender": "إيقاف مرسل",
        "sender": "اسم المرسل",
        "allow_sender": "السماح من جديد بـ {sender}",
        "lift_global": "رفع إيقاف كل الإشهار",
        "done": "تم التسجيل والتأكيد برسالة قصيرة. المرجع: {ref}.",
        "receipt": "إثبات الإرسال",
        "receipt_wait": "جارٍ الإرسال إلى المتعاملين ومقدمي الخدمات…",
        "applied": "{party}: طُبق في {at}",
        "pending": "{party}: قيد التطبيق",
        "download": "تحميل الإثبات (JSON)",
        "back": "العودة إلى تفضيلاتي",
        "complain": "التبليغ عن رسالة إشهارية (شكاية)",
        "bad_sender": "اسم المرسل هذا غير صالح.",
        "unavailable": "الخدمة غير متاحة مؤقتا. أعد المحاولة بعد لحظات.",
        "session_over": "انتهت جلستك. ابدأ من جديد برمز جديد.",
        "not_yours": "هذا الإثبات ليس لطلب قُدم في جلستك.",
    },
}
# fmt: on
ACTIONS = ("opt_out_all", "opt_out_sender", "opt_in_sender", "lift_global")


def _t(lang: str, key: str, **values: object) -> str:
    return TEXTS[lang][key].format(**{k: escape(str(v)) for k, v in values.items()})


def _page(lang: str, path: str, body: str, refresh: int | None = None) -> str:
    other = "ar" if lang == "fr" else "fr"
    return pages.page(lang, body, switch_href=f"{path}?lang={other}", refresh_seconds=refresh)


def _field(name: str, label: str, kind: str = "text", extra: str = "") -> str:
    return (
        f'<p><label for="{name}">{escape(label)}</label><br>'
        f'<input id="{name}" name="{name}" type="{kind}" required {extra} '
        'style="font:inherit;width:100%;padding:.5rem;box-sizing:border-box"></p>'
    )


def _button(label: str, secondary: bool = False) -> str:
    cls = ' class="secondary"' if secondary else ""
    return f'<button{cls} type="submit">{escape(label)}</button>'


def _date(entry: registry_pb2.CheckResponse) -> str:
    return entry.since.ToDatetime().strftime("%d/%m/%Y %H:%M UTC")


def add_preferences_routes(
    app: web.Application,
    *,
    language: Callable[[web.Request], str],
    codes: OneTimeCodes,
    citizens: CitizenMessages,
    submitter: RequestSubmitter,
    check: Callable[[str, str], Awaitable[registry_pb2.CheckResponse | None]],
    propagation: Callable[[str], Awaitable[events_pb2.PropagationRecord | None]],
    unseal: Callable[[events_pb2.SealedMsisdn], str],
    senders: Callable[[], list[str]],
    secure_cookies: bool,
) -> None:
    """Add the citizen's page to the intake site (before the link routes: /{code})."""

    def start_page(lang: str, note: str = "", status: int = 200) -> web.Response:
        body = (
            f"<section><p>{_t(lang, 'intro')}</p>{note}</section>"
            f'<form method="post" action="/preferences/code?lang={lang}">'
            + _field("msisdn", TEXTS[lang]["number"], "tel", 'autocomplete="tel" dir="ltr"')
            + _button(TEXTS[lang]["send_code"])
            + "</form>"
        )
        return _html(_page(lang, "/preferences", body), status)

    def code_page(lang: str, msisdn: str, note: str, status: int = 200) -> web.Response:
        body = (
            f"<section>{note}</section>"
            f'<form method="post" action="/preferences/verify?lang={lang}">'
            f'<input type="hidden" name="msisdn" value="{escape(msisdn)}">'
            + _field(
                "code",
                TEXTS[lang]["code"],
                "text",
                'inputmode="numeric" autocomplete="one-time-code" maxlength="6" dir="ltr"',
            )
            + _button(TEXTS[lang]["verify"])
            + "</form>"
        )
        return _html(_page(lang, "/preferences", body), status)

    def note(lang: str, key: str, **values: object) -> str:
        return f"<p>{_t(lang, key, **values)}</p>"

    async def current(request: web.Request) -> Any:
        session = await codes.session(request.cookies.get(SESSION_COOKIE))
        return session

    async def show_start(request: web.Request) -> web.Response:
        if await current(request) is not None:
            raise web.HTTPSeeOther(f"/preferences/me?lang={language(request)}")
        return start_page(language(request))

    async def send_code(request: web.Request) -> web.Response:
        lang = language(request)
        form = await request.post()
        raw = str(form.get("msisdn", ""))
        try:
            e164 = normalise_msisdn(raw)
        except InvalidNumber:
            return start_page(lang, note(lang, "bad_number"), 400)
        subject = submitter.protect(e164)
        issued = await codes.issue(subject.subject, request.remote or "unknown")
        if isinstance(issued, Refusal):
            key = "address_limit" if issued is Refusal.ADDRESS_LIMIT else "locked"
            return start_page(lang, note(lang, key), 429)
        try:
            await citizens.code(
                CITIZEN_WEB_PARTY_ID,
                f"code:{uuid.uuid4()}",
                subject,
                lang,
                issued,
                CODE_SECONDS,
            )
        except PublishFailed:
            return start_page(lang, note(lang, "unavailable"), 503)
        return code_page(lang, raw, note(lang, "code_sent", minutes=CODE_SECONDS // 60))

    async def verify(request: web.Request) -> web.Response:
        lang = language(request)
        form = await request.post()
        raw = str(form.get("msisdn", ""))
        try:
            e164 = normalise_msisdn(raw)
        except InvalidNumber:
            return start_page(lang, note(lang, "bad_number"), 400)
        subject = submitter.protect(e164)
        outcome, tries = await codes.check(subject.subject, str(form.get("code", "")))
        if outcome is Check.WRONG:
            return code_page(lang, raw, note(lang, "wrong_code", tries=tries), 403)
        if outcome is Check.LOCKED:
            return start_page(lang, note(lang, "locked"), 429)
        if outcome is Check.EXPIRED:
            return start_page(lang, note(lang, "expired_code"), 410)
        token = await codes.open_session(subject)
        redirect = web.HTTPSeeOther(f"/preferences/me?lang={lang}")
        redirect.set_cookie(
            SESSION_COOKIE,
            token,
            max_age=SESSION_SECONDS,
            path="/preferences",
            secure=secure_cookies,
            httponly=True,
            samesite="Strict",
        )
        raise redirect

    async def session_or_start(request: web.Request) -> Subject:
        session = await current(request)
        if session is None:
            raise web.HTTPSeeOther(f"/preferences?lang={language(request)}")
        return session.subject  # type: ignore[no-any-return]

    async def show_mine(request: web.Request) -> web.Response:
        lang = language(request)
        subject = await session_or_start(request)
        msisdn = unseal(subject.sealed)
        everyone = await check(msisdn, "")
        if everyone is None:
            return _html(_page(lang, "/preferences/me", note(lang, "unavailable")), 503)
        references = await submitter.references.latest(subject.subject)

        def reference(scope: str) -> str:
            event = references.get(scope)
            if not event:
                return ""
            short = event.replace("-", "")[:8].upper()
            return f' <span class="muted" dir="ltr">({_t(lang, "ref", ref=short)})</span>'

        rows = []
        if everyone.verdict == registry_pb2.VERDICT_SUPPRESSED:
            rows.append(f"<li>{_t(lang, 'global_on', since=_date(everyone))}{reference('')}</li>")
        sender_forms = []
        for sender in senders():
            entry = await check(msisdn, sender)
            if entry is None or entry.matched_scope != registry_pb2.MATCHED_SCOPE_SENDER:
                continue
            stopped = entry.verdict == registry_pb2.VERDICT_SUPPRESSED
            line = _t(
                lang, "sender_on" if stopped else "sender_off", sender=sender, since=_date(entry)
            )
            rows.append(f"<li>{line}{reference(sender)}</li>")
            if stopped:
                sender_forms.append(
                    _change_form(
                        lang, "opt_in_sender", _t(lang, "allow_sender", sender=sender), sender
                    )
                )
        listing = f"<ul>{''.join(rows)}</ul>" if rows else note(lang, "nothing")
        body = f"<section><h2>{_t(lang, 'on_record')}</h2>{listing}</section>"
        if everyone.verdict == registry_pb2.VERDICT_SUPPRESSED:
            body += _change_form(lang, "lift_global", TEXTS[lang]["lift_global"], "", True)
        else:
            body += _change_form(lang, "opt_out_all", TEXTS[lang]["stop_all"], "")
        body += (
            f'<form method="post" action="/preferences/me?lang={lang}">'
            '<input type="hidden" name="action" value="opt_out_sender">'
            + _field("sender", TEXTS[lang]["sender"], "text", 'maxlength="11" dir="ltr"')
            + _button(TEXTS[lang]["stop_sender"], True)
            + "</form>"
        )
        body += "".join(sender_forms)
        body += (
            f'<p><a id="complain" href="/preferences/plainte?lang={lang}">'
            f"{_t(lang, 'complain')}</a></p>"
        )
        return _html(_page(lang, "/preferences/me", body))

    async def change(request: web.Request) -> web.Response:
        lang = language(request)
        subject = await session_or_start(request)
        form = await request.post()
        action = str(form.get("action", ""))
        if action not in ACTIONS:
            return _html(_page(lang, "/preferences/me", note(lang, "bad_sender")), 400)
        sender = ""
        if action in ("opt_out_sender", "opt_in_sender"):
            try:
                sender = submitter.resolve_sender(
                    canonical_sender_id(check_sender_id(str(form.get("sender", "")), required=True))
                )
            except InvalidSender:
                return _html(_page(lang, "/preferences/me", note(lang, "bad_sender")), 400)
        opt_in = action in ("opt_in_sender", "lift_global")
        try:
            published = await submitter.submit(
                party_id=CITIZEN_WEB_PARTY_ID,
                request_id=str(uuid.uuid4()),
                subject=subject,
                action=events_pb2.ACTION_OPT_IN if opt_in else events_pb2.ACTION_OPT_OUT,
                sender_id=sender,
                channel=events_pb2.CHANNEL_WEB,
                action_time=None,
            )
            await citizens.confirm(published, lang, "")
        except PublishFailed:
            return _html(_page(lang, "/preferences/me", note(lang, "unavailable")), 503)
        await codes.remember_request(request.cookies.get(SESSION_COOKIE), published.event_id)
        raise web.HTTPSeeOther(f"/preferences/receipt/{published.event_id}?lang={lang}")

    async def receipt(request: web.Request) -> web.Response:
        lang = language(request)
        await session_or_start(request)
        event = request.match_info["event"]
        path = f"/preferences/receipt/{event}"
        if not await codes.made_in_session(request.cookies.get(SESSION_COOKIE), event):
            return _html(_page(lang, path, note(lang, "not_yours")), 403)
        record = await propagation(event)
        if request.query.get("format") == "json" and record is not None:
            proof = json_format.MessageToDict(record)
            return web.Response(
                text=json.dumps(proof, ensure_ascii=False, indent=2),
                content_type="application/json",
                headers={
                    "Content-Disposition": f'attachment; filename="stopsms-{event}.json"',
                    "Cache-Control": "no-store",
                },
            )
        ref = event.replace("-", "")[:8].upper()
        items = []
        if record is not None:
            for delivery in record.deliveries:
                if delivery.status == events_pb2.DELIVERY_STATUS_APPLIED:
                    at = delivery.applied_time.ToDatetime().strftime("%d/%m/%Y %H:%M:%S UTC")
                    items.append(f"<li>{_t(lang, 'applied', party=delivery.party_id, at=at)}</li>")
                else:
                    items.append(f"<li>{_t(lang, 'pending', party=delivery.party_id)}</li>")
        applied = f"<ul>{''.join(items)}</ul>" if items else note(lang, "receipt_wait")
        done = record is not None and record.done
        body = (
            f'<section><p class="ok">{_t(lang, "done", ref=ref)}</p></section>'
            f'<section aria-live="polite"><h2>{_t(lang, "receipt")}</h2>{applied}</section>'
            f'<p><a href="{path}?format=json&amp;lang={lang}" download>'
            f"{_t(lang, 'download')}</a></p>"
            f'<p><a href="/preferences/me?lang={lang}">{_t(lang, "back")}</a></p>'
        )
        return _html(_page(lang, path, body, refresh=None if done else 2))

    app.router.add_get("/preferences", show_start)
    app.router.add_post("/preferences/code", send_code)
    app.router.add_post("/preferences/verify", verify)
    app.router.add_get("/preferences/me", show_mine)
    app.router.add_post("/preferences/me", change)
    app.router.add_get("/preferences/receipt/{event}", receipt)


def _change_form(lang: str, action: str, label: str, sender: str, secondary: bool = False) -> str:
    return (
        f'<form method="post" action="/preferences/me?lang={lang}">'
        f'<input type="hidden" name="action" value="{escape(action)}">'
        f'<input type="hidden" name="sender" value="{escape(sender)}">'
        f"{_button(label, secondary)}</form>"
    )
