"""``stopsms keys reseal``: follow the re-sealing of the list and announce the retired key.

The registry re-publishes every decision in force sealed under a previous data key under the
current one (registry/resealing.py: only its decision stage can do so without racing a new
decision). This command reads the list as its readers do — the latest record of every key, one
partition at a time so that its memory is that of one partition — and counts the decisions in
force by the key that seals them. Once none is sealed under a previous key, it publishes the
key-change record (``#key-change|<retired key id>``, a ``KeyChange``) that tells operators the
key is retired and from when they may drop it.

    stopsms keys reseal               the counts; the key change if nothing is left to re-seal
    stopsms keys reseal --wait 3600   the same, waiting for the registry's passes meanwhile
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from stopsms.adapters.bus import Bus
from stopsms.adapters.kafka import KafkaPublisher, message_headers
from stopsms.domain.privacy import Pseudonymiser
from stopsms.domain.topics import (
    DAY_MS,
    KEY_CHANGE_SUBJECT,
    SUPERSEDED_GONE_MS,
    Topics,
    is_key_change,
    key_change_key,
    partition_for_key,
)
from stopsms.v1 import events_pb2

#: How often ``--wait`` reads the list again.
RECOUNT_EVERY_S = 5.0
#: Kafka's cleaner runs some time after a segment becomes due; this margin covers it.
CLEANER_MARGIN_MS = DAY_MS


@dataclass
class SealCount:
    """The decisions in force by the data key that seals them, and the key changes published."""

    by_key: Counter[str] = field(default_factory=Counter)
    #: The same decisions by the pseudonym key of their subject (``pk1`` of ``pk1:…``).
    by_pseudonym_key: Counter[str] = field(default_factory=Counter)
    #: Decisions in force that moved to their subject under a new pseudonym key.
    moved: int = 0
    #: Decisions in force that are re-sealed records (``resealed_time`` set).
    resealed: int = 0
    #: Retired key ids whose key-change record is on the list.
    announced: set[str] = field(default_factory=set)
    seconds: float = 0.0

    def left(self, current: str) -> int:
        """Decisions in force sealed under any key but ``current``."""
        return sum(n for key_id, n in self.by_key.items() if key_id != current)

    def describe(self) -> str:
        """One line for a person: ``dk2 1,200 · dk1 30``."""
        keys = " · ".join(f"{k} {n:,}" for k, n in self.by_key.most_common()) or "empty"
        return f"decisions in force by data key: {keys} ({self.resealed:,} re-sealed)"


async def count_seals(
    bus: Bus, topics: Topics, partitions: int, client_id: str = "stopsms-keys-reseal"
) -> SealCount:
    """Read the list partition by partition; count its latest records by key."""
    started = time.monotonic()
    count = SealCount()
    parse = events_pb2.SuppressionChanged.FromString
    for partition in range(partitions):
        latest: dict[bytes, events_pb2.SuppressionChanged | None] = {}
        reader = bus.reader(
            topics.suppressions,
            only_partitions=[partition],
            client_id=client_id,
            max_records=5000,
        )
        await reader.start()
        try:
            async for records in reader.read_to_end():
                for record in records:
                    value = record.value
                    latest[record.key or b""] = None if value is None else parse(value)
        finally:
            await reader.stop()
        for change in latest.values():
            if change is None:
                continue  # erased
            if is_key_change(change.subject):
                count.announced.add(change.key_change.retired_key_id)
                continue
            count.by_key[change.sealed_msisdn.key_id] += 1
            count.by_pseudonym_key[change.subject.partition(":")[0]] += 1
            count.resealed += change.HasField("resealed_time")
            count.moved += bool(change.previous_subject)
    count.seconds = time.monotonic() - started
    return count


def key_change_record(
    pseudonymiser: Pseudonymiser, retired_key_id: str, resealed: int, now_ms: int
) -> events_pb2.SuppressionChanged:
    """The record that tells the list's readers a data key is retired (docs/operators.md).

    It carries a seal of the empty string under the current key, so that a reader that does
    not know the record reads it as an entry for no number instead of failing on it.
    """
    current = pseudonymiser.data_key.key_id
    record = events_pb2.SuppressionChanged(
        event_id=f"key-change:{retired_key_id}:{current}",
        subject=KEY_CHANGE_SUBJECT,
        sealed_msisdn=pseudonymiser.seal(""),
        key_change=events_pb2.KeyChange(
            retired_key_id=retired_key_id, current_key_id=current, resealed=resealed
        ),
    )
    record.decided_time.FromMilliseconds(now_ms)
    record.key_change.resealed_time.FromMilliseconds(now_ms)
    record.key_change.retire_after.FromMilliseconds(now_ms + SUPERSEDED_GONE_MS + CLEANER_MARGIN_MS)
    return record


async def announce(
    publisher: KafkaPublisher,
    topics: Topics,
    partitions: int,
    record: events_pb2.SuppressionChanged,
) -> None:
    """Publish the key-change record on the list (one record, on its key's partition)."""
    key = key_change_key(record.key_change.retired_key_id).encode()
    await publisher.publish(
        topics.suppressions,
        key,
        record.SerializeToString(),
        partition=partition_for_key(key, partitions),
        headers=message_headers("stopsms.v1.SuppressionChanged"),
    )


@dataclass
class ResealOutcome:
    """What ``stopsms keys reseal`` found and did."""

    count: SealCount
    #: Key ids announced as retired by this run.
    announced: list[str]
    #: True when no decision in force is sealed under a key other than the current one.
    complete: bool


async def follow_resealing(
    bus: Bus,
    publisher: KafkaPublisher,
    topics: Topics,
    partitions: int,
    pseudonymiser: Pseudonymiser,
    wait_s: float,
    show: Callable[[SealCount], None] = lambda count: None,
) -> ResealOutcome:
    """Count until nothing is left under a previous key (or ``wait_s`` passed); announce then."""
    current = pseudonymiser.data_key.key_id
    deadline = time.monotonic() + wait_s
    while True:
        count = await count_seals(bus, topics, partitions)
        show(count)
        if count.left(current) == 0 or time.monotonic() >= deadline:
            break
        await asyncio.sleep(min(RECOUNT_EVERY_S, max(deadline - time.monotonic(), 0)))
    announced: list[str] = []
    if count.left(current) == 0:
        now_ms = round(time.time() * 1000)
        for key in pseudonymiser.data_keys[1:]:
            if key.key_id in count.announced:
                continue
            record = key_change_record(pseudonymiser, key.key_id, count.resealed, now_ms)
            await announce(publisher, topics, partitions, record)
            announced.append(key.key_id)
    return ResealOutcome(count, announced, complete=count.left(current) == 0)
