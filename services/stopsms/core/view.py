"""The registry's query view in Redis: subject and scope to state and version.

The view is filled only from ``stopsms.suppressions.v1`` (by the registry's materialiser), so
it can always be rebuilt from the topic. Each batch is applied by one Lua script that writes the
entries *and* the applied offsets together, and never moves an entry to an older version: a
replay, or two materialisers, can only bring the view forward.

Layout (``<ns>`` is the deployment's namespace):
* ``<ns>view:s:<subject>``: a hash, field = sender id or ``*`` (global), value =
  ``<state>,<version>,<action time in ms>``.
* ``<ns>view:offsets``: a hash, field = partition, value = next offset to apply.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import redis.asyncio as aioredis

from stopsms.core.topics import GLOBAL_SCOPE

_APPLY_SCRIPT = """
local n = tonumber(ARGV[1])
local i = 2
for _ = 1, n do
  local key, field = KEYS[1] .. ARGV[i], ARGV[i + 1]
  local version, value = tonumber(ARGV[i + 2]), ARGV[i + 3]
  local current = redis.call('HGET', key, field)
  local current_version = -1
  if current then
    current_version = tonumber(string.match(current, '^[^,]*,([^,]*)'))
  end
  if version > current_version then
    redis.call('HSET', key, field, value)
  end
  i = i + 4
end
local offsets = KEYS[2]
while i <= #ARGV do
  local partition, offset = ARGV[i], tonumber(ARGV[i + 1])
  local current = tonumber(redis.call('HGET', offsets, partition) or '-1')
  if offset > current then
    redis.call('HSET', offsets, partition, offset)
  end
  i = i + 2
end
return n
"""


@dataclass(frozen=True)
class ScopeEntry:
    """The state of one subject in one scope, as the view holds it."""

    state: int
    version: int
    action_time_ms: int

    def encode(self) -> str:
        """The compact string stored in Redis."""
        return f"{self.state},{self.version},{self.action_time_ms}"

    @classmethod
    def decode(cls, raw: bytes | str | None) -> ScopeEntry | None:
        """Parse a stored value (None stays None)."""
        if raw is None:
            return None
        text = raw.decode() if isinstance(raw, bytes) else raw
        state, version, action = text.split(",")
        return cls(int(state), int(version), int(action))


@dataclass(frozen=True)
class ViewUpdate:
    """One change to apply: subject, scope (sender id or empty for global) and entry."""

    subject: str
    sender_id: str
    entry: ScopeEntry


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
    """The view on a real redis-server."""

    def __init__(self, client: aioredis.Redis, namespace: str = "") -> None:
        self._redis = client
        self._subject_prefix = f"{namespace}view:s:"
        self._offsets_key = f"{namespace}view:offsets"
        self._apply = client.register_script(_APPLY_SCRIPT)

    @classmethod
    def from_url(cls, url: str, namespace: str = "") -> RedisSuppressionView:
        """Connect lazily to the Redis at ``url``."""
        return cls(aioredis.from_url(url), namespace)

    async def close(self) -> None:
        """Close the connection pool."""
        await self._redis.aclose()

    async def apply(self, updates: Sequence[ViewUpdate], offsets: dict[int, int]) -> None:
        """Apply a batch with one script call (entries and offsets in one atomic step)."""
        args: list[str | int] = [len(updates)]
        for u in updates:
            args += [u.subject, u.sender_id or GLOBAL_SCOPE, u.entry.version, u.entry.encode()]
        for partition, offset in offsets.items():
            args += [partition, offset]
        await self._apply(keys=[self._subject_prefix, self._offsets_key], args=args)

    async def lookup(
        self, subjects: Sequence[str], sender_id: str
    ) -> tuple[list[tuple[ScopeEntry | None, ScopeEntry | None]], dict[int, int]]:
        """Read both scopes of every subject and the offsets in one transaction."""
        async with self._redis.pipeline(transaction=True) as pipe:
            for subject in subjects:
                pipe.hmget(self._subject_prefix + subject, sender_id or GLOBAL_SCOPE, GLOBAL_SCOPE)
            pipe.hgetall(self._offsets_key)
            replies = await pipe.execute()
        entries = [
            (ScopeEntry.decode(s) if sender_id else None, ScopeEntry.decode(g))
            for s, g in replies[:-1]
        ]
        return entries, _decode_offsets(replies[-1])

    async def applied_offsets(self) -> dict[int, int]:
        """The next offset to apply, per partition."""
        return _decode_offsets(await self._redis.hgetall(self._offsets_key))


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


def _decode_offsets(raw: Mapping[Any, Any]) -> dict[int, int]:
    return {int(p): int(o) for p, o in raw.items()}
