"""The registry's query view in Redis: subject and scope to state, version and since when.

The view is filled only from ``stopsms.suppressions.v1`` (by the registry's materialiser), so
it can always be rebuilt from the topic. Each batch is applied by one Lua script that writes the
entries *and* the applied offsets together, and never moves an entry to an older version: a
replay, or two materialisers, can only bring the view forward.

Layout: built to hold all of Morocco's ~50 million lines in little memory. One Redis key per
entry costs ~70–140 bytes (key object, dict entry, value object); instead entries are packed
into small hashes that Redis stores as *listpacks* (flat byte arrays, a few bytes of overhead
per field), the classic bucketing trick. ``<ns>`` is the deployment's namespace:

* ``<ns>view:b:<bucket>``: a hash per bucket, ``bucket`` = the first ``bucket_bits`` bits of
  the subject's HMAC digest (2 bytes, big-endian). Field = the next 10 digest bytes (80 bits;
  with the bucket, ~94 bits of a keyed hash, so two of 50 million subjects collide with
  probability ~10⁻¹³), followed by the scope code (nothing for global, a varint for a sender).
  Value = action time in centiseconds (5 bytes) + varint(version << 2 | state).
* ``<ns>view:senders``: sender id → scope code, assigned by the apply script on first sight,
  read by the lookup script in the same server-side step, so a code is never guessed by a
  client. The field ``#next`` holds the last code handed out.
* ``<ns>view:offsets``: partition → next offset to apply, written with the entries.
* ``<ns>view:meta``: the layout version and bucket bits; a view written with another layout is
  cleared and rebuilt rather than misread.

Redis keeps a hash as a listpack only up to ``hash-max-listpack-entries`` fields (default 128);
:data:`LISTPACK_ENTRIES` is what the layout needs, set by the local launcher and the
deployment's Redis config, and checked by the registry at start.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import redis.asyncio as aioredis

from stopsms.core.topics import GLOBAL_SCOPE

LAYOUT_VERSION = "2"
#: Default bucket bits: 2¹⁴ buckets hold ~60 entries each at a million entries and ~3,000 at
#: fifty million, both well inside a listpack.
DEFAULT_BUCKET_BITS = 14
#: Fields a bucket may hold and stay a listpack (Redis' hash-max-listpack-entries).
LISTPACK_ENTRIES = 8192
DIGEST_FIELD_BYTES = 10
#: Action time in centiseconds since 1970 in 5 bytes (good until the year 2318): "since when"
#: to a hundredth of a second; the exact time stays in the record on the topic.
_TIME_BYTES = 5
_NEXT_CODE = "#next"

_LUA_HELPERS = """
local function varint(n)
  local s = ''
  while n >= 128 do
    s = s .. string.char(n % 128 + 128)
    n = math.floor(n / 128)
  end
  return s .. string.char(n)
end
local function version_of(value)
  local x, mul = 0, 1
  for i = 6, #value do
    local b = string.byte(value, i)
    x = x + (b % 128) * mul
    if b < 128 then break end
    mul = mul * 128
  end
  return math.floor(x / 4)
end
"""

# KEYS: bucket prefix, senders, offsets, meta. ARGV[1]: the updates packed into one string (see
# pack_update: one buffer instead of five arguments per entry, which is what makes a rebuild
# fast), then partition/offset pairs.
_APPLY_SCRIPT = (
    _LUA_HELPERS
    + """
local prefix, senders, offsets, meta = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
if redis.call('EXISTS', meta) == 0 then
  return -1  -- the view was flushed or never built: writing into it would hide the loss
end
local codes = {}
local function code_of(sender)
  if sender == '' then return '' end
  local code = codes[sender]
  if code then return code end
  local n = redis.call('HGET', senders, sender)
  if not n then
    n = redis.call('HINCRBY', senders, '#next', 1)
    redis.call('HSET', senders, sender, n)
  end
  code = varint(tonumber(n))
  codes[sender] = code
  return code
end
local packed = ARGV[1]
local written = 0
local i = 1
while i <= #packed do
  local key = prefix .. string.sub(packed, i, i + 1)
  local field = string.sub(packed, i + 2, i + 11)
  local sender_end = i + 12 + string.byte(packed, i + 12)
  field = field .. code_of(string.sub(packed, i + 13, sender_end))
  local value_end = sender_end + 1 + string.byte(packed, sender_end + 1)
  local value = string.sub(packed, sender_end + 2, value_end)
  i = value_end + 1
  local current = redis.call('HGET', key, field)
  if (not current) or version_of(value) > version_of(current) then
    redis.call('HSET', key, field, value)
    written = written + 1
  end
