"""StopSMS links: random codes, recorded on ``stopsms.links.v1``, resolved through the link store.

A code is 11 base62 characters drawn from the OS's CSPRNG (62¹¹ ≈ 2⁶⁵·⁵ codes), so links cannot
be guessed or enumerated. With the 19-character base ``https://stopsms.ma/`` a link is 30
characters, short enough for an SMS. No replica holds the links: every one asks the link store
(:mod:`stopsms.intake.link_store`, in Redis), which the replicas fill from the topic together, so
a link works wherever the click lands and after any restart, and a replica's memory does not
grow with the links issued.
"""

from __future__ import annotations

import logging
import re
import secrets
import string
import time
from collections.abc import Iterable
from typing import Any

import mode
from redis.exceptions import RedisError

from stopsms.adapters.bus import Bus, TopicReading, wait_until_applied
from stopsms.adapters.kafka import READER_FETCH_WAIT_MS
from stopsms.adapters.streams import GroupProcessor
from stopsms.domain.privacy import Pseudonymiser
from stopsms.intake.link_store import (
    EXPIRED_KEPT_DAYS,
    LinkSealer,
    LinkStore,
    LinkStoreError,
    LinkStoreFiller,
    LiveLink,
    StoreUnavailable,
    sweep,
)

log = logging.getLogger(__name__)

#: How often a replica looks whether today's sweep of expired links is still to do.
SWEEP_CHECK_S = 3600.0

CODE_LENGTH = 11
_ALPHABET = string.digits + string.ascii_letters
_CODE = re.compile(rf"[0-9A-Za-z]{{{CODE_LENGTH}}}")


_CODE_SPACE = len(_ALPHABET) ** CODE_LENGTH


def _spell(number: int) -> str:
    digits = []
    for _ in range(CODE_LENGTH):
        number, digit = divmod(number, len(_ALPHABET))
        digits.append(_ALPHABET[digit])
    return "".join(digits)


def new_code() -> str:
    """Draw a fresh random link code, uniformly over all 62¹¹ codes."""
    while True:
        number = int.from_bytes(secrets.token_bytes(9), "big") >> 6  # 66 random bits
        if number < _CODE_SPACE:  # reject the excess rather than bias the draw
            return _spell(number)


def new_codes(count: int) -> list[str]:
    """``count`` fresh codes, drawn as :func:`new_code` does, with one call to the OS's CSPRNG.

    A campaign of 10,000 links otherwise spends more time in 20,000 system calls for random
    bytes (codes and nonces) than in anything else.
    """
    randomness = secrets.token_bytes(9 * count)
    codes = []
    for i in range(count):
        number = int.from_bytes(randomness[9 * i : 9 * i + 9], "big") >> 6
        codes.append(_spell(number) if number < _CODE_SPACE else new_code())
    return codes


def is_code(text: str) -> bool:
    """True when ``text`` has the shape of a link code."""
    return bool(_CODE.fullmatch(text))


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
        self._stage: GroupProcessor | None = None
        self._reader: TopicReading | None = None
        self._ends: TopicReading | None = None
        super().__init__(**kwargs)

    async def on_start(self) -> None:
        """Join the fillers' group (or read the in-memory topic), and open the end-offset reader."""
        if not self._fill:
            pass
        elif self._bus.kafka is not None:
            self._stage = GroupProcessor(
                self._bus.kafka,
                self._group,
                self._topic,
                self.filler,
                positions=self.filler.positions,
                fetch_wait_ms=READER_FETCH_WAIT_MS,
            )
            await self.add_runtime_dependency(self._stage)
        else:
            self._reader = self._bus.reader(
                self._topic, start_offsets=await self.store.applied_offsets()
            )
            await self._reader.start()
        # End offsets on a connection of their own, not behind a long-poll fetch.
        self._ends = self._bus.reader(self._topic, client_id="stopsms-links-ends", fetching=False)
        await self._ends.start()

    async def on_stop(self) -> None:
        """Close the readers (the group's stage stops with this service)."""
        for reader in (self._reader, self._ends):
            if reader is not None:
                await reader.stop()

    @mode.Service.task
    async def _fill_in_process(self) -> None:
        """With an in-memory bus: apply every record to the store as it is written."""
        while self._reader is not None and not self.should_stop:
            records = await self._reader.read(timeout_ms=200)
            if records:
                await self.filler.process(records)

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

    async def get(self, code: str, wait_seconds: float = 3.0) -> LiveLink | None:
        """The live or recently expired link of ``code``, or None."""
        return (await self.get_many([code], wait_seconds)).get(code)

    async def get_many(
        self, codes: Iterable[str], wait_seconds: float = 3.0
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
