"""One live reader per notifier replica, fanned out to every PSVA stream.

A stream that opened its own Kafka consumer would cost a connection and a fetch loop per PSVA;
hundreds of streams would spend the replica on polling. Instead one reader follows the end of
``stopsms.suppressions.v1`` and hands each batch to every caught-up stream through a bounded
queue. A stream that starts behind (a cursor, an old acknowledgement) first catches up with a
reader of its own, then joins the live feed; the overlap is removed by offsets, so nothing is
missed or repeated. A stream that does not keep up fills its queue: it is dropped from the
feed — the others never wait for it — and catches up on its own again from where it was.

Each record is decoded once for all streams, and a stream is woken only for a batch that holds
a change it wants (a global one, or one of its senders'): the work grows with the changes
delivered, not with changes × streams. What a stream skipped still moves its position, which
its next cursor or heartbeat carries.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass, field

import mode
from google.protobuf.message import DecodeError

from stopsms.adapters.bus import Bus, TopicReading
from stopsms.adapters.kafka import BATCH_WINDOW_S, Record
from stopsms.domain.topics import is_key_change
from stopsms.v1 import events_pb2, notifier_pb2

log = logging.getLogger(__name__)

#: Batches a stream may have waiting before it is considered slow.
QUEUE_BATCHES = 256

#: Whether a stream wants a change of this sender ("" never reaches it: global changes go to all).
Wants = Callable[[str], bool]


@dataclass(eq=False, slots=True)
class FeedItem:
    """One change of the list, decoded once for every stream that receives it."""

    partition: int
    offset: int
    change: events_pb2.SuppressionChanged
    _outgoing: notifier_pb2.Change | None = None

    def outgoing(
        self, convert: Callable[[events_pb2.SuppressionChanged], notifier_pb2.Change]
    ) -> notifier_pb2.Change:
        """The change as PSVAs receive it, converted (unsealed) once for all streams."""
        if self._outgoing is None:
            self._outgoing = convert(self.change)
        return self._outgoing


@dataclass(frozen=True, slots=True)
class FeedBatch:
    """The changes a stream wants, in order, and the position past the records they stand for.

    ``through`` includes the records the stream does not want: a cursor may cover it once every
    item of the batch is delivered.
    """

    items: Sequence[FeedItem]
    through: dict[int, int]


def decode(records: Sequence[Record]) -> list[FeedItem]:
    """The changes among ``records`` (tombstones and unreadable records carry none)."""
    items = []
    for record in records:
        if not record.value:
            continue
        try:
            change = events_pb2.SuppressionChanged.FromString(record.value)
        except DecodeError:
            log.warning("unreadable change at %s:%s", record.partition, record.offset)
            continue
        if is_key_change(change.subject):
            continue  # for operators, who unseal; a PSVA receives numbers in clear
        items.append(FeedItem(record.partition, record.offset, change))
    return items


def wanted(items: Sequence[FeedItem], wants: Wants) -> list[FeedItem]:
    """The items a stream receives: every global change, and its senders' changes."""
    return [i for i in items if not i.change.sender_id or wants(i.change.sender_id)]


@dataclass(eq=False)
class _Subscriber:
    wants: Wants
    queue: asyncio.Queue[FeedBatch] = field(default_factory=lambda: asyncio.Queue(QUEUE_BATCHES))
    overflowed: bool = False
    #: past the latest batch that held nothing for this stream (used once its queue is empty)
    through: dict[int, int] = field(default_factory=dict)