end
for j = 2, #ARGV, 2 do
  local partition, offset = ARGV[j], tonumber(ARGV[j + 1])
  local current = tonumber(redis.call('HGET', offsets, partition) or '-1')
  if offset > current then
    redis.call('HSET', offsets, partition, offset)
  end
end
return written
"""
)


def pack_update(located: bytes, sender_id: str, value: bytes) -> bytes:
    """One entry for the apply script: located subject, sender (length-prefixed), value."""
    sender = sender_id.encode()
    return located + bytes((len(sender),)) + sender + bytes((len(value),)) + value


# KEYS: bucket prefix, senders, offsets. ARGV[1] = sender id, ARGV[2] = located subjects, 12
# bytes each (bucket and digest field) joined into one argument, which costs the client one
# buffer instead of two arguments per number. Returns the offsets (flat), then per subject its
# sender value and its global value.
_LOOKUP_SCRIPT = (
    _LUA_HELPERS
    + """
local prefix, senders, offsets = KEYS[1], KEYS[2], KEYS[3]
local sender, packed = ARGV[1], ARGV[2]
local out = {redis.call('HGETALL', offsets)}
local code = false
if sender ~= '' then
  local n = redis.call('HGET', senders, sender)
  if n then
    code = varint(tonumber(n))
  end
