"""``SenderRegistryService``: the register of declared senders, and the check of a campaign.

Hosted by intake, which already follows the register (for links and aliases), holds the link
directory the message check needs, and publishes the platform's records. A change is decided
against the register as this replica holds it after catching up with the topic, then written
twice: the record on ``stopsms.senders.v1`` (compacted: the register) and a ``SenderChanged``
on ``stopsms.sender-changes.v1`` (its history, kept three years), plus an audit entry; the
answer is given only after Kafka acknowledged both, and a retry with the same request id gets
the first answer back.

Changes are serialised within a replica. Two replicas could still both accept a declaration of
the same new id in the same instant (the later record wins on the compacted topic, and both
appear in the history); declarations are rare and made by a handful of parties, so this is
accepted and documented rather than locked across replicas.

The message check reads only memory (the register, the link directory) except when a text
carries a link code this replica has not seen yet: then it waits once, for the whole batch,
until the link directory has caught up with the topic.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import NoReturn

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from stopsms.adapters.identity import Authenticator
from stopsms.adapters.kafka import Publisher, PublishFailed
from stopsms.adapters.link_store import LiveLink, StoreUnavailable
from stopsms.adapters.sender_register import SenderRegisterFollower, publish_change
from stopsms.domain import senders as rules
from stopsms.domain.ids import event_id
from stopsms.domain.message_check import LinkSite, read_text
from stopsms.domain.parties import Party
from stopsms.domain.topics import Topics
from stopsms.intake.answers import AnswerStore
from stopsms.intake.links import LinkDirectory
from stopsms.intake.server import InvalidField, check_request_id, check_sender
from stopsms.v1 import events_pb2, senders_pb2, senders_pb2_grpc

SERVICE_NAME = "stopsms.v1.SenderRegistryService"
_METHOD = "/stopsms.v1.SenderRegistryService/"
#: AIP-231 batch limit of CheckMessages, and the longest text checked (ten GSM-7 segments).
MAX_MESSAGES = 10_000
MAX_TEXT = 1_600
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1_000
_PLACEHOLDER = re.compile(r"\{(\w+)\}")

log = logging.getLogger(__name__)

Code = senders_pb2.MessageProblemCode


def _problem(code: int, detail: str) -> senders_pb2.MessageProblem:
    return senders_pb2.MessageProblem(code=code, detail=detail)  # type: ignore[arg-type]


class SenderRegistryServicer(senders_pb2_grpc.SenderRegistryServiceServicer):
    """Declarations, updates and reviews of senders; reads; the message check."""

    def __init__(
        self,
        *,
        register: SenderRegisterFollower,
        links: LinkDirectory,
        publisher: Publisher,
        auth: Authenticator,
        answers: AnswerStore,
        topics: Topics,
        link_site: LinkSite,
        now: Callable[[], float] | None = None,
    ) -> None:
        self._register = register
        self._links = links
        self._publisher = publisher
        self._auth = auth
        self._answers = answers
        self._topics = topics
        self._site = link_site
        self._changing = asyncio.Lock()
        self._now = now

    # -- who calls ---------------------------------------------------------------------------

    async def _caller(
        self, context: grpc.aio.ServicerContext, name: str, allowed: tuple[str, ...]
    ) -> Party:
        method = _METHOD + name
        party = await self._auth.caller(context, method)
        if party.kind_name not in allowed:
            detail = f"a {party.kind_name} may not call {name}"
            await self._auth.deny(context, party, method, detail)
        return party

    @staticmethod
    async def _invalid(context: grpc.aio.ServicerContext, message: str) -> NoReturn:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, message)
        raise AssertionError("unreachable")

    # -- changes -----------------------------------------------------------------------------

    async def DeclareSender(  # noqa: N802 - gRPC method name
        self, request: senders_pb2.DeclareSenderRequest, context: grpc.aio.ServicerContext
    ) -> senders_pb2.DeclareSenderResponse:
        """A new sender, PENDING until the regulator reviews it."""
        party = await self._caller(context, "DeclareSender", ("operator", "psva"))
        sender = await self._change(
            context,
            party,
            "DeclareSender",
            request.request_id,
            senders_pb2.SENDER_CHANGE_DECLARED,
            lambda register: rules.declare(
                request.sender, party, register, self._parties(), self._listed(register)
            ),
        )
        return senders_pb2.DeclareSenderResponse(sender=sender)

    async def UpdateSender(  # noqa: N802 - gRPC method name
        self, request: senders_pb2.UpdateSenderRequest, context: grpc.aio.ServicerContext
    ) -> senders_pb2.UpdateSenderResponse:
        """Names, entity, declaration or sending parties of a sender the caller sends for."""
        party = await self._caller(context, "UpdateSender", ("operator", "psva"))
        sender = await self._change(
            context,
            party,
            "UpdateSender",
            request.request_id,
            senders_pb2.SENDER_CHANGE_UPDATED,
            lambda register: rules.update(
                request.sender, party, register, self._parties(), self._listed(register)
            ),
        )
        return senders_pb2.UpdateSenderResponse(sender=sender)

    async def ReviewSender(  # noqa: N802 - gRPC method name
        self, request: senders_pb2.ReviewSenderRequest, context: grpc.aio.ServicerContext
    ) -> senders_pb2.ReviewSenderResponse:
        """The regulator's decision: ACTIVE, SUSPENDED or REVOKED."""
        party = await self._caller(context, "ReviewSender", ("regulator",))
        sender = await self._change(
            context,
            party,
            "ReviewSender",
            request.request_id,
            senders_pb2.SENDER_CHANGE_REVIEWED,
            lambda register: rules.review(
                request.sender_id, request.status, request.reason, party, register
            ),
        )
        return senders_pb2.ReviewSenderResponse(sender=sender)

    def _parties(self) -> dict[str, Party]:
        return {party.id: party for party in self._auth.directory}

    def _listed(self, register: rules.SenderRegister) -> frozenset[str]:
        """Sender ids only the directory file lists (not migrated yet): not free to declare."""
        return frozenset(self._auth.directory.declared_senders()) - register.declared_ids()

    async def _change(
        self,
        context: grpc.aio.ServicerContext,
        party: Party,
        name: str,
        request_id: str,
        change: int,
        decide: Callable[[rules.SenderRegister], senders_pb2.Sender],
    ) -> senders_pb2.Sender:
        """Decide a change on the caught-up register, publish it, audit it; once per request."""
        method = _METHOD + name
        try:
            request_id = check_request_id(request_id)
        except InvalidField as exc:
            await self._invalid(context, str(exc))
        answer_key = event_id(party.id, f"sender:{request_id}")
        first = await self._answers.get(answer_key)
        if first is not None:
            return senders_pb2.Sender.FromString(first)
        async with self._changing:
            if not await self._register.caught_up():
                await context.abort(
                    grpc.StatusCode.UNAVAILABLE,
                    "the sender register could not be read up to date; retry with the same "
                    "request_id",
                )
            register = self._register.register
            try:
                sender = decide(register)
            except rules.SenderRefused as exc:
                if exc.permission:
                    await self._auth.deny(context, party, method, str(exc))
                message = str(exc)
                await self._invalid(
                    context, message if message.startswith(exc.field) else f"{exc.field}: {message}"
                )
            before = register.by_id.get(sender.sender_id)
            sender.updated_time.CopyFrom(self._timestamp())
            changed = senders_pb2.SenderChanged(
                event_id=answer_key,
                change=change,  # type: ignore[arg-type]
                sender=sender,
                previous_status=before.status if before is not None else 0,
                request_id=request_id,
            )
            try:
                await publish_change(self._publisher, self._topics, changed)
            except PublishFailed:
                await context.abort(
                    grpc.StatusCode.UNAVAILABLE,
                    "Kafka did not acknowledge the change; retry with the same request_id",
                )
            self._register.put(sender.sender_id, sender)
        self._auth.audit.record(
            party.id,
            party.kind,
            method,
            events_pb2.AUDIT_DECISION_PERMITTED,
            _describe(change, sender),
        )
        log.info("sender register: %s", _describe(change, sender))
        kept = await self._answers.keep_first(answer_key, sender.SerializeToString())
        return senders_pb2.Sender.FromString(kept)

    def _timestamp(self) -> Timestamp:
        stamp = Timestamp()
        if self._now is None:
            stamp.GetCurrentTime()
        else:
            stamp.FromNanoseconds(int(self._now() * 1e9))
        return stamp

    # -- reads -------------------------------------------------------------------------------

    def _visible(self, party: Party, sender: senders_pb2.Sender) -> bool:
        return party.is_regulator or party.id in sender.sending_party_ids

    async def GetSender(  # noqa: N802 - gRPC method name
        self, request: senders_pb2.GetSenderRequest, context: grpc.aio.ServicerContext
    ) -> senders_pb2.GetSenderResponse:
        """One sender, to the regulator or a party that sends for it (others: NOT_FOUND)."""
        party = await self._caller(context, "GetSender", ("operator", "psva", "regulator"))
        try:
            sender_id = check_sender(request.sender_id, required=True)
        except InvalidField as exc:
            await self._invalid(context, str(exc))
        sender = self._register.register.get(sender_id)
        if sender is None:
            await self._register.caught_up()
            sender = self._register.register.get(sender_id)
        if sender is None or not self._visible(party, sender):
            # the same answer whether it is undeclared or someone else's
            await context.abort(grpc.StatusCode.NOT_FOUND, f"sender_id: no sender {sender_id}")
        return senders_pb2.GetSenderResponse(sender=sender)

    async def ListSenders(  # noqa: N802 - gRPC method name
        self, request: senders_pb2.ListSendersRequest, context: grpc.aio.ServicerContext
    ) -> senders_pb2.ListSendersResponse:
        """A page of senders by id: the caller's own, or all for the regulator (AIP-158)."""
        party = await self._caller(context, "ListSenders", ("operator", "psva", "regulator"))
        if request.page_size < 0:
            await self._invalid(context, "page_size: must not be negative")
        size = min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        after = ""
        if request.page_token:
            try:
                after = base64.urlsafe_b64decode(request.page_token.encode()).decode()
            except (binascii.Error, UnicodeDecodeError, ValueError):
                await self._invalid(context, "page_token: not a token this service gave")
        register = self._register.register
        ids = sorted(
            sender_id
            for sender_id, sender in register.by_id.items()
            if sender_id > after and self._visible(party, sender)
        )
        page = ids[:size]
        token = ""
        if len(ids) > size:
            token = base64.urlsafe_b64encode(page[-1].encode()).decode()
        return senders_pb2.ListSendersResponse(
            senders=[register.by_id[i] for i in page], next_page_token=token
        )

    # -- the message check -------------------------------------------------------------------

    async def CheckMessage(  # noqa: N802 - gRPC method name
        self, request: senders_pb2.CheckMessageRequest, context: grpc.aio.ServicerContext
    ) -> senders_pb2.CheckMessageResponse:
        """Check one text of one sender before it is sent."""
        party = await self._caller(context, "CheckMessage", ("operator", "psva", "regulator"))
        try:
            sender_id = check_sender(request.sender_id, required=True)
            _check_length("text", request.text)
        except InvalidField as exc:
            await self._invalid(context, str(exc))
        try:
            (check,) = await self.check_texts(party, sender_id, [request.text])
        except StoreUnavailable:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the link store is unavailable; retry")
        return senders_pb2.CheckMessageResponse(check=check)

    async def CheckMessages(  # noqa: N802 - gRPC method name
        self, request: senders_pb2.CheckMessagesRequest, context: grpc.aio.ServicerContext
    ) -> senders_pb2.CheckMessagesResponse:
        """Check a campaign: up to 10,000 texts, or one template and its sets of values."""
        party = await self._caller(context, "CheckMessages", ("operator", "psva", "regulator"))
        try:
            sender_id = check_sender(request.sender_id, required=True)
            texts = campaign_texts(request)
        except InvalidField as exc:
            await self._invalid(context, str(exc))
        try:
            checks = await self.check_texts(party, sender_id, texts)
        except StoreUnavailable:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the link store is unavailable; retry")
        return senders_pb2.CheckMessagesResponse(
            checks=checks, all_ok=all(check.ok for check in checks)
        )

    async def check_texts(
        self, party: Party, named: str, texts: Sequence[str]
    ) -> list[senders_pb2.MessageCheck]:
        """The check of each text, problems in a fixed order (docs/senders.md)."""
        sender_id = self._auth.directory.resolve_sender(named)
        sender_problems = self._sender_problems(party, named, sender_id)
        readings = [read_text(text, self._site) for text in texts]
        codes = {c for r in readings for c in r.link_codes}
        links = await self._links.get_many(codes) if codes else {}  # StoreUnavailable: below
        now = self._now() if self._now is not None else time.time()
        checks = []
        for reading in readings:
            problems = list(sender_problems)
            if not reading.has_mention:
                problems.append(
                    _problem(
                        Code.MESSAGE_PROBLEM_CODE_STOPSMS_MENTION_MISSING,
                        "no StopSMS mention in an accepted form (a StopSMS link, or STOP and "
                        "the number to reply to)",
                    )
                )
            for code in reading.link_codes:
                problems.extend(self._link_problems(code, links.get(code), sender_id, now))
            checks.append(
                senders_pb2.MessageCheck(
                    ok=not problems,
                    problems=problems,
                    segments=reading.segments,
                    encoding=reading.encoding,  # type: ignore[arg-type]
                )
            )
        return checks

    def _sender_problems(
        self, party: Party, named: str, sender_id: str
    ) -> list[senders_pb2.MessageProblem]:
        record = self._register.register.get(sender_id)
        if record is None and not self._auth.directory.is_declared(sender_id):
            return [
                _problem(
                    Code.MESSAGE_PROBLEM_CODE_SENDER_NOT_DECLARED,
                    f"no one declared the sender {named}",
                )
            ]
        problems = []
        if not party.is_regulator and not party.sends_for(sender_id):
            problems.append(
                _problem(
                    Code.MESSAGE_PROBLEM_CODE_NOT_YOUR_SENDER,
                    f"{party.id} does not send for {sender_id}",
                )
            )
        if record is not None and record.status != rules.ACTIVE:
            status = rules.status_name(record.status)
            reason = f": {record.status_reason}" if record.status_reason else ""
            problems.append(
                _problem(
                    Code.MESSAGE_PROBLEM_CODE_SENDER_SUSPENDED,
                    f"the sender {sender_id} is {status}{reason}",
                )
            )
        return problems

    def _link_problems(
        self, code: str, link: LiveLink | None, sender_id: str, now: float
    ) -> list[senders_pb2.MessageProblem]:
        if link is None or link.sender_id != sender_id:
            return [
                _problem(
                    Code.MESSAGE_PROBLEM_CODE_STOPSMS_LINK_FOREIGN,
                    f"the StopSMS link {code} was not issued for {sender_id}",
                )
            ]
        if link.expired(now):
            return [
                _problem(
                    Code.MESSAGE_PROBLEM_CODE_STOPSMS_LINK_EXPIRED,
                    f"the StopSMS link {code} has expired",
                )
            ]
        return []


