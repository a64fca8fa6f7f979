"""The registry's faust application: the decision agent and its changelog-backed table.

The agent consumes ``stopsms.requests.v1`` in order per subject, decides each request with
:func:`stopsms.registry.rules.decide`, publishes exactly one ``SuppressionChanged`` to
``stopsms.suppressions.v1`` and waits for Kafka's acknowledgement *before* remembering the
decision in its table. After a crash a request may therefore be decided again, but the record
is then identical (same event id, version and content), which every consumer treats as one.

Any unexpected failure crashes the whole worker (``CrashingSupervisor``) instead of letting
faust restart the agent mid-stream: the process restarts from the committed offsets, so no
request is skipped and none is decided without its table entry.

The table is keyed by subject and co-partitioned with the requests (both are placed by the
subject's hash), so one subject's state lives beside its requests.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import Any

import mode
from faust.streams import _current_event

from stopsms.core.kafka import message_headers
from stopsms.core.settings import Settings
from stopsms.core.streams import ConsumerLag, OffsetGuard, SkippedMessage, StreamApp, faust_app
from stopsms.core.topics import Topics, partition_for_key, suppression_key
from stopsms.core.tracing import traced, traceparent_of
from stopsms.registry.rules import SubjectDecisions, decide
from stopsms.v1 import events_pb2

log = logging.getLogger(__name__)

#: Requests decided together at most, and how long the agent waits to fill a batch.
DECISION_BATCH = 500
DECISION_WAIT_S = 0.005
#: How long a batch's records may wait for Kafka's acknowledgement before the worker gives up.
DELIVERY_TIMEOUT_S = 60.0


def create_registry_app(settings: Settings) -> StreamApp:
    """Build the registry's faust app with its decision agent and table."""
    topics = Topics(settings.topic_namespace)
    app = faust_app(settings, "registry")
    requests = app.topic(topics.requests, partitions=settings.partitions)
    suppressions = app.topic(topics.suppressions, partitions=settings.partitions)
    dead_letters = app.topic(topics.dlq, partitions=settings.partitions)
    decisions = app.Table(
        "decisions",
        default=None,
        partitions=settings.partitions,
        key_type=bytes,
        value_type=bytes,
    )

    guard = OffsetGuard(app, settings.kafka, topics.requests)
    lag = ConsumerLag(
        settings.kafka,
        app.conf.id,
        [topics.requests],
        stall_exit_seconds=settings.stall_exit_seconds,
    )
    app.stopsms_services = [guard, lag]

    @app.agent(requests, name="decide-requests", supervisor_strategy=mode.CrashingSupervisor)
    async def decide_requests(stream: Any) -> None:
        """Decide requests and publish their SuppressionChanged before anything else.

        Requests are taken in small batches: each is decided in order (a later request of the
        same subject sees the earlier one's state), every record is sent, and only when Kafka
        has acknowledged all of them are the decisions remembered. Waiting for each record's
        acknowledgement in turn would bound the registry at one broker round trip per request.
        A crash in between decides the batch again from the same state: identical records.
        """
        async for events in stream.take_events(DECISION_BATCH, within=DECISION_WAIT_S):
            batch = DecisionBatch()
            for event in events:
                message = event.message
                for skipped in await guard.missed(message.partition, message.offset):
                    await batch.decide(SkippedMessage(skipped), skipped.value, event)
                await batch.decide(message, event.value, event)
            try:  # acknowledged before they are remembered
                async with asyncio.timeout(DELIVERY_TIMEOUT_S):
                    await asyncio.gather(*batch.deliveries)
            except TimeoutError as exc:
                # A producer that stopped answering: crash, restart from the committed offsets
                # (the batch is decided again, identically) rather than wait for ever.
                raise RuntimeError(
                    f"Kafka did not acknowledge {len(batch.deliveries)} decisions within "
                    f"{DELIVERY_TIMEOUT_S:.0f} s"
                ) from exc
            for subject, new_state in batch.states.items():
                # faust places a table write in its changelog by the event being processed:
                # name the request's own event (same partition as the subject's requests)
                token = _current_event.set(weakref.ref(batch.sources[subject]))
                try:
                    decisions[subject] = new_state.to_json().encode()
                finally:
                    _current_event.reset(token)

    class DecisionBatch:
        """The decisions of one batch: new states, the events they came from, deliveries."""

        def __init__(self) -> None:
            self.states: dict[bytes, SubjectDecisions] = {}
            self.sources: dict[bytes, Any] = {}
            self.deliveries: list[Any] = []

        async def decide(self, message: Any, value: bytes | None, source: Any) -> None:
            """Decide one request (after the earlier ones of the batch) and send its record."""
            try:
                request = events_pb2.PreferenceRequested.FromString(value or b"")
                if not request.subject or not request.event_id:
                    raise ValueError("a request needs a subject and an event id")
            except Exception as exc:  # noqa: BLE001 - anything unreadable goes to the DLQ
                await _dead_letter(dead_letters, message, f"unreadable request: {exc}")
                return
            subject = request.subject.encode()
            state = self.states.get(subject) or SubjectDecisions.from_json(decisions.get(subject))
            record, new_state = decide(state, request, int(round((message.timestamp or 0) * 1000)))
            if record is None:
                return  # already decided and published: a duplicate request
            self.states[subject] = new_state
            self.sources[subject] = source
            key = suppression_key(record.subject, record.sender_id).encode()
            with traced(traceparent_of(message.headers), request.request_id) as trace:
                log.info(
                    "decided event %s: %s for %s, version %d",
                    record.event_id,
                    events_pb2.State.Name(record.state),
                    record.sender_id or "all senders",
                    record.version,
                )
                self.deliveries.append(
                    await suppressions.send(
                        key=key,
                        value=record.SerializeToString(),
                        partition=partition_for_key(key, settings.partitions),
                        headers=message_headers("stopsms.v1.SuppressionChanged", trace),
                    )
                )

    return app


async def _dead_letter(topic: Any, message: Any, reason: str) -> None:
    letter = events_pb2.DeadLetter(
        source_topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        key=message.key or b"",
        value=message.value or b"",
        reason=reason,
    )
    letter.failed_time.GetCurrentTime()
    log.error(
        "dead letter from %s[%d]@%d: %s", message.topic, message.partition, message.offset, reason
    )
    delivery = await topic.send(
        key=message.key or b"",
        value=letter.SerializeToString(),
        headers=message_headers("stopsms.v1.DeadLetter"),
    )
    await delivery
