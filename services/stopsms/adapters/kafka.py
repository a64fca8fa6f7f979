"""Kafka behind small interfaces: a publisher that waits for acks=all, and a topic reader.

Services depend on :class:`Publisher` and :class:`RecordSource`, not on aiokafka, so unit tests
use the in-memory fakes below and integration tests the real broker. Faust agents use faust's
own producer; everything outside faust goes through here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import mode
from aiokafka import AIOKafkaClient, AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka import errors as kafka_errors
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.client import ConnectionGroup, CoordinationType
from aiokafka.errors import KafkaError
from aiokafka.protocol.commit import OffsetCommitRequest
from aiokafka.protocol.fetch import FetchRequest
from aiokafka.record.memory_records import MemoryRecords

from stopsms.adapters.kafka_access import KafkaAccess
from stopsms.adapters.tracing import CURRENT_TRACEPARENT, TRACE_HEADER, continue_trace
from stopsms.domain.topics import murmur2

log = logging.getLogger(__name__)

#: How long aiokafka's background fetch routine sleeps when no event wakes it (the consumer's
#: ``consumer_timeout_ms``, 200 ms by default).
#: It is woken anyway by every fetch answer, consumption, seek, reset, resume and reassignment,
#: so the timeout only sets how often an idle consumer wakes for nothing: five times a second
#: per consumer with the default, which was a third of an idle service's CPU.
FETCHER_WAKE_S = 5.0

#: How long a reader's fetch waits at the broker for records before it is answered empty. Records
#: end the wait at once, so this sets only how often an idle reader asks: every 2 s, where
#: aiokafka's default (500 ms) cost an idle platform's broker and services twice as many fetches.
READER_FETCH_WAIT_MS = 2000

#: Under load, how long records gather before a follower of a busy topic takes them: a reader or
#: stream stage with a batch window hands over at most one batch per window. A fetch is answered
#: as soon as one record arrives, so without a window a topic written 200 times a second woke
#: each of its readers 200 times a second, each time a fetch, a wake-up and the handling of one
#: record (a third of the registry's CPU at 200 opt-outs/s went to socket writes). Idle, the
#: first record is handed over at once: the window only bounds how soon the *next* batch comes.
BATCH_WINDOW_S = 0.02

MESSAGE_TYPE_HEADER = "stopsms-type"

Headers = list[tuple[str, bytes]]


class PublishFailed(RuntimeError):
    """Kafka did not acknowledge a record: nothing may be reported as accepted."""


@dataclass(frozen=True)
class Record:
    """One record read from a topic, as the services need it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int
    headers: Sequence[tuple[str, bytes]] = ()


def records_of(batches: Mapping[TopicPartition, Sequence[Any]]) -> list[Record]:
    """A consumer's ``getmany`` result as :class:`Record` s, in offset order per partition."""
    return [
        Record(
            tp.topic, tp.partition, m.offset, m.key, m.value, m.timestamp, tuple(m.headers or ())
        )
        for tp, messages in batches.items()
        for m in messages
    ]


def message_headers(type_name: str, trace_parent: str | None = None) -> Headers:
    """Headers of every StopSMS record: its message type and the W3C trace context.

    The trace is the one given, else the work in progress's (:mod:`stopsms.adapters.tracing`),
    else a new one.
    """
    trace = trace_parent or CURRENT_TRACEPARENT.get() or continue_trace(None)
    return [(MESSAGE_TYPE_HEADER, type_name.encode()), (TRACE_HEADER, trace.encode())]


class Publisher(Protocol):
    """Publishes one record and returns only once it is acknowledged by every in-sync replica."""

    async def publish(
        self,
        topic: str,
        key: bytes,
        value: bytes | None,
        *,
        partition: int | None = None,
        headers: Headers | None = None,
    ) -> tuple[int, int]:
        """Publish and return (partition, offset); raise :class:`PublishFailed` otherwise."""
        ...

    async def publish_many(
        self, topic: str, records: Sequence[tuple[bytes, bytes]], headers: Headers | None = None
    ) -> None:
        """Publish keyed records placed by key; return once all are acknowledged."""
        ...


