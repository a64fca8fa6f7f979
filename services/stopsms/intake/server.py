"""Intake's gRPC API: the opt-outs, the SMS replies, the links and the complaints.

Every input is validated in full before anything is published, so a bad request is refused
with ``INVALID_ARGUMENT`` naming the field and never half applied. A request is answered only
after Kafka acknowledged it; otherwise the answer is ``UNAVAILABLE`` and a retry with the same
request id is safe (same event id, deduplicated by the registry).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Any

import grpc
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from stopsms.adapters.identity import Authenticator
from stopsms.adapters.kafka import Publisher, PublishFailed, message_headers
from stopsms.adapters.sender_register import SenderRegisterFollower
from stopsms.adapters.settings import IntakeSettings
from stopsms.domain.ids import complaint_id, event_id
from stopsms.domain.keywords import classify
from stopsms.domain.messages import reply_language
from stopsms.domain.numbers import InvalidNumber, normalise_msisdn
from stopsms.domain.parties import InvalidSender, Party, canonical_sender_id, check_sender_id
from stopsms.domain.ratelimit import KeyedRateLimiter
from stopsms.domain.senders import ACTIVE, status_name
from stopsms.domain.timestamps import readable
from stopsms.domain.topics import Topics
from stopsms.intake.answers import AnswerStore, InMemoryAnswerStore
from stopsms.intake.citizen_messages import CitizenMessages
from stopsms.intake.complaints import (
    FOLLOW_UP,
    MAX_TEXT,
    ComplaintDesk,
    InvalidOrigin,
    pending_complaint_key,
)
from stopsms.intake.links import new_codes
from stopsms.intake.submission import RequestSubmitter
from stopsms.v1 import events_pb2, intake_pb2, intake_pb2_grpc

SERVICE_NAME = "stopsms.v1.IntakeService"
MAX_REQUEST_ID = 128
MAX_LINKS_PER_BATCH = 10_000
#: How far in the future an action time may be (clock skew between a party and us).
MAX_CLOCK_SKEW_SECONDS = 300

log = logging.getLogger(__name__)


def number_limiter(settings: IntakeSettings) -> KeyedRateLimiter:
    """Requests per number: generous for a citizen, a wall for a flood against one number."""
    per_minute = settings.number_requests_per_minute
    return KeyedRateLimiter(rate=per_minute / 60, burst=per_minute)


class InvalidField(ValueError):
    """A request field is invalid; ``field`` names it for the INVALID_ARGUMENT status."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field


def check_request_id(request_id: str) -> str:
    """A request id is required (AIP-155) and at most 128 characters."""
    if not request_id:
        raise InvalidField("request_id", "required: a retry must carry the same id")
    if len(request_id) > MAX_REQUEST_ID or not request_id.isprintable():
        raise InvalidField("request_id", f"at most {MAX_REQUEST_ID} printable characters")
    return request_id


def check_msisdn(raw: str, field: str = "msisdn") -> str:
    """Normalise a number or raise :class:`InvalidField`."""
    try:
        return normalise_msisdn(raw)
    except InvalidNumber as exc:
        raise InvalidField(field, str(exc)) from exc


def check_sender(sender_id: str, *, required: bool = False, field: str = "sender_id") -> str:
    """Validate a sender id or raise :class:`InvalidField`."""
    try:
        return check_sender_id(sender_id, required=required)
    except InvalidSender as exc:
        raise InvalidField(field, str(exc)) from exc


def check_action_time(
    stamp: Timestamp, has_field: bool, field: str = "action_time"
) -> Timestamp | None:
    """A time a party reports (an action, a message's arrival) must not lie in the future.

    Nor be a time protobuf itself cannot read (:mod:`stopsms.domain.timestamps`): published,
    it would stop every reader that converts it, the console's assessor first.
    """
    if not has_field:
        return None
    if not readable(stamp):
        raise InvalidField(field, "not a valid time (nanos from 0 to 999,999,999)")
    if stamp.seconds > time.time() + MAX_CLOCK_SKEW_SECONDS:
        raise InvalidField(field, "lies in the future")
    if stamp.seconds < 0:
        raise InvalidField(field, "before 1970")
    return stamp


