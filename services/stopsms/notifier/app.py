"""The notifier's faust application: receipts and the proof of propagation.

* ``track-changes`` reads ``stopsms.suppressions.v1`` (partitions divided among replicas by the
  consumer group) and, for each change, publishes a PENDING receipt per concerned party.
* :class:`ReceiptPoller` reads, for the same partitions, how far each operator's consumer group
  and each PSVA's acknowledged cursor have committed, and publishes an APPLIED receipt for every
  concerned change they passed. How far it got is itself committed (one group per party), so a
  restart neither loses nor repeats work beyond a harmless, deduplicated repeat.
* ``aggregate-receipts`` folds receipts per request into the table ``propagation`` and publishes
  each progress to ``stopsms.propagation.v1``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import faust
import mode

from stopsms.core.kafka import GroupOffsets, RangeReader, message_headers
from stopsms.core.parties import PartiesDirectory, Party
from stopsms.core.settings import NotifierSettings
from stopsms.core.streams import ConsumerLag, OffsetGuard, StreamApp, faust_app
from stopsms.core.topics import Topics
from stopsms.core.tracing import traced, traceparent_of
from stopsms.notifier.lateness import observe_applied
from stopsms.notifier.propagation import Propagation, fold
from stopsms.v1 import events_pb2

log = logging.getLogger(__name__)

PENDING = events_pb2.DELIVERY_STATUS_PENDING
APPLIED = events_pb2.DELIVERY_STATUS_APPLIED
#: How often a request's intermediate progress is published (the link page shows it).
PROGRESS_EVERY_S = 0.2


def assigned_partitions(app: faust.App, topic: str) -> set[int]:
    """The partitions of ``topic`` this replica holds: the work it does once for everyone."""
    return {tp.partition for tp in app.assignor.assigned_actives() if tp.topic == topic}


def party_group(topics: Topics, party: Party) -> str:
    """The consumer group whose commits are this party's confirmations."""
    return topics.operator_group(party.id) if party.is_operator else topics.psva_group(party.id)


def pending_receipts(
    change: events_pb2.SuppressionChanged, partition: int, offset: int, directory: PartiesDirectory
) -> list[events_pb2.DeliveryReceipt]:
    """The PENDING receipt of a change: one, naming every concerned party.

    One record rather than one per party: a global opt-out concerns every operator and every
    PSVA, and the receipts topic carries enough already.
    """
    concerned = directory.concerned_by(change.sender_id)
    receipt = _receipt(change, partition, offset, events_pb2.DELIVERY_STATUS_PENDING, None)
    receipt.concerned_party_ids.extend(p.id for p in concerned)
    return [receipt]


def _receipt(
    change: events_pb2.SuppressionChanged,
    partition: int,
    offset: int,
    status: int,
    party: Party | None,
) -> events_pb2.DeliveryReceipt:
    receipt = events_pb2.DeliveryReceipt(
        event_id=change.event_id,
        request_id=change.request_id,
        origin_party_id=change.party_id,
        party_id=party.id if party else "",
        party_kind=party.kind if party else 0,
        status=status,
        partition=partition,
        offset=offset,
        sender_id=change.sender_id,
        action=change.action,
    )
    receipt.action_time.CopyFrom(change.action_time)
    return receipt


