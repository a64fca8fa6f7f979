"""The view's byte layout: one home for how a suppression becomes bytes in Redis and back.

Built to hold all of Morocco's ~50 million lines in little memory. One Redis key per entry costs
~70–140 bytes (key object, dict entry, value object); instead entries are packed into small
hashes that Redis stores as *listpacks* (flat byte arrays, a few bytes of overhead per field),
the classic bucketing trick. ``<ns>`` is the deployment's namespace:

* ``<ns>view:b:<bucket>``: a hash per bucket, ``bucket`` = the first ``bucket_bits`` bits of
  the subject's HMAC digest (3 bytes, big-endian, up to 24 bits). Field = digest bytes 2 to 11
  (80 bits; with the bucket, at least 94 bits of a keyed hash, so two of 50 million subjects
  collide with probability ~10⁻¹³), followed by the scope code (nothing for global, a varint
  for a sender). A write scans its bucket's listpack, so its cost grows with the bucket: keep
  a bucket to a few dozen entries (2¹⁴ buckets up to a few million entries, 2²⁰ at national
  size, ``STOPSMS_VIEW_BUCKET_BITS``).
  Value = action time in centiseconds (5 bytes) + varint(version << 2 | state).
* ``<ns>view:senders``: sender id → scope code, assigned by the apply script on first sight,
  read by the lookup script in the same server-side step, so a code is never guessed by a
  client. The field ``#next`` holds the last code handed out.
* ``<ns>view:offsets``: partition → next offset to apply, written with the entries.

An erasure (a tombstone on the topic, :data:`ERASED`) is an update with an empty value: the
entry is removed, whatever its version. The registry restarts a subject erased in a partition
above every version erased there, so a later opt-out is still newer than anything a reader held.
* ``<ns>view:meta``: the layout version and bucket bits; a view written with another layout is
  cleared and rebuilt rather than misread.

Everything that reads or writes these bytes takes it from here: the Redis adapter
(:mod:`stopsms.adapters.view`, which runs the two Lua scripts below), the materialiser and the
rebuild (:func:`decode_changes`), and the lookups (:func:`locate_digests`). Plain computation,
no I/O. Redis keeps a hash as a listpack only up to ``hash-max-listpack-entries`` fields
(default 128); :data:`LISTPACK_ENTRIES` is what the layout needs.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stopsms.domain.privacy import SUBJECT_DIGEST_BYTES
from stopsms.domain.topics import GLOBAL_SCOPE, SCOPE_SEPARATOR
from stopsms.v1 import events_pb2

LAYOUT_VERSION = "3"
#: Default bucket bits: 2¹⁴ buckets hold ~60 entries each at a million entries. Each write
#: scans its bucket (about 25 ns per entry held, measured), so a national view of fifty million
#: entries takes 20 bits (~48 entries a bucket); at 14 bits its buckets would hold ~3,000 and a
#: rebuild would spend ~40 µs of Redis per entry.
DEFAULT_BUCKET_BITS = 14
#: Bucket bits for a national view (tens of millions of entries): ~48 entries a bucket at fifty
#: million, about 80 MB of per-key overhead in Redis (1.6 bytes an entry).
NATIONAL_BUCKET_BITS = 20
#: The most bucket bits the layout has room for (the bucket is 3 bytes of the address).
MAX_BUCKET_BITS = 24
#: Bytes of a bucket number in a located subject.
BUCKET_BYTES = 3
#: Fields a bucket may hold and stay a listpack (Redis' hash-max-listpack-entries).
LISTPACK_ENTRIES = 8192
DIGEST_FIELD_BYTES = 10
#: Action time in centiseconds since 1970 in 5 bytes (good until the year 2318): "since when"
#: to a hundredth of a second; the exact time stays in the record on the topic.
_TIME_BYTES = 5
NEXT_CODE = "#next"

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
APPLY_SCRIPT = (
    _LUA_HELPERS
    + """
local prefix, senders, offsets, meta = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
if redis.call('EXISTS', meta) == 0 then
  return -1  -- the view was flushed or never built: writing into it would hide the loss
