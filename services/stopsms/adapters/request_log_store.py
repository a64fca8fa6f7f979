"""Each citizen's requests, in Redis: the regulator's search without the request log in memory.

The request log (``stopsms.requests.v1``) is the legal record: three years of every request.
The console answers "what did this citizen ask, and when" (``SearchRequests``, and a complaint's
assessment when an old opt-out is no longer on the compacted suppression list) from this store,
so its memory does not grow with those three years.

Layout, under ``<namespace>requests:``:

- ``s:<subject>``: a list of the subject's requests in the order read, each the request without
  its sealed number, after its acceptance time (13 digits of milliseconds). It expires with the
  topic's retention after its last request; a request older than the retention is trimmed when
  the subject asks again, and never answered.
- ``e:<event id>``: the subject of a request (a retried or passed-on request is kept once), for
  a search by event id.
- ``m:<subject>``: the subject it moved from in a pseudonym re-keying.
- ``#offsets``: the next offset to apply, per partition, written with each batch, so a flushed
  store fills again from the topic.

With the decision store, about 1.2 kB an opt-out (``bench/console_scale.py``), mostly Redis's
own cost per key.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any, Protocol

import redis.asyncio as aioredis
from google.protobuf.message import DecodeError
from redis.exceptions import RedisError

from stopsms.adapters.kafka import Record
from stopsms.adapters.store_fill import WRITE_OFFSETS_LUA, RedisOffsets
from stopsms.v1 import events_pb2

log = logging.getLogger(__name__)

#: Requests written per script call (Redis runs one script at a time: lookups wait behind it).
APPLY_CHUNK = 500
#: A subject's chain of earlier subjects followed at most this far (re-keyings).
CHAIN_LIMIT = 8


class StoreUnavailable(ConnectionError):
    """Redis did not answer."""


def entry(request: events_pb2.PreferenceRequested) -> bytes:
    """A request as stored: its acceptance time (13 digits of ms), then the request."""
    return b"%013d" % request.accepted_time.ToMilliseconds() + request.SerializeToString()


def read_entries(
    entries: Sequence[bytes], oldest_ms: int = 0
) -> list[events_pb2.PreferenceRequested]:
    """The stored requests accepted at ``oldest_ms`` or later, in the order stored."""
    return [
        events_pb2.PreferenceRequested.FromString(value[13:])
        for value in entries
        if int(value[:13]) >= oldest_ms
    ]


class RequestLogStore(Protocol):
    """Requests per subject, the subject of each event id, the re-keying moves, the offsets."""

    async def apply(
        self,
        requests: Sequence[tuple[str, str, bytes]],
        moves: Sequence[tuple[str, str]],
        offsets: dict[int, int],
    ) -> None:
        """Keep new requests (event id, subject, entry) and moves (subject, from), with offsets."""

    async def entries(self, subjects: Sequence[str]) -> list[list[bytes]]:
        """Each subject's stored entries, oldest first (one round trip)."""

    async def moved_from(self, subjects: Sequence[str]) -> list[str | None]:
        """The subject each moved from (None: none), in one round trip."""

    async def subject_of(self, event_id: str) -> str | None:
        """The subject of a request's event id (None: not held)."""

    async def applied_offsets(self) -> dict[int, int]:
        """The next offset to apply, per partition."""

    def oldest_ms(self) -> int:
        """The oldest acceptance still answered (ms): the topic's retention."""

    async def close(self) -> None:
        """Let go of the connection."""


class InMemoryRequestLogStore:
    """A request log store in this process (tests of the console alone)."""

    def __init__(self) -> None:
        self.by_subject: dict[str, list[bytes]] = {}
        self.subjects: dict[str, str] = {}
        self.moves: dict[str, str] = {}
        self.offsets: dict[int, int] = {}

    async def apply(
        self,
        requests: Sequence[tuple[str, str, bytes]],
        moves: Sequence[tuple[str, str]],
        offsets: dict[int, int],
    ) -> None:
        """Keep each request once, the moves, and the offsets after them."""
        for event_id, subject, value in requests:
            if event_id not in self.subjects:
                self.subjects[event_id] = subject
                self.by_subject.setdefault(subject, []).append(value)
        self.moves.update(moves)
        self.offsets.update(offsets)

    async def entries(self, subjects: Sequence[str]) -> list[list[bytes]]:
        """Each subject's entries."""
        return [list(self.by_subject.get(s, ())) for s in subjects]

    async def moved_from(self, subjects: Sequence[str]) -> list[str | None]:
        """The subject each moved from."""
        return [self.moves.get(s) for s in subjects]

    async def subject_of(self, event_id: str) -> str | None:
        """The subject of an event id."""
        return self.subjects.get(event_id)

    async def applied_offsets(self) -> dict[int, int]:
        """The next offset to apply, per partition."""
        return dict(self.offsets)

    def oldest_ms(self) -> int:
        """Every request is answered (tests)."""
        return 0

    async def close(self) -> None:
        """Nothing to close."""