class RecentChanges:
    """The changes the tracking agent saw lately, per partition, in offset order.

    The receipt poller needs, for each offset a party committed past, which change it was. In
    the steady state the tracking agent has just seen those changes, so they are looked up
    here instead of being read again from Kafka; what is not here (after a restart, or when
    the agent is behind a party) is read from the topic. Entries every party has confirmed are
    dropped, and a partition never holds more than ``capacity`` entries.
    """

    def __init__(self, capacity: int = 100_000) -> None:
        self._capacity = capacity
        self._entries: dict[int, deque[tuple[int, events_pb2.SuppressionChanged | None]]] = {}

    def add(
        self, partition: int, offset: int, change: events_pb2.SuppressionChanged | None
    ) -> None:
        """Record the change at ``offset`` (a redelivery replaces what followed it)."""
        entries = self._entries.setdefault(partition, deque(maxlen=self._capacity))
        while entries and entries[-1][0] >= offset:
            entries.pop()
        entries.append((offset, change))

    def span(self, partition: int) -> tuple[int, int] | None:
        """The offsets covered without a gap: [first, next), or None."""
        entries = self._entries.get(partition)
        if not entries:
            return None
        return entries[0][0], entries[-1][0] + 1

    def between(
        self, partition: int, start: int, end: int
    ) -> list[tuple[int, events_pb2.SuppressionChanged | None]]:
        """Entries with ``start <= offset < end``."""
        return [e for e in self._entries.get(partition, ()) if start <= e[0] < end]

    def prune(self, partition: int, below: int) -> None:
        """Forget entries before ``below`` (confirmed by every party)."""
        entries = self._entries.get(partition)
        while entries and entries[0][0] < below:
            entries.popleft()


def create_notifier_app(
    settings: NotifierSettings,
    directory: PartiesDirectory,
    recent: RecentChanges,
    published: Callable[[str], events_pb2.PropagationRecord | None] | None = None,
) -> StreamApp:
    """Build the notifier's faust app with its two agents.

    ``published`` gives the proof last seen on ``stopsms.propagation.v1`` for an event id. A
    crash can land between remembering a state in the table and publishing it; the receipt is
    then folded again after the restart, changes nothing, and would leave the proof behind the
    table. When a fold changes nothing, the state is published again if the proof differs.
    """
    topics = Topics(settings.topic_namespace)
    app = faust_app(settings, "notifier")
    suppressions = app.topic(topics.suppressions, partitions=settings.partitions)
    receipts = app.topic(topics.receipts, partitions=settings.partitions)
    propagation_topic = app.topic(topics.propagation, partitions=settings.partitions)
    table = app.Table(
        "propagation",
        default=None,
        partitions=settings.partitions,
        key_type=bytes,
        value_type=bytes,
    )
    app.stopsms_receipts = receipts  # type: ignore[attr-defined]

    changes_guard = OffsetGuard(app, settings.kafka, topics.suppressions)
    receipts_guard = OffsetGuard(app, settings.kafka, topics.receipts)
    lag = ConsumerLag(
        settings.kafka,
        app.conf.id,
        [topics.suppressions, topics.receipts],
        stall_exit_seconds=settings.stall_exit_seconds,
    )
    app.stopsms_services = [changes_guard, receipts_guard, lag]

    @app.agent(suppressions, name="track-changes", supervisor_strategy=mode.CrashingSupervisor)
    async def track_changes(stream: Any) -> None:
        """Announce who must apply each change (PENDING receipts)."""
        async for event in stream.events():
            message = event.message
            for skipped in await changes_guard.missed(message.partition, message.offset):
                await announce(skipped.partition, skipped.offset, skipped.value, skipped.headers)
            await announce(message.partition, message.offset, event.value, message.headers)

    async def announce(partition: int, offset: int, value: bytes | None, headers: Any) -> None:
        if value is None:
            recent.add(partition, offset, None)
            return
        change = events_pb2.SuppressionChanged.FromString(value)
        recent.add(partition, offset, change)
        with traced(traceparent_of(headers), change.request_id):
            for receipt in pending_receipts(change, partition, offset, directory):
                log.info(
                    "event %s concerns %d parties",
                    change.event_id,
                    len(receipt.concerned_party_ids),
                )
                await receipts.send(
                    key=change.event_id.encode(),
                    value=receipt.SerializeToString(),
                    headers=message_headers("stopsms.v1.DeliveryReceipt"),
                )

    @app.agent(receipts, name="aggregate-receipts", supervisor_strategy=mode.CrashingSupervisor)
    async def aggregate_receipts(stream: Any) -> None:
        """Fold receipts per request and publish each progress of the proof."""
        async for event in stream.events():
            message = event.message
            for skipped in await receipts_guard.missed(message.partition, message.offset):
                aggregate(skipped.value, skipped.headers)
            aggregate(event.value, message.headers)

    def aggregate(value: bytes | None, headers: Any) -> None:
        if value is None:
            return
        receipt = events_pb2.DeliveryReceipt.FromString(value)
        with traced(traceparent_of(headers), receipt.request_id):
            fold_receipt(receipt)

    def fold_receipt(receipt: events_pb2.DeliveryReceipt) -> None:
        key = receipt.event_id.encode()
        stored = table.get(key)
        previous = Propagation.from_json(stored) if stored else None
        applied_before = previous.applied() if previous else set()
        state, changed = fold(previous, receipt)
        if not changed:
            if previous is not None and published is not None and key not in progress:
                shown = published(receipt.event_id)
                if shown is None or shown != previous.to_record():
                    publish(key, previous)
            return
        for party_id in state.concerned or []:
            state.parties.setdefault(party_id, [0, PENDING, 0])
        for party_id, entry in state.parties.items():
            if not entry[0]:  # the receipts of a polling round name parties, not kinds
                entry[0] = kind_of(party_id)
            if entry[1] == APPLIED and party_id not in applied_before:
                observe_applied(entry[0], state.action_time_ms, entry[2])
        table[key] = state.to_json()
        if state.done:
            log.info(
                "event %s applied by all %d parties %.3f s after the action",
                receipt.event_id,
                len(state.concerned or ()),
                (state.done_time_ms - state.action_time_ms) / 1000,
            )
        if state.done or receipt.status == events_pb2.DELIVERY_STATUS_PENDING:
            # The start and the end of a proof are published at once; progress in between
            # is published at most every PROGRESS_EVERY_S per request (the latest wins).
            progress.pop(key, None)
            publish(key, state)
        else:
            progress[key] = state
            if not flushing:
                flushing.append(asyncio.get_running_loop().call_later(PROGRESS_EVERY_S, flush))

    def kind_of(party_id: str) -> int:
        party = directory.get(party_id)
        return party.kind if party else 0

    progress: dict[bytes, Propagation] = {}
    flushing: list[asyncio.TimerHandle] = []

    def publish(key: bytes, state: Propagation) -> None:
        """Queue a proof for the producer, in call order (never awaited in between).

        Progress is flushed from a timer while the agent publishes starts and ends: were a
        publish to yield, a flush could send an older state of a request after its done proof.
        """
        propagation_topic.send_soon(
            key=key,
            value=state.to_record().SerializeToString(),
            headers=message_headers("stopsms.v1.PropagationRecord"),
        )

    def flush() -> None:
        flushing.clear()
        for key in list(progress):
            publish(key, progress.pop(key))

    return app