class KafkaPublisher:
    """An idempotent aiokafka producer with acks=all and a bounded wait for the acknowledgement."""

    def __init__(
        self, bootstrap: KafkaAccess | str, *, timeout_seconds: float = 10.0, client_id: str = ""
    ) -> None:
        self._acks, self._idempotent = "all", True
        self._producer = AIOKafkaProducer(
            **KafkaAccess.of(bootstrap).client_options(),
            acks=self._acks,
            enable_idempotence=self._idempotent,
            client_id=client_id or "stopsms",
            request_timeout_ms=int(timeout_seconds * 1000),
            linger_ms=1,
        )
        self._timeout = timeout_seconds

    async def start(self) -> None:
        """Connect; raises when the broker cannot be reached."""
        await self._producer.start()

    def guarantees(self) -> tuple[object, bool]:
        """(acks, idempotent) as the producer will use them, for the self-check at start."""
        return self._acks, self._idempotent

    async def stop(self) -> None:
        """Flush what is buffered and disconnect."""
        await self._producer.stop()

    async def publish(
        self,
        topic: str,
        key: bytes,
        value: bytes | None,
        *,
        partition: int | None = None,
        headers: Headers | None = None,
    ) -> tuple[int, int]:
        """Publish one record and wait for acks=all, at most the configured timeout."""
        try:
            # One deadline for queueing and acknowledgement; unlike wait_for, it makes no task.
            async with asyncio.timeout(self._timeout):
                delivery = await self._producer.send(
                    topic, value=value, key=key, partition=partition, headers=headers or []
                )
                metadata = await delivery
        except (KafkaError, TimeoutError) as exc:
            raise PublishFailed(
                f"Kafka did not acknowledge the record on {topic}: {exc!r}"
            ) from exc
        return metadata.partition, metadata.offset

    def send(
        self, topic: str, key: bytes, value: bytes | None, *, headers: Headers | None = None
    ) -> asyncio.Future[tuple[int, int]]:
        """Queue one record now, in call order; the future is its acknowledgement (acks=all).

        For a stage that keeps several records in flight and waits for them together: records
        queued one after the other keep their order per partition (the producer is idempotent).
        """
        return asyncio.ensure_future(self.publish(topic, key, value, headers=headers))

    async def publish_many(
        self, topic: str, records: Sequence[tuple[bytes, bytes]], headers: Headers | None = None
    ) -> None:
        """Publish many keyed records at once, in batches per partition, all acknowledged.

        Placement is Kafka's default (murmur2 of the key), as :meth:`publish` would choose;
        building the batches directly skips the per-record bookkeeping of ``send``, which is
        what makes campaign-sized link batches fast.
        """
        partitions = sorted(await self._producer.partitions_for(topic))
        batches: dict[int, list[Any]] = {}
        futures = []
        try:
            for key, value in records:
                partition = partitions[partition_of(key, len(partitions))]
                open_batches = batches.setdefault(partition, [self._producer.create_batch()])
                if (
                    open_batches[-1].append(
                        key=key, value=value, timestamp=None, headers=headers or []
                    )
                    is None
                ):
                    futures.append(
                        await self._producer.send_batch(
                            open_batches[-1], topic, partition=partition
                        )
                    )
                    open_batches.append(self._producer.create_batch())
                    open_batches[-1].append(
                        key=key, value=value, timestamp=None, headers=headers or []
                    )
            for partition, open_batches in batches.items():
                futures.append(
                    await self._producer.send_batch(open_batches[-1], topic, partition=partition)
                )
            await asyncio.wait_for(asyncio.gather(*futures), self._timeout)
        except (KafkaError, TimeoutError) as exc:
            raise PublishFailed(
                f"Kafka did not acknowledge the records on {topic}: {exc!r}"
            ) from exc


