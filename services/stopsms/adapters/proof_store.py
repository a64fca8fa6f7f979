"""Done proofs, in Redis: memory holds only the proofs still waiting for a party.

Every request gets a proof of propagation, so after a year the propagation topic holds hundreds
of millions of them; a process that kept each one in memory would grow with history. Instead a
:class:`PropagationIndex` keeps the open proofs (what the notifier's prover and lateness watcher
work on) and a done proof only until this store holds it; an older proof is read here — by the
notifier's ``GetPropagation`` and by the console (a complaint's assessment, the regulator's
timelines and search), which reads the store the notifier fills, as it reads intake's links.

The store is filled only from ``stopsms.propagation.v1``, like intake's link store: the notifier
replicas share the topic's partitions in the consumer group ``stopsms-notifier-proofs`` and each
batch's done proofs are written with the offsets after them, in one script call, so a flushed
store rebuilds itself from the topic. A proof expires from Redis when its record's retention on
the topic ends (``STOPSMS_RETENTION_REQUESTS_DAYS`` after it was done); a tombstone (an erasure)
removes it at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

import mode
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from stopsms.adapters.bus import Bus, CompactedTopicIndex, wait_until_applied
from stopsms.adapters.kafka import Record
from stopsms.adapters.store_fill import WRITE_OFFSETS_LUA, RedisOffsets, StoreFill, StoreFiller
from stopsms.adapters.streams import ProcessedBatch
from stopsms.v1 import events_pb2

#: How often the index learns how far the proof store has applied the topic.
STORE_FOLLOW_S = 1.0
#: A done proof stays in memory at least this long after it was done (then it is stored).
HOLD_DONE_S = 60.0
#: At most this many done proofs are held, whatever the store's lag (about 36 MB): beyond it,
#: the oldest go, and a lookup of one the store has not taken yet waits for the store.
MAX_HELD_DONE = 100_000

log = logging.getLogger(__name__)


class StoreUnavailable(ConnectionError):
    """Redis did not answer (an ``OSError``: the stream layer retries the batch)."""


class ProofStore(Protocol):
    """Done proofs by event id, and the offsets of the topic applied."""

    async def get(self, event_ids: Sequence[str]) -> list[bytes | None]:
        """The stored record of each event id (None: not held)."""

    async def apply(
        self, puts: Sequence[tuple[str, bytes]], deletes: Sequence[str], offsets: dict[int, int]
    ) -> None:
        """Store and remove proofs, and record the offsets after them, together."""

    async def applied_offsets(self) -> dict[int, int]:
        """The next offset to apply, per partition."""

    async def close(self) -> None:
        """Let go of the connection."""


class InMemoryProofStore:
    """A proof store in this process (unit tests)."""

    def __init__(self) -> None:
        self.entries: dict[str, bytes] = {}
        self.offsets: dict[int, int] = {}

    async def get(self, event_ids: Sequence[str]) -> list[bytes | None]:
        """The stored record of each event id (None: not held)."""
        return [self.entries.get(e) for e in event_ids]

    async def apply(
        self, puts: Sequence[tuple[str, bytes]], deletes: Sequence[str], offsets: dict[int, int]
    ) -> None:
        """Store and remove proofs, and record the offsets after them."""
        self.entries.update(puts)
        for event in deletes:
            self.entries.pop(event, None)
        self.offsets.update(offsets)

    async def applied_offsets(self) -> dict[int, int]:
        """The next offset to apply, per partition."""
        return dict(self.offsets)

    async def close(self) -> None:
        """Nothing to close."""


# ARGV: the key prefix, seconds to keep, the number of puts, each put's id and value, each
# delete's id up to the marker "#offsets", then partition/offset pairs for KEYS[1].
_APPLY = (
    """
local prefix, keep, puts = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local i = 4
for _ = 1, puts do
  redis.call('SET', prefix .. ARGV[i], ARGV[i + 1], 'EX', keep)
  i = i + 2
end
while ARGV[i] ~= '#offsets' do
  redis.call('DEL', prefix .. ARGV[i])
  i = i + 1
end
i = i + 1
"""
    + WRITE_OFFSETS_LUA
    + """