end
for i = 1, #packed, 12 do
  local key = prefix .. string.sub(packed, i, i + 1)
  local field = string.sub(packed, i + 2, i + 11)
  if code then
    local pair = redis.call('HMGET', key, field .. code, field)
    out[#out + 1] = pair[1]
    out[#out + 1] = pair[2]
  else
    out[#out + 1] = false
    out[#out + 1] = redis.call('HGET', key, field)
  end
end
return out
"""
)


class ViewLost(RuntimeError):
    """The view was flushed (or never built): it must be rebuilt from offset 0."""


class SubjectFormatError(ValueError):
    """A subject that is not ``<key id>:<hex digest>`` of at least 12 bytes."""


@dataclass(frozen=True)
class ScopeEntry:
    """The state of one subject in one scope, as the view holds it."""

    state: int
    version: int
    action_time_ms: int

    def pack(self) -> bytes:
        """The compact value stored in a bucket: action time, then version and state."""
        return (max(self.action_time_ms, 0) // 10).to_bytes(_TIME_BYTES, "big") + varint(
            self.version << 2 | self.state
        )

    @classmethod
    def unpack(cls, raw: bytes | None) -> ScopeEntry | None:
        """Parse a stored value (None stays None)."""
        if raw is None:
            return None
        packed, _ = _readvarint(raw, _TIME_BYTES)
        return cls(packed & 3, packed >> 2, int.from_bytes(raw[:_TIME_BYTES], "big") * 10)


@dataclass(frozen=True)
class ViewUpdate:
    """One change to apply: subject, scope (sender id or empty for global) and entry."""

    subject: str
    sender_id: str
    entry: ScopeEntry


@dataclass(frozen=True)
class Census:
    """How many entries a view holds and an order-independent checksum of them."""

    count: int
    checksum: int

    def __str__(self) -> str:
        return f"{self.count} entries, checksum {self.checksum:016x}"


class CensusCounter:
    """Adds up entries into a :class:`Census`; the same sum whoever computes it.

    Each entry contributes a 64-bit BLAKE2b of (subject digest, scope, packed value), summed
    modulo 2⁶⁴: independent of order, so the view scanned bucket by bucket and the records read
    from the topic give the same figure when, and only when, they hold the same entries.
    """

    def __init__(self) -> None:
        self.count = 0
        self.checksum = 0

    def add(self, digest: bytes, sender_id: str, value: bytes) -> None:
        """Count one entry."""
        self.add_many([digest + b"\0" + sender_id.encode() + b"\0" + value])

    def add_many(self, entries: Sequence[bytes]) -> None:
        """Count entries given as digest, NUL, sender, NUL, packed value."""
        blake2b, from_bytes = hashlib.blake2b, int.from_bytes
        total = sum(from_bytes(blake2b(e, digest_size=8).digest(), "big") for e in entries)
        self.count += len(entries)
        self.checksum = (self.checksum + total) & 0xFFFFFFFFFFFFFFFF

    def census(self) -> Census:
        """The figures so far."""
        return Census(self.count, self.checksum)


@dataclass(frozen=True)
class ViewLayout:
    """Where a subject's entries live: bucket key suffix and field prefix."""

    bucket_bits: int = DEFAULT_BUCKET_BITS

    def __post_init__(self) -> None:
        if not 1 <= self.bucket_bits <= 16:
            raise ValueError("bucket_bits must be between 1 and 16")

    @property
    def buckets(self) -> int:
        """How many bucket keys the layout uses."""
        return 1 << self.bucket_bits

    def locate(self, subject: str) -> tuple[bytes, bytes]:
        """The bucket (2 bytes) and digest field of a subject."""
        located = self.located(subject)
        return located[:2], located[2:]

    def located(self, subject: str) -> bytes:
        """Bucket and digest field joined (12 bytes): the view's address of a subject."""
        return self.located_digest(subject_digest(subject))

    def located_digest(self, digest: bytes) -> bytes:
        """The view's address of a subject given by its digest bytes."""
        bucket = (int.from_bytes(digest[:2], "big") >> (16 - self.bucket_bits)).to_bytes(2, "big")
        return bucket + digest[2 : 2 + DIGEST_FIELD_BYTES]


def subject_digest(subject: str) -> bytes:
    """The digest bytes of a subject ``<key id>:<hex>``."""
    _, sep, hex_digest = subject.rpartition(":")
    try:
        digest = bytes.fromhex(hex_digest)
    except ValueError:
        digest = b""
    if not sep or len(digest) < 2 + DIGEST_FIELD_BYTES:
        raise SubjectFormatError(f"not a subject: {subject[:48]!r}")
    return digest


class SuppressionView(Protocol):
    """What the registry needs from its view."""

    async def apply(self, updates: Sequence[ViewUpdate], offsets: dict[int, int]) -> None:
        """Apply updates and record the offsets after them, atomically."""
        ...

    async def lookup(
        self, subjects: Sequence[str], sender_id: str
    ) -> tuple[list[tuple[ScopeEntry | None, ScopeEntry | None]], dict[int, int]]:
        """For each subject: (sender entry, global entry); plus the applied offsets."""
        ...

    async def applied_offsets(self) -> dict[int, int]:
        """The next offset to apply, per partition."""
        ...


class RedisSuppressionView:
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
        self._apply = client.register_script(_APPLY_SCRIPT)
        self._lookup = client.register_script(_LOOKUP_SCRIPT)

    @classmethod
    def from_url(
        cls, url: str, namespace: str = "", layout: ViewLayout | None = None
    ) -> RedisSuppressionView:
        """Connect lazily to the Redis at ``url``."""
        return cls(aioredis.from_url(url), namespace, layout)

    @property
    def redis(self) -> aioredis.Redis:
        """The client (for health checks and configuration checks)."""
        return self._redis

    async def close(self) -> None:
        """Close the connection pool."""
        await self._redis.aclose()

    async def apply(self, updates: Sequence[ViewUpdate], offsets: dict[int, int]) -> None:
        """Apply a batch with one script call (entries and offsets in one atomic step)."""
        located = self.layout.located
        packed = b"".join(
            pack_update(located(u.subject), u.sender_id, u.entry.pack()) for u in updates
        )
        await self.apply_packed(packed, offsets)

    async def apply_packed(self, packed: bytes, offsets: dict[int, int]) -> None:
        """Apply entries already packed with :func:`pack_update`, and the offsets after them.

        Raises :class:`ViewLost` when the view's layout record is gone (a flush, an empty
        replica): the entries before these would be missing, so nothing is written.
        """
        args: list[bytes | int] = [packed]
        for partition, offset in offsets.items():
            args += [partition, offset]
        if await self._apply(keys=[*self._keys, self._meta_key], args=args) == -1:
            raise ViewLost("the view has no layout record: it was flushed or never built")

    async def lookup(
        self, subjects: Sequence[str], sender_id: str
    ) -> tuple[list[tuple[ScopeEntry | None, ScopeEntry | None]], dict[int, int]]:
        """Read both scopes of every subject and the offsets in one server-side step."""
        located = b"".join(self.layout.located(subject) for subject in subjects)
        pairs, offsets = await self.lookup_packed(located, sender_id)
        return [(ScopeEntry.unpack(s), ScopeEntry.unpack(g)) for s, g in pairs], offsets

    async def lookup_packed(
        self, located: bytes, sender_id: str
    ) -> tuple[list[tuple[bytes | None, bytes | None]], dict[int, int]]:
        """Raw (sender value, global value) for located subjects (12 bytes each, joined).

        The batch path: values stay undecoded, since most are empty.
        """
        reply = await self._lookup(keys=self._keys, args=[sender_id, located])
        values = reply[1:]
        return list(zip(values[::2], values[1::2], strict=True)), _pairs_to_offsets(reply[0])

    async def located_subjects(self) -> tuple[bytes, dict[int, int]]:
        """Every located subject the view holds (12 bytes each, joined), and offsets.

        The offsets are read before the scan, so the view held at least everything up to them:
        what the registry's subject filter starts from.
        """
        offsets = await self.applied_offsets()
        found: list[bytes] = []
        buckets = self.layout.buckets
        for start in range(0, buckets, 512):
            async with self._redis.pipeline(transaction=False) as pipe:
                for b in range(start, min(start + 512, buckets)):
                    pipe.hkeys(self._prefix + b.to_bytes(2, "big"))
                replies = await pipe.execute()
            for b, fields in zip(range(start, start + len(replies)), replies, strict=True):
                bucket = b.to_bytes(2, "big")
                found += [bucket + f[:DIGEST_FIELD_BYTES] for f in fields]
        return b"".join(found), offsets

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
        """Remove every key of the view (before a rebuild from offset 0)."""
        keys: list[bytes | str] = [self._senders_key, self._offsets_key, self._meta_key]
        keys += [self._prefix + b.to_bytes(2, "big") for b in range(1 << 16)]
        async with self._redis.pipeline(transaction=False) as pipe:
            for start in range(0, len(keys), 4096):
                pipe.unlink(*keys[start : start + 4096])
            await pipe.execute()

    async def entries(self) -> AsyncIterator[list[tuple[bytes, bytes]]]:
        """Every entry, a chunk of buckets at a time: (located subject, NUL, sender; value).

        The address is the one :class:`~stopsms.registry.materialiser.ChangeBatch` gives the
        same entry read from the topic, so the two sides compare key by key.
        """
        senders: dict[Any, Any] = await self._redis.hgetall(self._senders_key)
        by_code = {
            varint(int(code)): bytes(sender)
            for sender, code in senders.items()
            if sender.decode() != _NEXT_CODE
        }
        buckets = self.layout.buckets
        for start in range(0, buckets, 512):
            async with self._redis.pipeline(transaction=False) as pipe:
                for b in range(start, min(start + 512, buckets)):
                    pipe.hgetall(self._prefix + b.to_bytes(2, "big"))
                replies = await pipe.execute()
            chunk: list[tuple[bytes, bytes]] = []
            for b, fields in zip(range(start, start + len(replies)), replies, strict=True):
                bucket = b.to_bytes(2, "big")
                for field, value in fields.items():
                    code = field[DIGEST_FIELD_BYTES:]
                    sender = by_code.get(code, b"#" + code.hex().encode()) if code else b""
                    chunk.append(
                        (b"".join((bucket, field[:DIGEST_FIELD_BYTES], b"\0", sender)), value)
                    )
            yield chunk

    async def census(self) -> tuple[Census, dict[int, int]]:
        """Count and checksum every entry, scanning bucket by bucket; plus the offsets."""
        counter = CensusCounter()
        async for chunk in self.entries():
            counter.add_many([key + b"\0" + value for key, value in chunk])
        return counter.census(), await self.applied_offsets()


class InMemorySuppressionView:
    """A fake view for unit tests, with the same never-backwards rule."""

    def __init__(self) -> None:
        self.entries: dict[tuple[str, str], ScopeEntry] = {}
        self.offsets: dict[int, int] = {}

    async def apply(self, updates: Sequence[ViewUpdate], offsets: dict[int, int]) -> None:
        """Apply updates whose version is newer than what is held."""
        for u in updates:
            key = (u.subject, u.sender_id or GLOBAL_SCOPE)
            current = self.entries.get(key)
            if current is None or u.entry.version > current.version:
                self.entries[key] = u.entry
        for p, o in offsets.items():
            self.offsets[p] = max(o, self.offsets.get(p, -1))

    async def lookup(
        self, subjects: Sequence[str], sender_id: str
    ) -> tuple[list[tuple[ScopeEntry | None, ScopeEntry | None]], dict[int, int]]:
        """Read both scopes of every subject."""
        return [
            (
                self.entries.get((s, sender_id)) if sender_id else None,
                self.entries.get((s, GLOBAL_SCOPE)),
            )
            for s in subjects
        ], dict(self.offsets)

    async def applied_offsets(self) -> dict[int, int]:
        """The next offset to apply, per partition."""
        return dict(self.offsets)


def varint(n: int) -> bytes:
    """Protobuf-style varint of a non-negative integer."""
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _readvarint(raw: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        b = raw[at]
        value |= (b & 0x7F) << shift
        at += 1
        if b < 0x80:
            return value, at
        shift += 7


def _decode_offsets(raw: Mapping[Any, Any]) -> dict[int, int]:
    return {int(p): int(o) for p, o in raw.items()}


def _pairs_to_offsets(flat: Sequence[Any]) -> dict[int, int]:
    return {int(flat[i]): int(flat[i + 1]) for i in range(0, len(flat), 2)}