end
-- Locals, not globals: a rebuild runs this loop fifty million times, and each global is a
-- table lookup (together with the cached codes below, 17 % less Redis CPU per entry).
local sub, byte, call = string.sub, string.byte, redis.call
local codes = {[''] = ''}  -- sender -> scope code, for this call; global has none
local function code_of(sender)
  local n = call('HGET', senders, sender)
  if not n then
    n = call('HINCRBY', senders, '#next', 1)
    call('HSET', senders, sender, n)
  end
  local code = varint(tonumber(n))
  codes[sender] = code
  return code
end
local packed = ARGV[1]
local written = 0
local i, size = 1, #packed
while i <= size do
  local key = prefix .. sub(packed, i, i + 2)
  local sender_end = i + 13 + byte(packed, i + 13)
  local sender = sub(packed, i + 14, sender_end)
  local code = codes[sender] or code_of(sender)
  local field = sub(packed, i + 3, i + 12)
  if code ~= '' then
    field = field .. code
  end
  local value_end = sender_end + 1 + byte(packed, sender_end + 1)
  local value = sub(packed, sender_end + 2, value_end)
  i = value_end + 1
  if #value == 0 then
    -- an erasure (a tombstone): the entry goes, whatever its version
    written = written + call('HDEL', key, field)
  elseif call('HSETNX', key, field, value) == 1 then
    -- A new entry is one call (most of a rebuild: a compacted topic holds one record an
    -- entry); a known one is read, and replaced only by a higher version.
    written = written + 1
  elseif version_of(value) > version_of(call('HGET', key, field)) then
    call('HSET', key, field, value)
    written = written + 1
  end
end
for j = 2, #ARGV, 2 do
  local partition, offset = ARGV[j], tonumber(ARGV[j + 1])
  local current = tonumber(call('HGET', offsets, partition) or '-1')
  if offset > current then
    call('HSET', offsets, partition, offset)
  end
end
return written
"""
)

#: Most entries of one bucket the bucket-wise script reads and writes in one call (its
#: arguments are unpacked onto Lua's stack, which holds 8,000): a longer run goes in several.
BUCKET_RUN_MAX = 2000

# The apply script's rules, bucket by bucket: what a rebuild writes (:class:`BucketWindow`).
# KEYS and ARGV as APPLY_SCRIPT's, the entries sorted by bucket, each bucket's in the order
# read. Per entry, APPLY_SCRIPT makes a call into Redis (half of a rebuild's Redis time); here a
# bucket's run of entries costs two: one HMGET of what the bucket holds, one HSET (or HDEL) of
# what the run leaves, worked out in between by the same rules in the same order (an erasure
# removes the entry, an entry not held is added, one held is replaced by a higher version).
APPLY_BY_BUCKET_SCRIPT = (
    _LUA_HELPERS
    + """
local prefix, senders, offsets, meta = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
if redis.call('EXISTS', meta) == 0 then
  return -1
end
local sub, byte, call, unpack = string.sub, string.byte, redis.call, unpack
local run_max = """
    + str(BUCKET_RUN_MAX)
    + """
local codes = {[''] = ''}
local function code_of(sender)
  local n = call('HGET', senders, sender)
  if not n then
    n = call('HINCRBY', senders, '#next', 1)
    call('HSET', senders, sender, n)
  end
  local code = varint(tonumber(n))
  codes[sender] = code
  return code
end
local packed = ARGV[1]
local written = 0
local i, size = 1, #packed
-- Reused from run to run (a table made per run costs as much as a call into Redis).
local fields, values, sets, deletes = {}, {}, {}, {}
while i <= size do
  local bucket = sub(packed, i, i + 2)
  local key = prefix .. bucket
  local n = 0
  repeat
    local sender_end = i + 13 + byte(packed, i + 13)
    local sender = sub(packed, i + 14, sender_end)
    local code = codes[sender] or code_of(sender)
    local field = sub(packed, i + 3, i + 12)
    if code ~= '' then
      field = field .. code
    end
    local value_end = sender_end + 1 + byte(packed, sender_end + 1)
    n = n + 1
    fields[n], values[n] = field, sub(packed, sender_end + 2, value_end)
    i = value_end + 1
  until i > size or n == run_max or sub(packed, i, i + 2) ~= bucket
  local held = call('HMGET', key, unpack(fields, 1, n))
  -- What each field holds after the run's records, in order (a field may come again).
  local now = {}
  for k = 1, n do
    local field, value = fields[k], values[k]
    local current = now[field]
    if current == nil then
      current = held[k]
    end
    if #value == 0 then
      current = false
    elseif not current or version_of(value) > version_of(current) then
      current = value
    end
    now[field] = current
  end
  local set_count, delete_count = 0, 0
  for k = 1, n do
    local field = fields[k]
    local value = now[field]
    if value ~= nil then
      now[field] = nil  -- written once, at its first record (held[k] is what it held)
      if value then
        if value ~= held[k] then
          sets[set_count + 1], sets[set_count + 2] = field, value
          set_count = set_count + 2
        end
      elseif held[k] then
        delete_count = delete_count + 1
        deletes[delete_count] = field
      end
    end
  end
  if set_count > 0 then
    call('HSET', key, unpack(sets, 1, set_count))
    written = written + set_count / 2
  end
  if delete_count > 0 then
    written = written + call('HDEL', key, unpack(deletes, 1, delete_count))
  end