return puts
"""
)

#: Proofs written per script call (Redis runs one script at a time: lookups wait behind it).
APPLY_CHUNK = 500


class RedisProofStore(RedisOffsets):
    """Each done proof a Redis string that expires with its record's retention."""

    def __init__(self, client: aioredis.Redis, namespace: str, keep_seconds: int) -> None:
        super().__init__(client, f"{namespace}proofs:#offsets")
        self._prefix = f"{namespace}proofs:"
        self._keep = keep_seconds
        self._apply = client.register_script(_APPLY)

    async def get(self, event_ids: Sequence[str]) -> list[bytes | None]:
        """The stored record of each event id (None: not held), in one round trip."""
        found: list[Any] = await self._redis.mget([self._prefix + e for e in event_ids])
        return list(found)

    async def apply(
        self, puts: Sequence[tuple[str, bytes]], deletes: Sequence[str], offsets: dict[int, int]
    ) -> None:
        """Store and remove proofs, then record the offsets after them (with the last chunk)."""
        for start in range(0, max(len(puts), 1), APPLY_CHUNK):
            chunk = puts[start : start + APPLY_CHUNK]
            last = start + APPLY_CHUNK >= len(puts)
            args: list[Any] = [self._prefix, self._keep, len(chunk)]
            for event, value in chunk:
                args.extend((event, value))
            args.extend(deletes if last else ())
            args.append("#offsets")
            for partition, offset in offsets.items() if last else ():
                args.extend((partition, offset))
            await self._apply(keys=[self._offsets_key], args=args)


class ProofStoreFiller(StoreFiller):
    """Applies the propagation topic to the store: done proofs in, tombstones out."""

    def __init__(self, store: ProofStore) -> None:
        super().__init__(store)
        self.store: ProofStore = store

    async def process(self, records: list[Record]) -> ProcessedBatch:
        """Store a batch's done proofs and the offsets after them; nothing to publish."""
        latest: dict[str, bytes | None] = {}
        offsets: dict[int, int] = {}
        for record in records:
            offsets[record.partition] = record.offset + 1
            if record.key is None:
                continue
            event = record.key.decode()
            if record.value is None:
                latest[event] = None
            elif events_pb2.PropagationRecord.FromString(record.value).done:
                latest[event] = record.value
            # a proof's start is held in memory by every replica until it is done
        puts = [(event, value) for event, value in latest.items() if value is not None]
        deletes = [event for event, value in latest.items() if value is None]
        try:
            await self.store.apply(puts, deletes, offsets)
        except RedisError as exc:  # retried by the stream layer, like a Kafka failure
            raise StoreUnavailable(f"proof store: {exc}") from exc
        return ProcessedBatch(outputs=[])


