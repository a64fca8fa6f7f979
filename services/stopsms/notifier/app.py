"""The notifier's faust application: the proof of propagation, from the parties' progress.

* ``track-changes`` reads ``stopsms.suppressions.v1`` (partitions divided among replicas by the
  consumer group). For each change it publishes the start of its proof — a
  ``PropagationRecord`` naming every concerned party PENDING, and where the change sits — and
  hands it to the :class:`Prover`. Its offsets are committed only behind acknowledged starts, so
  a change past the committed offset always has its start record on the propagation topic.
* The :class:`Prover` holds the changes of this replica's partitions until every concerned party
  has applied them, as the parties' progress (:mod:`stopsms.notifier.progress`) says, and then
  publishes the done record. When it takes over a partition it first reads the proofs already
  started there, so a change seen by the previous owner is proven here.

No receipt is written per change: the records grow with the changes (a start and a done per
request) and with parties × rounds (progress receipts), never with changes × parties.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any, Protocol

import faust
import mode
from faust.exceptions import ConsumerNotStarted

from stopsms.core.parties import PartiesDirectory
from stopsms.core.settings import NotifierSettings
from stopsms.core.streams import ConsumerLag, OffsetGuard, StreamApp, faust_app
from stopsms.core.topics import Topics
from stopsms.core.tracing import traced, traceparent_of
from stopsms.notifier.lateness import observe_applied
from stopsms.notifier.progress import ProgressPublisher
from stopsms.notifier.propagation import ProgressLog, ProofTracker, start_record
from stopsms.v1 import events_pb2

log = logging.getLogger(__name__)

#: Changes taken together at most, and how long the agent waits to fill a batch.
TRACK_BATCH = 1000
TRACK_WAIT_S = 0.005
#: How long a batch's start records may wait for Kafka before the worker gives up.
DELIVERY_TIMEOUT_S = 60.0
#: How long a done record that Kafka refused waits before it is published again.
RETRY_DONE_S = 1.0
#: How often assigned partitions without new changes are taken over.
SYNC_EVERY_S = 1.0
PROPAGATION_TYPE = "stopsms.v1.PropagationRecord"


def assigned_partitions(app: faust.App, topic: str) -> set[int]:
    """The partitions of ``topic`` this replica holds: the work it does once for everyone.

    Read from the consumer's assignment (faust's own "actives" list only topics that a table
    is co-partitioned with, and the notifier has no table).
    """
    try:
        assignment = app.consumer.assignment()
    except ConsumerNotStarted:
        return set()
    return {tp.partition for tp in assignment if tp.topic == topic}


class PropagationView(Protocol):
    """What the process knows of proofs: the latest record of every request (the index)."""

    def peek(self, key: str) -> events_pb2.PropagationRecord | None:
        """The latest record held now."""

    def put(self, key: str, value: events_pb2.PropagationRecord) -> None:
        """Hold a record this replica just published."""

    def open_records(self) -> list[events_pb2.PropagationRecord]:
        """The records not done yet."""

    async def caught_up(self, wait_seconds: float = 3.0) -> bool:
        """Wait until every record published before the call is held."""


class Prover(mode.Service):
    """The changes of this replica's partitions, until every concerned party applied them."""

    def __init__(
        self,
        app: faust.App,
        topics: Topics,
        directory: PartiesDirectory,
        publisher: ProgressPublisher,
        proofs: PropagationView,
        log_: ProgressLog,
        **kwargs: object,
    ) -> None:
        self.app = app
        self.topics = topics
        self.directory = directory
        self.publisher = publisher
        self.proofs = proofs
        self.tracker = ProofTracker(log_)
        self._synced: set[int] = set()
        self._sync_lock = asyncio.Lock()
        self.opened = asyncio.Event()
        super().__init__(**kwargs)  # type: ignore[arg-type]

    def mine(self) -> set[int]:
        """The partitions this replica proves."""
        return assigned_partitions(self.app, self.topics.suppressions)

    def waiting(self) -> bool:
        """Whether some change of this replica waits for a party."""
        return len(self.tracker) > 0

    async def ensure_synced(self, partition: int) -> None:
        """Before the first change of a partition taken over: the proofs started there."""
        if partition in self._synced:
            return
        async with self._sync_lock:
            if partition in self._synced:
                return
            if not await self.proofs.caught_up(30.0):
                raise RuntimeError("the propagation index did not catch up within 30 s")
            done = []
            for record in list(self.proofs.open_records()):
                if record.HasField("change_position") and (
                    record.change_position.partition == partition
                ):
                    done.extend(self.tracker.open(record))
            self._synced.add(partition)
            self.publish_done(done)

    def revoked(self) -> None:
        """A rebalance: forget every partition; those assigned again are read again."""
        for partition in self._synced:
            self.tracker.drop_partition(partition)
        self._synced.clear()

    @mode.Service.task
    async def _sync_forever(self) -> None:
        """Take over assigned partitions even when no new change arrives on them."""
        while not self.should_stop:
            await self.sleep(SYNC_EVERY_S)
            for partition in sorted(self.mine() - self._synced):
                try:
                    await self.ensure_synced(partition)
                except Exception:  # noqa: BLE001 - the next round tries again
                    log.exception("could not take over the proofs of partition %d", partition)

    async def start_proof(
        self, partition: int, offset: int, value: bytes | None, headers: Any
    ) -> list[Awaitable[object]]:
        """Start the proof of one change; return the acknowledgements to wait for."""
        await self.ensure_synced(partition)
        if value is None:
            return []
        change = events_pb2.SuppressionChanged.FromString(value)
        if self.tracker.is_open(change.event_id):
            return []  # read again after a rebalance
        known = self.proofs.peek(change.event_id)
        if known is not None and known.done:
            return []  # proven before a restart
        sends: list[Awaitable[object]] = []
        with traced(traceparent_of(headers), change.request_id):
            if known is not None and known.HasField("change_position"):
                record = known  # started by the previous owner: the same parties
            else:
                concerned = [(p.id, p.kind) for p in self.directory.concerned_by(change.sender_id)]
                record = start_record(change, partition, offset, concerned)
                log.info("event %s concerns %d parties", change.event_id, len(concerned))
                sends.append(self._publish(record))
            self.publish_done(self.tracker.open(record))
        self.opened.set()
        return sends

    def advanced(self, moved: list[tuple[str, int]]) -> None:
        """Parties advanced: publish the proofs that are done now."""
        done = []
        for party_id, partition in moved:
            if partition in self._synced:
                done.extend(self.tracker.advanced(party_id, partition))
        self.publish_done(done)

    def recheck(self) -> None:
        """After the progress log was filled in bulk: every proof done by now."""
        self.publish_done(self.tracker.recheck())

    def _publish(self, record: events_pb2.PropagationRecord) -> Awaitable[object]:
        self.proofs.put(record.event_id, record)
        return self.publisher.send(
            self.topics.propagation,
            record.event_id.encode(),
            record.SerializeToString(),
            PROPAGATION_TYPE,
        )

    def publish_done(self, records: list[events_pb2.PropagationRecord]) -> None:
        """Publish done proofs; one Kafka refused is published again until it is taken."""
        for record in records:
            action_ms = record.action_time.ToMilliseconds()
            for delivery in record.deliveries:
                observe_applied(
                    delivery.party_kind, action_ms, delivery.applied_time.ToMilliseconds()
                )
            log.info(
                "event %s applied by all %d parties %.3f s after the action",
                record.event_id,
                len(record.deliveries),
                (record.done_time.ToMilliseconds() - action_ms) / 1000,
            )
            self._publish(record).add_done_callback(  # type: ignore[attr-defined]
                lambda delivery, record=record: self._retry_if_refused(delivery, record)
            )

    def _retry_if_refused(
        self, delivery: asyncio.Future[object], record: events_pb2.PropagationRecord
    ) -> None:
        if delivery.cancelled() or delivery.exception() is None:
            return
        log.warning("done proof of %s not published (%r); retrying", record.event_id,
                    delivery.exception())  # fmt: skip
        asyncio.get_running_loop().call_later(RETRY_DONE_S, self.publish_done, [record])