end
for j = 2, #ARGV, 2 do
  local partition, offset = ARGV[j], tonumber(ARGV[j + 1])
  local current = tonumber(call('HGET', offsets, partition) or '-1')
  if offset > current then
    call('HSET', offsets, partition, offset)
  end
end
return written
"""
)


#: The value of an update that removes its entry: an erasure.
ERASED = b""


def pack_update(located: bytes, sender_id: str, value: bytes) -> bytes:
    """One entry for the apply script: located subject, sender (length-prefixed), value.

    ``value`` :data:`ERASED` removes the entry.
    """
    sender = sender_id.encode()
    return located + bytes((len(sender),)) + sender + bytes((len(value),)) + value


def unpack_updates(packed: bytes) -> Iterator[tuple[bytes, str, bytes]]:
    """The entries of a packed update, as the apply script reads them: (located, sender, value).

    The inverse of :func:`pack_update` (a unit test holds them so), for the in-memory view.
    """
    at = 0
    while at < len(packed):
        located = packed[at : at + LOCATED_BYTES]
        sender_end = at + LOCATED_BYTES + 1 + packed[at + LOCATED_BYTES]
        sender = packed[at + LOCATED_BYTES + 1 : sender_end].decode()
        value_end = sender_end + 1 + packed[sender_end]
        yield located, sender, packed[sender_end + 1 : value_end]
        at = value_end


# KEYS: bucket prefix, senders, offsets. ARGV[1] = sender id, ARGV[2] = located subjects, 13
# bytes each (bucket and digest field) joined into one argument, which costs the client one
# buffer instead of two arguments per number. Returns the offsets (flat), then per subject its
# sender value and its global value.
LOOKUP_SCRIPT = (
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
for i = 1, #packed, 13 do
  local key = prefix .. string.sub(packed, i, i + 2)
  local field = string.sub(packed, i + 3, i + 12)
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


#: Constants of :func:`entry_hashes` (SplitMix64's), as numpy scalars so that the arithmetic
#: stays in unsigned 64 bits and wraps.
_MIX_A, _MIX_B, _MIX_SEED = (
    np.uint64(0x9E3779B97F4A7C15),
    np.uint64(0xBF58476D1CE4E5B9),
    np.uint64(0x94D049BB133111EB),
)
_SHIFTS = (np.uint64(29), np.uint64(32), np.uint64(31))


def entry_hashes(entries: Sequence[bytes]) -> np.ndarray:
    """A 64-bit hash of each census entry (:func:`pack_update`'s form), computed in columns.

    A census hashes every entry on both sides of a rebuild: fifty million of them, where a
    BLAKE2b per entry cost about a microsecond of Python and this costs about a tenth. The
    entries are laid side by side, zero-padded to whole 64-bit words; each word is mixed in
    (xor, multiply, xorshift) only while it is within the entry, so an entry's hash does not
    depend on the others beside it, and its length is mixed in first, so padding never
    collides with trailing zero bytes. The census detects divergence, not an adversary: an
    attacker who can write the view needs no collision.
    """
    count = len(entries)
    if not count:
        return np.zeros(0, dtype=np.uint64)
    lengths = np.fromiter(map(len, entries), np.int64, count)
    width = max(8, (int(lengths.max()) + 7) & ~7)
    words = np.array(entries, dtype=f"S{width}").view("<u8").reshape(count, width // 8)
    first, second, third = _SHIFTS
    hashes = (lengths.astype(np.uint64) + _MIX_SEED) * _MIX_A
    for column in range(width // 8):
        mixed = (hashes ^ words[:, column]) * _MIX_B
        mixed ^= mixed >> first
        hashes = mixed if column == 0 else np.where(lengths > 8 * column, mixed, hashes)
    hashes ^= hashes >> second
    hashes *= _MIX_A
    hashes ^= hashes >> third
    return hashes


class CensusCounter:
    """Adds up entries into a :class:`Census`; the same sum whoever computes it.

    Each entry, in :func:`pack_update`'s form (located subject, sender and value, each
    length-prefixed after the first), contributes its :func:`entry_hashes` hash, summed modulo
    2⁶⁴: independent of order, so the view scanned bucket by bucket and the records read from
    the topic give the same figure when, and only when, they hold the same entries.
    """

    def __init__(self) -> None:
        self.count = 0
        self.checksum = 0

    def add(self, located: bytes, sender_id: str, value: bytes) -> None:
        """Count one entry."""
        self.add_many([pack_update(located, sender_id, value)])

    def add_many(self, entries: Sequence[bytes]) -> None:
        """Count entries given in :func:`pack_update`'s form."""
        total = int(entry_hashes(entries).sum(dtype=np.uint64))
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
        if not 1 <= self.bucket_bits <= MAX_BUCKET_BITS:
            raise ValueError(f"bucket_bits must be between 1 and {MAX_BUCKET_BITS}")

    @property
    def buckets(self) -> int:
        """How many bucket keys the layout uses."""
        return 1 << self.bucket_bits

    def locate(self, subject: str) -> tuple[bytes, bytes]:
        """The bucket (3 bytes) and digest field of a subject."""
        located = self.located(subject)
        return located[:BUCKET_BYTES], located[BUCKET_BYTES:]

    def located(self, subject: str) -> bytes:
        """Bucket and digest field joined (13 bytes): the view's address of a subject."""
        return self.located_digest(subject_digest(subject))

    def located_digest(self, digest: bytes) -> bytes:
        """The view's address of a subject given by its digest bytes."""
        top = int.from_bytes(digest[:BUCKET_BYTES], "big")
        bucket = (top >> (8 * BUCKET_BYTES - self.bucket_bits)).to_bytes(BUCKET_BYTES, "big")
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