class ReceiptPoller(mode.Service):
    """Turns operators' committed offsets and PSVAs' acknowledgements into APPLIED receipts."""

    def __init__(
        self,
        app: faust.App,
        settings: NotifierSettings,
        directory: PartiesDirectory,
        offsets: GroupOffsets,
        recent: RecentChanges,
        **kwargs: object,
    ) -> None:
        self.app = app
        self.settings = settings
        self.directory = directory
        self.offsets = offsets
        self.recent = recent
        self.topics = Topics(settings.topic_namespace)
        self.ranges = RangeReader(settings.kafka, self.topics.suppressions)
        self.watermarks: dict[str, dict[int, int]] = {}
        super().__init__(**kwargs)  # type: ignore[arg-type]

    @property
    def parties(self) -> list[Party]:
        """The operators and PSVAs of the directory as it is now (it may be reloaded)."""
        return [p for p in self.directory if p.is_operator or p.is_psva]

    async def on_start(self) -> None:
        """Connect the range reader."""
        await self.ranges.start()

    async def on_stop(self) -> None:
        """Disconnect."""
        await self.ranges.stop()

    @mode.Service.task
    async def _poll_forever(self) -> None:
        while not self.should_stop:
            await self.sleep(self.settings.receipt_poll_seconds)
            try:
                await self.poll_once()
            except Exception:  # noqa: BLE001 - keep polling; the next round retries
                log.exception("receipt polling failed; retrying")

    def _my_partitions(self) -> set[int]:
        return assigned_partitions(self.app, self.topics.suppressions)

    async def _changes(
        self, partition: int, start: int, end: int
    ) -> list[tuple[int, events_pb2.SuppressionChanged | None]]:
        """The changes at offsets [start, end): from memory, the rest from the topic."""
        span = self.recent.span(partition)
        if span is None:
            gaps = [(start, end)]
        else:
            first, after = span
            gaps = [(start, min(end, first)), (max(start, after), end)]
        found = self.recent.between(partition, start, end)
        for gap_start, gap_end in gaps:
            if gap_start < gap_end:
                for record in await self.ranges.read(partition, gap_start, gap_end):
                    value = record.value
                    found.append(
                        (
                            record.offset,
                            events_pb2.SuppressionChanged.FromString(value) if value else None,
                        )
                    )
        return sorted(found, key=lambda item: item[0])

    async def poll_once(self) -> int:
        """One round: publish APPLIED receipts for what parties confirmed since the last round."""
        mine = self._my_partitions()
        if not mine:
            return 0
        topic = self.topics.suppressions
        parties = self.parties
        committed = await asyncio.gather(
            *(self.offsets.committed(party_group(self.topics, p), topic) for p in parties)
        )
        for party in parties:
            if party.id not in self.watermarks:
                self.watermarks[party.id] = await self.offsets.committed(
                    self.topics.receipted_group(party.id), topic
                )
        advancing: dict[int, list[tuple[Party, int, int]]] = {}
        for party, confirmed_by_partition in zip(parties, committed, strict=True):
            marks = self.watermarks[party.id]
            for partition in mine:
                done = marks.get(partition, 0)
                confirmed = confirmed_by_partition.get(partition, 0)
                if confirmed > done:
                    advancing.setdefault(partition, []).append((party, done, confirmed))
        receipts_topic = self.app.stopsms_receipts  # type: ignore[attr-defined]
        now_ms = int(time.time() * 1000)
        deliveries = []
        for partition, items in advancing.items():
            start = min(done for _, done, _ in items)
            end = max(confirmed for _, _, confirmed in items)
            for offset, change in await self._changes(partition, start, end):
                if change is None:
                    continue
                confirmed_by = [
                    party.id
                    for party, done, confirmed in items
                    if done <= offset < confirmed and party.is_concerned_by(change.sender_id)
                ]
                if not confirmed_by:
                    continue
                # One receipt for every party that passed this change in this round.
                receipt = _receipt(
                    change, partition, offset, events_pb2.DELIVERY_STATUS_APPLIED, None
                )
                receipt.applied_party_ids.extend(confirmed_by)
                receipt.applied_time.FromMilliseconds(now_ms)
                deliveries.append(
                    await receipts_topic.send(
                        key=change.event_id.encode(),
                        value=receipt.SerializeToString(),
                        headers=message_headers("stopsms.v1.DeliveryReceipt"),
                    )
                )
        await asyncio.gather(*deliveries)  # acknowledged before the progress is recorded
        progress: dict[str, dict[int, int]] = {}
        for partition, items in advancing.items():
            for party, _, confirmed in items:
                progress.setdefault(party.id, {})[partition] = confirmed
        await asyncio.gather(
            *(
                self.offsets.commit(self.topics.receipted_group(party_id), topic, marks)
                for party_id, marks in progress.items()
            )
        )
        for party_id, marks in progress.items():
            self.watermarks[party_id].update(marks)
        for partition in mine:
            self.recent.prune(
                partition,
                min((self.watermarks[p.id].get(partition, 0) for p in parties), default=0),
            )
        return len(deliveries)