class PublisherService(mode.Service):
    """A :class:`KafkaPublisher` that starts and stops with a faust worker (audit entries)."""

    def __init__(self, bootstrap: KafkaAccess | str, client_id: str, **kwargs: object) -> None:
        self._kafka = KafkaAccess.of(bootstrap)
        self._client_id = client_id
        self._publisher: KafkaPublisher | None = None
        super().__init__(**kwargs)  # type: ignore[arg-type]

    async def on_start(self) -> None:
        """Connect (aiokafka clients are made inside the running loop)."""
        self._publisher = KafkaPublisher(self._kafka, client_id=self._client_id)
        await self._publisher.start()

    async def on_stop(self) -> None:
        """Flush and disconnect."""
        if self._publisher is not None:
            await self._publisher.stop()

    async def publish(
        self,
        topic: str,
        key: bytes,
        value: bytes | None,
        *,
        partition: int | None = None,
        headers: Headers | None = None,
    ) -> tuple[int, int]:
        """Publish through the running producer."""
        if self._publisher is None:
            raise PublishFailed("the publisher is not started")
        return await self._publisher.publish(
            topic, key, value, partition=partition, headers=headers
        )

    async def publish_many(
        self, topic: str, records: Sequence[tuple[bytes, bytes]], headers: Headers | None = None
    ) -> None:
        """Publish many records through the running producer."""
        if self._publisher is None:
            raise PublishFailed("the publisher is not started")
        await self._publisher.publish_many(topic, records, headers)