@dataclass
class ChangeBatch:
    """Suppression records decoded for the view.

    Per entry: ``keys`` (located subject, NUL, sender: the view's address of the entry),
    ``versions``, ``values`` (the packed :class:`ScopeEntry`) and ``entries`` (what the apply
    script takes, see :func:`pack_update`).
    """

    keys: list[bytes] = field(default_factory=list)
    versions: list[int] = field(default_factory=list)
    values: list[bytes] = field(default_factory=list)
    entries: list[bytes] = field(default_factory=list)
    #: The subjects' located digests (bucket + field), for the subject filter.
    located: list[bytes] = field(default_factory=list)
    #: The next offset per partition after these records.
    offsets: dict[int, int] = field(default_factory=dict)

    def packed(self) -> bytes:
        """The entries as the view's apply script takes them."""
        return b"".join(self.entries)

    def __len__(self) -> int:
        return len(self.entries)


#: ``bytes((n,))`` for every byte value, looked up rather than built in the hot loops (the
#: decoding of a rebuild, the view's census).
SINGLE_BYTES = [bytes((n,)) for n in range(256)]
#: Hex digits of a subject the located subject is made of (the bucket bytes and the field).
_LOCATED_HEX = 2 * (2 + DIGEST_FIELD_BYTES)


def decode_changes(records: Sequence[Any], layout: ViewLayout) -> ChangeBatch:
    """Decode suppression records (anything with partition, offset, key and value).

    The records of a partition come in offset order. :func:`decode_partitions` with the
    records grouped by partition, as a reader gives them.
    """
    groups: dict[int, list[Any]] = {}
    for record in records:
        groups.setdefault(record.partition, []).append(record)
    return decode_partitions(groups, layout)


