"""Proof of owning a number: one-time codes sent by SMS, and the short session they open.

A citizen asks for a code on the preferences page; it goes to the number through the outbound
topic (sealed, delivered by the operator). A code has 6 digits, lives 5 minutes and allows 3
tries; a number gets at most 3 codes an hour and a client address a few more; three wrong tries
lock the number out for the rest of the hour. Redis keeps only an HMAC of each code (keyed, and
bound to the subject), never the code, and nothing here is logged. A verified code opens a
15-minute session bound to that number: a random token in an HttpOnly, SameSite=Strict cookie,
kept in Redis as its SHA-256 with the subject and the sealed number.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import secrets
from dataclasses import dataclass

import redis.asyncio as aioredis

from stopsms.intake.submission import Subject
from stopsms.v1 import events_pb2

CODE_DIGITS = 6
CODE_SECONDS = 300
CODE_TRIES = 3
CODES_PER_HOUR = 3
CODES_PER_ADDRESS_HOUR = 10
WINDOW_SECONDS = 3600
SESSION_SECONDS = 15 * 60
SESSION_COOKIE = "stopsms_session"


class Refusal(enum.Enum):
    """Why no code is sent."""

    NUMBER_LIMIT = "number_limit"
    ADDRESS_LIMIT = "address_limit"
    LOCKED = "locked"


class Check(enum.Enum):
    """What a code typed by the citizen turned out to be."""

    VERIFIED = "verified"
    WRONG = "wrong"
    EXPIRED = "expired"
    LOCKED = "locked"


@dataclass(frozen=True)
class Session:
    """A verified number: the citizen's page acts for it until the session ends."""

    subject: Subject


def new_code() -> str:
    """Six digits from the OS's CSPRNG."""
    return f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


class OneTimeCodes:
    """Codes, their limits and the sessions they open, in Redis."""

    def __init__(self, client: aioredis.Redis, namespace: str, secret: bytes) -> None:
        self._redis = client
        self._prefix = f"{namespace}intake:otc:"
        self._secret = hashlib.sha256(b"stopsms one-time codes\x1f" + secret).digest()

    def _mac(self, subject: str, code: str) -> str:
        return hmac.new(self._secret, f"{subject}\x1f{code}".encode(), "sha256").hexdigest()

    async def _counted(self, key: str, limit: int) -> bool:
        """Count one more in the hour's window; False when past ``limit``."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, WINDOW_SECONDS, nx=True)
            count, _ = await pipe.execute()
        return int(count) <= limit

    async def issue(self, subject: str, address: str) -> str | Refusal:
        """A new code for ``subject`` (replacing any earlier one), or why not."""
        if await self._redis.exists(self._prefix + "lock:" + subject):
            return Refusal.LOCKED
        if not await self._counted(
            self._prefix + "addr:" + _digest(address), CODES_PER_ADDRESS_HOUR
        ):
            return Refusal.ADDRESS_LIMIT
        if not await self._counted(self._prefix + "count:" + subject, CODES_PER_HOUR):
            return Refusal.NUMBER_LIMIT
        code = new_code()
        key = self._prefix + "code:" + subject
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(key)
            pipe.hset(key, mapping={"mac": self._mac(subject, code), "tries": 0})
            pipe.expire(key, CODE_SECONDS)
            await pipe.execute()
        return code

    async def check(self, subject: str, code: str) -> tuple[Check, int]:
        """Whether ``code`` is the subject's; with the tries left after a wrong one."""
        if await self._redis.exists(self._prefix + "lock:" + subject):
            return Check.LOCKED, 0
        key = self._prefix + "code:" + subject
        mac = await self._redis.hget(key, "mac")
        if not isinstance(mac, bytes):
            return Check.EXPIRED, 0
        tries = int(await self._redis.hincrby(key, "tries", 1))
        if tries <= CODE_TRIES and hmac.compare_digest(
            mac.decode(), self._mac(subject, code.strip())
        ):
            await self._redis.delete(key)
            return Check.VERIFIED, 0
        if tries >= CODE_TRIES:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.delete(key)
                pipe.set(self._prefix + "lock:" + subject, 1, ex=WINDOW_SECONDS)
                await pipe.execute()
            return Check.LOCKED, 0
        return Check.WRONG, CODE_TRIES - tries

    async def open_session(self, subject: Subject) -> str:
        """A session for a verified number; returns the token for the cookie."""
        token = secrets.token_urlsafe(32)
        await self._redis.set(
            self._prefix + "session:" + _digest(token),
            subject.subject.encode() + b"\n" + subject.sealed.SerializeToString(),
            ex=SESSION_SECONDS,
        )
        return token

    async def session(self, token: str | None) -> Session | None:
        """The session of a cookie's token, while it lasts."""
        if not token:
            return None
        raw = await self._redis.get(self._prefix + "session:" + _digest(token))
        if not isinstance(raw, bytes):
            return None
        subject, _, sealed = raw.partition(b"\n")
        return Session(Subject(subject.decode(), events_pb2.SealedMsisdn.FromString(sealed)))

    async def remember_request(self, token: str | None, event_id: str) -> None:
        """A request made in the session: its receipt may be shown in it."""
        if token:
            key = self._prefix + "made:" + _digest(token)
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.sadd(key, event_id)
                pipe.expire(key, SESSION_SECONDS)
                await pipe.execute()

    async def made_in_session(self, token: str | None, event_id: str) -> bool:
        """Whether the request was made in this session."""
        if not token:
            return False
        return bool(await self._redis.sismember(self._prefix + "made:" + _digest(token), event_id))

    async def close_session(self, token: str | None) -> None:
        """End a session (the citizen left)."""
        if token:
            await self._redis.delete(self._prefix + "session:" + _digest(token))