def partition_of(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner gives ``key`` (murmur2, as producers place it)."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


_T = TypeVar("_T", bound=Sequence[Any])


class BatchWindow:
    """Bounds how often a follower takes a batch under load (see :data:`BATCH_WINDOW_S`).

    A full batch (``full`` records) means the follower is behind: it takes the next at once.
    Used by :class:`TopicReader` and by the stream stages' loop.
    """

    def __init__(self, seconds: float, full: int) -> None:
        self.seconds = seconds
        self.full = full
        self._last = -math.inf  # when the last partial batch was handed over (loop time)

    async def gather(self) -> None:
        """Before taking records: let the window since the last batch pass (if it did not)."""
        if self.seconds > 0:
            wait = self._last + self.seconds - asyncio.get_running_loop().time()
            if wait > 0:
                await asyncio.sleep(wait)

    def handed(self, records: _T) -> _T:
        """After taking ``records``: a partial batch opens the next window; a full one does not."""
        self.took(len(records))
        return records

    def took(self, count: int) -> None:
        """After taking ``count`` records (:meth:`handed`)."""
        if self.seconds > 0 and count:
            full = count >= self.full
            self._last = -math.inf if full else asyncio.get_running_loop().time()


class TopicReader:
    """Reads every partition of one topic without a consumer group, from given offsets.

    Used wherever each replica needs the whole topic: the registry's view materialiser, the
    notifier's PSVA streams, intake's link directory. Offsets are the *next* offset to read.
    With ``fetching=False`` it only answers for offsets (end offsets, positions). With a
    ``batch_window_s``, a reader following a busy topic hands over a batch at most once per
    window (:data:`BATCH_WINDOW_S`).

    A reader at the end of its topic keeps one fetch waiting at the broker, answered as soon as
    a record arrives or after :data:`READER_FETCH_WAIT_MS`. The broker answers a connection's
    requests in order, so an offsets request sent meanwhile waits behind that fetch: the reader
    therefore fetches nothing until its first read (its positions and end offsets are asked
    before), and a reader whose offsets are asked while it follows keeps a second, non-fetching
    reader for them (as :class:`CompactedTopicIndex` does).
    """

    def __init__(
        self,
        bootstrap: KafkaAccess | str,
        topic: str,
        *,
        start_offsets: dict[int, int] | None = None,
        client_id: str = "stopsms-reader",
        max_records: int = 2000,
        only_partitions: Sequence[int] | None = None,
        start_time_ms: int | None = None,
        fetching: bool = True,
        batch_window_s: float = 0.0,
    ) -> None:
        self.topic = topic
        self._window = BatchWindow(batch_window_s, max_records)
        self._kafka = KafkaAccess.of(bootstrap)
        self._start_offsets = start_offsets or {}
        self._start_time_ms = start_time_ms
        self._fetching = fetching
        self._only = set(only_partitions) if only_partitions is not None else None
        self._consumer = AIOKafkaConsumer(
            **self._kafka.client_options(),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            client_id=client_id,
            max_poll_records=max_records,
            fetch_max_wait_ms=READER_FETCH_WAIT_MS,
            consumer_timeout_ms=int(FETCHER_WAKE_S * 1000),
            isolation_level="read_uncommitted",
        )
        self.partitions: list[TopicPartition] = []
        self._resumed = False
        self._stopped = False

    async def _partition_ids(self, wait_seconds: float) -> set[int]:
        """The topic's partitions; a topic created a moment ago may take a while to appear."""
        known = self._consumer.partitions_for_topic(self.topic)  # the metadata of the start
        if known:
            return set(known)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_seconds
        admin = AIOKafkaAdminClient(**self._kafka.client_options(), client_id="stopsms-reader")
        await admin.start()
        try:
            while True:
                ids = set()
                for description in await admin.describe_topics([self.topic]):
                    if description.get("error_code", 0) == 0:
                        ids |= {p["partition"] for p in description.get("partitions", [])}
                if ids or loop.time() > deadline:
                    return ids
                await asyncio.sleep(0.2)
        finally:
            await admin.close()

    async def start(self, wait_seconds: float = 10.0) -> None:
        """Connect, assign every partition and seek to the start offsets (or the beginning)."""
        await self._consumer.start()
        ids = await self._partition_ids(wait_seconds)
        if not ids:
            await self._consumer.stop()
            raise RuntimeError(f"topic {self.topic} does not exist")
        if self._only is not None:
            ids &= self._only
        self.partitions = [TopicPartition(self.topic, p) for p in sorted(ids)]
        self._consumer.assign(self.partitions)
        # Paused until the first read: a reset (seek to the beginning or the end) waits behind
        # a fetch in flight on the same connection, and so would the caller's first offsets.
        self._consumer.pause(*self.partitions)
        by_time: dict[TopicPartition, Any] = {}
        if self._start_time_ms is not None:
            by_time = await self._consumer.offsets_for_times(
                {tp: self._start_time_ms for tp in self.partitions}
            )
        to_beginning, to_end = [], []
        for tp in self.partitions:
            if tp.partition in self._start_offsets:
                self._consumer.seek(tp, self._start_offsets[tp.partition])
            elif tp in by_time:  # the first record at or after the time, else the end
                found = by_time[tp]
                if found is None:
                    to_end.append(tp)
                else:
                    self._consumer.seek(tp, found.offset)
            else:
                to_beginning.append(tp)
        if to_beginning:
            await self._consumer.seek_to_beginning(*to_beginning)
        if to_end:
            await self._consumer.seek_to_end(*to_end)

    def _resume(self) -> None:
        """Start fetching in the background (at the first read)."""
        if not self._resumed and self._fetching:
            self._consumer.resume(*self.partitions)
            self._resumed = True

    async def stop(self) -> None:
        """Disconnect. A read waiting for its batch window then returns no records."""
        self._stopped = True
        await self._consumer.stop()

    async def _ready_to_read(self) -> bool:
        """Fetch from now on, let the batch window pass; False if stopped meanwhile."""
        self._resume()
        await self._window.gather()
        return not self._stopped  # stopped while the window passed: the owner is stopping too

    async def read(self, timeout_ms: int = 200) -> list[Record]:
        """Return the next records (possibly none), in offset order within each partition."""
        if not await self._ready_to_read():
            return []
        return self._window.handed(records_of(await self._consumer.getmany(timeout_ms=timeout_ms)))

    async def read_grouped(self, timeout_ms: int = 200) -> Mapping[int, Sequence[Any]]:
        """Like :meth:`read`, by partition, and the consumer's own records, not copied.

        They have ``offset``, ``key`` and ``value``; the materialiser reads them.
        """
        if not await self._ready_to_read():
            return {}
        batches = await self._consumer.getmany(timeout_ms=timeout_ms)
        self._window.took(sum(map(len, batches.values())))
        return {tp.partition: messages for tp, messages in batches.items()}

    async def read_to_end(self, timeout_ms: int = 500) -> AsyncIterator[list[Record]]:
        """Batches of records up to the end of every partition as it is at the call."""
        ends = await self.end_offsets()
        while any(pos < ends.get(p, 0) for p, pos in (await self.positions()).items()):
            records = await self.read(timeout_ms=timeout_ms)
            if records:
                yield records

    async def positions(self) -> dict[int, int]:
        """The next offset to read, per partition."""
        return {tp.partition: await self._consumer.position(tp) for tp in self.partitions}

    async def end_offsets(self) -> dict[int, int]:
        """The current end offset of every partition."""
        ends = await self._consumer.end_offsets(self.partitions)
        return {tp.partition: offset for tp, offset in ends.items()}


#: Bytes a rebuild's fetch asks of each partition, and of a whole response: about 20,000
#: suppression records, so that one write to the view holds Redis for tens of milliseconds.
BATCH_READER_PARTITION_BYTES = 1024 * 1024
BATCH_READER_MAX_BYTES = 2 * 1024 * 1024


class RecordBatchReader:
    """Reads partitions from their record batches, without a consumer: a rebuild's reader.

    aiokafka's consumer makes a ``ConsumerRecord`` of every record, about 1.3 µs each: a
    quarter of a rebuild worker's time at fifty million records. This reader fetches the
    partitions from their leaders itself and hands the batches' own records (``offset``,
    ``key``, ``value``, parsed in C; about 0.4 µs each), by partition, CRCs checked. One
    fetch is in flight while the caller works on the previous one.

    Only what a rebuild needs: fixed partitions from given offsets (raised to a partition's
    first offset if retention removed the start), no group, records read uncommitted as
    :class:`TopicReader` reads them; control batches are skipped.
    """

    def __init__(
        self,
        kafka: KafkaAccess | str,
        topic: str,
        start_offsets: Mapping[int, int],
        *,
        client_id: str = "stopsms-rebuild",
        fetch_wait_ms: int = 500,
    ) -> None:
        self.topic = topic
        self._kafka = KafkaAccess.of(kafka)
        self._positions = dict(start_offsets)
        self._client_id = client_id
        self._wait_ms = fetch_wait_ms
        self._client: AIOKafkaClient | None = None
        self._leaders: dict[int, int] = {}
        self._leaders_stale = False
        self._in_flight: asyncio.Future[list[tuple[int, int, bytes]]] | None = None

    async def start(self, wait_seconds: float = 10.0) -> None:
        """Connect, find each partition's first offset and leader."""
        first = await self._first_offsets()
        for partition, position in self._positions.items():
            self._positions[partition] = max(position, first.get(partition, 0))
        self._client = AIOKafkaClient(**self._kafka.client_options(), client_id=self._client_id)
        await self._client.bootstrap()
        self._client.add_topic(self.topic)
        await self._find_leaders(wait_seconds)

    async def _first_offsets(self) -> dict[int, int]:
        consumer = AIOKafkaConsumer(
            **self._kafka.client_options(), group_id=None, client_id=self._client_id
        )
        await consumer.start()
        try:
            tps = [TopicPartition(self.topic, p) for p in self._positions]
            return {tp.partition: o for tp, o in (await consumer.beginning_offsets(tps)).items()}
        finally:
            await consumer.stop()

    async def _find_leaders(self, wait_seconds: float = 10.0) -> None:
        assert self._client is not None
        deadline = asyncio.get_running_loop().time() + wait_seconds
        while True:
            await self._client.force_metadata_update()
            cluster = self._client.cluster
            leaders = {
                p: cluster.leader_for_partition(TopicPartition(self.topic, p))
                for p in self._positions
            }
            if all(leader is not None and leader >= 0 for leader in leaders.values()):
                self._leaders = {p: int(leader) for p, leader in leaders.items()}
                return
            if asyncio.get_running_loop().time() > deadline:
                missing = sorted(p for p, leader in leaders.items() if leader is None or leader < 0)
                raise RuntimeError(f"no leader for {self.topic} partitions {missing}")
            await asyncio.sleep(0.2)

    async def stop(self) -> None:
        """Drop the fetch in flight and disconnect."""
        if self._in_flight is not None:
            self._in_flight.cancel()
            with contextlib.suppress(asyncio.CancelledError, KafkaError):
                await self._in_flight
            self._in_flight = None
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def positions(self) -> dict[int, int]:
        """The next offset to read, per partition."""
        return dict(self._positions)

    async def read_grouped(self, timeout_ms: int = 200) -> Mapping[int, Sequence[Any]]:
        """The next records by partition (possibly none), in offset order.

        ``timeout_ms`` is unused: a fetch waits up to ``fetch_wait_ms`` at the broker.
        """
        if self._in_flight is None:
            self._in_flight = asyncio.ensure_future(self._fetch())
        try:
            fetched = await self._in_flight
        except KafkaError as exc:
            if not exc.retriable:
                raise
            # A broker away or a leader moving: look the leaders up again, fetch again.
            log.warning("fetching %s: %r; retrying", self.topic, exc)
            fetched, self._leaders_stale = [], True
        groups = self._unpack(fetched)
        self._in_flight = asyncio.ensure_future(self._fetch())  # while the caller works
        return groups

    async def _fetch(self) -> list[tuple[int, int, bytes]]:
        """(partition, error code, record bytes) from every leader, one request each."""
        assert self._client is not None
        if self._leaders_stale:  # a partition's leader moved: look them up again
            self._leaders_stale = False
            await asyncio.sleep(0.1)
            await self._find_leaders()
        by_leader: dict[int, list[tuple[int, int, int]]] = {}
        for partition, position in self._positions.items():
            by_leader.setdefault(self._leaders[partition], []).append(
                (partition, position, BATCH_READER_PARTITION_BYTES)
            )
        requests = [
            self._client.send(
                leader,
                FetchRequest(
                    self._wait_ms,
                    1,
                    BATCH_READER_MAX_BYTES,
                    0,  # read uncommitted, as TopicReader
                    [(self.topic, partitions)],
                ),
            )
            for leader, partitions in by_leader.items()
        ]
        fetched: list[tuple[int, int, bytes]] = []
        for response in await asyncio.gather(*requests):
            for _topic, partitions in response.topics:
                for partition, error_code, _highwater, *rest in partitions:
                    fetched.append((partition, error_code, rest[-1]))
        return fetched

    def _unpack(self, fetched: list[tuple[int, int, bytes]]) -> dict[int, list[Any]]:
        """The records of each partition's batches from its position; positions move on."""
        groups: dict[int, list[Any]] = {}
        leaders_moved = False
        for partition, error_code, raw in fetched:
            error = kafka_errors.for_code(error_code)
            if error is not kafka_errors.NoError:
                if error.retriable:  # a leader moved, a broker is busy: fetched again
                    leaders_moved = True
                    continue
                raise error(f"fetching {self.topic}[{partition}] at {self._positions[partition]}")
            position = self._positions[partition]
            records: list[Any] = []
            batches = MemoryRecords(raw)
            while batches.has_next():
                batch = batches.next_batch()
                if batch is None:
                    break  # a partial batch at the end of the response: fetched again next time
                if not batch.validate_crc():
                    raise kafka_errors.CorruptRecordException(
                        f"invalid CRC in {self.topic}[{partition}] at {position}"
                    )
                if not batch.is_control_batch:
                    if records or batch.base_offset >= position:
                        records.extend(batch)
                    else:  # the first batch may begin before the position asked
                        records.extend(r for r in batch if r.offset >= position)
                position = batch.next_offset
            self._positions[partition] = position
            if records:
                groups[partition] = records
        self._leaders_stale = self._leaders_stale or leaders_moved
        return groups


async def follow_topic(
    bootstrap: KafkaAccess | str,
    topic: str,
    on_batch: Callable[[list[Record]], None],
    *,
    done: Callable[[], bool] = lambda: True,
    deadline: float | None = None,
    client_id: str = "stopsms-reader",
) -> None:
    """Read ``topic`` from the start to its end, handing each batch to ``on_batch``.

    Then, while ``done()`` is false and the monotonic ``deadline`` has not passed, read what
    has arrived since, every half second: a check that waits for late work.
    """
    reader = TopicReader(bootstrap, topic, client_id=client_id, max_records=10_000)
    await reader.start()
    try:
        while True:
            async for batch in reader.read_to_end():
                on_batch(batch)
            if done() or deadline is None or time.monotonic() > deadline:
                return
            await asyncio.sleep(0.5)
    finally:
        await reader.stop()


async def read_topic(
    bootstrap: KafkaAccess | str, topic: str, client_id: str = "stopsms-reader"
) -> list[Record]:
    """Every record of ``topic`` up to its end now."""
    records: list[Record] = []
    await follow_topic(bootstrap, topic, records.extend, client_id=client_id)
    return records


class RangeReader:
    """Reads one partition between two offsets: the records a party's new commit covers."""

    def __init__(self, bootstrap: KafkaAccess | str, topic: str) -> None:
        self.topic = topic
        self._kafka = KafkaAccess.of(bootstrap)
        self._consumer: AIOKafkaConsumer = None  # type: ignore[assignment]  # made in start()

    async def start(self) -> None:
        """Connect (aiokafka clients must be made inside the running loop)."""
        self._consumer = AIOKafkaConsumer(
            **self._kafka.client_options(),
            group_id=None,
            enable_auto_commit=False,
            client_id="stopsms-range",
            fetch_max_wait_ms=10,
        )
        await self._consumer.start()

    async def stop(self) -> None:
        """Disconnect."""
        await self._consumer.stop()

    async def read(
        self, partition: int, start: int, end: int, timeout: float = 10.0
    ) -> list[Record]:
        """Every record with ``start <= offset < end`` (a compacted topic may have gaps)."""
        tp = TopicPartition(self.topic, partition)
        self._consumer.assign([tp])
        self._consumer.seek(tp, start)
        try:
            return await self._read_range(tp, start, end, timeout)
        finally:  # between reads it fetches nothing (an idle assigned consumer polls the broker)
            self._consumer.pause(tp)

    async def _read_range(
        self, tp: TopicPartition, start: int, end: int, timeout: float
    ) -> list[Record]:
        partition = tp.partition
        out: list[Record] = []
        deadline = asyncio.get_running_loop().time() + timeout
        while await self._consumer.position(tp) < end:
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"reading {self.topic}[{partition}] {start}..{end} timed out")
            batches = await self._consumer.getmany(tp, timeout_ms=200)
            for m in batches.get(tp, []):
                if m.offset >= end:
                    break
                out.append(
                    Record(
                        tp.topic,
                        partition,
                        m.offset,
                        m.key,
                        m.value,
                        m.timestamp,
                        tuple(m.headers or ()),
                    )
                )
        return out


