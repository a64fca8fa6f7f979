"""The stream layer: consumer-group processors that publish before they commit, and their worker.

This is the one module that drives Kafka's consumer groups for stream processing
(``bench/stream_layer.py`` chose it over faust: see docs/architecture.md). A
:class:`GroupProcessor` reads one topic as a member of a consumer group and hands each batch
of records to a plain handler, which returns the records to publish. The batch's outputs and
the changes of its :class:`StateStore` (written to a compacted changelog) are sent together by
an idempotent producer (acks=all); the input offsets are committed only once Kafka has
acknowledged every one of them. Commits are gathered: the offsets of acknowledged batches are
committed together at most every :data:`COMMIT_EVERY_S` (and before partitions are handed over
or the stage stops), since a commit per batch was a broker request and an offsets record per
partition for each few opt-outs under load. A crash anywhere processes the batches since the
last commit again; every handler is deterministic, so a record published again is identical,
and a state already written makes a repeated request publish nothing.

The loop never waits idle on a timer: ``getmany`` returns as soon as records arrive, and a batch
is whatever arrived meanwhile, so batches grow with the load. Under load a stage takes a batch at
most once per :data:`~stopsms.adapters.kafka.BATCH_WINDOW_S` (what arrives meanwhile joins it), so a
busy topic costs a fetch, a produce and a commit check per window, not per record; the first
record after a quiet spell is taken at once, and a stage that is behind (full batches) does not
wait.

A handler is an object with ``process(records) -> ProcessedBatch`` and ``assigned``/``revoked``
hooks; it is tested in-process with records and a store of its own.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import mode
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from prometheus_client import Gauge

from stopsms.adapters.kafka import (
    BATCH_WINDOW_S,
    FETCHER_WAKE_S,
    BatchWindow,
    GroupOffsets,
    Record,
    TopicReader,
    records_of,
)
from stopsms.adapters.kafka_access import KafkaAccess
from stopsms.adapters.settings import Settings

log = logging.getLogger(__name__)

#: Records handed to a handler at most at once.
MAX_BATCH = 2000
#: How long a batch's records and offsets may wait for Kafka before the batch is retried.
DELIVERY_TIMEOUT_S = 60.0
#: Pause after a failed batch before it is tried again.
RETRY_S = 1.0
#: How often a stage commits the input offsets of its acknowledged batches, at most. A crash
#: processes again at most this much (identically); nothing waits on the commit.
COMMIT_EVERY_S = 0.1


@dataclass(frozen=True)
class Output:
    """A record a handler publishes."""

    topic: str
    key: bytes
    value: bytes | None
    partition: int | None = None
    headers: Sequence[tuple[str, bytes]] = ()


@dataclass
class ProcessedBatch:
    """What a handler made of a batch: records to publish, and what to do once they are.

    ``after_published`` runs once Kafka has acknowledged every output (the input offsets are
    committed then or shortly after, never before).
    """

    outputs: list[Output] = field(default_factory=list)
    after_published: Callable[[], None] | None = None


class Handler(Protocol):
    """A stream processor's own logic: records in, records (and state changes) out."""

    async def process(self, records: list[Record]) -> ProcessedBatch:
        """Process one batch, in offset order per partition."""

    async def assigned(self, partitions: set[int]) -> None:
        """These partitions are this member's now (their state is restored before)."""

    def revoked(self, partitions: set[int]) -> None:
        """These partitions are another member's now."""


