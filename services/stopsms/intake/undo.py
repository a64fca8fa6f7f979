"""The link page's undo: the browser that just opted out may take it back, once, for a while.

Holding a link proves nothing about the number (the PSVA that sends a campaign holds every
link in it), so the page offers no plain "opt back in". What it offers instead is an undo of
the opt-out the same browser has just made: the response to that POST, and only it, carries a
random one-time token in an HttpOnly, SameSite=Strict cookie scoped to the link (never in a
URL, never logged). Redis keeps only the token's SHA-256, with the window as its expiry.

An undo is granted only when the opt-out changed something: if the number was already
suppressed for that scope, nothing is granted, so a PSVA posting an opt-out on its own link
cannot then lift a suppression the citizen made elsewhere (the undo of its own opt-out only
brings back the state before it).

Each undo starts a new *round* of the link: the request ids of later clicks carry the round,
so a citizen who undoes and then stops again makes a new request instead of finding the first
answer of the old one.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

#: The cookie that carries the undo token, scoped to the link's own path.
UNDO_COOKIE = "stopsms_undo"


def new_token() -> str:
    """A fresh undo token: 256 bits from the OS's CSPRNG."""
    return secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    """What the store keeps of a token: its SHA-256, so a copy of Redis undoes nothing."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class UndoGrant:
    """What one token may undo: the opt-out ``action`` of ``code`` made in ``round``."""

    code: str
    action: str
    round: int

    def encode(self) -> bytes:
        """The stored form."""
        return f"{self.code}\n{self.action}\n{self.round}".encode()

    @classmethod
    def decode(cls, raw: bytes) -> UndoGrant:
        """Read the stored form."""
        code, action, round_ = raw.decode().split("\n")
        return cls(code, action, int(round_))


class UndoStore(Protocol):
    """Undo grants by token digest, and each link's round."""

    async def grant(self, digest: str, grant: UndoGrant, seconds: float) -> None:
        """Keep ``grant`` for ``seconds``."""
        ...

    async def find(self, digest: str) -> UndoGrant | None:
        """The grant of a token still in its window, or None."""
        ...

    async def spend(self, digest: str, code: str) -> None:
        """The undo was made: the token is gone and the link starts its next round."""
        ...

    async def round(self, code: str) -> int:
        """How many undos the link has had (0 for most links)."""
        ...


class RedisUndoStore:
    """Grants and rounds in Redis; grants expire with their window."""

    def __init__(self, client: aioredis.Redis, namespace: str, keep_rounds_seconds: int) -> None:
        self._redis = client
        self._grants = f"{namespace}intake:undo:"
        self._rounds = f"{namespace}intake:round:"
        #: A link's round must outlive the link, or old request ids would come back.
        self._keep_rounds = keep_rounds_seconds

    async def grant(self, digest: str, grant: UndoGrant, seconds: float) -> None:
        """Keep the grant for its window (Redis unreachable: no undo is offered)."""
        try:
            await self._redis.set(self._grants + digest, grant.encode(), px=int(seconds * 1000))
        except RedisError as exc:
            log.warning("undo store unavailable, no undo offered: %s", exc)

    async def find(self, digest: str) -> UndoGrant | None:
        """The grant, or None when expired, spent or unknown."""
        try:
            raw = await self._redis.get(self._grants + digest)
        except RedisError as exc:
            log.warning("undo store unavailable: %s", exc)
            return None
        return UndoGrant.decode(raw) if isinstance(raw, bytes) else None

    async def spend(self, digest: str, code: str) -> None:
        """Delete the token and move the link to its next round, together."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(self._grants + digest)
            pipe.incr(self._rounds + code)
            pipe.expire(self._rounds + code, self._keep_rounds)
            await pipe.execute()

    async def round(self, code: str) -> int:
        """The link's round (0 when Redis is unreachable: the first round's ids)."""
        try:
            raw = await self._redis.get(self._rounds + code)
        except RedisError as exc:
            log.warning("undo store unavailable: %s", exc)
            return 0
        return int(raw) if raw is not None else 0


class InMemoryUndoStore:
    """Grants and rounds in dicts, for unit tests; ``clock`` lets a test pass the window."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.grants: dict[str, tuple[UndoGrant, float]] = {}
        self.rounds: dict[str, int] = {}

    async def grant(self, digest: str, grant: UndoGrant, seconds: float) -> None:
        """Keep the grant until ``seconds`` from now."""
        self.grants[digest] = (grant, self._clock() + seconds)

    async def find(self, digest: str) -> UndoGrant | None:
        """The grant while its window lasts."""
        found = self.grants.get(digest)
        if found is None or found[1] <= self._clock():
            return None
        return found[0]

    async def spend(self, digest: str, code: str) -> None:
        """Delete the token, next round."""
        self.grants.pop(digest, None)
        self.rounds[code] = self.rounds.get(code, 0) + 1

    async def round(self, code: str) -> int:
        """The link's round."""
        return self.rounds.get(code, 0)