class ConsumerGroups(Protocol):
    """Reading and committing consumer groups' offsets without joining them."""

    async def committed(self, group: str, topic: str, timeout: float = 10.0) -> dict[int, int]:
        """The group's committed offsets on ``topic`` (partition -> next offset)."""
        ...

    async def commit(
        self, group: str, topic: str, offsets: dict[int, int], timeout: float = 10.0
    ) -> None:
        """Commit offsets for ``group`` (a group with no members)."""
        ...


class GroupOffsets(mode.Service):
    """Reads and commits consumer-group offsets: operators' receipts and PSVAs' cursors.

    Commits go to each group's coordinator as plain ``OffsetCommit`` requests, the ones a consumer
    with manual assignment sends (generation -1, no member), over one client for every group. A
    consumer per group would do the same with two connections and a fetch routine that wakes
    five times a second even with its partitions paused: with 50 PSVAs, that was most of an idle
    notifier's CPU.
    """

    def __init__(self, bootstrap: KafkaAccess | str, **kwargs: object) -> None:
        self._kafka = KafkaAccess.of(bootstrap)
        self._admin: AIOKafkaAdminClient = None  # type: ignore[assignment]  # made in on_start()
        self._client: AIOKafkaClient = None  # type: ignore[assignment]  # made in on_start()
        self._coordinators: dict[str, int] = {}
        self._group_locks: dict[str, asyncio.Lock] = {}
        super().__init__(**kwargs)  # type: ignore[arg-type]

    async def on_start(self) -> None:
        """Connect the clients (aiokafka clients are made inside the running loop)."""
        self._admin = AIOKafkaAdminClient(
            **self._kafka.client_options(), client_id="stopsms-offsets"
        )
        await self._admin.start()
        self._client = AIOKafkaClient(**self._kafka.client_options(), client_id="stopsms-offsets")
        await self._client.bootstrap()

    async def on_stop(self) -> None:
        """Close every connection."""
        await self._client.close()
        await self._admin.close()

    async def committed(self, group: str, topic: str, timeout: float = 10.0) -> dict[int, int]:
        """The group's committed offsets on ``topic`` (partition -> next offset).

        Retries while the group's coordinator is being elected (a retriable error a new group
        meets on its first use), up to ``timeout`` seconds.
        """
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            try:
                offsets = await self._admin.list_consumer_group_offsets(group)
                break
            except KafkaError as exc:
                if not exc.retriable or asyncio.get_running_loop().time() > deadline:
                    raise
                await asyncio.sleep(0.2)
        return {
            tp.partition: meta.offset
            for tp, meta in offsets.items()
            if tp.topic == topic and meta.offset >= 0
        }

    async def commit(
        self, group: str, topic: str, offsets: dict[int, int], timeout: float = 10.0
    ) -> None:
        """Commit offsets for ``group`` without joining it.

        The group must have no members (PSVAs' and backfills' groups are only ever committed
        here). Groups commit concurrently; only commits of one group wait for each other.
        Retries while the coordinator moves or loads, up to ``timeout`` seconds; any other
        refusal (an ACL, a group with members) is raised.
        """
        if not offsets:
            return
        request = OffsetCommitRequest(
            group,
            OffsetCommitRequest.DEFAULT_GENERATION_ID,  # the group has no members
            "",
            OffsetCommitRequest.DEFAULT_RETENTION_TIME,
            [(topic, [(partition, offset, "") for partition, offset in sorted(offsets.items())])],
        )
        lock = self._group_locks.setdefault(group, asyncio.Lock())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        async with lock:
            while True:
                try:
                    node = self._coordinators.get(group)
                    if node is None:
                        node = await self._client.coordinator_lookup(CoordinationType.GROUP, group)
                        self._coordinators[group] = node
                    response = await self._client.send(
                        node, request, group=ConnectionGroup.COORDINATION
                    )
                    codes = {code for _, partitions in response.topics for _, code in partitions}
                    failure = next((kafka_errors.for_code(c) for c in codes if c), None)
                    if failure is None:
                        return
                    raise failure()
                except KafkaError as exc:
                    self._coordinators.pop(group, None)
                    if not exc.retriable or loop.time() > deadline:
                        raise
                await asyncio.sleep(0.2)
