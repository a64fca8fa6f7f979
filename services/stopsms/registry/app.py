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

import logging
from typing import Any

import faust
import mode

from stopsms.core.kafka import message_headers
from stopsms.core.settings import Settings
from stopsms.core.streams import faust_app
from stopsms.core.topics import Topics, partition_for_key, suppression_key
from stopsms.registry.rules import SubjectDecisions, decide
from stopsms.v1 import events_pb2

log = logging.getLogger(__name__)


def create_registry_app(settings: Settings) -> faust.App:
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

    @app.agent(requests, name="decide-requests", supervisor_strategy=mode.CrashingSupervisor)
    async def decide_requests(stream: Any) -> None:
        """Decide each request and publish its SuppressionChanged before anything else."""
        async for event in stream.events():
            message = event.message
            try:
                request = events_pb2.PreferenceRequested.FromString(event.value)
                if not request.subject or not request.event_id:
                    raise ValueError("a request needs a subject and an event id")
            except Exception as exc:  # noqa: BLE001 - anything unreadable goes to the DLQ
                await _dead_letter(dead_letters, message, f"unreadable request: {exc}")
                continue
            state = SubjectDecisions.from_json(decisions.get(request.subject.encode()))
            record, new_state = decide(state, request, int(round((message.timestamp or 0) * 1000)))
            if record is None:
                continue  # already decided and published: a duplicate request
            key = suppression_key(record.subject, record.sender_id).encode()
            delivery = await suppressions.send(
                key=key,
                value=record.SerializeToString(),
                partition=partition_for_key(key, settings.partitions),
                headers=message_headers("stopsms.v1.SuppressionChanged", _trace(message)),
            )
            await delivery  # acknowledged by Kafka before the decision is remembered
            decisions[request.subject.encode()] = new_state.to_json().encode()

    return app


def _trace(message: Any) -> str | None:
    for name, value in message.headers or ():
        if name == "traceparent":
            return value.decode() if isinstance(value, bytes) else str(value)
    return None


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