class StateStore:
    """Per-partition state of a processor, backed by a compacted changelog topic.

    ``put`` changes the state in memory and returns the changelog record, which the processor
    publishes with the batch; ``restore`` reads a partition's changelog when the partition is
    assigned, or again after a failed batch.
    """

    def __init__(self, kafka: KafkaAccess, changelog: str) -> None:
        self.kafka = kafka
        self.changelog = changelog
        self._data: dict[int, dict[bytes, bytes]] = {}

    def get(self, partition: int, key: bytes) -> bytes | None:
        """The committed (or, during a batch, the batch's) value of ``key``."""
        return self._data.get(partition, {}).get(key)

    def put(self, partition: int, key: bytes, value: bytes) -> Output:
        """Change the state; the returned record must be published with the batch."""
        self._data.setdefault(partition, {})[key] = value
        return Output(self.changelog, key, value, partition)

    def delete(self, partition: int, key: bytes) -> Output:
        """Forget ``key``; the returned tombstone must be published with the batch."""
        self._data.get(partition, {}).pop(key, None)
        return Output(self.changelog, key, None, partition)

    def partitions(self) -> list[int]:
        """The partitions held now."""
        return sorted(self._data)

    def keys(self, partition: int) -> list[bytes]:
        """The keys of a partition held now (a copy: the state may change meanwhile)."""
        return list(self._data.get(partition, ()))

    def __len__(self) -> int:
        return sum(len(d) for d in self._data.values())

    def drop(self, partitions: set[int]) -> None:
        """Forget partitions another member holds now."""
        for partition in partitions:
            self._data.pop(partition, None)

    async def restore(self, partitions: set[int]) -> None:
        """Read the changelog of ``partitions`` to its end (committed records only)."""
        if not partitions:
            return
        started = time.monotonic()
        reader = TopicReader(
            self.kafka,
            self.changelog,
            client_id="stopsms-restore",
            max_records=10_000,
            only_partitions=sorted(partitions),
        )
        await reader.start()
        data: dict[int, dict[bytes, bytes]] = {p: {} for p in partitions}
        try:
            async for batch in reader.read_to_end():
                for record in batch:
                    if record.key is None:
                        continue
                    if record.value is None:
                        data[record.partition].pop(record.key, None)
                    else:
                        data[record.partition][record.key] = record.value
        finally:
            await reader.stop()
        self._data.update(data)
        log.info(
            "state of %s restored: %d keys in %d partitions in %.2f s",
            self.changelog,
            sum(len(d) for d in data.values()),
            len(partitions),
            time.monotonic() - started,
        )


