"""The live links, in Redis: what a link page needs, about 45 bytes a link, filled from the topic.

At national scale (tens of millions of links a day, each living up to 180 days) no intake replica
can hold every link in memory, so every replica asks one store sized for the *live* links. The
store is filled only from ``stopsms.links.v1`` (by :class:`LinkStoreFiller`, in a consumer group
shared by the intake replicas, each filling the partitions it holds), so it can always be rebuilt
from the topic: its applied offsets are kept in Redis with the entries, in one transaction, and a
replica reading a partition starts from them (a flushed store starts again from the beginning).

A link is kept in a hash *bucket* named by the first :data:`BUCKET_CHARS` characters of its code
(238,328 buckets: 42 links each at ten million, inside a listpack, see
:data:`stopsms.domain.viewcodec.LISTPACK_ENTRIES`); its field is the rest of the code and its
value, packed by :class:`LinkSealer`, holds only what the page needs: when the link expires,
its sender, and its number sealed for the store (8 bytes of synthetic IV and 7 of ciphertext,
instead of the record's 41-byte seal). The subject is derived again from the number on a click.

Expired links stay :data:`EXPIRED_KEPT_DAYS` days, so that the page still names the sender when
it says how to reply STOP; then the daily sweep (:meth:`RedisLinkStore.sweep_round`) removes
them. The topic drops them by age (its retention is longer than any link's life).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import struct
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from hashlib import sha256
from typing import Any, Protocol

import mode
import redis.asyncio as aioredis
from prometheus_client import Counter
from redis.exceptions import RedisError

from stopsms.adapters.bus import Bus, TopicReading, wait_until_applied
from stopsms.adapters.kafka import Record
from stopsms.adapters.store_fill import WRITE_OFFSETS_LUA, RedisOffsets, StoreFill, StoreFiller
from stopsms.adapters.streams import ProcessedBatch
from stopsms.domain.privacy import Key, Pseudonymiser
from stopsms.v1 import events_pb2

log = logging.getLogger(__name__)
CODES_TAKEN = Counter(
    "stopsms_link_codes_taken",
    "Links not stored because their code already held an earlier live link (the first wins).",
)

BUCKET_CHARS = 3
#: How long an expired link still gets its "expired: reply STOP to <sender>" page.
EXPIRED_KEPT_DAYS = 30
#: Links written per script call: Redis runs one script at a time, so this bounds how long a
#: page's lookup can wait behind the filler (500 HSETs: about a quarter of a millisecond).
APPLY_CHUNK = 500
#: Buckets the sweep looks at per round (one Redis script call).
SWEEP_BUCKETS_PER_ROUND = 500
_NUMBER_BYTES = 7  # E.164 has at most 15 digits: 10¹⁵ < 2⁵⁶
_SIV_BYTES = 8
_KEY_TAG_BYTES = 2
_HEADER = struct.Struct(">I2sB")  # expire (s since 1970), data key tag, sender length


class LinkStoreError(ValueError):
    """A stored link that cannot be read (a retired data key, or a value altered in Redis)."""


class StoreUnavailable(ConnectionError):
    """Redis did not answer: the page says to try again; a filler's batch is tried again.

    A :class:`ConnectionError` (an ``OSError``), which the stream layer retries like a Kafka
    failure rather than ending the process.
    """


@dataclass(frozen=True)
class LiveLink:
    """What the link page knows of a link: its code, sender, expiry and number."""

    code: str
    sender_id: str
    expire_seconds: int
    e164: str

    def expired(self, now: float | None = None) -> bool:
        """True once the link's lifetime is over."""
        return self.expire_seconds <= (time.time() if now is None else now)


class _StoreKey:
    """The two keys a data key gives the store, and the tag that names it in a value."""

    def __init__(self, key: Key) -> None:
        self.key_id = key.key_id
        self.tag = hmac.digest(key.secret, b"stopsms/link-store/tag", sha256)[:_KEY_TAG_BYTES]
        self.mac = hmac.digest(key.secret, b"stopsms/link-store/siv", sha256)
        self.stream = hmac.digest(key.secret, b"stopsms/link-store/stream", sha256)


