"""Done proofs, in Redis: a notifier's memory holds only the proofs still waiting for a party.

Every request gets a proof of propagation, so after a year the propagation topic holds hundreds
of millions of them; a notifier that kept each one in memory would grow with history. Instead the
:class:`~stopsms.notifier.server.PropagationIndex` keeps the open proofs (what the prover and the
lateness watcher work on) and a done proof only until this store holds it; ``GetPropagation`` of
an older proof reads it here.

The store is filled only from ``stopsms.propagation.v1``, like intake's link store: the notifier
replicas share the topic's partitions in the consumer group ``stopsms-notifier-proofs`` and each
batch's done proofs are written with the offsets after them, in one script call, so a flushed
store rebuilds itself from the topic. A proof expires from Redis when its record's retention on
the topic ends (``STOPSMS_RETENTION_REQUESTS_DAYS`` after it was done); a tombstone (an erasure)
removes it at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from stopsms.adapters.kafka import Record
from stopsms.adapters.store_fill import StoreFiller
from stopsms.adapters.streams import ProcessedBatch
from stopsms.v1 import events_pb2


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
_APPLY = """
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
while i < #ARGV do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  i = i + 2
end
return puts
"""

#: Proofs written per script call (Redis runs one script at a time: lookups wait behind it).
APPLY_CHUNK = 500


class RedisProofStore:
    """Each done proof a Redis string that expires with its record's retention."""

    def __init__(self, client: aioredis.Redis, namespace: str, keep_seconds: int) -> None:
        self._redis = client
        self._prefix = f"{namespace}proofs:"
        self._offsets_key = f"{namespace}proofs:#offsets"
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

    async def applied_offsets(self) -> dict[int, int]:
        """The next offset to apply, per partition (empty for a new or flushed store)."""
        raw: dict[Any, Any] = await self._redis.hgetall(self._offsets_key)
        return {int(p): int(o) for p, o in raw.items()}

    async def close(self) -> None:
        """Close the client (and its pool)."""
        await self._redis.aclose()


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
