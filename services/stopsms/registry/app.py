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
from stopsms.registry.rekeying import Rekeyer, SubjectRouter, apply_migration
from stopsms.registry.resealing import Resealer
from stopsms.v1 import events_pb2

log = logging.getLogger(__name__)


class Decisions:
    """The decision handler: a batch of requests, decided in order, as records to publish."""

    def __init__(
        self,
        topics: Topics,
        partitions: int,
        state: StateStore,
        router: SubjectRouter | None = None,
    ) -> None:
        """``router``: where requests are decided while a pseudonym re-keying runs."""
        self.topics = topics
        self.partitions = partitions
        self.state = state
        self.router = router

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
            state = states.get(place)
            known = state is not None
            if state is None:
                raw = self.state.get(record.partition, subject)
                known = raw is not None
                state = self._stored(record.partition, raw)
            if request.HasField("migration"):  # a subject re-keyed: never a citizen's request
                moved, migrated = apply_migration(state, known, request)
                if migrated is not None:
                    states[place] = migrated
                    outputs += self._moved(moved, record.partition)
                continue
            if self.router is not None and self.router.enabled:
                destination = self.router.destination(request, state if known else None)
                if destination is not None:
                    outputs.append(self.router.forward(request, destination))
                    continue
            change, new_state = decide(state, request, record.timestamp_ms)
            if change is None:
                continue  # already decided and published: a duplicate request
            states[place] = new_state
            outputs.append(self._published(change, record))
        for (partition, subject), new_state in states.items():
            outputs.append(self.state.put(partition, subject, new_state.to_json().encode()))
        return ProcessedBatch(outputs)

    def _published(self, change: events_pb2.SuppressionChanged, record: Record) -> Output:
        """A decision as the record to publish on the list, in its subject's partition."""
        key = suppression_key(change.subject, change.sender_id).encode()
        with traced(
            traceparent_of(record.headers),
            change.request_id,
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
            return Output(
                self.topics.suppressions,
                key,
                change.SerializeToString(),
                partition_for_key(key, self.partitions),
                message_headers("stopsms.v1.SuppressionChanged", trace),
            )

    def _moved(self, changes: list[events_pb2.SuppressionChanged], partition: int) -> list[Output]:
        """A migrated subject's decisions, published again under it.

        In the partition its migration came in (a subject's requests and decisions share one),
        under one trace-less header: a re-keying continues no citizen's request.
        """
        headers = message_headers("stopsms.v1.SuppressionChanged")
        log.debug("moved %d decisions to a subject of partition %d", len(changes), partition)
        return [
            Output(
                self.topics.suppressions,
                suppression_key(change.subject, change.sender_id).encode(),
                change.SerializeToString(),
                partition,
                headers,
            )
            for change in changes
        ]

    def _stored(self, partition: int, raw: bytes | None) -> SubjectDecisions:
        """A subject's state from its stored value; a new one starts above the erased floor."""
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
    pseudonymiser = settings.pseudonymiser()
    bus = KafkaBus(settings.kafka)
    resealer = Resealer(
        bus, topics, state, pseudonymiser, pass_every_s=settings.reseal_pass_seconds
    )
    rekeyer = Rekeyer(
        bus,
        topics,
        state,
        pseudonymiser,
        settings.partitions,
        pass_every_s=settings.rekey_pass_seconds,
        grace_s=settings.rekey_grace_seconds,
    )

    def housekeeping() -> ProcessedBatch | None:
        """Erasure first (it is due by the clock), then re-keying, then re-sealing."""
        return eraser.round() or rekeyer.round() or resealer.round()

    async def stop_housekeeping() -> None:
        """Close a re-keying's or a re-sealing's reader that is still reading."""
        await rekeyer.stop()
        await resealer.stop()

    return GroupProcessor(
        settings.kafka,
        topics.processor_group("registry"),
        topics.requests,
        Decisions(
            topics,
            settings.partitions,
            state,
            SubjectRouter(pseudonymiser, topics, settings.partitions),
        ),
        stores=[state],
        session_timeout_s=settings.kafka_session_timeout_seconds,
        housekeeping=housekeeping,
        stop_housekeeping=stop_housekeeping,
    )