def decode_partitions(groups: Mapping[int, Sequence[Any]], layout: ViewLayout) -> ChangeBatch:
    """Decode suppression records (anything with offset, key and value) for the view.

    ``groups`` holds each partition's records in offset order, as a reader gives them. The
    hot loop of a rebuild (millions of records), hence written out by hand: the result is the
    same as :meth:`ViewLayout.located`, :meth:`ScopeEntry.pack` and :func:`pack_update` (a
    unit test holds them equal).
    """
    batch = ChangeBatch()
    offsets = batch.offsets
    parse = events_pb2.SuppressionChanged.FromString
    shift = 8 * BUCKET_BYTES - layout.bucket_bits
    add_key, add_version, add_value, add_entry, add_located = (
        batch.keys.append,
        batch.versions.append,
        batch.values.append,
        batch.entries.append,
        batch.located.append,
    )
    fromhex, byte = bytes.fromhex, SINGLE_BYTES
    for partition, records in groups.items():
        if records:
            offsets[partition] = records[-1].offset + 1
        for record in records:
            raw = record.value
            if raw is None:
                if record.key is None:
                    continue
                # An erasure: the key names the subject and the scope, and the entry goes.
                subject, _, scope = record.key.decode().partition(SCOPE_SEPARATOR)
                sender = b"" if scope == GLOBAL_SCOPE else scope.encode()
                located = layout.located(subject)
                add_key(located + b"\0" + sender)
                add_version(0)
                add_value(ERASED)
                add_entry(located + byte[len(sender)] + sender + b"\0")
                continue
            change = parse(raw)
            subject = change.subject
            if subject[:1] == "#":
                continue  # the key-change record (domain.topics.is_key_change): not a decision
            start = subject.index(":") + 1
            digest = fromhex(subject[start : start + _LOCATED_HEX])
            if len(digest) != 2 + DIGEST_FIELD_BYTES:
                raise SubjectFormatError(f"not a subject: {subject[:48]!r}")
            bucket = (digest[0] << 16 | digest[1] << 8 | digest[2]) >> shift
            located = bucket.to_bytes(BUCKET_BYTES, "big") + digest[2:]
            sender = change.sender_id.encode()
            at = change.action_time
            version = change.version
            packed_state = version << 2 | change.state
            centiseconds = at.seconds * 100 + at.nanos // 10_000_000
            value = (centiseconds if centiseconds > 0 else 0).to_bytes(5, "big") + (
                byte[packed_state] if packed_state < 0x80 else varint(packed_state)
            )
            add_key(located + b"\0" + sender)
            add_version(version)
            add_value(value)
            add_entry(located + byte[len(sender)] + sender + byte[len(value)] + value)
            add_located(located)
    return batch


class BucketWindow:
    """Decoded records gathered to be written bucket by bucket (a rebuild's worker).

    Written one record at a time, a record costs Redis a call of its own into its bucket
    (:data:`APPLY_SCRIPT`); gathered, the records of one bucket go in one run
    (:data:`APPLY_BY_BUCKET_SCRIPT`). The records are kept as the batches' packed bytes and
    their lengths (no object per record), and :meth:`chunks` sorts them by bucket, stably: the
    records of one entry keep the order read, so the view ends as record-by-record writing
    would leave it.
    """

    def __init__(self) -> None:
        self._packed: list[bytes] = []
        self._lengths: list[np.ndarray] = []
        #: Records gathered.
        self.count = 0
        #: The next offset per partition after the records gathered.
        self.offsets: dict[int, int] = {}

    def add(self, batch: ChangeBatch) -> None:
        """Take a batch (records of a partition in the order read)."""
        if batch.entries:
            self._packed.append(batch.packed())
            self._lengths.append(np.fromiter(map(len, batch.entries), np.int64, len(batch)))
            self.count += len(batch)
        for partition, offset in batch.offsets.items():
            if offset > self.offsets.get(partition, 0):
                self.offsets[partition] = offset

    def chunks(self, records_per_chunk: int) -> Iterator[bytes]:
        """The records in :func:`pack_update`'s form, sorted by bucket, a chunk at a time."""
        if not self.count:
            return
        packed = np.frombuffer(b"".join(self._packed), dtype=np.uint8)
        lengths = np.concatenate(self._lengths)
        starts = np.zeros(len(lengths), dtype=np.int64)
        np.cumsum(lengths[:-1], out=starts[1:])
        buckets = packed[starts].astype(np.uint32) << np.uint32(16)
        buckets |= packed[starts + 1].astype(np.uint32) << np.uint32(8)
        buckets |= packed[starts + 2]
        order = np.argsort(buckets, kind="stable")
        for first in range(0, len(order), records_per_chunk):
            chosen = order[first : first + records_per_chunk]
            sizes = lengths[chosen]
            ends = np.cumsum(sizes)
            # each chosen record's bytes, one after the other
            at = np.arange(int(ends[-1])) + np.repeat(starts[chosen] - (ends - sizes), sizes)
            yield packed[at].tobytes()