class PropagationIndex(CompactedTopicIndex[events_pb2.PropagationRecord]):
    """The proofs from ``stopsms.propagation.v1``: the open ones in memory, the done ones stored.

    A done proof stays in memory only until the proof store has applied the topic past it, so
    memory and store together always hold every proof read, and memory holds what is open plus
    a few seconds of done ones, whatever the history. With a ``group``, this index fills the
    store too (the notifier: its replicas share the topic's partitions in the group); without
    one it reads a store others fill (the console reads the notifier's). Without a store, every
    proof stays in memory (tests of a service alone).
    """

    def __init__(
        self,
        bus: Bus,
        topic: str,
        store: ProofStore | None = None,
        *,
        group: str | None = "stopsms-notifier-proofs",
        session_timeout_s: float = 30.0,
        **kwargs: object,
    ) -> None:
        super().__init__(bus, topic, events_pb2.PropagationRecord.FromString, **kwargs)
        #: The filling group's session timeout (the service's ``kafka_session_timeout_seconds``).
        self._session_timeout_s = session_timeout_s
        #: The records not done yet: what the lateness watcher looks at.
        self.open: dict[str, events_pb2.PropagationRecord] = {}
        self.store = store
        self.filler = ProofStoreFiller(store) if store is not None and group else None
        self.group = group or ""
        #: Done proofs held until the store has them: (offset, event id, done at) per partition.
        self._done: dict[int, deque[tuple[int, str, float]]] = {}
        self._stored_offsets: dict[int, int] = {}
        #: Per partition, the offset after the last done proof let go before the store had it
        #: (over :data:`MAX_HELD_DONE`): until the store reaches it, a miss may be one of them.
        self._unstored_until: dict[int, int] = {}

    async def on_start(self) -> None:
        """Read the topic; fill the store (the group's share, or all of it in-process)."""
        await super().on_start()
        if self.filler is not None:
            await self.add_runtime_dependency(
                StoreFill(
                    self._bus,
                    self._topic,
                    self.group,
                    self.filler,
                    session_timeout_s=self._session_timeout_s,
                )
            )

    async def on_shutdown(self) -> None:
        """Close the store once the filler's group stage (a child) has stopped too."""
        if self.store is not None:
            await self.store.close()

    @mode.Service.task
    async def _follow_store(self) -> None:
        """Learn how far the store has applied the topic, and let go of what it holds."""
        while self.store is not None and not self.should_stop:
            await self.sleep(STORE_FOLLOW_S)
            if not any(self._done.values()):
                continue  # idle: nothing to let go of, no reason to ask Redis
            try:
                self._stored_offsets = await self.store.applied_offsets()
            except Exception:  # noqa: BLE001 - Redis away: hold the done proofs meanwhile
                log.warning("proof store unreachable; done proofs stay in memory", exc_info=True)
            self.on_batch()

    def on_value(self, key: str, value: events_pb2.PropagationRecord | None) -> None:
        """Keep the set of records still waiting for some party."""
        if value is None or value.done:
            self.open.pop(key, None)
        else:
            self.open[key] = value

    def on_read(self, key: str, value: events_pb2.PropagationRecord, record: Record) -> None:
        """A done proof read: held until the store has applied its offset."""
        if value.done and self.store is not None:
            held = self._done.setdefault(record.partition, deque())
            held.append((record.offset, key, value.done_time.seconds))

    def on_batch(self) -> None:
        """Forget the done proofs the store holds now and that were done a while ago.

        Held at least :data:`HOLD_DONE_S` after being done, so a change read again soon after
        its proof was done (a restart, a rebalance) finds it in memory; the prover asks the
        store only about changes older than that (:data:`~stopsms.notifier.app.RECHECK_AFTER_S`).
        Reading the topic's history at start, every proof is long done: it goes at once.
        """
        before = time.time() - HOLD_DONE_S
        over = sum(len(held) for held in self._done.values()) - MAX_HELD_DONE
        for partition, held in self._done.items():
            stored = self._stored_offsets.get(partition, 0)
            while held and (over > 0 or (held[0][0] < stored and held[0][2] <= before)):
                offset, key, _ = held.popleft()
                over -= 1
                if offset >= stored:
                    self._unstored_until[partition] = offset + 1
                value = self._values.get(key)
                if value is not None and value.done:
                    del self._values[key]

    def put(self, key: str, value: events_pb2.PropagationRecord) -> None:
        """Hold a record this replica published (and whether it is still open) at once."""
        super().put(key, value)
        self.on_value(key, value)

    def open_records(self) -> list[events_pb2.PropagationRecord]:
        """The records not done yet."""
        return list(self.open.values())

    async def stored(self, keys: Sequence[str]) -> dict[str, events_pb2.PropagationRecord]:
        """The done proofs of ``keys`` the store holds (one round trip)."""
        if not keys or self.store is None:
            return {}
        try:
            values = await self.store.get(keys)
        except RedisError as exc:
            raise StoreUnavailable(f"proof store: {exc}") from exc
        return {
            key: events_pb2.PropagationRecord.FromString(value)
            for key, value in zip(keys, values, strict=True)
            if value is not None
        }

    async def find(
        self,
        key: str,
        wait_seconds: float,
        visible: Callable[[events_pb2.PropagationRecord], bool],
    ) -> events_pb2.PropagationRecord | None:
        """The latest proof of ``key`` in memory or in the store, as :meth:`get` answers."""
        record = self.peek(key) or (await self.stored([key])).get(key)
        if record is not None and visible(record):
            return record
        # Read up to the topic's end at the call, and stored up to what was read (a done proof
        # let go under a burst may not be stored yet): then memory or the store has it.
        loop = asyncio.get_running_loop()
        until = loop.time() + wait_seconds
        await self.caught_up(wait_seconds)
        assert self._reader is not None
        read = await self._reader.positions()
        if self.store is not None:
            await wait_until_applied(self.store, read, max(0.0, until - loop.time()))
        record = self.peek(key) or (await self.stored([key])).get(key)
        return record if record is not None and visible(record) else None

    async def latest(
        self, keys: Iterable[str], wait_seconds: float = 5.0
    ) -> dict[str, events_pb2.PropagationRecord]:
        """The latest proof of each of ``keys`` read so far: in memory, else in the store.

        One round trip for those not in memory; a key with no proof read yet is absent. If done
        proofs were let go before the store had them (:data:`MAX_HELD_DONE`: the store far
        behind), a miss first waits up to ``wait_seconds`` for the store to take them.
        Raises :class:`StoreUnavailable` when the store does not answer, or not by then.
        """
        found: dict[str, events_pb2.PropagationRecord] = {}
        missing: list[str] = []
        for key in dict.fromkeys(keys):
            record = self.peek(key)
            if record is not None:
                found[key] = record
            else:
                missing.append(key)
        found.update(await self.stored(missing))
        if self._unstored_until and any(key not in found for key in missing):
            assert self.store is not None
            waited = dict(self._unstored_until)
            if not await wait_until_applied(self.store, waited, wait_seconds):
                raise StoreUnavailable("proof store: behind the proofs let go of memory")
            for partition, until in waited.items():
                if self._unstored_until.get(partition) == until:
                    del self._unstored_until[partition]
            found.update(await self.stored([key for key in missing if key not in found]))
        return found
