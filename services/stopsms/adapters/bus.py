"""The bus: where a service reads a topic from, behind one small interface, with its fake.

A service that follows a whole topic (the registry's view materialiser, the notifier's live
feed) asks its bus for a reader instead of building a Kafka consumer itself, so its composition
root decides what it runs on: :class:`KafkaBus` in production and in the integration tests,
:class:`InMemoryBus` in the unit tests, which drive the same processors in-process, with no
broker and no branch in the production code for them (the way httpx ships ``MockTransport``
beside its transports). :class:`CompactedTopicIndex` (intake's links, the notifier's proofs)
reads its topic through a bus too.

:class:`InMemoryBus` keeps each topic as lists of records per partition, assigns offsets as a
broker does and wakes waiting readers when a record arrives (what services publish is faked by
:class:`~stopsms.adapters.kafka.InMemoryPublisher`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any, Generic, Protocol, TypeVar

import mode

from stopsms.adapters.kafka import (
    BatchWindow,
    Headers,
    PublishFailed,
    Record,
    TopicReader,
    partition_of,
)
from stopsms.adapters.kafka_access import KafkaAccess

log = logging.getLogger(__name__)


class GroupedReading(Protocol):
    """What the view's materialiser and a rebuild's worker read from (records by partition)."""

    async def read_grouped(self, timeout_ms: int = 200) -> Mapping[int, Sequence[Any]]:
        """The next records by partition (possibly none), in offset order within each."""
        ...


class TopicReading(Protocol):
    """What a follower of a whole topic needs from a reader (:class:`TopicReader`'s shape)."""

    topic: str

    async def start(self, wait_seconds: float = 10.0) -> None:
        """Assign every partition and seek to the start offsets (or the beginning)."""
        ...

    async def stop(self) -> None:
        """Stop; a read waiting meanwhile returns no records."""
        ...

    async def read(self, timeout_ms: int = 200) -> list[Record]:
        """The next records (possibly none), in offset order within each partition."""
        ...

    async def read_grouped(self, timeout_ms: int = 200) -> Mapping[int, Sequence[Any]]:
        """Like :meth:`read`, by partition; the records have at least offset, key and value."""
        ...

    def read_to_end(self, timeout_ms: int = 500) -> AsyncIterator[list[Record]]:
        """Batches of records up to the end of every partition as it is at the call."""
        ...

    async def positions(self) -> dict[int, int]:
        """The next offset to read, per partition."""
        ...

    async def end_offsets(self) -> dict[int, int]:
        """The current end offset of every partition."""
        ...


class Bus(Protocol):
    """Where topics are read from."""

    #: Kafka's address for work that leaves this process (a rebuild's worker processes), or
    #: None when the topics live in this process only.
    kafka: KafkaAccess | None

    def reader(
        self,
        topic: str,
        *,
        start_offsets: dict[int, int] | None = None,
        client_id: str = "stopsms-reader",
        max_records: int = 2000,
        only_partitions: Sequence[int] | None = None,
        start_time_ms: int | None = None,
        fetching: bool = True,
        batch_window_s: float = 0.0,
    ) -> TopicReading:
        """A reader of ``topic`` from ``start_offsets`` (else the start).

        It reads every partition, or ``only_partitions``; ``start_time_ms`` starts a partition
        with no start offset at its first record of that time or later (else at its end).
        """
        ...


class KafkaBus:
    """Topics on a Kafka cluster: each reader is a :class:`TopicReader` of its own."""

    def __init__(self, kafka: KafkaAccess | str) -> None:
        self.kafka: KafkaAccess | None = KafkaAccess.of(kafka)

    def reader(
        self,
        topic: str,
        *,
        start_offsets: dict[int, int] | None = None,
        client_id: str = "stopsms-reader",
        max_records: int = 2000,
        only_partitions: Sequence[int] | None = None,
        start_time_ms: int | None = None,
        fetching: bool = True,
        batch_window_s: float = 0.0,
    ) -> TopicReading:
        """A :class:`TopicReader` (see there for how it fetches)."""
        assert self.kafka is not None
        return TopicReader(
            self.kafka,
            topic,
            start_offsets=start_offsets,
            client_id=client_id,
            max_records=max_records,
            only_partitions=only_partitions,
            start_time_ms=start_time_ms,
            fetching=fetching,
            batch_window_s=batch_window_s,
        )


class InMemoryBus:
    """Topics in this process: records per partition, offsets from 0, readers woken on write."""

    kafka: KafkaAccess | None = None

    def __init__(self, partitions: int = 12) -> None:
        self.partitions = partitions
        self._topics: dict[str, list[list[Record]]] = {}
        self._written = asyncio.Event()

    def partitions_of(self, topic: str) -> list[list[Record]]:
        """The partitions of ``topic`` (made empty on first use, as auto-created topics are)."""
        return self._topics.setdefault(topic, [[] for _ in range(self.partitions)])

    def append(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        *,
        partition: int | None = None,
        headers: Headers | None = None,
    ) -> tuple[int, int]:
        """Write one record (``partition`` by default from the key, as Kafka's partitioner)."""
        if partition is None:
            partition = partition_of(key or b"", self.partitions)
        log = self.partitions_of(topic)[partition]
        offset = len(log)
        log.append(
            Record(
                topic,
                partition,
                offset,
                key,
                value,
                int(time.time() * 1000),
                tuple(headers or ()),
            )
        )
        self._written.set()
        return partition, offset

    async def written(self, timeout_s: float) -> None:
        """Wait until a record is written (or the timeout passes)."""
        self._written.clear()
        try:
            await asyncio.wait_for(self._written.wait(), timeout_s)
        except TimeoutError:
            pass

    def reader(
        self,
        topic: str,
        *,
        start_offsets: dict[int, int] | None = None,
        client_id: str = "stopsms-reader",
        max_records: int = 2000,
        only_partitions: Sequence[int] | None = None,
        start_time_ms: int | None = None,
        fetching: bool = True,
        batch_window_s: float = 0.0,
    ) -> TopicReading:
        """An :class:`InMemoryTopicReader` of ``topic``."""
        return InMemoryTopicReader(
            self,
            topic,
            start_offsets or {},
            max_records,
            BatchWindow(batch_window_s, max_records),
            only_partitions,
            start_time_ms,
        )


class InMemoryPublisher:
    """The publisher's fake: keeps what is published per topic; can be told to fail.

    ``records`` holds (key, value, partition) per topic. Given a bus, it also writes every
    record there, so processors reading that bus see what was published, as with Kafka.
    """

    def __init__(self, bus: InMemoryBus | None = None) -> None:
        self.bus = bus
        self.records: dict[str, list[tuple[bytes, bytes | None, int | None]]] = {}
        #: When set, every publish fails as an unreachable broker's would.
        self.failing = False

    async def start(self) -> None:
        """Nothing to connect."""

    async def stop(self) -> None:
        """Nothing to flush."""

    async def publish(
        self,
        topic: str,
        key: bytes,
        value: bytes | None,
        *,
        partition: int | None = None,
        headers: Headers | None = None,
    ) -> tuple[int, int]:
        """Keep the record (and write it to the bus), or raise :class:`PublishFailed`."""
        if self.failing:
            raise PublishFailed("the in-memory broker is down")
        kept = self.records.setdefault(topic, [])
        kept.append((key, value, partition))
        if self.bus is not None:
            return self.bus.append(topic, key, value, partition=partition, headers=headers)
        return partition or 0, len(kept) - 1

    async def publish_many(
        self, topic: str, records: Sequence[tuple[bytes, bytes]], headers: Headers | None = None
    ) -> None:
        """Keep every record, or raise :class:`PublishFailed`."""
        for key, value in records:
            await self.publish(topic, key, value, headers=headers)

    def send(
        self, topic: str, key: bytes, value: bytes | None, *, headers: Headers | None = None
    ) -> asyncio.Future[tuple[int, int]]:
        """Queue one record now, in call order; the future is its acknowledgement."""
        return asyncio.ensure_future(self.publish(topic, key, value, headers=headers))


class InMemoryConsumerGroups:
    """Consumer groups' committed offsets, in memory: :class:`GroupOffsets`' fake."""

    def __init__(self) -> None:
        self._committed: dict[tuple[str, str], dict[int, int]] = {}

    async def committed(self, group: str, topic: str, timeout: float = 10.0) -> dict[int, int]:
        """What ``group`` committed on ``topic``."""
        return dict(self._committed.get((group, topic), {}))

    async def commit(
        self, group: str, topic: str, offsets: dict[int, int], timeout: float = 10.0
    ) -> None:
        """Commit offsets (as Kafka does, a commit may move an offset back)."""
        self._committed.setdefault((group, topic), {}).update(offsets)


class InMemoryTopicReader:
    """Reads an :class:`InMemoryBus` topic as :class:`TopicReader` reads Kafka."""

    def __init__(
        self,
        bus: InMemoryBus,
        topic: str,
        start_offsets: dict[int, int],
        max_records: int,
        window: BatchWindow,
        only_partitions: Sequence[int] | None = None,
        start_time_ms: int | None = None,
    ) -> None:
        self.topic = topic
        self._start_time_ms = start_time_ms
        self._only = set(only_partitions) if only_partitions is not None else None
        self._bus = bus
        self._start = start_offsets
        self._max = max_records
        self._window = window
        self._positions: dict[int, int] = {}
        self._stopped = False

    async def start(self, wait_seconds: float = 10.0) -> None:
        """Position every partition at its start offset (else 0)."""
        logs = self._bus.partitions_of(self.topic)
        self._positions = {
            p: self._start_of(p, log)
            for p, log in enumerate(logs)
            if self._only is None or p in self._only
        }

    def _start_of(self, partition: int, log: list[Record]) -> int:
        if partition in self._start:
            return self._start[partition]
        if self._start_time_ms is None:
            return 0
        later = (r.offset for r in log if r.timestamp_ms >= self._start_time_ms)
        return next(later, len(log))

    async def stop(self) -> None:
        """Stop: reads return nothing from now on."""
        self._stopped = True

    async def read(self, timeout_ms: int = 200) -> list[Record]:
        """The next records, waiting up to ``timeout_ms`` for one when there are none."""
        await self._window.gather()
        if self._stopped:
            return []
        records = self._take()
        if not records:
            await self._bus.written(timeout_ms / 1000)
            records = [] if self._stopped else self._take()
        return self._window.handed(records)

    async def read_grouped(self, timeout_ms: int = 200) -> Mapping[int, Sequence[Any]]:
        """The same records as :meth:`read`, by partition."""
        groups: dict[int, list[Record]] = {}
        for record in await self.read(timeout_ms):
            groups.setdefault(record.partition, []).append(record)
        return groups

    def _take(self) -> list[Record]:
        taken: list[Record] = []
        partitions = self._bus.partitions_of(self.topic)
        for partition, position in self._positions.items():
            log = partitions[partition]
            batch = log[position : position + self._max - len(taken)]
            taken += batch
            self._positions[partition] = position + len(batch)
            if len(taken) >= self._max:
                break
        return taken

    async def read_to_end(self, timeout_ms: int = 500) -> AsyncIterator[list[Record]]:
        """Batches up to the end of every partition as it is at the call."""
        ends = await self.end_offsets()
        while any(pos < ends.get(p, 0) for p, pos in self._positions.items()):
            records = await self.read(timeout_ms=timeout_ms)
            if records:
                yield records

    async def positions(self) -> dict[int, int]:
        """The next offset to read, per partition."""
        return dict(self._positions)

    async def end_offsets(self) -> dict[int, int]:
        """The number of records of every partition read."""
        logs = self._bus.partitions_of(self.topic)
        return {p: len(logs[p]) for p in self._positions}


async def read_up_to(
    reader: TopicReading, ends: Mapping[int, int], progress: asyncio.Condition
) -> None:
    """Return once ``reader`` has read up to ``ends``; ``progress`` is notified after each read."""
    while True:
        positions = await reader.positions()
        if all(positions.get(p, 0) >= end for p, end in ends.items()):
            return
        async with progress:
            await progress.wait()


V = TypeVar("V")


class CompactedTopicIndex(mode.Service, Generic[V]):
    """The latest value of every key of a compacted topic, in memory, kept current.

    ``get`` of an unknown key first waits (briefly) until the index has read up to the topic's
    end as it was at the call, so a value published a moment ago by another replica is found.
    """

    #: An index that need not see each record the moment it lands takes them at most once per
    #: window (as :data:`~stopsms.adapters.kafka.BATCH_WINDOW_S` does): fewer fetches.
    WINDOW_S = 0.0

    def __init__(
        self,
        bus: Bus,
        topic: str,
        parse: Callable[[bytes], V],
        **kwargs: object,
    ) -> None:
        self._bus = bus
        self._topic = topic
        self._parse = parse
        self._values: dict[str, V] = {}
        self._reader: TopicReading | None = None
        self._ends: TopicReading | None = None
        self._progress = asyncio.Condition()
        self._reading = asyncio.Event()
        super().__init__(**kwargs)  # type: ignore[arg-type]

    async def on_start(self) -> None:
        """Read the topic from the beginning."""
        self._reader = self._bus.reader(
            self._topic, client_id="stopsms-index", batch_window_s=self.WINDOW_S
        )
        await self._reader.start()
        # End offsets on a connection of their own: the broker answers a connection's requests
        # in order, so behind the reader's long-poll fetch they would wait for it.
        self._ends = self._bus.reader(self._topic, client_id="stopsms-index-ends", fetching=False)
        await self._ends.start()
        self._reading.set()

    async def on_stop(self) -> None:
        """Close the readers."""
        if self._reader is not None:
            await self._reader.stop()
        if self._ends is not None:
            await self._ends.stop()

    def put(self, key: str, value: V) -> None:
        """Hold a value this replica just published, before the reader sees it come back."""
        self._values[key] = value

    def __len__(self) -> int:
        return len(self._values)

    def peek(self, key: str) -> V | None:
        """The latest value held now, without waiting for the reader to catch up."""
        return self._values.get(key)

    def values(self) -> list[V]:
        """Every latest value held now."""
        return list(self._values.values())

    def on_value(self, key: str, value: V | None) -> None:
        """Called for every record read (None: a tombstone); subclasses keep what they need."""

    def on_batch(self) -> None:
        """Called after each batch of records read; subclasses act once per batch."""

    def on_read(self, key: str, value: V, record: Record) -> None:
        """Called for every value read, with its record (where it was on the topic)."""

    @mode.Service.task
    async def _follow(self) -> None:
        assert self._reader is not None
        while not self.should_stop:
            records = await self._reader.read(timeout_ms=200)
            for record in records:
                if record.key is None:
                    continue
                key = record.key.decode()
                if record.value is None:
                    self._values.pop(key, None)
                    self.on_value(key, None)
                else:
                    try:
                        self._values[key] = value = self._parse(record.value)
                        self.on_value(key, value)
                        self.on_read(key, value, record)
                    except Exception:  # noqa: BLE001 - one bad record must not stop the index
                        log.exception(
                            "unreadable record at %s[%d]@%d",
                            record.topic,
                            record.partition,
                            record.offset,
                        )
            if records:
                self.on_batch()
            async with self._progress:
                self._progress.notify_all()

    async def caught_up(self, wait_seconds: float = 3.0) -> bool:
        """Wait until the index holds what the topic held at the call (False: timed out)."""

        async def reached() -> None:
            await self._reading.wait()
            assert self._reader is not None and self._ends is not None
            await read_up_to(self._reader, await self._ends.end_offsets(), self._progress)

        try:
            await asyncio.wait_for(reached(), wait_seconds)
            return True
        except TimeoutError:
            log.warning("index of %s still behind after %.1fs", self._topic, wait_seconds)
            return False

    async def get(
        self,
        key: str,
        wait_seconds: float = 3.0,
        visible: Callable[[V], bool] = lambda value: True,
    ) -> V | None:
        """The latest value of ``key``, or None once the index has caught up without it.

        A value the caller may not see (``visible`` false) is treated exactly as an absent
        one: the same wait for the index to catch up, the same None, so that neither the
        answer nor its time tells a stranger that the key exists.
        """
        value = self._values.get(key)
        if value is not None and visible(value):
            return value
        await self.caught_up(wait_seconds)
        value = self._values.get(key)
        return value if value is not None and visible(value) else None


class AppliesOffsets(Protocol):
    """A store filled from a topic that records, per partition, the next offset to apply."""

    async def applied_offsets(self) -> dict[int, int]:
        """The next offset to apply, per partition."""
        ...


async def wait_until_applied(
    store: AppliesOffsets, ends: Mapping[int, int], deadline_s: float, poll_s: float = 0.01
) -> bool:
    """Wait until ``store`` has applied its topic up to ``ends`` (False: not by the deadline)."""
    loop = asyncio.get_running_loop()
    until = loop.time() + deadline_s
    while True:
        applied = await store.applied_offsets()
        if all(applied.get(p, 0) >= end for p, end in ends.items()):
            return True
        if loop.time() >= until:
            return False
        await asyncio.sleep(poll_s)
