"""The notifier's proof stage: the proof of propagation, from the parties' progress.

* The tracking stage reads ``stopsms.suppressions.v1`` (partitions divided among replicas by
  the consumer group, :class:`~stopsms.adapters.streams.GroupProcessor`). For each change it
  publishes the start of its proof — a ``PropagationRecord`` naming every concerned party
  PENDING, and where the change sits — and commits its input offsets only once Kafka has
  acknowledged those starts, so a change past the committed offset always has its start
  record on the propagation topic; once they are acknowledged it hands the change to the
  :class:`Prover`.
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
import time
from collections.abc import Callable, Sequence
from typing import Protocol

import mode
from opentelemetry.trace import SpanKind

from stopsms.adapters.kafka import Record, message_headers
from stopsms.adapters.settings import NotifierSettings
from stopsms.adapters.streams import GroupProcessor, Output, ProcessedBatch
from stopsms.adapters.tracing import traced, traceparent_of
from stopsms.domain.parties import PartiesDirectory
from stopsms.domain.proof import ProgressLog, ProofTracker, start_record
from stopsms.domain.topics import Topics, is_key_change
from stopsms.notifier.lateness import observe_applied
from stopsms.notifier.progress import ProgressPublisher
from stopsms.v1 import events_pb2

log = logging.getLogger(__name__)

#: How long a done record that Kafka refused waits before it is published again.
RETRY_DONE_S = 1.0
#: How often assigned partitions without new changes are taken over.
SYNC_EVERY_S = 1.0
PROPAGATION_TYPE = "stopsms.v1.PropagationRecord"
#: A change decided longer ago than this may have a proof no longer in memory: the prover asks
#: the proof store about it (half the index's :data:`~stopsms.notifier.server.HOLD_DONE_S`).
RECHECK_AFTER_S = 30.0


def proven_when_decided(change: events_pb2.SuppressionChanged) -> bool:
    """Whether a record of the list opens a proof: a decision, not a re-sealing or a key change.

    A re-sealed record repeats a decision under the current data key, a moved one under the
    subject of the current pseudonym key; its proof was opened when it was first decided (and
    may be long done and expired), so it opens none again.
    """
    return (
        not change.HasField("resealed_time")
        and not change.previous_subject
        and not is_key_change(change.subject)
    )


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

    async def stored(self, keys: Sequence[str]) -> dict[str, events_pb2.PropagationRecord]:
        """The done proofs of ``keys`` no longer in memory (the proof store's)."""


class Prover(mode.Service):
    """The changes of this replica's partitions, until every concerned party applied them."""

    def __init__(
        self,
        topics: Topics,
        directory: PartiesDirectory,
        publisher: ProgressPublisher,
        proofs: PropagationView,
        log_: ProgressLog,
        **kwargs: object,
    ) -> None:
        self.topics = topics
        self.directory = directory
        #: The partitions this replica's stage holds (set once the stage exists).
        self.assignment: Callable[[], set[int]] = set
        self.publisher = publisher
        self.proofs = proofs
        self.tracker = ProofTracker(log_)
        self._synced: set[int] = set()
        self._sync_lock = asyncio.Lock()
        self.opened = asyncio.Event()
        super().__init__(**kwargs)  # type: ignore[arg-type]

    def mine(self) -> set[int]:
        """The partitions this replica proves."""
        return self.assignment()

    def waiting(self) -> bool:
        """Whether some change of this replica waits for a party."""
        return len(self.tracker) > 0

    async def ensure_synced(self, partitions: set[int]) -> None:
        """Before the first change of partitions taken over: the proofs started there."""
        if partitions <= self._synced:
            return
        async with self._sync_lock:
            new = partitions - self._synced
            if not new:
                return
            if not await self.proofs.caught_up(30.0):
                raise RuntimeError("the propagation index did not catch up within 30 s")
            done = []
            for record in list(self.proofs.open_records()):
                if record.HasField("change_position") and (record.change_position.partition in new):
                    done.extend(self.tracker.open(record))
            self._synced |= new
            self.publish_done(done)

    async def assigned(self, partitions: set[int]) -> None:
        """Partitions taken over: the proofs already started there first."""
        await self.ensure_synced(partitions)

    def revoked(self, partitions: set[int]) -> None:
        """Partitions another replica proves now: forget them."""
        for partition in partitions & self._synced:
            self.tracker.drop_partition(partition)
            self._synced.discard(partition)

    @mode.Service.task
    async def _sync_forever(self) -> None:
        """Take over assigned partitions even when no new change arrives on them."""
        while not self.should_stop:
            await self.sleep(SYNC_EVERY_S)
            try:
                await self.ensure_synced(self.mine())
            except Exception:  # noqa: BLE001 - the next round tries again
                log.exception("could not take over the proofs of the assigned partitions")

    async def process(self, records: list[Record]) -> ProcessedBatch:
        """Start the proof of each change; the changes wait for their parties once published."""
        outputs: list[Output] = []
        opened: list[events_pb2.PropagationRecord] = []
        seen: set[str] = set()
        await self.ensure_synced({record.partition for record in records})
        parse = events_pb2.SuppressionChanged.FromString
        changes = [
            (record, change)
            for record in records
            if record.value is not None and proven_when_decided(change := parse(record.value))
        ]
        # A change read again after a restart may have been proven: a proof done recently is
        # still in memory (the index holds it a minute), an older one is in the proof store.
        old = time.time() - RECHECK_AFTER_S
        stored = await self.proofs.stored(
            [
                c.event_id
                for _, c in changes
                if c.decided_time.seconds < old and self.proofs.peek(c.event_id) is None
            ]
        )
        for record, change in changes:
            if change.event_id in seen or self.tracker.is_open(change.event_id):
                continue  # read again after a rebalance
            seen.add(change.event_id)
            known = self.proofs.peek(change.event_id) or stored.get(change.event_id)
            if known is not None and known.done:
                continue  # proven before a restart
            if known is not None and known.HasField("change_position"):
                opened.append(known)  # started by the previous owner: the same parties
                continue
            with traced(
                traceparent_of(record.headers),
                change.request_id,
                name="notifier open proof",
                kind=SpanKind.CONSUMER,
                event_id=change.event_id,
            ):
                concerned = [(p.id, p.kind) for p in self.directory.concerned_by(change.sender_id)]
                start = start_record(change, record.partition, record.offset, concerned)
                log.info("event %s concerns %d parties", change.event_id, len(concerned))
            outputs.append(
                Output(
                    self.topics.propagation,
                    start.event_id.encode(),
                    start.SerializeToString(),
                    headers=message_headers(PROPAGATION_TYPE),
                )
            )
            opened.append(start)

        def published() -> None:
            for start in opened:
                self.proofs.put(start.event_id, start)
                self.publish_done(self.tracker.open(start))
            if opened:
                self.opened.set()

        return ProcessedBatch(outputs, published)

    def advanced(self, moved: list[tuple[str, int]]) -> None:
        """Parties advanced: publish the proofs that are done now."""
        self.publish_done(
            self.tracker.advanced_all(
                (p, partition) for p, partition in moved if partition in self._synced
            )
        )

    def recheck(self) -> None:
        """After the progress log was filled in bulk: every proof done by now."""
        self.publish_done(self.tracker.recheck())

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
            self._send_done(record)

    def _send_done(self, record: events_pb2.PropagationRecord) -> None:
        self.publisher.send(
            self.topics.propagation,
            record.event_id.encode(),
            record.SerializeToString(),
            PROPAGATION_TYPE,
        ).add_done_callback(lambda delivery: self._retry_if_refused(delivery, record))
        self.proofs.put(record.event_id, record)

    def _retry_if_refused(
        self, delivery: asyncio.Future[tuple[int, int]], record: events_pb2.PropagationRecord
    ) -> None:
        if delivery.cancelled() or delivery.exception() is None:
            return
        log.warning("done proof of %s not published (%r); retrying", record.event_id,
                    delivery.exception())  # fmt: skip
        asyncio.get_running_loop().call_later(RETRY_DONE_S, self._send_done, record)


def create_tracking_stage(settings: NotifierSettings, prover: Prover) -> GroupProcessor:
    """The stage that starts every change's proof, in the notifier's consumer group."""
    topics = Topics(settings.topic_namespace)
    stage = GroupProcessor(
        settings.kafka,
        topics.processor_group("notifier"),
        topics.suppressions,
        prover,
        session_timeout_s=settings.kafka_session_timeout_seconds,
    )
    prover.assignment = stage.assignment
    return stage