class GroupProcessor(mode.Service):
    """One topic, one consumer group, one handler; a batch is published, then committed."""

    def __init__(
        self,
        kafka: KafkaAccess | str,
        group: str,
        topic: str,
        handler: Handler,
        *,
        stores: Sequence[StateStore] = (),
        session_timeout_s: float = 30.0,
        batch_window_s: float = BATCH_WINDOW_S,
        housekeeping: Callable[[], ProcessedBatch | None] | None = None,
        stop_housekeeping: Callable[[], Awaitable[None]] | None = None,
        positions: Callable[[set[int]], Awaitable[dict[int, int]]] | None = None,
        fetch_wait_ms: int = 500,
        **kwargs: Any,
    ) -> None:
        self.kafka = KafkaAccess.of(kafka)
        #: Under load, a batch is taken at most once per window (0: as soon as records arrive).
        self._window = BatchWindow(batch_window_s, MAX_BATCH)
        self.group = group
        self.topic = topic
        self.handler = handler
        self.stores = list(stores)
        #: Work of the handler's own between batches (the registry's erasure): its outputs are
        #: published like a batch's, in the same loop, so they keep their order with the
        #: records processed before and after. None when there is nothing to do now.
        self.housekeeping = housekeeping
        #: Ends the housekeeping's own tasks (a pass's reader) when the stage stops.
        self.stop_housekeeping = stop_housekeeping
        #: Where to read newly assigned partitions from, for a handler whose output keeps its
        #: own offsets (intake's link store, in Redis); None: the group's committed offsets.
        self.positions = positions
        #: How long an idle fetch waits at the broker (records answer it at once): a stage
        #: that must start on partitions taken over at once keeps 500 ms; a store's filler,
        #: whose lookups wait for it anyway, waits as long as the readers do (fewer wake-ups).
        self.fetch_wait_ms = fetch_wait_ms
        #: How long the group waits for a silent member before handing its partitions over.
        self.session_timeout_s = session_timeout_s
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None
        self._acks, self._idempotent = "all", True
        #: Partitions whose state is restored: records of others wait (the consumer may hand
        #: out a new partition's records before the rebalance listener has finished).
        self._restored: set[int] = set()
        #: Input offsets whose batches Kafka acknowledged, not committed yet.
        self._published: dict[TopicPartition, int] = {}
        self._committed_at = 0.0
        self.batches = 0
        #: Set once the group has given this member its first assignment (possibly empty).
        self.joined = asyncio.Event()
        super().__init__(**kwargs)

    def assignment(self) -> set[int]:
        """The partitions this member holds now."""
        if self.consumer is None:
            return set()
        return {tp.partition for tp in self.consumer.assignment() if tp.topic == self.topic}

    def guarantees(self) -> tuple[str, object, bool]:
        """(name, acks, idempotent) of the producer, as the self-check reads them."""
        return "stream", self._acks, self._idempotent

    async def on_start(self) -> None:
        """Join the group and open the producer."""
        options = self.kafka.client_options()
        self.producer = AIOKafkaProducer(
            **options,
            enable_idempotence=self._idempotent,
            acks=self._acks,
            linger_ms=1,
            client_id=f"{self.group}-producer",
        )
        await self.producer.start()
        self.consumer = AIOKafkaConsumer(
            **options,
            group_id=self.group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=MAX_BATCH,
            fetch_max_wait_ms=self.fetch_wait_ms,
            consumer_timeout_ms=int(FETCHER_WAKE_S * 1000),
            session_timeout_ms=int(self.session_timeout_s * 1000),
            heartbeat_interval_ms=int(self.session_timeout_s * 100),
            client_id=f"{self.group}-consumer",
        )
        self.consumer.subscribe([self.topic], listener=_Listener(self))
        await self.consumer.start()

    async def on_stop(self) -> None:
        """Commit what is published, then leave the group (the rest is processed again)."""
        if self.stop_housekeeping is not None:
            await self.stop_housekeeping()
        if self.consumer is not None:
            try:
                await self.commit_published()
            except (KafkaError, TimeoutError, OSError) as exc:
                log.warning("%s: last offsets not committed (%r); processed again", self.group,
                            exc)  # fmt: skip
            await self.consumer.stop()
        if self.producer is not None:
            await self.producer.stop()

    async def on_assigned(self, partitions: set[int]) -> None:
        """Restore the state of newly assigned partitions, then tell the handler."""
        for store in self.stores:
            await store.restore(partitions)
        await self._seek_to_positions(partitions)
        await self.handler.assigned(partitions)
        self._restored |= partitions
        self.joined.set()
        log.info("%s: partitions %s assigned", self.group, sorted(partitions))

    async def _seek_to_positions(self, partitions: set[int]) -> None:
        if self.positions is None or not partitions:
            return
        assert self.consumer is not None
        for partition, offset in (await self.positions(partitions)).items():
            self.consumer.seek(TopicPartition(self.topic, partition), offset)

    async def commit_published(self, partitions: set[int] | None = None) -> None:
        """Commit the input offsets of acknowledged batches (of ``partitions``, or all)."""
        assert self.consumer is not None
        chosen = {
            tp: offset
            for tp, offset in self._published.items()
            if partitions is None or tp.partition in partitions
        }
        if not chosen:
            return
        await self.consumer.commit(chosen)
        for tp, offset in chosen.items():
            if self._published.get(tp) == offset:
                del self._published[tp]
        self._committed_at = time.monotonic()

    async def before_revoked(self, partitions: set[int]) -> None:
        """Partitions are about to be handed over: commit what was published of them."""
        try:
            await self.commit_published(partitions)
        except (KafkaError, TimeoutError, OSError) as exc:
            log.warning("%s: offsets of revoked partitions not committed (%r); the next owner "
                        "processes those batches again", self.group, exc)  # fmt: skip
        for tp in [tp for tp in self._published if tp.partition in partitions]:
            del self._published[tp]

    def on_revoked(self, partitions: set[int]) -> None:
        """Forget revoked partitions' state."""
        self._restored -= partitions
        for store in self.stores:
            store.drop(partitions)
        self.handler.revoked(partitions)

    async def process_once(self, timeout_ms: int = 500) -> int:
        """Take what arrived, process it, publish the outputs; commit the offsets in time."""
        assert self.consumer is not None and self.producer is not None
        if self._published:  # wake in time to commit them even if nothing else arrives
            timeout_ms = min(timeout_ms, int(COMMIT_EVERY_S * 1000))
        batches = await self.consumer.getmany(timeout_ms=timeout_ms, max_records=MAX_BATCH)
        waiting = [tp for tp in batches if tp.partition not in self._restored]
        for tp in waiting:  # assigned, state not restored yet: fetched again once it is
            self.consumer.seek(tp, batches.pop(tp)[0].offset)
        records = self._window.handed(records_of(batches))
        if not records:
            await self._commit_if_due()
            return 0
        offsets = {tp: messages[-1].offset + 1 for tp, messages in batches.items() if messages}
        await self._publish(await self.handler.process(records))
        self._published.update(offsets)
        self.batches += 1
        await self._commit_if_due()
        return len(records)

    async def housekeep(self) -> int:
        """Publish the handler's housekeeping outputs, if it has any now; how many."""
        if self.housekeeping is None or not self._restored:
            return 0
        processed = self.housekeeping()
        if processed is None:
            return 0
        await self._publish(processed)
        return len(processed.outputs)

    async def _publish(self, processed: ProcessedBatch) -> None:
        """Send every output and wait until Kafka has acknowledged them all."""
        assert self.producer is not None
        deliveries: list[Awaitable[Any]] = []
        for out in processed.outputs:
            deliveries.append(
                await self.producer.send(
                    out.topic,
                    key=out.key,
                    value=out.value,
                    partition=out.partition,
                    headers=list(out.headers),
                )
            )
        async with asyncio.timeout(DELIVERY_TIMEOUT_S):  # published before remembered
            await asyncio.gather(*deliveries)
        if processed.after_published is not None:
            processed.after_published()

    async def _commit_if_due(self) -> None:
        if self._published and time.monotonic() - self._committed_at >= COMMIT_EVERY_S:
            async with asyncio.timeout(DELIVERY_TIMEOUT_S):
                await self.commit_published()

    async def _recover(self) -> None:
        """After a failed batch: back to the committed offsets and the committed state."""
        assert self.consumer is not None
        assigned = self.consumer.assignment()
        committed = {tp: await self.consumer.committed(tp) for tp in assigned}
        for tp, offset in committed.items():
            if offset is None:
                await self.consumer.seek_to_beginning(tp)
            else:
                self.consumer.seek(tp, offset)
        partitions = {tp.partition for tp in assigned}
        await self._seek_to_positions(partitions)
        for store in self.stores:
            store.drop(partitions)
            await store.restore(partitions)

    @mode.Service.task
    async def _run(self) -> None:
        failures = 0
        busy = False
        while not self.should_stop:
            try:
                # Housekeeping that published comes round again without waiting for records
                # (a re-sealing pass drains what it found at the speed of its rounds).
                await self.process_once(timeout_ms=0 if busy else 500)
                busy = await self.housekeep() > 0
                # What arrives meanwhile joins the next batch (idle, nothing waits). The wait is
                # here, not in process_once, so that a stop during it is seen before the next
                # getmany asks a stopped consumer.
                await self._window.gather()
                failures = 0
            except (KafkaError, TimeoutError, OSError) as exc:
                failures += 1
                log.warning(
                    "%s: batch not committed (%r); processing it again from the committed "
                    "offsets (attempt %d)",
                    self.group,
                    exc,
                    failures,
                )
                await self.sleep(min(RETRY_S * failures, 10.0))
                try:
                    await self._recover()
                except Exception:  # noqa: BLE001 - Kafka still away: the next round retries
                    log.warning("%s: recovery failed; retrying", self.group, exc_info=True)
            except Exception:  # noqa: BLE001 - a defect: restart from what is committed
                log.critical(
                    "%s: batch failed; exiting so that the orchestrator restarts the process "
                    "from the committed offsets",
                    self.group,
                    exc_info=True,
                )
                logging.shutdown()
                os._exit(70)


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    """Hands rebalances to the processor (called by the consumer, between batches)."""

    def __init__(self, processor: GroupProcessor) -> None:
        self.processor = processor

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        partitions = {tp.partition for tp in revoked}
        await self.processor.before_revoked(partitions)
        self.processor.on_revoked(partitions)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self.processor.on_assigned({tp.partition for tp in assigned})