def create_notifier_app(settings: NotifierSettings, prover_factory: Any) -> StreamApp:
    """Build the notifier's faust app: the agent that starts every change's proof.

    ``prover_factory(app)`` makes the :class:`Prover` (it needs the app's assignment).
    """
    topics = Topics(settings.topic_namespace)
    app = faust_app(settings, "notifier")
    suppressions = app.topic(topics.suppressions, partitions=settings.partitions)
    prover: Prover = prover_factory(app)
    guard = OffsetGuard(app, settings.kafka, topics.suppressions)
    lag = ConsumerLag(
        settings.kafka,
        app.conf.id,
        [topics.suppressions],
        stall_exit_seconds=settings.stall_exit_seconds,
    )
    app.stopsms_services = [guard, lag, prover]

    async def _on_revoked(sender: Any, *args: Any, **kwargs: Any) -> None:
        prover.revoked()

    app.on_partitions_revoked.connect(_on_revoked)  # type: ignore[arg-type]

    @app.agent(suppressions, name="track-changes", supervisor_strategy=mode.CrashingSupervisor)
    async def track_changes(stream: Any) -> None:
        """Start the proof of every change; offsets move only behind acknowledged starts."""
        async for events in stream.take_events(TRACK_BATCH, within=TRACK_WAIT_S):
            sends: list[Awaitable[object]] = []
            for event in events:
                message = event.message
                for skipped in await guard.missed(message.partition, message.offset):
                    sends += await prover.start_proof(
                        skipped.partition, skipped.offset, skipped.value, skipped.headers
                    )
                sends += await prover.start_proof(
                    message.partition, message.offset, event.value, message.headers
                )
            try:
                async with asyncio.timeout(DELIVERY_TIMEOUT_S):
                    await asyncio.gather(*sends)
            except TimeoutError as exc:
                raise RuntimeError(
                    f"Kafka did not acknowledge {len(sends)} proofs within "
                    f"{DELIVERY_TIMEOUT_S:.0f} s"
                ) from exc

    return app
