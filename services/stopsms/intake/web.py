"""The link page (HTTP): GET shows what will happen, POST confirms, then the proof unfolds.

A GET never changes anything, because SMS link previews and security scanners fetch links.
A click is recorded as party ``link`` with the request id ``<code>:<action>``; a double click
finds the first answer and publishes nothing more. After the POST the browser is sent to the
status page (POST/redirect/GET), which counts the operators and providers that applied the
change, refreshing itself until all have.

There is no plain "opt back in": holding a link proves nothing about the number. The browser
that opted out may undo it for a short while with a one-time token (:mod:`stopsms.intake.undo`);
anyone else is told to reply START by SMS.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from aiohttp import web

from stopsms.adapters.clients import party_channel
from stopsms.adapters.kafka import PublishFailed
from stopsms.adapters.link_store import LiveLink, StoreUnavailable
from stopsms.domain.ids import LINK_PARTY_ID, event_id, link_request_id
from stopsms.domain.ratelimit import KeyedRateLimiter
from stopsms.intake import pages
from stopsms.intake.answers import AnswerStore
from stopsms.intake.links import LinkDirectory, is_code
from stopsms.intake.pages import html_response as _html
from stopsms.intake.submission import RequestSubmitter
from stopsms.intake.undo import (
    UNDO_COOKIE,
    UndoGrant,
    UndoStore,
    new_token,
    token_digest,
)
from stopsms.v1 import (
    events_pb2,
    notifier_pb2,
    notifier_pb2_grpc,
    registry_pb2,
    registry_pb2_grpc,
)

log = logging.getLogger(__name__)

#: Largest form body accepted; the form has one short field.
MAX_BODY_BYTES = 4096
#: The opt-outs a link page offers: its sender, or all marketing.
OPT_OUTS = ("opt_out", "opt_out_all")
#: The pages that follow a POST: an opt-out's proof, or the undo's.
STATUS_PAGES = (*OPT_OUTS, "undo")


class PlatformLookups:
    """What the page asks the other services, as the platform party ``stopsms-intake``."""

    def __init__(
        self, registry: str, notifier: str, party_id: str, tls_folder: Path | None
    ) -> None:
        self._registry_channel, self._metadata = party_channel(registry, party_id, tls_folder)
        self._notifier_channel, _ = party_channel(notifier, party_id, tls_folder)
        self._registry = registry_pb2_grpc.RegistryServiceStub(self._registry_channel)
        self._notifier = notifier_pb2_grpc.NotifierServiceStub(self._notifier_channel)

    async def check(self, msisdn: str, sender_id: str) -> registry_pb2.CheckResponse | None:
        """The registry's answer for the number and sender; None when the registry is away."""
        try:
            answer: registry_pb2.CheckResponse = await self._registry.Check(
                registry_pb2.CheckRequest(msisdn=msisdn, sender_id=sender_id),
                metadata=self._metadata,
                timeout=2.0,
            )
        except grpc.aio.AioRpcError as exc:
            log.warning("registry check for the citizen's page failed: %s", exc.code())
            return None
        return answer

    async def suppressed(self, msisdn: str, sender_id: str) -> bool | None:
        """Whether the number is suppressed for the sender; None when the registry is away."""
        answer = await self.check(msisdn, sender_id)
        return None if answer is None else answer.verdict == registry_pb2.VERDICT_SUPPRESSED

    async def propagation(self, event: str) -> events_pb2.PropagationRecord | None:
        """The proof of a request so far; None before it exists or when the notifier is away."""
        try:
            reply = await self._notifier.GetPropagation(
                notifier_pb2.GetPropagationRequest(event_id=event),
                metadata=self._metadata,
                timeout=2.0,
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND:
                log.warning("propagation lookup for the link page failed: %s", exc.code())
            return None
        return reply.propagation

    async def close(self) -> None:
        """Close both channels."""
        await self._registry_channel.close()
        await self._notifier_channel.close()


def count_applied(record: events_pb2.PropagationRecord) -> tuple[int, int, int, int]:
    """Operators applied, operators concerned, providers applied, providers concerned."""
    ops = [d for d in record.deliveries if d.party_kind == events_pb2.PARTY_KIND_OPERATOR]
    psvas = [d for d in record.deliveries if d.party_kind == events_pb2.PARTY_KIND_PSVA]

    def applied(items: list[Any]) -> int:
        return sum(d.status == events_pb2.DELIVERY_STATUS_APPLIED for d in items)

    return applied(ops), len(ops), applied(psvas), len(psvas)


def create_web_app(
    *,
    links: LinkDirectory,
    submitter: RequestSubmitter,
    lookups: PlatformLookups,
    answers: AnswerStore,
    numbers: KeyedRateLimiter,
    misses: KeyedRateLimiter,
    undos: UndoStore,
    undo_seconds: int,
    secure_cookies: bool,
    citizens_page: Callable[[web.Application, Callable[[web.Request], str]], None] | None = None,
) -> web.Application:
    """Build the aiohttp application of the link page.

    ``undos`` keeps the one-time undo tokens, valid ``undo_seconds`` (0: no undo);
    ``secure_cookies`` marks the undo cookie Secure (a public https:// base URL);
    ``citizens_page`` adds the citizen's own page (:mod:`stopsms.intake.preferences`).
    """

    def language(request: web.Request) -> str:
        return pages.choose_language(
            request.query.get("lang"), request.headers.get("Accept-Language")
        )

    def message(request: web.Request, key: str, status: int, **values: str) -> web.Response:
        lang = language(request)
        other = "ar" if lang == "fr" else "fr"
        return _html(
            pages.message_page(lang, key, f"{request.path}?lang={other}", **values), status
        )

    async def find(request: web.Request) -> LiveLink | web.Response:
        """The link of the request's code, or the page that says why there is none."""
        client = request.remote or "unknown"
        wait = misses.exhausted(client)
        if wait:
            response = message(request, "too_many", 429)
            response.headers["Retry-After"] = str(max(1, round(wait)))
            return response
        code = request.match_info["code"]
        try:
            link = await links.get(code) if is_code(code) else None
        except StoreUnavailable:
            log.warning("link store unavailable: the page asks to retry", exc_info=True)
            return message(request, "unavailable", 503)
        if link is None:
            misses.retry_after(client)  # enumeration attempts run out of tokens
            return message(request, "not_found", 404)
        if link.expired():
            return message(request, "expired", 410, sender=link.sender_id)
        return link

    async def show(request: web.Request) -> web.Response:
        link = await find(request)
        if isinstance(link, web.Response):
            return link
        suppressed = await lookups.suppressed(link.e164, link.sender_id)
        return _html(
            pages.confirm_page(language(request), link.code, link.sender_id, bool(suppressed))
        )

    def too_many(request: web.Request, wait: float) -> web.Response:
        response = message(request, "too_many", 429)
        response.headers["Retry-After"] = str(max(1, round(wait)))
        return response

    async def submit(
        request: web.Request, link: LiveLink, request_id: str, action: int, scope: str
    ) -> web.Response | None:
        """Publish a click not answered before; a page when it cannot be published."""
        subject = submitter.protect(link.e164)
        wait = numbers.retry_after(subject.subject)
        if wait:
            return too_many(request, wait)
        try:
            published = await submitter.submit(
                party_id=LINK_PARTY_ID,
                request_id=request_id,
                subject=subject,
                action=action,
                sender_id=scope,
                channel=events_pb2.CHANNEL_LINK,
                action_time=None,
            )
        except PublishFailed:
            return message(request, "unavailable", 503)
        await answers.keep_first(published.event_id, published.SerializeToString())
        return None

    def done_url(request: web.Request, link: LiveLink, action: str) -> str:
        return f"/{link.code}/done/{action}?lang={language(request)}"

    def scope_of(action: str, link: LiveLink) -> str:
        """The scope an opt-out action of the page is for: the link's sender, or global."""
        return "" if action == "opt_out_all" else link.sender_id

    async def answered(request_id: str) -> bool:
        return await answers.get(event_id(LINK_PARTY_ID, request_id)) is not None

    async def confirm(request: web.Request) -> web.Response:
        link = await find(request)
        if isinstance(link, web.Response):
            return link
        form = await request.post()
        action = form.get("action")
        if action == "undo":
            return await undo(request, link)
        if action == "opt_in":  # holding the link proves nothing about the number
            return message(request, "restart_by_sms", 403, sender=link.sender_id)
        if not isinstance(action, str) or action not in OPT_OUTS:
            return message(request, "bad_action", 400)
        round_ = await undos.round(link.code)
        request_id = link_request_id(link.code, action, round_)
        scope = scope_of(action, link)
        first = not await answered(request_id)  # a double click publishes nothing more
        before = None
        if first:
            # Undo is offered only for an opt-out that changes something (intake.undo).
            before = await lookups.suppressed(link.e164, scope)
            refused = await submit(request, link, request_id, events_pb2.ACTION_OPT_OUT, scope)
            if refused is not None:
                return refused
        redirect = web.HTTPSeeOther(done_url(request, link, action))
        if first and before is False and undo_seconds > 0:
            token = new_token()
            await undos.grant(
                token_digest(token), UndoGrant(link.code, action, round_), undo_seconds
            )
            redirect.set_cookie(
                UNDO_COOKIE,
                token,
                max_age=undo_seconds,
                path=f"/{link.code}",
                secure=secure_cookies,
                httponly=True,
                samesite="Strict",
            )
        raise redirect

    async def granted(request: web.Request, link: LiveLink) -> UndoGrant | None:
        """The undo this browser holds for the link's current round, if any."""
        token = request.cookies.get(UNDO_COOKIE)
        grant = await undos.find(token_digest(token)) if token else None
        if grant is None or grant.code != link.code:
            return None
        return grant if grant.round == await undos.round(link.code) else None

    async def undo(request: web.Request, link: LiveLink) -> web.Response:
        """Take back this browser's own opt-out, within its window, once."""
        grant = await granted(request, link)
        if grant is None:
            return message(request, "undo_gone", 403, sender=link.sender_id)
        scope = scope_of(grant.action, link)
        request_id = link_request_id(link.code, "undo", grant.round)
        if not await answered(request_id):
            refused = await submit(request, link, request_id, events_pb2.ACTION_OPT_IN, scope)
            if refused is not None:
                return refused
        token = request.cookies[UNDO_COOKIE]
        await undos.spend(token_digest(token), link.code)
        redirect = web.HTTPSeeOther(done_url(request, link, "undo"))
        redirect.del_cookie(UNDO_COOKIE, path=f"/{link.code}")
        raise redirect

    async def status(request: web.Request) -> web.Response:
        link = await find(request)
        if isinstance(link, web.Response):
            return link
        action = request.match_info["action"]
        if action not in STATUS_PAGES:
            return message(request, "bad_action", 404)
        round_ = await undos.round(link.code)
        if action == "undo":
            if round_ == 0:
                return message(request, "bad_action", 404)
            request_id = link_request_id(link.code, "undo", round_ - 1)
        else:
            request_id = link_request_id(link.code, action, round_)
        record = await lookups.propagation(event_id(LINK_PARTY_ID, request_id))
        progress = count_applied(record) if record is not None else None
        done = bool(record is not None and record.done)
        grant = await granted(request, link) if action != "undo" else None
        return _html(
            pages.done_page(
                language(request),
                link.code,
                action,
                link.sender_id,
                request_id,
                progress,
                done,
                undo_minutes=undo_seconds // 60 if grant and grant.action == action else None,
            )
        )

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app.router.add_get("/healthz", healthz)
    if citizens_page is not None:  # before /{code}: "preferences" has a link code's shape
        citizens_page(app, language)
    app.router.add_get("/{code}", show)
    app.router.add_post("/{code}", confirm)
    app.router.add_get("/{code}/done/{action}", status)
    return app
