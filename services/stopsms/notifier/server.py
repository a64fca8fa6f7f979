"""The notifier's gRPC API: ``WatchChanges``, ``Acknowledge``, ``GetPropagation``.

Every replica reads every partition for streams, so any replica serves any PSVA. A stream
resumes from the cursor given, else from the PSVA's last acknowledgement (on any replica: see
:mod:`stopsms.notifier.progress`), else from the beginning of the list. A PSVA is sent only the
changes of its own senders and global opt-outs; when it is sent nothing for a while, a
heartbeat carries the cursor forward so it can acknowledge past changes that were not its own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import grpc
from aiokafka.errors import KafkaError

from stopsms.adapters.identity import Authenticator
from stopsms.adapters.proof_store import PropagationIndex, StoreUnavailable
from stopsms.adapters.settings import NotifierSettings
from stopsms.domain.cursor import (
    InvalidCursor,
    decode_cursor,
    encode_backfill_cursor,
    encode_cursor,
    parse_cursor,
)
from stopsms.domain.ids import CITIZEN_WEB_PARTY_ID, LINK_PARTY_ID, event_id
from stopsms.domain.parties import InvalidSender, Party, check_sender_id
from stopsms.domain.privacy import Pseudonymiser
from stopsms.domain.proof import with_progress
from stopsms.domain.topics import Topics
from stopsms.notifier.backfill import Backfills
from stopsms.notifier.cases import CaseFeed
from stopsms.notifier.changes import to_change
from stopsms.notifier.feed import LiveFeed, advance
from stopsms.notifier.lateness import with_lateness
from stopsms.notifier.progress import Acknowledgements
from stopsms.v1 import events_pb2, notifier_pb2, notifier_pb2_grpc

SERVICE_NAME = "stopsms.v1.NotifierService"

log = logging.getLogger(__name__)


def may_read_proof(party: Party, record: events_pb2.PropagationRecord) -> bool:
    """Whether ``party`` may read this proof: its own requests; the regulator any.

    The platform's intake (the only platform identity allowed this call) reads the proofs of
    link clicks and of changes made on the citizen's page (origins ``link`` and
    ``citizen-web``), and no other; the page shows a citizen only the proofs of requests made
    in their own session.
    """
    if party.is_regulator:
        return True
    if party.is_platform:
        return record.origin_party_id in (LINK_PARTY_ID, CITIZEN_WEB_PARTY_ID)
    return record.origin_party_id == party.id


class NotifierServicer(notifier_pb2_grpc.NotifierServiceServicer):
    """Streams changes to PSVAs, records their acknowledgements and serves the proof."""

    def __init__(
        self,
        settings: NotifierSettings,
        *,
        auth: Authenticator,
        acknowledgements: Acknowledgements,
        propagation: PropagationIndex,
        pseudonymiser: Pseudonymiser,
        feed: LiveFeed,
        backfills: Backfills | None = None,
        cases: CaseFeed | None = None,
    ) -> None:
        self._settings = settings
        self._feed = feed
        self._backfills = backfills
        self._cases = cases
        self._auth = auth
        self._acks = acknowledgements
        self._propagation = propagation
        self._pseudonymiser = pseudonymiser
        self._topics = Topics(settings.topic_namespace)

    def _decode(self, cursor: str) -> dict[int, int]:
        return decode_cursor(cursor, self._settings.partitions)

    async def WatchChanges(  # noqa: N802 - gRPC method name
        self, request: notifier_pb2.WatchChangesRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[notifier_pb2.WatchChangesResponse]:
        """Stream every entitled change from the resume point, then live."""
        method = "/stopsms.v1.NotifierService/WatchChanges"
        party = await self._auth.caller(context, method)
        if not party.is_psva:
            await self._auth.deny(
                context, party, method, "WatchChanges is for PSVAs; operators read the topic"
            )
        try:
            asked = {
                self._auth.directory.resolve_sender(check_sender_id(sender, required=True))
                for sender in request.sender_ids
            }
        except InvalidSender as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"sender_ids: {exc}")
        foreign = sorted(asked - party.senders)
        if foreign:
            await self._auth.deny(
                context,
                party,
                method,
                f"senders not of party {party.id}: {', '.join(foreign)[:200]}",
            )

        def entitled(sender_id: str) -> bool:
            # The directory may be reloaded while the stream runs: a sender granted since is
            # streamed from then on, one withdrawn is not.
            live = self._auth.directory.get(party.id)
            return (
                live is not None and sender_id in live.senders and (not asked or sender_id in asked)
            )

        if request.cursor:
            try:
                start = self._decode(request.cursor)
            except InvalidCursor as exc:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"cursor: {exc}")
        self._auth.permitted(
            party,
            method,
            [],
        )
        try:
            if not request.cursor:
                start = await self._acks.durable(party.id)
        except KafkaError as exc:
            await context.abort(
                grpc.StatusCode.UNAVAILABLE, f"the change stream cannot start: {exc}"
            )
        # An idle stream wakes only to send its heartbeat: waking more often sends nothing.
        changes_after = self._feed.follow(start, entitled, idle_s=self._settings.heartbeat_seconds)
        try:
            positions = {p: start.get(p, 0) for p in range(self._settings.partitions)}
            backfilled: list[str] = []
            if self._backfills is not None:
                live = self._auth.directory.get(party.id)
                in_scope = (live.senders if live else set()) & (asked or party.senders)
                for sender, progress, until in await self._backfills.pending(party.id, in_scope):
                    async for change, at in self._backfills.read(sender, progress, until):
                        yield notifier_pb2.WatchChangesResponse(
                            change=self._to_change(change),
                            cursor=encode_backfill_cursor(sender, at),
                        )
                    backfilled.append(sender)
            loop = asyncio.get_running_loop()
            last_sent = loop.time()
            # what the latest cursor sent covers (None: nothing sent yet; a first heartbeat tells
            # the PSVA the stream is up)
            sent: dict[int, int] | None = None
            async for batch in changes_after:
                if context.done():
                    break
                for item in batch.items:
                    positions[item.partition] = item.offset + 1
                    yield notifier_pb2.WatchChangesResponse(
                        change=item.outgoing(self._to_change),
                        cursor=encode_cursor(positions, backfilled),
                    )
                    sent = dict(positions)
                    last_sent = loop.time()
                advance(positions, batch.through)
                if (
                    positions != sent
                    and loop.time() - last_sent >= self._settings.heartbeat_seconds
                ):
                    yield notifier_pb2.WatchChangesResponse(
                        cursor=encode_cursor(positions, backfilled)
                    )
                    sent = dict(positions)
                    last_sent = loop.time()
        finally:
            await changes_after.aclose()

    async def WatchCases(  # noqa: N802 - gRPC method name
        self, request: notifier_pb2.WatchCasesRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[notifier_pb2.WatchCasesResponse]:
        """Stream the cases that concern the calling PSVA: the latest of each, then live."""
        method = "/stopsms.v1.NotifierService/WatchCases"
        party = await self._auth.caller(context, method)
        if not party.is_psva:
            await self._auth.deny(
                context, party, method, "WatchCases is for PSVAs; operators read stopsms.cases.v1"
            )
        if self._cases is None:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "cases are not served here")
            raise AssertionError  # abort raises
        self._auth.permitted(party, method, [])
        cases = self._cases.cases_of(party.id)
        try:
            async for case in cases:
                if context.done():
                    break
                yield notifier_pb2.WatchCasesResponse(case=case)
        finally:
            await cases.aclose()  # type: ignore[attr-defined]

    def _to_change(self, change: events_pb2.SuppressionChanged) -> notifier_pb2.Change:
        return to_change(change, self._pseudonymiser)

    async def Acknowledge(  # noqa: N802 - gRPC method name
        self, request: notifier_pb2.AcknowledgeRequest, context: grpc.aio.ServicerContext
    ) -> notifier_pb2.AcknowledgeResponse:
        """Record that the PSVA applied everything up to the cursor (never moving back)."""
        method = "/stopsms.v1.NotifierService/Acknowledge"
        party = await self._auth.caller(context, method)
        if not party.is_psva:
            await self._auth.deny(context, party, method, "Acknowledge is for PSVAs")
        answer = await self._acknowledge(party, request.cursor, context, method)
        return notifier_pb2.AcknowledgeResponse(cursor=answer)

    async def AcknowledgeStream(  # noqa: N802 - gRPC method name
        self,
        requests: AsyncIterator[notifier_pb2.AcknowledgeStreamRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[notifier_pb2.AcknowledgeStreamResponse]:
        """Acknowledge, for every request of one call, each answered in order once durable."""
        method = "/stopsms.v1.NotifierService/AcknowledgeStream"
        party = await self._auth.caller(context, method)
        if not party.is_psva:
            await self._auth.deny(context, party, method, "AcknowledgeStream is for PSVAs")
        async for request in requests:
            answer = await self._acknowledge(party, request.cursor, context, method)
            yield notifier_pb2.AcknowledgeStreamResponse(cursor=answer)

    async def _acknowledge(
        self,
        party: Party,
        text: str,
        context: grpc.aio.ServicerContext,
        method: str,
    ) -> str:
        """One acknowledgement of ``party``, durable when this returns the durable cursor.

        Otherwise the call ends with the status that says why.
        """
        try:
            cursor = parse_cursor(text, self._settings.partitions)
        except InvalidCursor as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"cursor: {exc}")
        foreign = {cursor.backfill_sender, *cursor.backfilled} - {""} - party.senders
        if foreign:
            await self._auth.deny(context, party, method, "a cursor of another party's senders")
        if cursor.backfill_sender:  # backfill progress: its own group, never a receipt
            if self._backfills is not None:
                try:
                    await self._backfills.advance(party.id, cursor.backfill_sender, cursor.offsets)
                except Exception as exc:  # noqa: BLE001 - Kafka unavailable: the PSVA retries
                    await context.abort(
                        grpc.StatusCode.UNAVAILABLE, f"acknowledgement not stored: {exc!r}"
                    )
            return text
        try:
            durable = await self._acks.acknowledge(party, cursor.offsets)
            if self._backfills is not None:
                for sender in cursor.backfilled:
                    await self._backfills.close(party.id, sender)
        except Exception as exc:  # noqa: BLE001 - Kafka unavailable: the PSVA retries
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"acknowledgement not stored: {exc!r}")
        return encode_cursor(durable)

    async def GetPropagation(  # noqa: N802 - gRPC method name
        self, request: notifier_pb2.GetPropagationRequest, context: grpc.aio.ServicerContext
    ) -> notifier_pb2.GetPropagationResponse:
        """The proof of one request: its own requests for a party, any for the regulator."""
        method = "/stopsms.v1.NotifierService/GetPropagation"
        party = await self._auth.caller(context, method)
        if request.event_id:
            wanted = request.event_id
        elif request.request_id:
            wanted = event_id(party.id, request.request_id)
        else:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "request_id or event_id: one is required"
            )
        if len(wanted) > 128:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "event_id: too long")
        # "Not yours" takes the very path of "absent" (the same wait, the same answer), so
        # neither the answer nor its time tells a stranger that another party's request exists.
        try:
            record = await self._propagation.find(
                wanted, wait_seconds=1.0, visible=lambda found: may_read_proof(party, found)
            )
        except StoreUnavailable:
            await context.abort(
                grpc.StatusCode.UNAVAILABLE, "the proof store is unavailable; retry"
            )
        if record is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "no propagation record for this request")
        self._auth.permitted(party, method, [])
        return notifier_pb2.GetPropagationResponse(
            propagation=with_lateness(
                with_progress(record, self._acks.progress), self._settings.propagation_slo_seconds
            )
        )
