"""An operator's view of the suppression list: the reference consumer, with kafka-python.

Operators read ``stopsms.suppressions.v1`` with their own group ``stopsms.operator.<id>``, from
offset 0 (the compacted topic is the full current list), unseal each number with the data key
they were given at onboarding, apply the change to their own store, and only then commit: the
committed offset is their receipt, from which the notifier proves propagation.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from kafka import KafkaConsumer, TopicPartition  # type: ignore[import-untyped]

from stopsms.adapters.kafka_access import KafkaAccess
from stopsms.domain.privacy import Pseudonymiser
from stopsms.domain.topics import Topics, is_key_change
from stopsms.v1 import events_pb2

#: How often the consumer refreshes the topic's metadata (see the consumer below).
METADATA_REFRESH_MS = 2000

Apply = Callable[[str, events_pb2.SuppressionChanged], None]


def _print_change(msisdn: str, change: events_pb2.SuppressionChanged) -> None:
    state = events_pb2.State.Name(change.state)
    print(
        f"{change.event_id} {msisdn} sender={change.sender_id or '*'} {state} v{change.version}",
        flush=True,
    )


def assigned_consumer(
    bootstrap: KafkaAccess | str, topic: str, group: str, stop: threading.Event | None
) -> KafkaConsumer | None:
    """A consumer of every partition of ``topic``, committing to ``group``; None if stopped first.

    The partitions are assigned outright rather than through a group join: a join made before
    the topic's metadata reached the client is given no partition (seen on CI: a stand-in that
    joined that way delivered and applied nothing). The commits still go to ``group``.
    """
    consumer = KafkaConsumer(
        **KafkaAccess.of(bootstrap).client_options(),
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        metadata_max_age_ms=METADATA_REFRESH_MS,
    )
    partitions = consumer.partitions_for_topic(topic)
    while not partitions:
        if stop is not None and stop.wait(0.2):
            consumer.close()
            return None
        partitions = consumer.partitions_for_topic(topic)
    consumer.assign([TopicPartition(topic, p) for p in sorted(partitions)])
    return consumer


def follow(
    bootstrap: KafkaAccess | str,
    operator_id: str,
    pseudonymiser: Pseudonymiser,
    namespace: str = "",
    apply: Apply = _print_change,
    stop: threading.Event | None = None,
) -> int:
    """Consume, unseal, apply, then commit; return how many changes were applied."""
    topics = Topics(namespace)
    consumer = assigned_consumer(
        bootstrap, topics.suppressions, topics.operator_group(operator_id), stop
    )
    if consumer is None:
        return 0
    applied = 0
    try:
        while stop is None or not stop.is_set():
            batch = consumer.poll(timeout_ms=500)
            for records in batch.values():
                for record in records:
                    if record.value is None:
                        continue
                    change = events_pb2.SuppressionChanged.FromString(record.value)
                    if is_key_change(change.subject):
                        continue  # no number: it says a data key was retired
                    apply(pseudonymiser.unseal(change.sealed_msisdn), change)
                    applied += 1
            if batch:
                consumer.commit()
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
    return applied