class LinkSealer:
    """Packs a link's page data into a short value, its number sealed, and reads it back.

    The number is sealed deterministically (SIV with HMAC-SHA256 as the PRF): the synthetic IV
    is a MAC of the code, the header and the number, and the number is XORed with a PRF of the
    IV. A value therefore authenticates its code, expiry and sender (a value moved to another
    code, or altered, fails), and the scheme stays safe even if two links ever shared a code.
    Values are sealed under the current data key and read under any key of the ring.
    """

    def __init__(self, current: Key, ring: Sequence[Key]) -> None:
        self._current = _StoreKey(current)
        keys = [_StoreKey(k) for k in ring]
        self._by_tag = {k.tag: k for k in keys}
        if len(self._by_tag) != len(keys):
            raise ValueError("two data keys share a link-store tag; generate a new data key")

    @classmethod
    def of(cls, pseudonymiser: Pseudonymiser) -> LinkSealer:
        """The sealer of a service's data keys (the current one seals)."""
        return cls(pseudonymiser.data_key, pseudonymiser.data_keys)

    def pack(self, code: str, sender_id: str, expire_seconds: int, e164: str) -> bytes:
        """The stored value of a link."""
        key = self._current
        sender = sender_id.encode()
        header = _HEADER.pack(expire_seconds, key.tag, len(sender)) + sender
        number = int(e164.removeprefix("+")).to_bytes(_NUMBER_BYTES, "big")
        siv = hmac.digest(key.mac, code.encode() + header + number, sha256)[:_SIV_BYTES]
        stream = hmac.digest(key.stream, siv, sha256)[:_NUMBER_BYTES]
        return header + siv + bytes(a ^ b for a, b in zip(number, stream, strict=True))

    def unpack(self, code: str, value: bytes) -> LiveLink:
        """The link a stored value holds; :class:`LinkStoreError` when it cannot be read."""
        expire, tag, sender_length = _HEADER.unpack_from(value)
        end = _HEADER.size + sender_length
        key = self._by_tag.get(tag)
        if key is None or len(value) != end + _SIV_BYTES + _NUMBER_BYTES:
            raise LinkStoreError(f"link {code}: sealed under a data key no longer held")
        header, siv, sealed = value[:end], value[end : end + _SIV_BYTES], value[-_NUMBER_BYTES:]
        stream = hmac.digest(key.stream, siv, sha256)[:_NUMBER_BYTES]
        number = bytes(a ^ b for a, b in zip(sealed, stream, strict=True))
        expected = hmac.digest(key.mac, code.encode() + header + number, sha256)[:_SIV_BYTES]
        if not hmac.compare_digest(siv, expected):
            raise LinkStoreError(f"link {code}: stored value does not authenticate")
        return LiveLink(
            code=code,
            sender_id=value[_HEADER.size : end].decode(),
            expire_seconds=expire,
            e164="+" + str(int.from_bytes(number, "big")),
        )


def split_code(code: str) -> tuple[str, str]:
    """The bucket suffix and the field of a code."""
    return code[:BUCKET_CHARS], code[BUCKET_CHARS:]


class LinkStore(Protocol):
    """Where the live links are kept: stored values by code, and the offsets applied."""

    async def values(self, codes: Sequence[str]) -> list[bytes | None]:
        """The stored value of each code (None: not held)."""

    async def apply(
        self, puts: Sequence[tuple[str, bytes]], deletes: Sequence[str], offsets: dict[int, int]
    ) -> int:
        """Store and remove links, and record the offsets after them, together.

        A put whose code already holds a *different* link is not stored (first link wins);
        returns how many there were.
        """

    async def applied_offsets(self) -> dict[int, int]:
        """The next offset to apply, per partition."""

    async def sweep_round(self, before_seconds: int, cursor: int) -> tuple[int, int]:
        """Remove some links expired before ``before_seconds``: (next cursor, 0 = done; removed)."""

    async def claim_sweep(self, day: int) -> bool:
        """True for the one replica that sweeps on ``day`` (days since 1970)."""


async def sweep(store: LinkStore, now: float, pause_s: float = 0.05) -> int:
    """Remove the links expired more than :data:`EXPIRED_KEPT_DAYS` ago; how many."""
    before = int(now) - EXPIRED_KEPT_DAYS * 86_400
    removed, cursor = 0, 0
    while True:
        cursor, count = await store.sweep_round(before, cursor)
        removed += count
        if cursor == 0:
            return removed
        await asyncio.sleep(pause_s)  # a round at a time: lookups go between them