async def stop_together(services: Sequence[mode.ServiceT | None]) -> None:
    """Stop ``services`` at once (each shielded, a failure logged), as mode stops one child.

    Over mutual TLS a reader's stop waits until the broker answers the fetch it holds (up to
    :data:`~stopsms.adapters.kafka.READER_FETCH_WAIT_MS`): the broker reads nothing more from
    a connection while it holds a request on it, the TLS close included. One after the other,
    a process's readers took 6 to 12 s to stop; together, about the longest one.
    """

    async def stop(service: mode.ServiceT) -> None:
        try:
            await asyncio.shield(service.stop())
        except asyncio.CancelledError:
            pass
        except Exception:  # noqa: BLE001 - as mode: one child's failure must not keep the rest up
            log.exception("error while stopping %r", service)

    await asyncio.gather(*(stop(service) for service in services if service is not None))


class Together(mode.Service):
    """Independent services (readers of their own topics) that start in order and stop at once.

    Only for services none of which uses another while it stops: the composition roots group
    their followers and indexes this way, after the stages that use them have stopped.
    """

    def __init__(self, *services: mode.ServiceT, **kwargs: Any) -> None:
        self.members = list(services)
        super().__init__(**kwargs)

    def on_init_dependencies(self) -> list[mode.ServiceT]:
        """The members start one after the other, in the order given."""
        return self.members

    async def _stop_children(self) -> None:
        await stop_together(self._children)


