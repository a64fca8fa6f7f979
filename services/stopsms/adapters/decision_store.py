"""Each subject's decided changes, in Redis: the console without the suppression list in memory.

The complaint assessor asks "which opt-out was in force when the message arrived", so it needs
every decision read from ``stopsms.suppressions.v1`` for a subject, not only the latest per
scope; the regulator's search shows each request's decision. At national size the list holds
tens of millions of entries, so the console keeps them here rather than in its memory.

Layout, under ``<namespace>decisions:``:

- ``s:<subject>``: a hash, event id → the decided change without its sealed number, after its
  decision time (13 digits of milliseconds). A change read again (a restart, a re-keying's copy
  under a new subject is another subject) is kept once.
- ``#offsets``: the next offset to apply, per partition, written with each batch, so a flushed
  store fills again from the topic.

An erasure (a tombstone of one of the subject's scopes: the registry tombstones them all, when
it erases a subject or retires it after a re-keying) removes the subject's hash. A search by
event id finds the subject in the request log store (a decision has its request's event id).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol

import redis.asyncio as aioredis
from google.protobuf.message import DecodeError

from stopsms.adapters.kafka import Record
from stopsms.adapters.store_fill import WRITE_OFFSETS_LUA, RedisOffsets
from stopsms.domain.topics import is_key_change, subject_of_key
from stopsms.v1 import events_pb2

log = logging.getLogger(__name__)

#: A decision (subject, event id, entry) or an erasure (subject, "", b"").
Change = tuple[str, str, bytes]

#: Decisions written per script call (Redis runs one script at a time: lookups wait behind it).
APPLY_CHUNK = 500


class StoreUnavailable(ConnectionError):
    """Redis did not answer."""


def entry(change: events_pb2.SuppressionChanged) -> bytes:
    """A decided change as stored: its decision time (13 digits of ms), then the change."""
    return b"%013d" % change.decided_time.ToMilliseconds() + change.SerializeToString()


def read_entry(value: bytes) -> events_pb2.SuppressionChanged:
    """A stored decided change."""
    return events_pb2.SuppressionChanged.FromString(value[13:])


class DecisionStore(Protocol):
    """Decided changes per subject, and the offsets applied."""

    async def apply(
        self, changes: Sequence[tuple[str, str, bytes]], offsets: dict[int, int]
    ) -> None:
        """Apply, in order, decisions (subject, event id, entry) and erasures (subject, "", b"").

        A decision already held for the subject is kept as it was; the offsets go with them.
        """

    async def entries(self, subjects: Sequence[str]) -> list[list[bytes]]:
        """Each subject's stored entries, oldest decision first (one round trip)."""

    async def applied_offsets(self) -> dict[int, int]:
        """The next offset to apply, per partition."""

    async def close(self) -> None:
        """Let go of the connection."""


class InMemoryDecisionStore:
    """A decision store in this process (tests of the console alone)."""

    def __init__(self) -> None:
        self.by_subject: dict[str, dict[str, bytes]] = {}
        self.offsets: dict[int, int] = {}

    async def apply(
        self, changes: Sequence[tuple[str, str, bytes]], offsets: dict[int, int]
    ) -> None:
        """Keep each decision once per subject, drop the erased subjects, keep the offsets."""
        for subject, event_id, value in changes:
            if not event_id:
                self.by_subject.pop(subject, None)
                continue
            self.by_subject.setdefault(subject, {}).setdefault(event_id, value)
        self.offsets.update(offsets)

    async def entries(self, subjects: Sequence[str]) -> list[list[bytes]]:
        """Each subject's entries, oldest decision first."""
        return [sorted(self.by_subject.get(s, {}).values()) for s in subjects]

    async def applied_offsets(self) -> dict[int, int]:
        """The next offset to apply, per partition."""
        return dict(self.offsets)

    async def close(self) -> None:
        """Nothing to close."""


# ARGV: the key prefix, the number of changes, each one's subject, event id and entry (an empty
# event id: the subject is erased); then partition/offset pairs for KEYS[1].
_APPLY = (
    """
local prefix, count = ARGV[1], tonumber(ARGV[2])
local call = redis.call
local i, taken = 3, 0
for _ = 1, count do
  local subject, event = ARGV[i], ARGV[i + 1]
  if event == '' then
    call('DEL', prefix .. 's:' .. subject)
  else
    taken = taken + call('HSETNX', prefix .. 's:' .. subject, event, ARGV[i + 2])
  end
  i = i + 3
end
"""
    + WRITE_OFFSETS_LUA
    + """
return taken
"""
)


class RedisDecisionStore(RedisOffsets):
    """Each subject's decided changes in a Redis hash."""

    def __init__(self, client: aioredis.Redis, namespace: str) -> None:
        super().__init__(client, f"{namespace}decisions:#offsets")
        self._prefix = f"{namespace}decisions:"
        self._apply = client.register_script(_APPLY)

    async def apply(
        self, changes: Sequence[tuple[str, str, bytes]], offsets: dict[int, int]
    ) -> None:
        """Apply decisions and erasures in order; the offsets go with the last chunk."""
        for start in range(0, max(len(changes), 1), APPLY_CHUNK):
            chunk = changes[start : start + APPLY_CHUNK]
            last = start + APPLY_CHUNK >= len(changes)
            args: list[Any] = [self._prefix, len(chunk)]
            for subject, event_id, value in chunk:
                args.extend((subject, event_id, value))
            for partition, offset in offsets.items() if last else ():
                args.extend((partition, offset))
            await self._apply(keys=[self._offsets_key], args=args)

    async def entries(self, subjects: Sequence[str]) -> list[list[bytes]]:
        """Each subject's stored entries, oldest decision first, in one round trip."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for subject in subjects:
                pipe.hvals(self._prefix + "s:" + subject)
            return [sorted(found) for found in await pipe.execute()]


def batch_of(
    records: Sequence[Record],
) -> tuple[list[Change], dict[int, int], list[events_pb2.SuppressionChanged]]:
    """What a batch of the list writes: its decisions and erasures in order, the offsets after.

    Also the decided changes read, in order (the assessor looks again at the complaints they
    concern). The key-change record is no decision; an unreadable record is skipped and logged.
    """
    changes: list[Change] = []
    offsets: dict[int, int] = {}
    read: list[events_pb2.SuppressionChanged] = []
    for record in records:
        offsets[record.partition] = record.offset + 1
        if record.key is None:
            continue
        if record.value is None:
            subject = subject_of_key(record.key).decode()
            if not is_key_change(subject):
                changes.append((subject, "", b""))  # an erasure
            continue
        try:
            change = events_pb2.SuppressionChanged.FromString(record.value)
        except DecodeError:
            log.exception("unreadable decision at partition %d offset %d", record.partition,
                          record.offset)  # fmt: skip
            continue
        if is_key_change(change.subject) or not change.event_id:
            continue
        change.ClearField("sealed_msisdn")
        changes.append((change.subject, change.event_id, entry(change)))
        read.append(change)
    return changes, offsets, read