class LiveFeed(mode.Service):
    """Follows the end of the topic and fans it out to subscribed streams."""

    def __init__(self, bus: Bus, topic: str, **kwargs: object) -> None:
        self.bus = bus
        self.topic = topic
        self.positions: dict[int, int] = {}
        self._subscribers: set[_Subscriber] = set()
        self._reader: TopicReading | None = None
        self.slow_streams = 0
        super().__init__(**kwargs)  # type: ignore[arg-type]

    @property
    def streams(self) -> int:
        """Streams currently fed live."""
        return len(self._subscribers)

    async def on_start(self) -> None:
        """Start reading at the current end of every partition."""
        probe = self.bus.reader(self.topic, client_id="stopsms-feed-probe", fetching=False)
        await probe.start()
        try:
            self.positions = await probe.end_offsets()
        finally:
            await probe.stop()
        self._reader = self.bus.reader(
            self.topic,
            start_offsets=dict(self.positions),
            client_id="stopsms-live-feed",
            batch_window_s=BATCH_WINDOW_S,
        )
        await self._reader.start()

    async def on_stop(self) -> None:
        """Stop reading."""
        if self._reader is not None:
            await self._reader.stop()

    @mode.Service.task
    async def _pump(self) -> None:
        while not self.should_stop:
            assert self._reader is not None
            records = await self._reader.read(timeout_ms=200)
            if not records:
                continue
            self.publish(records)

    def publish(self, records: list[Record]) -> None:
        """Hand a batch to every live stream that wants some of it, decoded once.

        A stream that wants nothing of it is not woken; only its position moves. A stream
        whose queue is full is dropped (it catches up on its own; nobody waits for it).
        """
        for record in records:
            self.positions[record.partition] = record.offset + 1
        items = decode(records)
        through = dict(self.positions)
        for subscriber in list(self._subscribers):
            mine = wanted(items, subscriber.wants)
            if not mine:
                subscriber.through = through
                continue
            try:
                subscriber.queue.put_nowait(FeedBatch(mine, through))
            except asyncio.QueueFull:
                subscriber.overflowed = True
                self._subscribers.discard(subscriber)
                self.slow_streams += 1
                log.info("a slow stream left the live feed; it catches up on its own")

    async def follow(
        self, start: dict[int, int], wants: Wants, idle_s: float = 0.5
    ) -> AsyncGenerator[FeedBatch, None]:
        """What ``wants`` selects after ``start`` (per partition), in order.

        When idle, a batch without items carries the position past what the stream did not want.
        """
        positions = dict(start)
        while True:
            subscriber = _Subscriber(wants)
            self._subscribers.add(subscriber)
            try:
                target = dict(self.positions)
                if any(positions.get(p, 0) < o for p, o in target.items()):
                    async for batch in self._catch_up(positions, target, subscriber, idle_s):
                        yield batch
                while not subscriber.overflowed:
                    try:
                        async with asyncio.timeout(idle_s):  # (wait_for would make a task)
                            batch = await subscriber.queue.get()
                    except TimeoutError:
                        # The queue is empty: everything published to this stream went out.
                        advance(positions, subscriber.through)
                        yield FeedBatch((), dict(positions))
                        continue
                    fresh = [i for i in batch.items if i.offset >= positions.get(i.partition, 0)]
                    advance(positions, batch.through)
                    if fresh:
                        yield FeedBatch(fresh, dict(positions))
            finally:
                self._subscribers.discard(subscriber)

    async def _catch_up(
        self,
        positions: dict[int, int],
        target: dict[int, int],
        subscriber: _Subscriber,
        idle_s: float,
    ) -> AsyncGenerator[FeedBatch, None]:
        reader = self.bus.reader(
            self.topic, start_offsets=dict(positions), client_id="stopsms-catch-up"
        )
        await reader.start()
        # where the reader really starts (a compacted partition may begin after offset 0)
        advance(positions, await reader.positions())
        try:
            while not subscriber.overflowed and any(
                positions.get(p, 0) < o for p, o in target.items()
            ):
                records = await reader.read(timeout_ms=int(idle_s * 1000))
                for record in records:
                    positions[record.partition] = record.offset + 1
                yield FeedBatch(wanted(decode(records), subscriber.wants), dict(positions))
        finally:
            await reader.stop()


def advance(positions: dict[int, int], through: dict[int, int]) -> None:
    """Move ``positions`` forward to ``through`` (never back)."""
    for partition, offset in through.items():
        if offset > positions.get(partition, 0):
            positions[partition] = offset
