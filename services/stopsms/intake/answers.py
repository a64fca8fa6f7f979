"""The first answer to every request, so a retry gets it back (AIP-155), across restarts.

A retry with the same request id yields the same event id anyway, and the registry would
deduplicate it; keeping the first answer in Redis also spares the topic a second copy and gives
the caller exactly what it was told the first time (same accepted time). Redis being away only
costs that nicety: the request is then published again and deduplicated downstream.
"""

from __future__ import annotations

import logging
from typing import Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

#: How long a first answer is kept: retries come within minutes, a month is generous.
ANSWER_TTL_SECONDS = 30 * 24 * 3600


class AnswerStore(Protocol):
    """Where first answers are kept, by event id."""

    async def get(self, event_id: str) -> bytes | None:
        """The first answer given for this event, if any."""
        ...

    async def keep_first(self, event_id: str, answer: bytes) -> bytes:
        """Keep ``answer`` unless one is kept already; return the one that counts."""
        ...


class RedisAnswerStore:
    """First answers in Redis, written with SET NX so concurrent retries agree."""

    def __init__(self, client: aioredis.Redis, namespace: str = "") -> None:
        self._redis = client
        self._prefix = f"{namespace}intake:answer:"

    async def get(self, event_id: str) -> bytes | None:
        """The first answer, or None (also when Redis cannot be reached)."""
        try:
            value = await self._redis.get(self._prefix + event_id)
        except RedisError as exc:
            log.warning("answer store unavailable: %s", exc)
            return None
        return value if isinstance(value, bytes) else None

    async def keep_first(self, event_id: str, answer: bytes) -> bytes:
        """Keep the answer unless a first one exists; return the first."""
        key = self._prefix + event_id
        try:
            if await self._redis.set(key, answer, nx=True, ex=ANSWER_TTL_SECONDS):
                return answer
            first = await self._redis.get(key)
        except RedisError as exc:
            log.warning("answer store unavailable: %s", exc)
            return answer
        return first if isinstance(first, bytes) else answer

    async def close(self) -> None:
        """Close the connection pool."""
        await self._redis.aclose()


class InMemoryAnswerStore:
    """First answers in a dict, for unit tests and single-process tools."""

    def __init__(self) -> None:
        self.answers: dict[str, bytes] = {}

    async def get(self, event_id: str) -> bytes | None:
        """The first answer, or None."""
        return self.answers.get(event_id)

    async def keep_first(self, event_id: str, answer: bytes) -> bytes:
        """Keep the answer unless a first one exists; return the first."""
        return self.answers.setdefault(event_id, answer)