class InMemoryLinkStore:
    """A link store in this process (unit tests)."""

    def __init__(self) -> None:
        self.entries: dict[str, bytes] = {}
        self.offsets: dict[int, int] = {}

    async def values(self, codes: Sequence[str]) -> list[bytes | None]:
        """The stored value of each code (None: not held)."""
        return [self.entries.get(code) for code in codes]

    async def apply(
        self, puts: Sequence[tuple[str, bytes]], deletes: Sequence[str], offsets: dict[int, int]
    ) -> int:
        """Store and remove links (the first link of a code wins), and record the offsets."""
        taken = 0
        for code, value in puts:
            held = self.entries.setdefault(code, value)
            taken += held != value
        for code in deletes:
            self.entries.pop(code, None)
        self.offsets.update(offsets)
        return taken

    async def applied_offsets(self) -> dict[int, int]:
        """The next offset to apply, per partition."""
        return dict(self.offsets)

    async def sweep_round(self, before_seconds: int, cursor: int) -> tuple[int, int]:
        """Remove every link expired before ``before_seconds`` in one round."""
        old = [c for c, v in self.entries.items() if _HEADER.unpack_from(v)[0] < before_seconds]
        for code in old:
            del self.entries[code]
        return 0, len(old)

    async def claim_sweep(self, day: int) -> bool:
        """Always this process's."""
        return True


# Applies a batch in one call (one reply, not one per bucket): ARGV[1] is the bucket prefix,
# ARGV[2] the number of puts, then each put's bucket suffix, field and value, then each
# delete's suffix and field; KEYS[1] is the offsets hash, ARGV's tail its partition/offset pairs
# after the marker "#offsets". A put never replaces a different link of the same code (the
# first link keeps it); returns how many puts met one.
_APPLY = (
    """
local prefix, puts, taken = ARGV[1], tonumber(ARGV[2]), 0
local i = 3
for _ = 1, puts do
  local bucket = prefix .. ARGV[i]
  if redis.call('HSETNX', bucket, ARGV[i + 1], ARGV[i + 2]) == 0
      and redis.call('HGET', bucket, ARGV[i + 1]) ~= ARGV[i + 2] then
    taken = taken + 1
  end
  i = i + 3
end
while ARGV[i] ~= '#offsets' do
  redis.call('HDEL', prefix .. ARGV[i], ARGV[i + 1])
  i = i + 2
end
i = i + 1
"""
    + WRITE_OFFSETS_LUA
    + """
return taken
"""
)

# Removes the fields of the buckets named in KEYS whose expiry (the value's first 4 bytes) is
# before ARGV[1]; returns how many it removed.
_SWEEP = """
local removed = 0
for _, bucket in ipairs(KEYS) do
  local all = redis.call('HGETALL', bucket)
  for i = 1, #all, 2 do
    local v = all[i + 1]
    local b1, b2, b3, b4 = string.byte(v, 1, 4)
    if ((b1 * 256 + b2) * 256 + b3) * 256 + b4 < tonumber(ARGV[1]) then
      redis.call('HDEL', bucket, all[i])
      removed = removed + 1
    end
  end
end
return removed
"""


class RedisLinkStore(RedisOffsets):
    """The live links in Redis hash buckets, with the offsets of the topic applied."""

    def __init__(self, client: aioredis.Redis, namespace: str) -> None:
        super().__init__(client, f"{namespace}links:offsets")
        self._prefix = f"{namespace}links:b:"
        self._sweep_key = f"{namespace}links:sweep"
        self._sweep = client.register_script(_SWEEP)
        self._apply = client.register_script(_APPLY)

    def _bucket(self, code: str) -> tuple[str, str]:
        suffix, field = split_code(code)
        return self._prefix + suffix, field

    async def values(self, codes: Sequence[str]) -> list[bytes | None]:
        """The stored value of each code (None: not held), in one round trip."""
        if len(codes) == 1:
            value: Any = await self._redis.hget(*self._bucket(codes[0]))
            return [value]
        async with self._redis.pipeline(transaction=False) as pipe:
            for code in codes:
                pipe.hget(*self._bucket(code))
            return list(await pipe.execute())

    async def apply(
        self, puts: Sequence[tuple[str, bytes]], deletes: Sequence[str], offsets: dict[int, int]
    ) -> int:
        """Store and remove links, then record the offsets after them; the puts refused.

        A code that holds a different link keeps it (``HSETNX``): the put is refused.

        Each script call holds Redis for at most :data:`APPLY_CHUNK` links (a page's lookup
        waits behind at most that); the offsets go with the last chunk, so a crash in between
        applies the batch again, which writes the same values (not counted as taken codes).
        """
        taken = 0
        for start in range(0, max(len(puts), 1), APPLY_CHUNK):
            chunk = puts[start : start + APPLY_CHUNK]
            last = start + APPLY_CHUNK >= len(puts)
            args: list[Any] = [self._prefix, len(chunk)]
            for code, value in chunk:
                args.extend((code[:BUCKET_CHARS], code[BUCKET_CHARS:], value))
            for code in deletes if last else ():
                args.extend(split_code(code))
            args.append("#offsets")
            for partition, offset in offsets.items() if last else ():
                args.extend((partition, offset))
            taken += int(await self._apply(keys=[self._offsets_key], args=args))
        return taken

    async def sweep_round(self, before_seconds: int, cursor: int) -> tuple[int, int]:
        """Remove links expired before ``before_seconds`` from the next buckets of a scan.

        Returns the next cursor (0: the scan is complete) and how many links were removed.
        """
        cursor, buckets = await self._redis.scan(
            cursor, match=self._prefix + "*", count=SWEEP_BUCKETS_PER_ROUND
        )
        removed = await self._sweep(keys=buckets, args=[before_seconds]) if buckets else 0
        return int(cursor), int(removed)

    async def claim_sweep(self, day: int) -> bool:
        """True for the one replica that sweeps on ``day`` (days since 1970)."""
        return bool(await self._redis.set(f"{self._sweep_key}:{day}", 1, nx=True, ex=2 * 86_400))

    async def memory(self) -> int:
        """Bytes Redis uses for the store's buckets (sampled: a benchmark's figure)."""
        total, cursor = 0, 0
        while True:
            cursor, keys = await self._redis.scan(cursor, match=self._prefix + "*", count=1000)
            async with self._redis.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.memory_usage(key, samples=0)
                total += sum(int(n or 0) for n in await pipe.execute())
            if cursor == 0:
                return total