# ARGV: the key prefix, seconds to keep, the oldest acceptance kept (ms), the number of
# requests, each request's event id, subject and entry; the number of moves, each move's subject
# and from; then partition/offset pairs for KEYS[1].
_APPLY = (
    """
local prefix, keep, oldest, count = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local call, sub = redis.call, string.sub
local i = 5
for _ = 1, count do
  local subject = ARGV[i + 1]
  -- a retried or passed-on request (its event id already read) is kept once
  if call('SET', prefix .. 'e:' .. ARGV[i], subject, 'NX', 'EX', keep) then
    local key = prefix .. 's:' .. subject
    call('RPUSH', key, ARGV[i + 2])
    while true do  -- the requests past the retention go as the subject asks again
      local head = call('LINDEX', key, 0)
      if not head or tonumber(sub(head, 1, 13)) >= oldest then break end
      call('LPOP', key)
    end
    call('EXPIRE', key, keep)
  end
  i = i + 3
end
local moves = tonumber(ARGV[i])
i = i + 1
for _ = 1, moves do
  call('SET', prefix .. 'm:' .. ARGV[i], ARGV[i + 1], 'EX', keep)
  i = i + 2
end
"""
    + WRITE_OFFSETS_LUA
    + """
return count
"""
)


class RedisRequestLogStore(RedisOffsets):
    """The request log per subject in Redis lists, expiring with the topic's retention."""

    def __init__(self, client: aioredis.Redis, namespace: str, keep_seconds: int) -> None:
        super().__init__(client, f"{namespace}requests:#offsets")
        self._prefix = f"{namespace}requests:"
        self._keep = keep_seconds
        self._apply = client.register_script(_APPLY)

    def oldest_ms(self) -> int:
        """The oldest acceptance the retention still keeps (ms)."""
        return int((time.time() - self._keep) * 1000)

    async def apply(
        self,
        requests: Sequence[tuple[str, str, bytes]],
        moves: Sequence[tuple[str, str]],
        offsets: dict[int, int],
    ) -> None:
        """Keep new requests and moves; the offsets go with the last chunk."""
        for start in range(0, max(len(requests), 1), APPLY_CHUNK):
            chunk = requests[start : start + APPLY_CHUNK]
            last = start + APPLY_CHUNK >= len(requests)
            args: list[Any] = [self._prefix, self._keep, self.oldest_ms(), len(chunk)]
            for event_id, subject, value in chunk:
                args.extend((event_id, subject, value))
            args.append(len(moves) if last else 0)
            for subject, earlier in moves if last else ():
                args.extend((subject, earlier))
            for partition, offset in offsets.items() if last else ():
                args.extend((partition, offset))
            await self._apply(keys=[self._offsets_key], args=args)

    async def entries(self, subjects: Sequence[str]) -> list[list[bytes]]:
        """Each subject's stored entries, oldest first, in one round trip."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for subject in subjects:
                pipe.lrange(self._prefix + "s:" + subject, 0, -1)
            return [list(found) for found in await pipe.execute()]

    async def moved_from(self, subjects: Sequence[str]) -> list[str | None]:
        """The subject each moved from, in one round trip."""
        if not subjects:
            return []
        found: list[Any] = await self._redis.mget([self._prefix + "m:" + s for s in subjects])
        return [value.decode() if value is not None else None for value in found]

    async def subject_of(self, event_id: str) -> str | None:
        """The subject of a request's event id."""
        found: Any = await self._redis.get(self._prefix + "e:" + event_id)
        return found.decode() if found is not None else None


def batch_of(
    records: Sequence[Record],
) -> tuple[list[tuple[str, str, bytes]], list[tuple[str, str]], dict[int, int]]:
    """What a batch of the request log writes: its requests, its moves, the offsets after it.

    A request is kept without its sealed number; a migration (a re-keying moving a subject's
    decisions) is a move, not a request. An unreadable record is skipped and logged, never the
    batch.
    """
    requests: list[tuple[str, str, bytes]] = []
    moves: list[tuple[str, str]] = []
    offsets: dict[int, int] = {}
    for record in records:
        offsets[record.partition] = record.offset + 1
        if record.value is None:
            continue
        try:
            request = events_pb2.PreferenceRequested.FromString(record.value)
        except DecodeError:
            log.exception("unreadable request at partition %d offset %d", record.partition,
                          record.offset)  # fmt: skip
            continue
        if request.HasField("migration"):
            moves.append((request.subject, request.migration.from_subject))
        elif request.subject and request.event_id:
            request.ClearField("sealed_msisdn")
            requests.append((request.event_id, request.subject, entry(request)))
    return requests, moves, offsets


def unavailable(exc: RedisError) -> StoreUnavailable:
    """A Redis failure as the store's own (a ``ConnectionError``: callers wait and retry)."""
    return StoreUnavailable(f"request log store: {exc}")
