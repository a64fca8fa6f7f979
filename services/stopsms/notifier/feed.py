"""One live reader per notifier replica, fanned out to every PSVA stream.

A stream that opened its own Kafka consumer would cost a connection and a fetch loop per PSVA;
hundreds of streams would spend the replica on polling. Instead one reader follows the end of
``stopsms.suppressions.v1`` and hands each batch to every caught-up stream through a bounded
queue. A stream that starts behind (a cursor, an old acknowledgement) first catches up with a
reader of its own, then joins the live feed; the overlap is removed by offsets, so nothing is
missed or repeated. A stream that does not keep up fills its queue: it is dropped from the
feed — the others never wait for it — and catches up on its own again from where it was.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field

import mode

from stopsms.core.kafka import Record, TopicReader
from stopsms.core.kafka_access import KafkaAccess

log = logging.getLogger(__name__)

#: Batches a stream may have waiting before it is considered slow.
QUEUE_BATCHES = 256


@dataclass(eq=False)
class _Subscriber:
    queue: asyncio.Queue[list[Record]] = field(default_factory=lambda: asyncio.Queue(QUEUE_BATCHES))
    overflowed: bool = False


class LiveFeed(mode.Service):
    """Follows the end of the topic and fans it out to subscribed streams."""

    def __init__(self, bootstrap: KafkaAccess | str, topic: str, **kwargs: object) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.positions: dict[int, int] = {}
        self._subscribers: set[_Subscriber] = set()
        self._reader: TopicReader | None = None
        self.slow_streams = 0
        super().__init__(**kwargs)  # type: ignore[arg-type]

    @property
    def streams(self) -> int:
        """Streams currently fed live."""
        return len(self._subscribers)

    async def on_start(self) -> None:
        """Start reading at the current end of every partition."""
        probe = TopicReader(
            self.bootstrap, self.topic, client_id="stopsms-feed-probe", fetching=False
        )
        await probe.start()
        try:
            self.positions = await probe.end_offsets()
        finally:
            await probe.stop()
        self._reader = TopicReader(
            self.bootstrap,
            self.topic,
            start_offsets=dict(self.positions),
            client_id="stopsms-live-feed",
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
        """Hand a batch to every live stream; a stream whose queue is full is dropped."""
        for record in records:
            self.positions[record.partition] = record.offset + 1
        for subscriber in list(self._subscribers):
            try:
                subscriber.queue.put_nowait(records)
            except asyncio.QueueFull:
                subscriber.overflowed = True  # it catches up on its own; nobody waits
                self._subscribers.discard(subscriber)
                self.slow_streams += 1
                log.info("a slow stream left the live feed; it catches up on its own")

    async def follow(
        self, start: dict[int, int], idle_s: float = 0.5
    ) -> AsyncGenerator[list[Record], None]:
        """Records after ``start`` (per partition), in order; an empty batch when idle."""
        positions = dict(start)
        while True:
            subscriber = _Subscriber()
            self._subscribers.add(subscriber)
            try:
                target = dict(self.positions)
                if any(positions.get(p, 0) < o for p, o in target.items()):
                    async for batch in self._catch_up(positions, target, subscriber, idle_s):
                        yield batch
                while not subscriber.overflowed:
                    try:
                        batch = await asyncio.wait_for(subscriber.queue.get(), idle_s)
                    except TimeoutError:
                        yield []
                        continue
                    fresh = [r for r in batch if r.offset >= positions.get(r.partition, 0)]
                    for record in fresh:
                        positions[record.partition] = record.offset + 1
                    if fresh:
                        yield fresh
            finally:
                self._subscribers.discard(subscriber)

    async def _catch_up(
        self,
        positions: dict[int, int],
        target: dict[int, int],
        subscriber: _Subscriber,
        idle_s: float,
    ) -> AsyncGenerator[list[Record], None]:
        reader = TopicReader(
            self.bootstrap, self.topic, start_offsets=dict(positions), client_id="stopsms-catch-up"
        )
        await reader.start()
        # where the reader really starts (a compacted partition may begin after offset 0)
        for partition, at in (await reader.positions()).items():
            positions[partition] = max(positions.get(partition, 0), at)
        try:
            while not subscriber.overflowed and any(
                positions.get(p, 0) < o for p, o in target.items()
            ):
                batch = await reader.read(timeout_ms=int(idle_s * 1000))
                for record in batch:
                    positions[record.partition] = record.offset + 1
                yield batch
        finally:
            await reader.stop()
