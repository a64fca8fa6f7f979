"""``/plainte``: a citizen complains about a marketing SMS on the web, behind the one-time code.

The page sits in the citizen's session of ``/preferences`` (the code proved the number), so a
complaint names its complainant as surely as one an operator forwards. The citizen gives the
sender as their phone displayed it, the text, when it arrived, and optionally a screenshot:
PNG or JPEG, at most 2 MB, checked to be one well-formed image and stripped of its metadata
(:mod:`stopsms.domain.screenshots`), kept outside Kafka (:mod:`.screenshot_store`) with only
its SHA-256 and location on the record. The complaint is then filed exactly as
``SubmitComplaint`` files one (:class:`~stopsms.intake.complaints.ComplaintDesk`: channel WEB,
party ``citizen-web``), acknowledged only once Kafka did, and confirmed by SMS with its
reference. A form sent twice (a double click, a reload) is one complaint: the form carries its
own request id.

The body is read as a stream, field by field, each with its own limit, so the upload does not
raise the site's small body limit for every other page.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from html import escape
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from aiohttp import BodyPartReader, web
from google.protobuf.timestamp_pb2 import Timestamp

from stopsms.adapters.kafka import PublishFailed
from stopsms.domain.ids import CITIZEN_WEB_PARTY_ID, complaint_id
from stopsms.domain.screenshots import MAX_BYTES, InvalidImage, clean_image
from stopsms.intake import pages
from stopsms.intake.answers import AnswerStore
from stopsms.intake.citizen_messages import CitizenMessages
from stopsms.intake.codes import SESSION_COOKIE, OneTimeCodes
from stopsms.intake.complaints import MAX_TEXT, ComplaintDesk, InvalidOrigin
from stopsms.intake.pages import html_response as _html
from stopsms.intake.screenshot_store import FileScreenshotStore
from stopsms.v1 import events_pb2

log = logging.getLogger(__name__)

try:
    MOROCCO = ZoneInfo("Africa/Casablanca")  # what the citizen's phone shows
except ZoneInfoNotFoundError:  # a system without the time zone database
    MOROCCO = None  # type: ignore[assignment]

# fmt: off
TEXTS: dict[str, dict[str, str]] = {
    "fr": {
        "title": "Signaler un SMS publicitaire",
        "intro": "Un SMS publicitaire sans la mention StopSMS, d'un expéditeur inconnu, ou reçu après votre opposition ? Signalez-le : la CNDP reçoit les plaintes et poursuit les contrevenants.",
        "sender": "L'expéditeur, tel que votre téléphone l'affiche (nom ou numéro)",
        "text": "Le texte du SMS",
        "received": "Reçu le (heure du Maroc ; vide : maintenant)",
        "screenshot": "Une capture d'écran (facultatif : PNG ou JPEG, 2 Mo au plus)",
        "send": "Envoyer la plainte",
        "filed": "Votre plainte {reference} est enregistrée. Vous la recevez aussi par SMS. Si un manquement est constaté, elle est versée au dossier de la CNDP.",
        "bad_sender": "L'expéditeur doit être un nom (lettres et chiffres) ou un numéro de téléphone.",
        "bad_text": "Le texte du SMS est obligatoire ({max} caractères au plus).",
        "bad_time": "La date de réception n'est pas valable (ni dans le futur, ni de plus d'un an).",
        "bad_image": "La capture d'écran n'a pas été acceptée : {why}.",
        "too_big": "Le formulaire est trop volumineux.",
        "unavailable": "Le service est momentanément indisponible ; réessayez dans un instant.",
        "another": "Signaler un autre SMS",
        "back": "Mes préférences",
    },
    "ar": {
        "title": "التبليغ عن رسالة إشهارية",
        "intro": "رسالة إشهارية بدون إشارة StopSMS، من مرسل مجهول، أو وصلتك بعد اعتراضك؟ بلّغ عنها: تتلقى اللجنة الوطنية الشكايات وتتابع المخالفين.",
        "sender": "المرسل كما يظهر في هاتفك (اسم أو رقم)",
        "text": "نص الرسالة",
        "received": "تاريخ الاستلام (بتوقيت المغرب؛ فارغ: الآن)",
        "screenshot": "لقطة شاشة (اختياري: PNG أو JPEG، 2 ميغابايت على الأكثر)",
        "send": "إرسال الشكاية",
        "filed": "سُجّلت شكايتك {reference}، وستصلك أيضاً عبر رسالة قصيرة. إذا ثبتت المخالفة تُضمّ إلى ملف اللجنة الوطنية.",
        "bad_sender": "يجب أن يكون المرسل اسماً (حروف وأرقام) أو رقم هاتف.",
        "bad_text": "نص الرسالة إلزامي ({max} حرف على الأكثر).",
        "bad_time": "تاريخ الاستلام غير صالح (لا في المستقبل ولا قبل أكثر من سنة).",
        "bad_image": "لم تُقبل لقطة الشاشة: {why}.",
        "too_big": "الاستمارة كبيرة جداً.",
        "unavailable": "الخدمة غير متاحة مؤقتاً؛ أعد المحاولة بعد قليل.",
        "another": "التبليغ عن رسالة أخرى",
        "back": "تفضيلاتي",
    },
}
# fmt: on

#: Text fields are read up to this many bytes (UTF-8: Arabic takes two bytes a letter).
FIELD_BYTES = MAX_TEXT * 4
#: How old a complained-of message may be.
MAX_AGE_SECONDS = 366 * 86_400


class FormTooLarge(Exception):
    """A field of the form is larger than its limit."""


def _t(lang: str, key: str, **values: object) -> str:
    return escape(TEXTS[lang][key].format(**values))


async def _read(part: BodyPartReader, limit: int) -> bytes:
    """A part's bytes, refusing more than ``limit``."""
    data = bytearray()
    while True:
        chunk = await part.read_chunk(65_536)
        if not chunk:
            return bytes(data)
        data += chunk
        if len(data) > limit:
            raise FormTooLarge(part.name or "")


