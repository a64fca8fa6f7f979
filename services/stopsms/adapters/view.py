"""The registry's query view in Redis: subject and scope to state, version and since when.

The view is filled only from ``stopsms.suppressions.v1`` (by the registry's materialiser), so
it can always be rebuilt from the topic. Each batch is applied by one Lua script that writes the
entries *and* the applied offsets together, and never moves an entry to an older version: a
replay, or two materialisers, can only bring the view forward.

The byte layout (buckets, fields, values, the scripts) is :mod:`stopsms.domain.viewcodec`'s;
this module is the I/O around it: :class:`RedisSuppressionView` on a real redis-server, and
:class:`InMemorySuppressionView`, the fake with the same never-backwards rule.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import redis.asyncio as aioredis

from stopsms.adapters.redis_pool import connect_redis
from stopsms.domain.topics import GLOBAL_SCOPE
from stopsms.domain.viewcodec import (
    APPLY_BY_BUCKET_SCRIPT,
    APPLY_SCRIPT,
    BUCKET_BYTES,
    DIGEST_FIELD_BYTES,
    ERASED,
    LAYOUT_VERSION,
    LISTPACK_ENTRIES,
    LOCATED_BYTES,
    LOOKUP_SCRIPT,
    SINGLE_BYTES,
    Census,
    CensusCounter,
    ScopeEntry,
    ViewLayout,
    ViewUpdate,
    entry_address,
    entry_hashes,
    pack_update,
    scope_codes,
    unknown_scope,
    unpack_updates,
)


class ViewLost(RuntimeError):
    """The view was flushed (or never built): it must be rebuilt from offset 0."""


class SuppressionView(Protocol):
    """What the registry needs from its view; :class:`RedisSuppressionView` and the fake."""

    layout: ViewLayout

    async def apply(self, updates: Sequence[ViewUpdate], offsets: dict[int, int]) -> None:
        """Apply updates and record the offsets after them, atomically."""
        ...

    async def apply_packed(self, packed: bytes, offsets: dict[int, int]) -> None:
        """Apply packed entries and the offsets after them; :class:`ViewLost` if flushed."""
        ...

    async def apply_by_bucket(self, packed: bytes, offsets: dict[int, int]) -> None:
        """As :meth:`apply_packed`, the entries sorted by bucket (a rebuild's windows)."""
        ...

    async def lookup(
        self, subjects: Sequence[str], sender_id: str
    ) -> tuple[list[tuple[ScopeEntry | None, ScopeEntry | None]], dict[int, int]]:
        """For each subject: (sender entry, global entry); plus the applied offsets."""
        ...

    async def lookup_packed(
        self, located: bytes, sender_id: str
    ) -> tuple[list[tuple[bytes | None, bytes | None]], dict[int, int]]:
        """Packed (sender value, global value) for located subjects, and the offsets."""
        ...

    def located_chunks(self) -> AsyncIterator[bytes]:
        """Every located subject held, some at a time (13 bytes each, joined)."""
        ...

    async def applied_offsets(self) -> dict[int, int]:
        """The next offset to apply, per partition."""
        ...

    async def listpack_warning(self) -> str | None:
        """A warning about the store's configuration, or None."""
        ...

    async def meta(self) -> dict[str, str]:
        """The layout the view was written with (empty: flushed or never written)."""
        ...

    def expected_meta(self) -> dict[str, str]:
        """The layout this process writes."""
        ...

    async def write_meta(self) -> None:
        """Record this process's layout."""
        ...

    async def clear(self) -> None:
        """Remove every entry, offset and the layout record."""
        ...

    async def census(self) -> tuple[Census, dict[int, int]]:
        """Count and checksum of every entry, and the offsets."""
        ...

    async def close(self) -> None:
        """Release the connection."""
        ...


class _BySubject:
    """Apply and look up by subject, in terms of the packed forms each view implements."""

    layout: ViewLayout

    async def apply_packed(self, packed: bytes, offsets: dict[int, int]) -> None:
        raise NotImplementedError

    async def apply_by_bucket(self, packed: bytes, offsets: dict[int, int]) -> None:
        """Entries sorted by bucket, each entry's in the order read: the same view results."""
        await self.apply_packed(packed, offsets)

    async def lookup_packed(
        self, located: bytes, sender_id: str
    ) -> tuple[list[tuple[bytes | None, bytes | None]], dict[int, int]]:
        raise NotImplementedError

    async def apply(self, updates: Sequence[ViewUpdate], offsets: dict[int, int]) -> None:
        """Apply updates (never moving an entry back) and the offsets after them, atomically."""
        located = self.layout.located
        packed = b"".join(
            pack_update(located(u.subject), u.sender_id, u.entry.pack()) for u in updates
        )
        await self.apply_packed(packed, offsets)

    async def lookup(
        self, subjects: Sequence[str], sender_id: str
    ) -> tuple[list[tuple[ScopeEntry | None, ScopeEntry | None]], dict[int, int]]:
        """Both scopes of every subject, and the offsets they are as of, in one step."""
        located = b"".join(self.layout.located(subject) for subject in subjects)
        pairs, offsets = await self.lookup_packed(located, sender_id)
        return [(ScopeEntry.unpack(s), ScopeEntry.unpack(g)) for s, g in pairs], offsets


class RedisSuppressionView(_BySubject):
    """The view on a real redis-server, in the bucketed layout described above."""

    def __init__(
        self, client: aioredis.Redis, namespace: str = "", layout: ViewLayout | None = None
    ) -> None:
        self._redis = client
        self.layout = layout or ViewLayout()
        self._prefix = f"{namespace}view:b:".encode()
        self._senders_key = f"{namespace}view:senders"
        self._offsets_key = f"{namespace}view:offsets"
        self._meta_key = f"{namespace}view:meta"
        self._keys: list[bytes | str] = [self._prefix, self._senders_key, self._offsets_key]
        self._apply = client.register_script(APPLY_SCRIPT)
        self._apply_by_bucket = client.register_script(APPLY_BY_BUCKET_SCRIPT)
        self._lookup = client.register_script(LOOKUP_SCRIPT)

    @classmethod
    def from_url(
        cls, url: str, namespace: str = "", layout: ViewLayout | None = None
    ) -> RedisSuppressionView:
        """Connect lazily to the Redis at ``url``."""
        return cls(connect_redis(url), namespace, layout)

    @property
    def redis(self) -> aioredis.Redis:
        """The client (for health checks and configuration checks)."""
        return self._redis

    async def close(self) -> None:
        """Close the connection pool."""
        await self._redis.aclose()

    async def apply_packed(self, packed: bytes, offsets: dict[int, int]) -> None:
        """Apply entries already packed with :func:`pack_update`, and the offsets after them.

        Raises :class:`ViewLost` when the view's layout record is gone (a flush, an empty
        replica): the entries before these would be missing, so nothing is written.
        """
        await self._run_apply(self._apply, packed, offsets)

    async def apply_by_bucket(self, packed: bytes, offsets: dict[int, int]) -> None:
        """As :meth:`apply_packed`, for entries sorted by bucket (:class:`BucketWindow`).

        A bucket's run of entries is two calls into Redis instead of one per entry.
        """
        await self._run_apply(self._apply_by_bucket, packed, offsets)

    async def _run_apply(self, script: Any, packed: bytes, offsets: dict[int, int]) -> None:
        args: list[bytes | int] = [packed]
        for partition, offset in offsets.items():
            args += [partition, offset]
        if await script(keys=[*self._keys, self._meta_key], args=args) == -1:
            raise ViewLost("the view has no layout record: it was flushed or never built")

    async def lookup_packed(
        self, located: bytes, sender_id: str
    ) -> tuple[list[tuple[bytes | None, bytes | None]], dict[int, int]]:
        """Raw (sender value, global value) for located subjects (13 bytes each, joined).

        The batch path: values stay undecoded, since most are empty.
        """
        reply = await self._lookup(keys=self._keys, args=[sender_id, located])
        values = reply[1:]
        return list(zip(values[::2], values[1::2], strict=True)), _pairs_to_offsets(reply[0])

    async def located_chunks(self) -> AsyncIterator[bytes]:
        """Every located subject the view holds, 512 buckets at a time (13 bytes each, joined).

        A chunk at a time, so that a national view's fifty million subjects (650 MB joined,
        gigabytes as Python objects) are never held at once. Offsets read before the first
        chunk are ones the view held at least everything up to.
        """
        async for chunk in self._per_bucket(None, "hkeys"):
            yield b"".join(
                bucket + stored[:DIGEST_FIELD_BYTES]
                for bucket, fields in chunk
                for stored in fields
            )

    async def applied_offsets(self) -> dict[int, int]:
        """The next offset to apply, per partition."""
        return _decode_offsets(await self._redis.hgetall(self._offsets_key))

    async def listpack_warning(self) -> str | None:
        """A warning when Redis would store buckets as full hash tables, or None.

        Full hash tables take several times the memory. A managed Redis may refuse CONFIG;
        then nothing can be said.
        """
        try:
            config = await self._redis.config_get("hash-max-listpack-entries")
        except Exception:  # noqa: BLE001 - CONFIG disabled: not our call to make
            return None
        configured = int(next(iter(config.values()), 0) or 0)
        if configured >= LISTPACK_ENTRIES:
            return None
        return (
            f"redis hash-max-listpack-entries is {configured}; the view needs {LISTPACK_ENTRIES} "
            "to stay compact (it works, using several times the memory)"
        )

    async def meta(self) -> dict[str, str]:
        """The layout the view was written with (empty for a view never written)."""
        raw: dict[Any, Any] = await self._redis.hgetall(self._meta_key)
        return {k.decode(): v.decode() for k, v in raw.items()}

    def expected_meta(self) -> dict[str, str]:
        """The layout this process writes."""
        return {"layout": LAYOUT_VERSION, "bucket_bits": str(self.layout.bucket_bits)}

    async def write_meta(self) -> None:
        """Record this process's layout (at the start of a rebuild)."""
        await self._redis.hset(self._meta_key, mapping=dict(self.expected_meta()))  # type: ignore[arg-type]

    async def clear(self) -> None:
        """Remove every key of the view (before a rebuild from offset 0).

        The buckets are found by their prefix, whatever layout wrote them (an older layout's
        bucket numbers are shorter, another bucket count names other keys).
        """
        await self._redis.unlink(self._senders_key, self._offsets_key, self._meta_key)
        pattern = _glob_escaped(self._prefix) + b"*"
        batch: list[bytes] = []
        async for key in self._redis.scan_iter(match=pattern, count=10_000):
            batch.append(key)
            if len(batch) >= 10_000:
                await self._redis.unlink(*batch)
                batch = []
        if batch:
            await self._redis.unlink(*batch)

    async def entries(
        self, buckets: range | None = None
    ) -> AsyncIterator[list[tuple[bytes, bytes]]]:
        """Every entry, a chunk of buckets at a time: (located subject, NUL, sender; value).

        The address is the one :class:`~stopsms.domain.viewcodec.ChangeBatch` gives the
        same entry read from the topic, so the two sides compare key by key. ``buckets``
        limits the scan to some buckets (a rebuild's processes share the census).
        """
        by_code = scope_codes(await self._redis.hgetall(self._senders_key))
        async for chunk in self._per_bucket(buckets, "hgetall"):
            yield [
                (entry_address(bucket, stored_field, by_code), value)
                for bucket, fields in chunk
                for stored_field, value in fields.items()
            ]

    async def _per_bucket(
        self, buckets: range | None, read: str
    ) -> AsyncIterator[list[tuple[bytes, Any]]]:
        """(bucket number bytes, its reply to ``read``) of ``buckets`` (else all).

        ``read`` is ``hkeys`` or ``hgetall``; 512 buckets a round trip.
        """
        scanned = buckets if buckets is not None else range(self.layout.buckets)
        for start in range(scanned.start, scanned.stop, 512):
            numbers = [
                b.to_bytes(BUCKET_BYTES, "big")
                for b in range(start, min(start + 512, scanned.stop))
            ]
            async with self._redis.pipeline(transaction=False) as pipe:
                for bucket in numbers:
                    getattr(pipe, read)(self._prefix + bucket)
                replies = await pipe.execute()
            yield list(zip(numbers, replies, strict=True))

    async def census(self, buckets: range | None = None) -> tuple[Census, dict[int, int]]:
        """Count and checksum every entry (of ``buckets``), bucket by bucket; plus the offsets.

        The sum :class:`CensusCounter` makes of :meth:`entries`, computed without building
        the entries: it is most of a national rebuild's verification (fifty million entries).
        """
        # What follows a stored field's digest in an entry's census bytes (the sender,
        # length-prefixed), by scope code.
        byte = SINGLE_BYTES
        tails = {
            code: byte[len(sender)] + sender
            for code, sender in scope_codes(await self._redis.hgetall(self._senders_key)).items()
        }
        tails[b""] = byte[0]
        count, checksum = 0, 0
        async for chunk in self._per_bucket(buckets, "hgetall"):
            entries: list[bytes] = []
            add = entries.append
            for bucket, fields in chunk:
                for stored_field, value in fields.items():
                    code = stored_field[DIGEST_FIELD_BYTES:]
                    tail = tails.get(code)
                    if tail is None:
                        sender = unknown_scope(code)
                        tail = byte[len(sender)] + sender
                    add(
                        bucket + stored_field[:DIGEST_FIELD_BYTES] + tail + byte[len(value)] + value
                    )
            count += len(entries)
            checksum += int(entry_hashes(entries).sum(dtype=np.uint64))
        return Census(count, checksum & 0xFFFFFFFFFFFFFFFF), await self.applied_offsets()


class InMemorySuppressionView(_BySubject):
    """The view's fake: the same interface and rules as :class:`RedisSuppressionView`.

    Entries are addressed as Redis addresses them (the located subject and the sender), values
    kept as the codec packs them, updates never move an entry back, offsets are stored with the
    entries, and a view whose layout record is gone (:meth:`flush`) refuses writes with
    :class:`ViewLost`, so the materialiser and the lookups run on it unchanged in unit tests.
    It starts built and empty.
    """

    def __init__(self, layout: ViewLayout | None = None) -> None:
        self.layout = layout or ViewLayout()
        self._entries: dict[tuple[bytes, str], ScopeEntry] = {}
        self._offsets: dict[int, int] = {}
        self._meta: dict[str, str] = self.expected_meta()

    def entry(self, subject: str, sender_id: str) -> ScopeEntry | None:
        """The entry held for a subject in a scope (empty or ``*`` sender: global)."""
        scope = "" if sender_id == GLOBAL_SCOPE else sender_id
        return self._entries.get((self.layout.located(subject), scope))

    def __len__(self) -> int:
        return len(self._entries)

    async def apply_packed(self, packed: bytes, offsets: dict[int, int]) -> None:
        """As the apply script: entries newer than held (erased ones go), then the offsets."""
        if not self._meta:
            raise ViewLost("the view has no layout record: it was flushed or never built")
        for located, sender_id, value in unpack_updates(packed):
            if value == ERASED:
                self._entries.pop((located, sender_id), None)
                continue
            entry = ScopeEntry.unpack(value)
            assert entry is not None
            held = self._entries.get((located, sender_id))
            if held is None or entry.version > held.version:
                self._entries[(located, sender_id)] = entry
        for partition, offset in offsets.items():
            if offset > self._offsets.get(partition, -1):
                self._offsets[partition] = offset

    async def lookup_packed(
        self, located: bytes, sender_id: str
    ) -> tuple[list[tuple[bytes | None, bytes | None]], dict[int, int]]:
        """Packed (sender value, global value) for located subjects (13 bytes each, joined)."""
        pairs: list[tuple[bytes | None, bytes | None]] = []
        for at in range(0, len(located), LOCATED_BYTES):
            subject = located[at : at + LOCATED_BYTES]
            held = self._entries.get((subject, sender_id)) if sender_id else None
            global_ = self._entries.get((subject, ""))
            pairs.append(
                (
                    held.pack() if held is not None else None,
                    global_.pack() if global_ is not None else None,
                )
            )
        return pairs, dict(self._offsets)

    async def located_chunks(self) -> AsyncIterator[bytes]:
        """Every located subject held, in one chunk."""
        yield b"".join({located for located, _ in self._entries})

    async def applied_offsets(self) -> dict[int, int]:
        """The next offset to apply, per partition."""
        return dict(self._offsets)

    async def listpack_warning(self) -> str | None:
        """Nothing to warn about: no Redis configuration here."""
        return None

    async def meta(self) -> dict[str, str]:
        """The layout record (empty once flushed)."""
        return dict(self._meta)

    def expected_meta(self) -> dict[str, str]:
        """The layout this process writes."""
        return {"layout": LAYOUT_VERSION, "bucket_bits": str(self.layout.bucket_bits)}

    async def write_meta(self) -> None:
        """Record the layout (at the start of a rebuild)."""
        self._meta = self.expected_meta()

    async def clear(self) -> None:
        """Remove everything, the layout record too (before a rebuild from offset 0)."""
        self._entries.clear()
        self._offsets.clear()
        self._meta = {}

    async def flush(self) -> None:
        """Lose everything, as a Redis flush or an empty replacement would."""
        await self.clear()

    async def census(self) -> tuple[Census, dict[int, int]]:
        """Count and checksum every entry, as :meth:`RedisSuppressionView.census` does."""
        counter = CensusCounter()
        counter.add_many(
            [
                pack_update(located, sender, entry.pack())
                for (located, sender), entry in self._entries.items()
            ]
        )
        return counter.census(), dict(self._offsets)

    async def close(self) -> None:
        """Nothing to close."""


def _glob_escaped(literal: bytes) -> bytes:
    """``literal`` matched as itself by a Redis glob pattern (a namespace may hold ``*``)."""
    return b"".join(b"\\" + bytes((c,)) if c in b"*?[]\\" else bytes((c,)) for c in literal)


def _decode_offsets(raw: Mapping[Any, Any]) -> dict[int, int]:
    return {int(p): int(o) for p, o in raw.items()}


def _pairs_to_offsets(flat: Sequence[Any]) -> dict[int, int]:
    return {int(flat[i]): int(flat[i + 1]) for i in range(0, len(flat), 2)}
