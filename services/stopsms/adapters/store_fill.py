"""Redis stores filled from a topic: the link store, the proof store.

A :class:`StoreFiller` is a stream handler whose output is a store that keeps, beside its
entries, the next offset to apply per partition; :class:`StoreFill` runs it as a member of the
service's consumer group (the replicas share the partitions, each read from the store's own
offsets, so a flushed store fills again from the topic), or, with an in-memory bus (tests),
over every partition in this process.
"""

from __future__ import annotations

import asyncio
from typing import Any

import mode
import redis.asyncio as aioredis

from stopsms.adapters.bus import AppliesOffsets, Bus, TopicReading
from stopsms.adapters.kafka import READER_FETCH_WAIT_MS, Record
from stopsms.adapters.streams import GroupProcessor, ProcessedBatch


class StoreFiller:
    """A handler that writes a batch and its offsets into ``store``; nothing to publish."""

    def __init__(self, store: AppliesOffsets) -> None:
        self.store = store

    async def process(self, records: list[Record]) -> ProcessedBatch:
        """Apply a batch to the store (subclasses)."""
        raise NotImplementedError

    async def assigned(self, partitions: set[int]) -> None:
        """Nothing to restore: the store keeps its own offsets."""

    def revoked(self, partitions: set[int]) -> None:
        """Nothing held per partition."""

    async def positions(self, partitions: set[int]) -> dict[int, int]:
        """Where to read each partition from: the store's offsets (a new store: the start)."""
        applied = await self.store.applied_offsets()
        return {p: applied.get(p, 0) for p in partitions}


class StoreFill(mode.Service):
    """Runs a :class:`StoreFiller` over ``topic``: in ``group`` on Kafka, else in-process."""

    def __init__(
        self,
        bus: Bus,
        topic: str,
        group: str,
        filler: StoreFiller,
        *,
        session_timeout_s: float = 30.0,
        **kwargs: Any,
    ) -> None:
        self._bus = bus
        self._topic = topic
        self._group = group
        self.filler = filler
        #: The group's session timeout (``STOPSMS_KAFKA_SESSION_TIMEOUT_SECONDS``): after a
        #: replica's crash, its restart or another replica fills its share only after this.
        self._session_timeout_s = session_timeout_s
        self._reader: TopicReading | None = None
        self._stage: GroupProcessor | None = None
        super().__init__(**kwargs)

    async def on_start(self) -> None:
        """Join the group (a stage of its own), or read the in-memory topic."""
        if self._bus.kafka is not None:
            stage = GroupProcessor(
                self._bus.kafka,
                self._group,
                self._topic,
                self.filler,
                positions=self.filler.positions,
                session_timeout_s=self._session_timeout_s,
                # a lookup waits for the store anyway: idle fetches wait as the readers' do
                fetch_wait_ms=READER_FETCH_WAIT_MS,
            )
            self._stage = stage
            await self.add_runtime_dependency(stage)
        else:
            self._reader = self._bus.reader(
                self._topic, start_offsets=await self.filler.store.applied_offsets()
            )
            await self._reader.start()

    async def joined(self, wait_seconds: float) -> bool:
        """Wait until this member has its partitions (False: not within ``wait_seconds``).

        Until then a record written now would wait for the group to form before it is stored.
        """
        if self._stage is None:
            return True
        try:
            await asyncio.wait_for(self._stage.joined.wait(), wait_seconds)
            return True
        except TimeoutError:
            return False

    async def on_stop(self) -> None:
        """Close the in-process reader (a group's stage stops with this service)."""
        if self._reader is not None:
            await self._reader.stop()

    @mode.Service.task
    async def _fill_in_process(self) -> None:
        """With an in-memory bus: apply every record to the store as it is written."""
        while self._reader is not None and not self.should_stop:
            records = await self._reader.read(timeout_ms=200)
            if records:
                await self.filler.process(records)


#: The end of every store's apply script: ARGV from ``i`` on is partition/offset pairs, written
#: to the offsets hash (KEYS[1]) in the same call as the batch, so a store never holds a batch
#: without the offsets after it.
WRITE_OFFSETS_LUA = """
if i < #ARGV then
  redis.call('HSET', KEYS[1], unpack(ARGV, i, #ARGV))
end
"""


class RedisOffsets:
    """A Redis store's client and its offsets of the topic it is filled from.

    The offsets are a hash, partition → the next offset to apply, written by each batch's
    script call together with the batch, so a flushed store reads its topic again from the
    start.
    """

    def __init__(self, client: aioredis.Redis, offsets_key: str) -> None:
        self._redis = client
        self._offsets_key = offsets_key

    async def applied_offsets(self) -> dict[int, int]:
        """The next offset to apply, per partition (empty for a new or flushed store)."""
        raw: dict[Any, Any] = await self._redis.hgetall(self._offsets_key)
        return {int(p): int(o) for p, o in raw.items()}

    async def close(self) -> None:
        """Close the client (and its pool)."""
        await self._redis.aclose()