class ExpectedView:
    """The latest entry per subject and scope among the records read: what the view must hold.

    Kept only during a rebuild from offset 0 (about 150 bytes per entry in this process).
    """

    def __init__(self) -> None:
        self._entries: dict[bytes, tuple[int, bytes]] = {}

    def add(self, batch: ChangeBatch) -> None:
        """Keep each entry that is newer than what is held; forget the erased ones."""
        entries = self._entries
        get = entries.get
        for key, version, value in zip(batch.keys, batch.versions, batch.values, strict=True):
            if value == ERASED:
                entries.pop(key, None)
                continue
            held = get(key)
            if held is None or version > held[0]:
                entries[key] = (version, value)

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        """(address, packed value) of every entry, addressed as the view's ``entries``."""
        return ((key, value) for key, (_, value) in self._entries.items())

    def census(self) -> Census:
        """Count and checksum, computed exactly as the view's own census."""
        counter = CensusCounter()
        counter.add_many(
            [
                pack_update(key[:LOCATED_BYTES], key[LOCATED_BYTES + 1 :].decode(), value)
                for key, value in self.items()
            ]
        )
        return counter.census()


class ExpectedCensus:
    """The census of :class:`ExpectedView` without keeping the entries: what a rebuild checks.

    :class:`ExpectedView` holds every entry in a dictionary (about 150 bytes each and a garbage
    collector walking them): at fifty million entries that is gigabytes per rebuild worker and
    the rebuild slows as it grows. Only the count and the checksum are needed, so each record
    read becomes four numbers in columns (two independent 64-bit identities of its address, its
    version and the 64-bit hash its entry would add to the checksum, 33 bytes with the erasure
    flag), and :meth:`census` folds them with sorts at the end, as the view folds the records:
    an erasure removes what came before it, and after the last one the highest version wins,
    the first read among equals. The result equals :meth:`ExpectedView.census` (a unit test
    holds them equal).
    """

    def __init__(self) -> None:
        self._columns: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []

    def add(self, batch: ChangeBatch) -> None:
        """Take a batch's records, in the order read."""
        keys, values, entries = batch.keys, batch.values, batch.entries
        if not keys:
            return
        count = len(keys)
        if len(entries) != count:
            raise ValueError(f"a batch of {count} keys holds {len(entries)} entries")
        self._columns.append(
            (
                # The digest field's first eight bytes (HMAC output) and Python's hash of the
                # whole address: two unrelated 64-bit identities, so two addresses are taken
                # for one only if both collide.
                np.array(keys, dtype=f"S{LOCATED_BYTES + 1}")
                .view(np.uint8)
                .reshape(count, LOCATED_BYTES + 1)[:, BUCKET_BYTES : BUCKET_BYTES + 8]
                .copy()
                .view(">u8")
                .ravel()
                .astype(np.uint64),
                np.fromiter(map(hash, keys), np.int64, count),
                np.asarray(batch.versions, dtype=np.int64),
                entry_hashes(entries),
                np.fromiter(map(len, values), np.int64, count) == 0,  # ERASED
            )
        )

    def census(self) -> Census:
        """Count and checksum of the entries the records leave, as :meth:`ExpectedView.census`.

        Most of a compacted topic is read once: a record whose address hash no other record
        shares stands alone and is kept unless it is an erasure. Only the records whose hash
        repeats (the same address read again, or two addresses sharing a hash) are folded,
        grouped by both identities. Sorting the hashes alone costs a third of sorting their
        order by two keys (1.8 s against 4.9 s for 25 million).
        """
        if not self._columns:
            return Census(0, 0)
        first, second, versions, hashes, erased = (
            np.concatenate(column) for column in zip(*self._columns, strict=True)
        )
        ordered = np.sort(second)
        same = ordered[1:] == ordered[:-1]
        if not same.any():
            kept = hashes[~erased]
            return Census(len(kept), int(kept.sum(dtype=np.uint64)))
        repeated = np.isin(second, ordered[1:][same])
        kept = hashes[~repeated & ~erased]
        again = np.flatnonzero(repeated)  # in the order read
        folded = _fold_by_address(
            first[again], second[again], versions[again], hashes[again], erased[again]
        )
        return Census(
            len(kept) + folded.count,
            (int(kept.sum(dtype=np.uint64)) + folded.checksum) & 0xFFFFFFFFFFFFFFFF,
        )


