"""The registry's decision stage: requests in, one ``SuppressionChanged`` each out.

:class:`Decisions` consumes ``stopsms.requests.v1`` in order per subject (a subject's requests
share a partition) and decides each request with :func:`stopsms.domain.rules.decide`
against the subject's state. The state lives in a :class:`~stopsms.adapters.streams.StateStore`
whose changelog is co-partitioned with the requests, so one subject's state lives beside its
requests. The records and the state changes of a batch are published, and acknowledged by
Kafka, before its input offsets are committed (:class:`~stopsms.adapters.streams.GroupProcessor`):
a crash decides the batch again, and a record is then identical (same event id, version and
content), which every consumer treats as one; a request whose state was already written
publishes nothing again.

An unreadable request goes to ``stopsms.dlq.v1`` with the reason, with the batch.
"""

from __future__ import annotations

import logging

from opentelemetry.trace import SpanKind

from stopsms.adapters.bus import KafkaBus
from stopsms.adapters.kafka import Record, message_headers
from stopsms.adapters.settings import RegistrySettings
from stopsms.adapters.streams import GroupProcessor, Output, ProcessedBatch, StateStore
from stopsms.adapters.tracing import traced, traceparent_of
from stopsms.domain.rules import SubjectDecisions, decide
from stopsms.domain.topics import Topics, partition_for_key, suppression_key
from stopsms.registry.erasure import Eraser, erased_floor
from stopsms.registry.resealing import Resealer
from stopsms.v1 import events_pb2

log = logging.getLogger(__name__)


class Decisions:
    """The decision handler: a batch of requests, decided in order, as records to publish."""

    def __init__(self, topics: Topics, partitions: int, state: StateStore) -> None:
        self.topics = topics
        self.partitions = partitions
        self.state = state

    async def assigned(self, partitions: set[int]) -> None:
        """Nothing to do: the state of these partitions was restored before."""

    def revoked(self, partitions: set[int]) -> None:
        """Nothing to do: the store forgets them."""

    async def process(self, records: list[Record]) -> ProcessedBatch:
        """Decide each request after the earlier ones of its subject in the batch."""
        outputs: list[Output] = []
        states: dict[tuple[int, bytes], SubjectDecisions] = {}
        for record in records:
            try:
                request = events_pb2.PreferenceRequested.FromString(record.value or b"")
                if not request.subject or not request.event_id:
                    raise ValueError("a request needs a subject and an event id")
            except Exception as exc:  # noqa: BLE001 - anything unreadable goes to the DLQ
                outputs.append(self._dead_letter(record, f"unreadable request: {exc}"))
                continue
            subject = request.subject.encode()
            place = (record.partition, subject)
            state = states.get(place) or self._stored(record.partition, subject)
            change, new_state = decide(state, request, record.timestamp_ms)
            if change is None:
                continue  # already decided and published: a duplicate request
            states[place] = new_state
            key = suppression_key(change.subject, change.sender_id).encode()
            with traced(
                traceparent_of(record.headers),
                request.request_id,
                name="registry decide",
                kind=SpanKind.CONSUMER,
                event_id=change.event_id,
            ) as trace:
                log.info(
                    "decided event %s: %s for %s, version %d",
                    change.event_id,
                    events_pb2.State.Name(change.state),
                    change.sender_id or "all senders",
                    change.version,
                )
                outputs.append(
                    Output(
                        self.topics.suppressions,
                        key,
                        change.SerializeToString(),
                        partition_for_key(key, self.partitions),
                        message_headers("stopsms.v1.SuppressionChanged", trace),
                    )
                )
        for (partition, subject), new_state in states.items():
            outputs.append(self.state.put(partition, subject, new_state.to_json().encode()))
        return ProcessedBatch(outputs)

    def _stored(self, partition: int, subject: bytes) -> SubjectDecisions:
        """A subject's state; a new one starts above every version erased in its partition."""
        raw = self.state.get(partition, subject)
        if raw is None:
            return SubjectDecisions(version=erased_floor(self.state, partition))
        return SubjectDecisions.from_json(raw)

    def _dead_letter(self, record: Record, reason: str) -> Output:
        letter = events_pb2.DeadLetter(
            source_topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key or b"",
            value=record.value or b"",
            reason=reason,
        )
        letter.failed_time.GetCurrentTime()
        log.error(
            "dead letter from %s[%d]@%d: %s", record.topic, record.partition, record.offset, reason
        )
        return Output(
            self.topics.dlq,
            record.key or b"",
            letter.SerializeToString(),
            headers=message_headers("stopsms.v1.DeadLetter"),
        )


def create_decision_stage(settings: RegistrySettings) -> GroupProcessor:
    """The registry's decision stage: its group, its state, its handler, erasure and re-sealing."""
    topics = Topics(settings.topic_namespace)
    state = StateStore(settings.kafka, topics.changelog("registry", "decisions"))
    eraser = Eraser(
        topics,
        settings.partitions,
        state,
        legal_record_days=settings.retention_requests_days,
        pass_every_s=settings.erasure_pass_seconds,
    )
    resealer = Resealer(
        KafkaBus(settings.kafka),
        topics,
        state,
        settings.pseudonymiser(),
        pass_every_s=settings.reseal_pass_seconds,
    )

    def housekeeping() -> ProcessedBatch | None:
        """Erasure first (it is due by the clock), then re-sealing, one at a time."""
        return eraser.round() or resealer.round()

    return GroupProcessor(
        settings.kafka,
        topics.processor_group("registry"),
        topics.requests,
        Decisions(topics, settings.partitions, state),
        stores=[state],
        session_timeout_s=settings.kafka_session_timeout_seconds,
        housekeeping=housekeeping,
    )