class SenderNotActive(Exception):
    """A sender of the register the regulator has not made ACTIVE: no link is issued for it."""


class IntakeServicer(intake_pb2_grpc.IntakeServiceServicer):
    """Accepts requests from operators and PSVAs and issues links."""

    def __init__(
        self,
        settings: IntakeSettings,
        *,
        submitter: RequestSubmitter,
        citizens: CitizenMessages,
        publisher: Publisher,
        auth: Authenticator,
        answers: AnswerStore | None = None,
        numbers: KeyedRateLimiter | None = None,
        sender_register: SenderRegisterFollower | None = None,
        complaints: ComplaintDesk | None = None,
    ) -> None:
        self._settings = settings
        self._complaints = complaints
        self._sender_register = sender_register
        self._answers = answers or InMemoryAnswerStore()
        self._numbers = numbers or number_limiter(settings)
        self._submitter = submitter
        self._citizens = citizens
        self._publisher = publisher
        self._auth = auth
        self._topics = Topics(settings.topic_namespace)

    async def _caller(
        self, context: grpc.aio.ServicerContext, method: str, allowed: tuple[str, ...]
    ) -> Party:
        party = await self._auth.caller(context, method)
        if party.kind_name not in allowed:
            await self._auth.deny(
                context,
                party,
                method,
                f"a {party.kind_name} may not call {method.rsplit('/', 1)[-1]}",
            )
        return party

    async def SubmitOptOut(  # noqa: N802 - gRPC method name
        self, request: intake_pb2.SubmitOptOutRequest, context: grpc.aio.ServicerContext
    ) -> intake_pb2.SubmitOptOutResponse:
        """Record an opt-out a party received on its own channel."""
        method = "/stopsms.v1.IntakeService/SubmitOptOut"
        party = await self._caller(context, method, ("operator", "psva"))
        try:
            request_id = check_request_id(request.request_id)
            e164 = check_msisdn(request.msisdn)
            sender_id = self._auth.directory.resolve_sender(check_sender(request.sender_id))
            if request.channel in (events_pb2.CHANNEL_UNSPECIFIED, events_pb2.CHANNEL_LINK):
                raise InvalidField("channel", "required; links are confirmed on the link page")
            if request.channel not in events_pb2.Channel.values():
                raise InvalidField("channel", "unknown channel")
            action_time = check_action_time(request.action_time, request.HasField("action_time"))
        except InvalidField as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))

        def answer(published: events_pb2.PreferenceRequested) -> intake_pb2.SubmitOptOutResponse:
            return intake_pb2.SubmitOptOutResponse(
                request_id=request_id,
                status=intake_pb2.SUBMISSION_STATUS_ACCEPTED,
                event_id=published.event_id,
                accepted_time=published.accepted_time,
            )

        return await self._submit_once(
            context,
            party,
            method,
            answer,
            intake_pb2.SubmitOptOutResponse,
            request_id=request_id,
            e164=e164,
            action=events_pb2.ACTION_OPT_OUT,
            sender_id=sender_id,
            channel=request.channel,
            action_time=action_time,
        )

    async def SubmitKeyword(  # noqa: N802 - gRPC method name
        self, request: intake_pb2.SubmitKeywordRequest, context: grpc.aio.ServicerContext
    ) -> intake_pb2.SubmitKeywordResponse:
        """Act on an SMS reply forwarded by an operator (START only from the number itself)."""
        method = "/stopsms.v1.IntakeService/SubmitKeyword"
        party = await self._caller(context, method, ("operator",))
        try:
            request_id = check_request_id(request.request_id)
            e164 = check_msisdn(request.msisdn)
            short_code = check_sender(request.sender_id, required=True)
            if len(request.text) > 1600:
                raise InvalidField("text", "an SMS reply has at most 1600 characters")
            action_time = check_action_time(request.action_time, request.HasField("action_time"))
        except InvalidField as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        # a reply to a sender's short code is about the sender it is an alias of
        sender = self._auth.directory.resolve_sender(short_code)
        intent = classify(request.text, sender)
        is_platform_code = short_code in {
            canonical_sender_id(code) for code in self._settings.platform_short_codes
        }
        scope = "" if is_platform_code or intent == intake_pb2.INTENT_OPT_OUT_ALL else sender
        language = reply_language(request.text)
        if intent in (intake_pb2.INTENT_NONE, intake_pb2.INTENT_HELP):
            # HELP anywhere, and a reply to the platform's own code it could not read, are
            # answered with the keywords; nothing else is done.
            if intent == intake_pb2.INTENT_HELP or is_platform_code:
                subject = self._submitter.protect(e164)
                self._auth.permitted(party, method, [subject.subject])
                try:
                    await self._citizens.help(party.id, request_id, subject, language, party.id)
                except PublishFailed:
                    await context.abort(
                        grpc.StatusCode.UNAVAILABLE,
                        "Kafka did not acknowledge the help message; retry with the same "
                        "request_id",
                    )
            return intake_pb2.SubmitKeywordResponse(
                intent=intent, sender_id=scope, status=intake_pb2.SUBMISSION_STATUS_IGNORED
            )
        action = (
            events_pb2.ACTION_OPT_IN
            if intent == intake_pb2.INTENT_OPT_IN
            else events_pb2.ACTION_OPT_OUT
        )

        async def confirm(published: events_pb2.PreferenceRequested) -> None:
            await self._citizens.confirm(published, language, party.id)

        def answer(published: events_pb2.PreferenceRequested) -> intake_pb2.SubmitKeywordResponse:
            return intake_pb2.SubmitKeywordResponse(
                intent=intent,
                request_id=request_id,
                sender_id=scope,
                event_id=published.event_id,
                status=intake_pb2.SUBMISSION_STATUS_ACCEPTED,
                undeclared_sender=published.undeclared_sender,
            )

        return await self._submit_once(
            context,
            party,
            method,
            answer,
            intake_pb2.SubmitKeywordResponse,
            request_id=request_id,
            e164=e164,
            then=confirm,
            action=action,
            sender_id=scope,
            channel=events_pb2.CHANNEL_SMS,
            action_time=action_time,
        )

    async def SubmitComplaint(  # noqa: N802 - gRPC method name
        self, request: intake_pb2.SubmitComplaintRequest, context: grpc.aio.ServicerContext
    ) -> intake_pb2.SubmitComplaintResponse:
        """Record a complaint an operator forwarded, and acknowledge it to the citizen."""
        method = "/stopsms.v1.IntakeService/SubmitComplaint"
        party = await self._caller(context, method, ("operator",))
        desk = self._complaints
        if desk is None:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "complaints are not taken here")
            raise AssertionError  # abort raises
        try:
            request_id = check_request_id(request.request_id)
            e164 = check_msisdn(request.msisdn)
            if len(request.text) > MAX_TEXT:
                raise InvalidField("text", f"a forwarded SMS has at most {MAX_TEXT} characters")
            if len(request.from_address) > 64:
                raise InvalidField("from_address", "at most 64 characters")
            try:
                origin = desk.origin(request.from_address)
            except InvalidOrigin as exc:
                raise InvalidField("from_address", str(exc)) from exc
            received = check_action_time(
                request.received_time, request.HasField("received_time"), "received_time"
            )
        except InvalidField as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        first = await self._answers.get(complaint_id(party.id, request_id))
        if first is not None:
            return intake_pb2.SubmitComplaintResponse.FromString(first)
        complainant = self._submitter.protect(e164)
        await self._limit_number(context, complainant.subject)
        if origin.unknown:
            completed = await self._complete_complaint(
                context, party, request_id, complainant.subject, request.text
            )
            if completed is not None:
                return completed
        subjects = [complainant.subject]
        if origin.number is not None:
            subjects.append(origin.number.subject)
        self._auth.permitted(party, method, subjects)
        complaint = desk.build(
            party_id=party.id,
            request_id=request_id,
            channel=events_pb2.CHANNEL_SMS,
            complainant=complainant,
            origin=origin,
            received_time=received,
            text=request.text,
        )
        try:
            await desk.file(complaint)
            await self._citizens.complaint_received(
                complaint, reply_language(request.text), party.id
            )
        except PublishFailed:
            await context.abort(
                grpc.StatusCode.UNAVAILABLE,
                "Kafka did not acknowledge the complaint; retry with the same request_id",
            )
        log.info("accepted complaint %s", complaint.complaint_id)
        answer = intake_pb2.SubmitComplaintResponse(
            request_id=request_id,
            complaint_id=complaint.complaint_id,
            reference=complaint.reference,
            status=intake_pb2.SUBMISSION_STATUS_ACCEPTED,
            sender_id=complaint.sender_id,
            undeclared_sender=desk.is_undeclared(origin),
            origin_unknown=complaint.origin_unknown,
        )
        if complaint.origin_unknown:  # kept for the citizen's answer naming the sender
            await self._answers.keep_first(
                pending_complaint_key(complaint.subject, complaint.reference),
                complaint.SerializeToString(),
            )
        kept = await self._answers.keep_first(complaint.complaint_id, answer.SerializeToString())
        return intake_pb2.SubmitComplaintResponse.FromString(kept)

    async def _complete_complaint(
        self,
        context: grpc.aio.ServicerContext,
        party: Party,
        request_id: str,
        subject: str,
        text: str,
    ) -> intake_pb2.SubmitComplaintResponse | None:
        """The citizen's answer naming the sender of an earlier complaint, if this is one.

        "SPAM-1A2B3C4D JUMIA" (the reference the citizen was sent, then the name or number
        their phone showed) completes that complaint of the same number: the complaint is
        published again, whole, with its originating address, and the citizen is told. None
        when the text is no such answer (a new complaint, then).
        """
        desk = self._complaints
        found = FOLLOW_UP.match(text)
        if desk is None or found is None:
            return None
        reference = "SPAM-" + found.group(1).upper()
        kept = await self._answers.get(pending_complaint_key(subject, reference))
        if kept is None:
            return None  # not this number's reference: an ordinary complaint
        try:
            origin = desk.origin(found.group(2))
        except InvalidOrigin:
            return None  # no name nor number in it: recorded as a new complaint, asked again
        completed = desk.complete(events_pb2.ComplaintFiled.FromString(kept), origin)
        method = "/stopsms.v1.IntakeService/SubmitComplaint"
        subjects = [subject] + ([origin.number.subject] if origin.number is not None else [])
        self._auth.permitted(party, method, subjects)
        try:
            await desk.file(completed)
            told = events_pb2.ComplaintFiled()
            told.CopyFrom(completed)
            told.party_id, told.request_id = party.id, request_id  # a message of its own
            await self._citizens.complaint_received(told, reply_language(text), party.id)
        except PublishFailed:
            await context.abort(
                grpc.StatusCode.UNAVAILABLE,
                "Kafka did not acknowledge the complaint; retry with the same request_id",
            )
        log.info("complaint %s completed with its sender", completed.complaint_id)
        answer = intake_pb2.SubmitComplaintResponse(
            request_id=request_id,
            complaint_id=completed.complaint_id,
            reference=completed.reference,
            status=intake_pb2.SUBMISSION_STATUS_ACCEPTED,
            sender_id=completed.sender_id,
            undeclared_sender=desk.is_undeclared(origin),
            origin_unknown=False,
        )
        first = await self._answers.keep_first(
            complaint_id(party.id, request_id), answer.SerializeToString()
        )
        return intake_pb2.SubmitComplaintResponse.FromString(first)

    async def _limit_number(self, context: grpc.aio.ServicerContext, subject: str) -> None:
        """RESOURCE_EXHAUSTED, with when to retry, for a number over its rate."""
        wait = self._numbers.retry_after(subject)
        if wait:
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"msisdn: too many requests for this number; retry after {wait:.0f}s",
                trailing_metadata=(("retry-after-ms", str(round(wait * 1000))),),
            )

    async def _submit_once(
        self,
        context: grpc.aio.ServicerContext,
        party: Party,
        method: str,
        answer: Callable[[events_pb2.PreferenceRequested], Message],
        response_class: type[Message],
        *,
        request_id: str,
        e164: str,
        then: Callable[[events_pb2.PreferenceRequested], Awaitable[None]] | None = None,
        **fields: object,
    ) -> Any:
        """Publish a request once and give every retry the first answer (AIP-155).

        ``then`` runs after Kafka acknowledged the request and before the answer is kept (the
        citizen's confirmation): if it fails, the caller is told UNAVAILABLE and its retry
        publishes both again, under the same ids.
        """
        first = await self._answers.get(event_id(party.id, request_id))
        if first is not None:
            return response_class.FromString(first)
        subject = self._submitter.protect(e164)
        await self._limit_number(context, subject.subject)
        self._auth.permitted(party, method, [subject.subject])
        try:
            published = await self._submitter.submit(
                party_id=party.id,
                request_id=request_id,
                subject=subject,
                **fields,  # type: ignore[arg-type]
            )
            if then is not None:
                await then(published)
        except PublishFailed:
            await context.abort(
                grpc.StatusCode.UNAVAILABLE,
                "Kafka did not acknowledge the request; retry with the same request_id",
            )
            raise
        log.info("accepted request as event %s", published.event_id)
        kept = await self._answers.keep_first(
            published.event_id, answer(published).SerializeToString()
        )
        return response_class.FromString(kept)

    def _link_times(self) -> tuple[Timestamp, Timestamp]:
        """When links issued now were issued, and when they expire (one pair per call)."""
        issued = Timestamp()
        issued.GetCurrentTime()
        expires = Timestamp()
        expires.FromDatetime(issued.ToDatetime() + timedelta(days=self._settings.link_ttl_days))
        return issued, expires

    def _new_links(
        self,
        party: Party,
        items: Sequence[tuple[str, str, int]],
        field: Callable[[int], str],
        times: tuple[Timestamp, Timestamp],
    ) -> list[events_pb2.StopLink]:
        """Validate link requests (number, sender, lifetime) and build their records.

        Nothing is published; the first invalid item raises, named by ``field(i)``. A sender
        is resolved and checked once per batch, and the randomness of every code and seal is
        drawn at once: a campaign costs per link only what differs from link to link.
        """
        senders: dict[str, str] = {}
        expiries: dict[int, Timestamp] = {}
        numbers, chosen, lives = [], [], []
        for i, (msisdn, sender_id, lifetime_days) in enumerate(items):
            numbers.append(check_msisdn(msisdn, f"{field(i)}msisdn"))
            if lifetime_days not in expiries:
                expiries[lifetime_days] = self._expiry(times, lifetime_days, field(i))
            lives.append(expiries[lifetime_days])
            sender = senders.get(sender_id)
            if sender is None:
                sender = self._auth.directory.resolve_sender(
                    check_sender(sender_id, required=True, field=f"{field(i)}sender_id")
                )
                if not party.sends_for(sender):
                    raise PermissionError(f"sender {sender!r} is not one of {party.id}'s senders")
                self._check_active(sender, f"{field(i)}sender_id")
                senders[sender_id] = sender
            chosen.append(sender)
        protected = self._submitter.protect_many(numbers)
        return [
            events_pb2.StopLink(
                code=code,
                subject=subject.subject,
                sealed_msisdn=subject.sealed,
                sender_id=sender,
                issuer_party_id=party.id,
                issued_time=times[0],
                expire_time=expires,
            )
            for code, subject, sender, expires in zip(
                new_codes(len(numbers)), protected, chosen, lives, strict=True
            )
        ]

    def _expiry(
        self, times: tuple[Timestamp, Timestamp], lifetime_days: int, field: str
    ) -> Timestamp:
        """When a link issued at ``times[0]`` for ``lifetime_days`` (0: the default) expires."""
        if not lifetime_days:
            return times[1]
        most = self._settings.link_max_ttl_days
        if lifetime_days > most:
            raise InvalidField(
                f"{field}lifetime_days",
                f"at most {most} days (0: the default, {self._settings.link_ttl_days})",
            )
        expires = Timestamp()
        expires.FromDatetime(times[0].ToDatetime() + timedelta(days=lifetime_days))
        return expires

    def _check_active(self, sender_id: str, field: str) -> None:
        """Links only for ACTIVE senders of the register.

        Senders still listed in the directory file, not yet migrated, keep their links.
        """
        if self._sender_register is None:
            return
        record = self._sender_register.register.get(sender_id)
        if record is not None and record.status != ACTIVE:
            status = status_name(record.status)
            reason = f" ({record.status_reason})" if record.status_reason else ""
            raise SenderNotActive(
                f"{field}: sender {sender_id} is {status}{reason}; StopSMS links are issued "
                "only for senders the regulator made ACTIVE"
            )

    async def _record_links(
        self,
        context: grpc.aio.ServicerContext,
        party: Party,
        method: str,
        links: list[events_pb2.StopLink],
    ) -> None:
        self._auth.permitted(party, method, [link.subject for link in links])
        try:
            await self._publisher.publish_many(
                self._topics.links,
                [(link.code.encode(), link.SerializeToString()) for link in links],
                headers=message_headers("stopsms.v1.StopLink"),
            )
        except PublishFailed:
            await context.abort(
                grpc.StatusCode.UNAVAILABLE, "Kafka did not acknowledge the links; retry"
            )

    def _response(self, link: events_pb2.StopLink) -> intake_pb2.IssueStopLinkResponse:
        return intake_pb2.IssueStopLinkResponse(
            url=self._settings.public_base_url + link.code,
            code=link.code,
            expire_time=link.expire_time,
        )

    async def IssueStopLink(  # noqa: N802 - gRPC method name
        self, request: intake_pb2.IssueStopLinkRequest, context: grpc.aio.ServicerContext
    ) -> intake_pb2.IssueStopLinkResponse:
        """Issue one link for one of the caller's senders."""
        method = "/stopsms.v1.IntakeService/IssueStopLink"
        party = await self._caller(context, method, ("operator", "psva"))
        try:
            (link,) = self._new_links(
                party,
                [(request.msisdn, request.sender_id, request.lifetime_days)],
                lambda i: "",
                self._link_times(),
            )
        except InvalidField as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except SenderNotActive as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        except PermissionError as exc:
            await self._auth.deny(context, party, method, str(exc))
        await self._record_links(context, party, method, [link])
        return self._response(link)

    async def IssueStopLinks(  # noqa: N802 - gRPC method name
        self, request: intake_pb2.IssueStopLinksRequest, context: grpc.aio.ServicerContext
    ) -> intake_pb2.IssueStopLinksResponse:
        """Issue links for a campaign; all are validated before any is recorded."""
        method = "/stopsms.v1.IntakeService/IssueStopLinks"
        party = await self._caller(context, method, ("operator", "psva"))
        if not request.requests:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "requests: at least one link")
        if len(request.requests) > MAX_LINKS_PER_BATCH:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"requests: at most {MAX_LINKS_PER_BATCH} per call",
            )
        times = self._link_times()
        try:
            links = self._new_links(
                party,
                [(item.msisdn, item.sender_id, item.lifetime_days) for item in request.requests],
                lambda i: f"requests[{i}].",
                times,
            )
        except InvalidField as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except SenderNotActive as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        except PermissionError as exc:
            await self._auth.deny(context, party, method, str(exc))
        await self._record_links(context, party, method, links)
        return intake_pb2.IssueStopLinksResponse(links=[self._response(link) for link in links])