def received_time(raw: str, now: datetime) -> Timestamp | None:
    """The form's ``datetime-local`` (Morocco's time) as a Timestamp; None when left empty.

    Raises ValueError for a malformed time, one in the future or one more than a year old.
    """
    if not raw.strip():
        return None
    local = datetime.fromisoformat(raw.strip())
    if local.tzinfo is None:
        local = local.replace(tzinfo=MOROCCO or UTC)
    seconds = (now - local).total_seconds()
    if seconds < -300 or seconds > MAX_AGE_SECONDS:
        raise ValueError("out of range")
    stamp = Timestamp()
    stamp.FromDatetime(local.astimezone(UTC))
    return stamp


def add_complaint_routes(
    app: web.Application,
    *,
    language: Callable[[web.Request], str],
    codes: OneTimeCodes,
    desk: ComplaintDesk,
    citizens: CitizenMessages,
    answers: AnswerStore,
    store: FileScreenshotStore,
) -> None:
    """Add ``/plainte`` (and its form in the citizen's session) to the intake site."""

    def form_page(lang: str, note: str = "", status: int = 200) -> web.Response:
        path = "/preferences/plainte"
        other = "ar" if lang == "fr" else "fr"
        body = (
            f"<section><h2>{_t(lang, 'title')}</h2><p>{_t(lang, 'intro')}</p>{note}</section>"
            f'<form method="post" action="{path}?lang={lang}" enctype="multipart/form-data">'
            f'<input type="hidden" name="request_id" value="{uuid.uuid4()}">'
            f'<p><label for="sender">{_t(lang, "sender")}</label><br>'
            '<input id="sender" name="sender" required maxlength="64" dir="ltr" '
            'style="font:inherit;width:100%;padding:.5rem;box-sizing:border-box"></p>'
            f'<p><label for="text">{_t(lang, "text")}</label><br>'
            f'<textarea id="text" name="text" required maxlength="{MAX_TEXT}" rows="5" '
            'dir="auto" style="font:inherit;width:100%;box-sizing:border-box"></textarea></p>'
            f'<p><label for="received">{_t(lang, "received")}</label><br>'
            '<input id="received" name="received" type="datetime-local" dir="ltr"></p>'
            f'<p><label for="screenshot">{_t(lang, "screenshot")}</label><br>'
            '<input id="screenshot" name="screenshot" type="file" '
            'accept="image/png,image/jpeg"></p>'
            f'<button type="submit">{_t(lang, "send")}</button></form>'
            f'<p><a href="/preferences/me?lang={lang}">{_t(lang, "back")}</a></p>'
        )
        return _html(pages.page(lang, body, switch_href=f"{path}?lang={other}"), status)

    def refused(lang: str, key: str, status: int, **values: object) -> web.Response:
        return form_page(lang, f'<p class="error" id="note">{_t(lang, key, **values)}</p>', status)

    async def subject_or_start(request: web.Request):  # type: ignore[no-untyped-def]
        session = await codes.session(request.cookies.get(SESSION_COOKIE))
        if session is None:
            raise web.HTTPSeeOther(f"/preferences?lang={language(request)}")
        return session.subject

    async def to_form(request: web.Request) -> web.Response:
        raise web.HTTPSeeOther(f"/preferences/plainte?lang={language(request)}")

    async def show(request: web.Request) -> web.Response:
        await subject_or_start(request)
        return form_page(language(request))

    async def file(request: web.Request) -> web.Response:
        lang = language(request)
        complainant = await subject_or_start(request)
        fields: dict[str, bytes] = {}
        try:
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                if not isinstance(part, BodyPartReader) or part.name is None:
                    continue
                if part.name == "screenshot":
                    fields["screenshot"] = await _read(part, MAX_BYTES)
                elif part.name in ("request_id", "sender", "text", "received"):
                    fields[part.name] = await _read(part, FIELD_BYTES)
        except FormTooLarge as too_large:
            if str(too_large) == "screenshot":
                return refused(lang, "bad_image", 413, why="2 MB")
            return refused(lang, "too_big", 413)
        except (ValueError, AssertionError):
            return refused(lang, "too_big", 400)
        text = fields.get("text", b"").decode("utf-8", "replace").strip()
        if not text or len(text) > MAX_TEXT:
            return refused(lang, "bad_text", 400, max=MAX_TEXT)
        try:
            origin = desk.origin(fields.get("sender", b"").decode("utf-8", "replace"))
        except InvalidOrigin:
            return refused(lang, "bad_sender", 400)
        if origin.unknown:
            return refused(lang, "bad_sender", 400)
        try:
            received = received_time(
                fields.get("received", b"").decode("ascii", "replace"), datetime.now(UTC)
            )
        except ValueError:
            return refused(lang, "bad_time", 400)
        request_id = fields.get("request_id", b"").decode("ascii", "replace")
        try:
            request_id = str(uuid.UUID(request_id))
        except ValueError:
            request_id = str(uuid.uuid4())
        identifier = complaint_id(CITIZEN_WEB_PARTY_ID, request_id)
        first = await answers.get(identifier)
        if first is not None:  # the same form sent again: the same complaint
            return filed_page(lang, first.decode())
        screenshot = fields.get("screenshot", b"")
        digest = location = ""
        if screenshot:
            try:
                kind, cleaned = clean_image(screenshot)
            except InvalidImage as exc:
                return refused(lang, "bad_image", 400, why=str(exc))
            digest, location = store.put(kind, cleaned)
        complaint = desk.build(
            party_id=CITIZEN_WEB_PARTY_ID,
            request_id=request_id,
            channel=events_pb2.CHANNEL_WEB,
            complainant=complainant,
            origin=origin,
            received_time=received,
            text=text,
        )
        complaint.screenshot_sha256, complaint.screenshot_location = digest, location
        try:
            await desk.file(complaint)
            await citizens.complaint_received(complaint, lang, "")
        except PublishFailed:
            return refused(lang, "unavailable", 503)
        log.info("accepted complaint %s from the web", complaint.complaint_id)
        kept = await answers.keep_first(identifier, complaint.reference.encode())
        return filed_page(lang, kept.decode())

    def filed_page(lang: str, reference: str) -> web.Response:
        path = "/preferences/plainte"
        other = "ar" if lang == "fr" else "fr"
        body = (
            f'<section><p class="ok" id="filed">{_t(lang, "filed", reference=reference)}</p>'
            f'<p><a href="{path}?lang={lang}">{_t(lang, "another")}</a> · '
            f'<a href="/preferences/me?lang={lang}">{_t(lang, "back")}</a></p></section>'
        )
        return _html(pages.page(lang, body, switch_href=f"{path}?lang={other}"))

    app.router.add_get("/plainte", to_form)
    app.router.add_get("/preferences/plainte", show)
    app.router.add_post("/preferences/plainte", file)