def stream_worker(services: list[mode.ServiceT], settings: Settings) -> mode.Worker:
    """The worker that runs the process's services on one event loop.

    The worker owns the loop and the signals: on SIGTERM it stops every service in reverse
    order, so the gRPC server drains before Kafka clients close; the services of a
    :class:`Together` stop at once.
    """
    return mode.Worker(*services, loglevel=settings.log_level, override_logging=False)


def run_worker(worker: mode.Worker) -> None:
    """Run a worker until it is stopped (SIGTERM and SIGINT stop it gracefully)."""
    worker.execute_from_commandline()


CONSUMER_LAG = Gauge(
    "stopsms_consumer_lag",
    "Records a stream processor's consumer group has not processed yet, by group and topic.",
    ["group", "topic"],
)


class ConsumerLag(mode.Service):
    """Publishes the lag of a stream processor's group on its topics, every ``interval`` s.

    The lag is the topic's end offset minus the group's committed offset, summed over the
    partitions: what a replica still has to process, and what autoscaling on lag reads.
    """

    def __init__(
        self,
        bootstrap: KafkaAccess | str,
        group: str,
        topics: list[str],
        interval: float = 10.0,
        stall_exit_seconds: float = 0.0,
        **kwargs: Any,
    ) -> None:
        self.group = group
        self.stall_exit_seconds = stall_exit_seconds
        self._progress: tuple[int, float] | None = None  # (committed total, when it last moved)
        self.bootstrap = bootstrap
        self.topics = topics
        self.readers: list[TopicReader] = []  # made in on_start (aiokafka needs the loop)
        self.offsets = GroupOffsets(bootstrap)
        self.interval = interval
        super().__init__(**kwargs)

    def on_init_dependencies(self) -> list[mode.ServiceT]:
        """The group offsets reader starts and stops with this service."""
        return [self.offsets]

    async def on_start(self) -> None:
        """Connect the readers (they only ask for end offsets)."""
        for topic in self.topics:
            reader = TopicReader(self.bootstrap, topic, client_id="stopsms-lag", fetching=False)
            await reader.start()
            self.readers.append(reader)

    async def on_stop(self) -> None:
        """Disconnect."""
        for reader in self.readers:
            await reader.stop()

    async def measure(self) -> dict[str, int]:
        """The lag per topic now (also set on the gauge)."""
        lags = {}
        total = 0
        for reader in self.readers:
            ends = await reader.end_offsets()
            committed = await self.offsets.committed(self.group, reader.topic)
            lag = sum(max(0, end - committed.get(p, 0)) for p, end in ends.items())
            CONSUMER_LAG.labels(self.group, reader.topic).set(lag)
            lags[reader.topic] = lag
            total += sum(committed.values())
        self._watch_for_stall(total, sum(lags.values()))
        return lags

    def _watch_for_stall(self, committed_total: int, lag: int, now: float | None = None) -> bool:
        """Exit the process when work waits and nothing was committed for too long.

        A processor that stopped consuming would otherwise wait for ever while every party's
        changes pile up. Its state is in Kafka, so exiting loses nothing: the orchestrator
        restarts it from the committed offsets. Returns True when it would exit (for the
        tests: ``exit`` is then not called).
        """
        now = time.monotonic() if now is None else now
        if self._progress is None or committed_total != self._progress[0] or lag == 0:
            self._progress = (committed_total, now)
            return False
        stalled = now - self._progress[1]
        if not self.stall_exit_seconds or stalled < self.stall_exit_seconds:
            return False
        log.critical(
            "%s has committed nothing for %.0f s while %d records wait: exiting so that the "
            "orchestrator restarts it from the committed offsets",
            self.group,
            stalled,
            lag,
        )
        self._exit()
        return True

    def _exit(self) -> None:
        logging.shutdown()
        os._exit(70)

    @mode.Service.task
    async def _measure_forever(self) -> None:
        while not self.should_stop:
            try:
                await self.measure()
            except Exception:  # noqa: BLE001 - a metric must never stop the processor
                log.warning("could not measure the consumer lag of %s", self.group, exc_info=True)
            await self.sleep(self.interval)