class LinkStoreFiller(StoreFiller):
    """Applies ``stopsms.links.v1`` to the store: a stream handler with no outputs.

    Each batch's links are unsealed (the topic's seal), packed for the store and written with
    the offsets after them in one transaction; a tombstone (an erased link) removes its entry.
    """

    def __init__(self, store: LinkStore, pseudonymiser: Pseudonymiser) -> None:
        super().__init__(store)
        self.store: LinkStore = store
        self._pseudonymiser = pseudonymiser
        self._sealer = LinkSealer.of(pseudonymiser)
        self.applied = 0

    def entries(self, records: Iterable[Record]) -> tuple[list[tuple[str, bytes]], list[str], int]:
        """The store's puts and deletes for records of the topic, in their order.

        Within the batch, as in the store, the first link of a code wins over a different
        later one; the third value counts those later ones.
        """
        latest: dict[str, bytes | None] = {}
        taken = 0
        for record in records:
            if record.key is None:
                continue
            code = record.key.decode()
            if record.value is None:
                latest[code] = None
                continue
            link = events_pb2.StopLink.FromString(record.value)
            value = self._sealer.pack(
                link.code,
                link.sender_id,
                link.expire_time.seconds,
                self._pseudonymiser.unseal(link.sealed_msisdn),
            )
            first = latest.get(code)
            if first is not None and first != value:
                taken += 1
                continue
            latest[code] = value
        puts = [(code, value) for code, value in latest.items() if value is not None]
        return puts, [code for code, value in latest.items() if value is None], taken

    async def process(self, records: list[Record]) -> ProcessedBatch:
        """Store a batch of links and the offsets after them; nothing to publish."""
        puts, deletes, taken = self.entries(records)
        offsets: dict[int, int] = {}
        for record in records:
            offsets[record.partition] = record.offset + 1
        try:
            taken += await self.store.apply(puts, deletes, offsets)
        except RedisError as exc:
            raise StoreUnavailable(f"link store: {exc}") from exc
        if taken:
            # Codes are random over 62¹¹: at national rates a fresh code meets a live one about
            # once a year. The later link is not stored (its click gets the "not found" page,
            # which says how to reply STOP) rather than act on the earlier link's number.
            CODES_TAKEN.inc(taken)
            log.error("link store: %d links not stored: their codes are earlier live links'",
                      taken)  # fmt: skip
        self.applied += len(records)
        return ProcessedBatch(outputs=[])


#: How long a code not in the store waits for the store to apply the topic to its end. A store
#: that is caught up answers a miss at once; this only bounds the wait while it is behind (a
#: group forming or rebalancing takes a few seconds; CI saw more than 3).
MISS_WAIT_S = 10.0
#: How long a starting replica waits for its share of the links topic before serving anyway.
JOIN_WAIT_S = 30.0
#: How often a replica looks whether today's sweep of expired links is still to do.
SWEEP_CHECK_S = 3600.0


