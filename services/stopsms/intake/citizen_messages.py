"""Messages to citizens, published on ``stopsms.outbound.v1`` for their operator to deliver.

A confirmation follows every request a reply made (what was stopped or allowed again, at every
operator and provider, and its reference); a HELP message follows HELP, or a reply to the
platform's own code that asked for nothing it understands; a complaint is acknowledged with
its reference. Each message has a deterministic id
(a retry publishes the same one) and is published before the caller is answered, so a reply
that was acknowledged always has its confirmation on the topic.
"""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from stopsms.adapters.kafka import Publisher, message_headers
from stopsms.domain import messages
from stopsms.domain.ids import message_id
from stopsms.domain.privacy import Pseudonymiser
from stopsms.domain.topics import Topics, partition_for_key
from stopsms.intake.submission import Subject
from stopsms.v1 import events_pb2

#: A confirmation or help not delivered within a day is not worth delivering.
MESSAGE_TTL_SECONDS = 24 * 3600


class CitizenMessages:
    """Builds and publishes the platform's messages to citizens."""

    def __init__(
        self,
        publisher: Publisher,
        pseudonymiser: Pseudonymiser,
        topics: Topics,
        partitions: int,
    ) -> None:
        self._publisher = publisher
        self._pseudonymiser = pseudonymiser
        self._topics = topics
        self._partitions = partitions

    async def confirm(
        self, request: events_pb2.PreferenceRequested, language: str, operator_id: str
    ) -> events_pb2.OutboundMessage:
        """Confirm an accepted request to the citizen who made it."""
        message = self._message(
            request.party_id,
            request.request_id,
            events_pb2.OUTBOUND_PURPOSE_CONFIRMATION,
            Subject(request.subject, request.sealed_msisdn),
            language,
            operator_id,
            ttl_seconds=MESSAGE_TTL_SECONDS,
        )
        message.text = messages.confirmation(
            language, request.action, request.sender_id, request.event_id
        )
        message.reference_event_id = request.event_id
        await self._publish(message)
        return message

    async def help(
        self, party_id: str, request_id: str, subject: Subject, language: str, operator_id: str
    ) -> events_pb2.OutboundMessage:
        """Tell a citizen the keywords."""
        message = self._message(
            party_id,
            request_id,
            events_pb2.OUTBOUND_PURPOSE_HELP,
            subject,
            language,
            operator_id,
            ttl_seconds=MESSAGE_TTL_SECONDS,
        )
        message.text = messages.help_text(language)
        await self._publish(message)
        return message

    async def complaint_received(
        self, complaint: events_pb2.ComplaintFiled, language: str, operator_id: str
    ) -> events_pb2.OutboundMessage:
        """Acknowledge a complaint with its reference (asking for the sender when unknown)."""
        message = self._message(
            complaint.party_id,
            complaint.request_id,
            events_pb2.OUTBOUND_PURPOSE_COMPLAINT_RECEIVED,
            Subject(complaint.subject, complaint.sealed_msisdn),
            language,
            operator_id,
            ttl_seconds=MESSAGE_TTL_SECONDS,
        )
        message.text = messages.complaint_text(
            language, complaint.reference, ask_sender=complaint.origin_unknown
        )
        message.reference_event_id = complaint.complaint_id
        await self._publish(message)
        return message

    async def code(
        self,
        party_id: str,
        request_id: str,
        subject: Subject,
        language: str,
        code: str,
        ttl_seconds: int,
    ) -> events_pb2.OutboundMessage:
        """Send a one-time code; its text is sealed, never on the topic in clear."""
        message = self._message(
            party_id,
            request_id,
            events_pb2.OUTBOUND_PURPOSE_ONE_TIME_CODE,
            subject,
            language,
            "",
            ttl_seconds=ttl_seconds,
        )
        message.sealed_text.CopyFrom(
            self._pseudonymiser.seal_text(messages.code_text(language, code))
        )
        await self._publish(message)
        return message

    def _message(
        self,
        party_id: str,
        request_id: str,
        purpose: int,
        subject: Subject,
        language: str,
        operator_id: str,
        *,
        ttl_seconds: int,
    ) -> events_pb2.OutboundMessage:
        expires = Timestamp()
        expires.GetCurrentTime()
        expires.seconds += ttl_seconds
        return events_pb2.OutboundMessage(
            message_id=message_id(party_id, request_id, events_pb2.OutboundPurpose.Name(purpose)),
            subject=subject.subject,
            sealed_msisdn=subject.sealed,
            purpose=purpose,  # type: ignore[arg-type]
            language=messages.language_of(language),
            operator_id=operator_id,
            expires_time=expires,
        )

    async def _publish(self, message: events_pb2.OutboundMessage) -> None:
        key = message.subject.encode()
        await self._publisher.publish(
            self._topics.outbound,
            key,
            message.SerializeToString(),
            partition=partition_for_key(key, self._partitions),
            headers=message_headers("stopsms.v1.OutboundMessage"),
        )
