"""The link page (HTTP): GET shows what will happen, POST confirms.

A GET never changes anything, because SMS link previews and security scanners fetch links.
A click is recorded as party ``link`` with the request id ``<code>:<action>``, so a double
submit is the same request.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

import grpc
from aiohttp import web

from stopsms.core.clients import party_channel
from stopsms.core.ids import LINK_PARTY_ID, link_request_id
from stopsms.core.kafka import PublishFailed
from stopsms.intake import pages
from stopsms.intake.links import LinkDirectory, is_code
from stopsms.intake.submission import RequestSubmitter, Subject
from stopsms.v1 import events_pb2, registry_pb2, registry_pb2_grpc

log = logging.getLogger(__name__)

#: Largest form body accepted; the form has one short field.
MAX_BODY_BYTES = 4096
ACTIONS = {
    "opt_out": events_pb2.ACTION_OPT_OUT,
    "opt_out_all": events_pb2.ACTION_OPT_OUT,
    "opt_in": events_pb2.ACTION_OPT_IN,
}


class SuppressionLookup:
    """Asks the registry whether a link's number is currently suppressed for its sender."""

    def __init__(self, target: str, party_id: str, tls_folder: Path | None) -> None:
        self._channel, self._metadata = party_channel(target, party_id, tls_folder)
        self._stub = registry_pb2_grpc.RegistryServiceStub(self._channel)

    async def suppressed(self, msisdn: str, sender_id: str) -> bool | None:
        """True or False, or None when the registry cannot answer now."""
        try:
            answer = await self._stub.Check(
                registry_pb2.CheckRequest(msisdn=msisdn, sender_id=sender_id),
                metadata=self._metadata,
                timeout=2.0,
            )
        except grpc.aio.AioRpcError as exc:
            log.warning("registry check for the link page failed: %s", exc.code())
            return None
        return answer.verdict == registry_pb2.VERDICT_SUPPRESSED

    async def close(self) -> None:
        """Close the channel."""
        await self._channel.close()


def _html(text: str, status: int = 200) -> web.Response:
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
        },
    )


def create_web_app(
    *, links: LinkDirectory, submitter: RequestSubmitter, lookup: SuppressionLookup, unseal
) -> web.Application:  # type: ignore[no-untyped-def]
    """Build the aiohttp application of the link page."""

    async def find(request: web.Request) -> events_pb2.StopLink | web.Response:
        code = request.match_info["code"]
        link = await links.get(code) if is_code(code) else None
        if link is None:
            return _html(
                pages.error_page(
                    "Ce lien StopSMS n'existe pas. Vérifiez qu'il est complet.",
                    "رابط StopSMS هذا غير موجود. تحقق من أنه كامل.",
                ),
                404,
            )
        return link

    def expired(link: events_pb2.StopLink) -> bool:
        return link.expire_time.ToDatetime(tzinfo=UTC) < datetime.now(UTC)

    async def show(request: web.Request) -> web.Response:
        link = await find(request)
        if isinstance(link, web.Response):
            return link
        if expired(link):
            return _html(pages.expired_page(link.sender_id), 410)
        suppressed = await lookup.suppressed(unseal(link.sealed_msisdn), link.sender_id)
        return _html(pages.confirm_page(link.code, link.sender_id, bool(suppressed)))

    async def confirm(request: web.Request) -> web.Response:
        link = await find(request)
        if isinstance(link, web.Response):
            return link
        if expired(link):
            return _html(pages.expired_page(link.sender_id), 410)
        form = await request.post()
        action = form.get("action")
        if not isinstance(action, str) or action not in ACTIONS:
            return _html(pages.error_page("Action inconnue.", "إجراء غير معروف."), 400)
        request_id = link_request_id(link.code, action)
        try:
            published = await submitter.submit(
                party_id=LINK_PARTY_ID,
                request_id=request_id,
                subject=Subject(link.subject, link.sealed_msisdn),
                action=ACTIONS[action],
                sender_id="" if action == "opt_out_all" else link.sender_id,
                channel=events_pb2.CHANNEL_LINK,
                action_time=None,
            )
        except PublishFailed:
            return _html(
                pages.error_page(
                    "Le service est momentanément indisponible. Réessayez dans un instant.",
                    "الخدمة غير متاحة مؤقتا. أعد المحاولة بعد لحظات.",
                ),
                503,
            )
        return _html(pages.done_page(link.sender_id, action, request_id, published.event_id))

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/{code}", show)
    app.router.add_post("/{code}", confirm)
    return app