class LinkDirectory(mode.Service):
    """Finds live links by code in the store, and keeps the store filled from the topic.

    Every intake replica runs one; their fillers share the topic's partitions in one consumer
    group (in-process, with an in-memory bus, one filler reads them all). A code not found at
    once is looked up again after the store has applied the topic up to its end as it was at
    the call, so a link issued a moment ago by any replica is found.
    """

    def __init__(
        self,
        bus: Bus,
        topic: str,
        store: LinkStore,
        pseudonymiser: Pseudonymiser,
        *,
        group: str = "stopsms-intake-links",
        fill: bool = True,
        session_timeout_s: float = 30.0,
        **kwargs: Any,
    ) -> None:
        self._bus = bus
        self._topic = topic
        self.store = store
        self.filler = LinkStoreFiller(store, pseudonymiser)
        self._sealer = LinkSealer.of(pseudonymiser)
        self._group = group
        #: False for a reader of the store that intake fills (the console).
        self._fill = fill
        #: The fillers' group session timeout (the service's ``kafka_session_timeout_seconds``).
        self._session_timeout_s = session_timeout_s
        self._ends: TopicReading | None = None
        super().__init__(**kwargs)

    async def on_start(self) -> None:
        """Join the fillers' group (or read the in-memory topic), and open the end-offset reader."""
        if self._fill:
            fill = StoreFill(
                self._bus,
                self._topic,
                self._group,
                self.filler,
                session_timeout_s=self._session_timeout_s,
            )
            await self.add_runtime_dependency(fill)
            # Serve once this replica fills its share: a link issued at once is then stored
            # within the page's wait, not after the group forms.
            if not await fill.joined(JOIN_WAIT_S):
                log.warning("link store: the fillers' group not formed after %.0f s", JOIN_WAIT_S)
        # End offsets on a connection of their own, not behind a long-poll fetch.
        self._ends = self._bus.reader(self._topic, client_id="stopsms-links-ends", fetching=False)
        await self._ends.start()

    async def on_stop(self) -> None:
        """Close the end-offset reader (the filling stops with this service)."""
        if self._ends is not None:
            await self._ends.stop()

    @mode.Service.task
    async def _sweep_daily(self) -> None:
        """Once a day, one replica removes the links expired long enough ago."""
        while self._fill and not self.should_stop:
            day = int(time.time() // 86_400)
            try:
                if await self.store.claim_sweep(day):
                    removed = await sweep(self.store, time.time())
                    log.info("link store: %d links expired over %d days ago removed", removed,
                             EXPIRED_KEPT_DAYS)  # fmt: skip
            except RedisError:
                log.warning("link store unreachable: the sweep waits for the next check",
                            exc_info=True)  # fmt: skip
            await self.sleep(SWEEP_CHECK_S)

    async def get(self, code: str, wait_seconds: float = MISS_WAIT_S) -> LiveLink | None:
        """The live or recently expired link of ``code``, or None."""
        return (await self.get_many([code], wait_seconds)).get(code)

    async def get_many(
        self, codes: Iterable[str], wait_seconds: float = MISS_WAIT_S
    ) -> dict[str, LiveLink]:
        """The links of those codes the store holds, once it has caught up for the others."""
        wanted = list(dict.fromkeys(codes))
        try:
            found = self._read(wanted, await self.store.values(wanted))
            missing = [code for code in wanted if code not in found]
            if missing and await self.caught_up(wait_seconds):
                found.update(self._read(missing, await self.store.values(missing)))
        except RedisError as exc:
            raise StoreUnavailable(f"link store: {exc}") from exc
        return found

    async def caught_up(self, wait_seconds: float = 3.0) -> bool:
        """Wait until the store holds what the topic held at the call (False: timed out)."""
        assert self._ends is not None
        ends = await self._ends.end_offsets()
        try:
            if await wait_until_applied(self.store, ends, wait_seconds):
                return True
        except RedisError:
            log.warning("link store unreachable", exc_info=True)
            return False
        log.warning("link store still behind the topic after %.1fs", wait_seconds)
        return False

    def _read(self, codes: list[str], values: list[bytes | None]) -> dict[str, LiveLink]:
        found = {}
        for code, value in zip(codes, values, strict=True):
            if value is None:
                continue
            try:
                found[code] = self._sealer.unpack(code, value)
            except LinkStoreError:
                log.exception("link %s cannot be read from the store; treated as unknown", code)
        return found