def _fold_by_address(
    first: np.ndarray,
    second: np.ndarray,
    versions: np.ndarray,
    hashes: np.ndarray,
    erased: np.ndarray,
) -> Census:
    """Records given in the order read, folded per address (both identities equal)."""
    order = np.lexsort((second, first))  # stable: the read order is kept inside each address
    first, second = first[order], second[order]
    starts = np.ones(len(order), dtype=np.bool_)
    starts[1:] = (first[1:] != first[:-1]) | (second[1:] != second[:-1])
    group = np.cumsum(starts) - 1
    kept = _fold_groups(group, order, versions[order], hashes[order], erased[order])
    return Census(int(len(kept)), int(kept.sum(dtype=np.uint64)))


def _fold_groups(
    group: np.ndarray,
    position: np.ndarray,
    versions: np.ndarray,
    hashes: np.ndarray,
    erased: np.ndarray,
) -> np.ndarray:
    """The hashes of the entries left per address group, as the view folds the records.

    ``group`` numbers the addresses (non-decreasing), ``position`` is each record's place in
    the read order: an erasure removes what was read before it, then the highest version wins,
    the first read among equal versions.
    """
    if not len(group):
        return np.zeros(0, dtype=np.uint64)
    last_erasure = np.full(int(group[-1]) + 1, -1, dtype=np.int64)
    np.maximum.at(last_erasure, group[erased], position[erased])
    alive = (position > last_erasure[group]) & ~erased
    group, versions, hashes, position = (
        group[alive],
        versions[alive],
        hashes[alive],
        position[alive],
    )
    if not len(group):
        return np.zeros(0, dtype=np.uint64)
    winners = np.lexsort((position, -versions, group))
    chosen = np.ones(len(winners), dtype=np.bool_)
    chosen[1:] = group[winners][1:] != group[winners][:-1]
    return hashes[winners][chosen]


#: A located subject: bucket (3 bytes) and digest field.
LOCATED_BYTES = BUCKET_BYTES + DIGEST_FIELD_BYTES


def locate_digests(digests: bytes, layout: ViewLayout) -> np.ndarray:
    """Rows of bucket (3 bytes) + field (10 bytes) for 16-byte digests, joined."""
    rows = np.frombuffer(digests, dtype=np.uint8).reshape(-1, SUBJECT_DIGEST_BYTES)
    located = np.empty((len(rows), LOCATED_BYTES), dtype=np.uint8)
    top = rows[:, :BUCKET_BYTES].astype(np.uint32)
    bucket = ((top[:, 0] << np.uint32(16)) | (top[:, 1] << np.uint32(8)) | top[:, 2]) >> np.uint32(
        8 * BUCKET_BYTES - layout.bucket_bits
    )
    for i in range(BUCKET_BYTES):
        located[:, i] = (bucket >> np.uint32(8 * (BUCKET_BYTES - 1 - i))).astype(np.uint8)
    located[:, BUCKET_BYTES:] = rows[:, 2 : 2 + DIGEST_FIELD_BYTES]
    return located


def scope_codes(senders: dict[Any, Any]) -> dict[bytes, bytes]:
    """The view's ``senders`` hash turned around: scope code (varint) to sender id."""
    return {
        varint(int(code)): bytes(sender)
        for sender, code in senders.items()
        if bytes(sender).decode() != NEXT_CODE
    }


def entry_address(bucket: bytes, stored_field: bytes, by_code: dict[bytes, bytes]) -> bytes:
    """A stored entry's address (located subject, NUL, sender): :class:`ChangeBatch`'s keys."""
    code = stored_field[DIGEST_FIELD_BYTES:]
    sender = (by_code.get(code) or unknown_scope(code)) if code else b""
    return b"".join((bucket, stored_field[:DIGEST_FIELD_BYTES], b"\0", sender))


def unknown_scope(code: bytes) -> bytes:
    """What stands for a sender whose scope code the view's ``senders`` hash does not hold."""
    return b"#" + code.hex().encode()