def _check_length(field: str, text: str) -> None:
    if not text.strip():
        raise InvalidField(field, "required: the text as it will be sent")
    if len(text) > MAX_TEXT:
        raise InvalidField(field, f"at most {MAX_TEXT} characters")


def campaign_texts(request: senders_pb2.CheckMessagesRequest) -> list[str]:
    """The texts of a campaign: given as such, or rendered from the template and its values."""
    if request.texts and (request.template or request.values):
        raise InvalidField("texts", "give texts, or a template and its values, not both")
    if request.texts:
        if len(request.texts) > MAX_MESSAGES:
            raise InvalidField("texts", f"at most {MAX_MESSAGES} per call")
        for i, text in enumerate(request.texts):
            _check_length(f"texts[{i}]", text)
        return list(request.texts)
    if not request.template:
        raise InvalidField("texts", "required: texts, or a template and its values")
    _check_length("template", request.template)
    if len(request.values) > MAX_MESSAGES:
        raise InvalidField("values", f"at most {MAX_MESSAGES} per call")
    names = set(_PLACEHOLDER.findall(request.template))
    if not request.values:
        if names:
            raise InvalidField("values", f"required: the template uses {{{sorted(names)[0]}}}")
        return [request.template]
    texts = []
    for i, values in enumerate(request.values):
        missing = names - set(values.values)
        if missing:
            raise InvalidField(f"values[{i}]", f"no value for {{{sorted(missing)[0]}}}")
        text = _render(request.template, values.values)
        _check_length(f"values[{i}]", text)
        texts.append(text)
    return texts


def _render(template: str, values: Mapping[str, str]) -> str:
    """``template`` with each ``{name}`` replaced by its value."""
    return _PLACEHOLDER.sub(lambda found: values[found.group(1)], template)


def _describe(change: int, sender: senders_pb2.Sender) -> str:
    what = {
        senders_pb2.SENDER_CHANGE_DECLARED: "declared",
        senders_pb2.SENDER_CHANGE_UPDATED: "updated",
        senders_pb2.SENDER_CHANGE_REVIEWED: "reviewed",
        senders_pb2.SENDER_CHANGE_MIGRATED: "migrated",
    }.get(change, "changed")
    status = rules.status_name(sender.status)
    reason = f" ({sender.status_reason})" if sender.status_reason else ""
    return (
        f"{what} sender {sender.sender_id}: {status}{reason}; sent by "
        f"{', '.join(sender.sending_party_ids)}"
    )
