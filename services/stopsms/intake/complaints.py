"""Filing a citizen's complaint: a ``ComplaintFiled`` on ``stopsms.complaints.v1``.

Every channel (an operator forwarding an SMS to the platform's code, later the web page) ends
here, so a complaint is built one way: a deterministic id and reference, the complainant's
number and any originating phone number pseudonymised and sealed like every number, the text
sealed (it may carry names and numbers), the sender resolved through the register, and an
acknowledgement only once Kafka did.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from google.protobuf.timestamp_pb2 import Timestamp

from stopsms.adapters.kafka import Publisher, message_headers
from stopsms.domain.complaints import read_complaint
from stopsms.domain.ids import complaint_id, complaint_reference
from stopsms.domain.numbers import InvalidNumber, normalise_msisdn
from stopsms.domain.parties import InvalidSender, check_sender_id
from stopsms.domain.privacy import Pseudonymiser
from stopsms.domain.topics import Topics, partition_for_key
from stopsms.intake.submission import RequestSubmitter, Subject
from stopsms.v1 import events_pb2

#: An international number as a network shows it: + or 00, then 8 to 15 digits.
_INTERNATIONAL = re.compile(r"^(?:\+|00)(\d{8,15})$")
#: A forwarded SMS is at most 10 concatenated segments of 160 characters.
MAX_TEXT = 1600
#: The citizen's answer to "who sent it?": the reference, then the name or number shown.
FOLLOW_UP = re.compile(r"^\s*SPAM-([0-9A-F]{8})[\s:,.\-]+(\S.{0,63}?)\s*$", re.IGNORECASE)


def pending_complaint_key(subject: str, reference: str) -> str:
    """Where a complaint waiting for its sender is kept (by complainant and reference)."""
    return f"complaint-pending:{subject}:{reference}"


class InvalidOrigin(ValueError):
    """The originating address is neither a sender id nor a phone number."""


@dataclass(frozen=True)
class Origin:
    """Where the complained-of SMS came from: a sender (canonical) or a phone number."""

    sender_id: str = ""
    number: Subject | None = None

    @property
    def unknown(self) -> bool:
        """The operator could not tell (the citizen is asked)."""
        return not self.sender_id and self.number is None


class ComplaintDesk:
    """Builds and publishes complaints."""

    def __init__(
        self,
        publisher: Publisher,
        submitter: RequestSubmitter,
        pseudonymiser: Pseudonymiser,
        topics: Topics,
        partitions: int,
    ) -> None:
        self._publisher = publisher
        self._submitter = submitter
        self._pseudonymiser = pseudonymiser
        self._topics = topics
        self._partitions = partitions

    def origin(self, from_address: str) -> Origin:
        """Read the originating address: a phone number (Moroccan or international) or a sender.

        A phone number is evidence about a person or a SIM box: it is pseudonymised and sealed,
        never kept in clear. A sender id is resolved through the register (an alias names its
        sender).
        """
        address = from_address.strip()
        if not address:
            return Origin()
        compact = re.sub(r"[\s.\-/()]", "", address)
        try:
            return Origin(number=self._submitter.protect(normalise_msisdn(compact)))
        except InvalidNumber:
            pass
        international = _INTERNATIONAL.match(compact)
        if international is not None:
            return Origin(number=self._submitter.protect("+" + international.group(1)))
        try:
            sender = check_sender_id(address, required=True)
        except InvalidSender as exc:
            raise InvalidOrigin(f"neither a phone number nor a sender id: {exc}") from exc
        return Origin(sender_id=self._submitter.resolve_sender(sender))

    def is_undeclared(self, origin: Origin) -> bool:
        """A phone number, or a sender no party declared: the informal sector."""
        if origin.unknown:
            return False
        return origin.number is not None or self._submitter.is_undeclared(origin.sender_id)

    def build(
        self,
        *,
        party_id: str,
        request_id: str,
        channel: int,
        complainant: Subject,
        origin: Origin,
        received_time: Timestamp | None,
        text: str,
    ) -> events_pb2.ComplaintFiled:
        """The complaint's record (nothing published yet)."""
        identifier = complaint_id(party_id, request_id)
        _, forwarded = read_complaint(text)
        complaint = events_pb2.ComplaintFiled(
            complaint_id=identifier,
            reference=complaint_reference(identifier),
            request_id=request_id,
            party_id=party_id,
            channel=channel,  # type: ignore[arg-type]
            subject=complainant.subject,
            sender_id=origin.sender_id,
            origin_unknown=origin.unknown,
        )
        complaint.sealed_msisdn.CopyFrom(complainant.sealed)
        if origin.number is not None:
            complaint.origin_subject = origin.number.subject
            complaint.origin_sealed_msisdn.CopyFrom(origin.number.sealed)
        complaint.filed_time.GetCurrentTime()
        if received_time is not None and (received_time.seconds or received_time.nanos):
            complaint.received_time.CopyFrom(received_time)
        else:
            complaint.received_time.CopyFrom(complaint.filed_time)
        if forwarded:
            complaint.sealed_text.CopyFrom(self._pseudonymiser.seal_text(forwarded))
        return complaint

    def complete(
        self, complaint: events_pb2.ComplaintFiled, origin: Origin
    ) -> events_pb2.ComplaintFiled:
        """The complaint again, whole, now with the originating address the citizen named."""
        completed = events_pb2.ComplaintFiled()
        completed.CopyFrom(complaint)
        completed.origin_unknown = False
        completed.sender_id = origin.sender_id
        if origin.number is not None:
            completed.origin_subject = origin.number.subject
            completed.origin_sealed_msisdn.CopyFrom(origin.number.sealed)
        return completed

    async def file(self, complaint: events_pb2.ComplaintFiled) -> None:
        """Publish a complaint; raises ``PublishFailed`` when Kafka did not acknowledge it.

        Keyed and placed by the complainant's subject, like their requests, so one person's
        complaints stay in order beside their decisions.
        """
        key = complaint.subject.encode()
        await self._publisher.publish(
            self._topics.complaints,
            key,
            complaint.SerializeToString(),
            partition=partition_for_key(key, self._partitions),
            headers=message_headers("stopsms.v1.ComplaintFiled"),
        )
