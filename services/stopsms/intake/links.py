"""StopSMS links: random codes, recorded on ``stopsms.links.v1``, resolved by every replica.

A code is 11 base62 characters drawn from the OS's CSPRNG (62¹¹ ≈ 2⁶⁵·⁵ codes), so links cannot
be guessed or enumerated. With the 19-character base ``https://stopsms.ma/`` a link is 30
characters, short enough for an SMS. Every intake replica reads the whole (compacted) topic, so
a link works wherever the click lands and after any restart.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import string

import mode

from stopsms.core.kafka import TopicReader
from stopsms.v1 import events_pb2

log = logging.getLogger(__name__)

CODE_LENGTH = 11
_ALPHABET = string.digits + string.ascii_letters
_CODE = re.compile(rf"[0-9A-Za-z]{{{CODE_LENGTH}}}")


def new_code() -> str:
    """Draw a fresh random link code."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(CODE_LENGTH))


def is_code(text: str) -> bool:
    """True when ``text`` has the shape of a link code."""
    return bool(_CODE.fullmatch(text))


class LinkDirectory(mode.Service):
    """Every issued link, kept current from the links topic."""

    def __init__(self, bootstrap: str, topic: str, **kwargs: object) -> None:
        self._bootstrap = bootstrap
        self._topic = topic
        self._links: dict[str, events_pb2.StopLink] = {}
        self._reader: TopicReader | None = None
        self._progress = asyncio.Condition()
        super().__init__(**kwargs)  # type: ignore[arg-type]

    async def on_start(self) -> None:
        """Read the topic from the beginning."""
        self._reader = TopicReader(self._bootstrap, self._topic, client_id="stopsms-links")
        await self._reader.start()

    async def on_stop(self) -> None:
        """Close the reader."""
        if self._reader is not None:
            await self._reader.stop()

    def remember(self, link: events_pb2.StopLink) -> None:
        """Hold a link this replica just issued, before the reader sees it come back."""
        self._links[link.code] = link

    @mode.Service.task
    async def _follow(self) -> None:
        assert self._reader is not None
        while not self.should_stop:
            records = await self._reader.read(timeout_ms=200)
            for record in records:
                if record.key is None:
                    continue
                code = record.key.decode()
                if record.value is None:
                    self._links.pop(code, None)
                else:
                    self._links[code] = events_pb2.StopLink.FromString(record.value)
            async with self._progress:
                self._progress.notify_all()

    async def get(self, code: str, wait_seconds: float = 3.0) -> events_pb2.StopLink | None:
        """Resolve a code; if unknown, wait until the reader reached the topic's current end."""
        link = self._links.get(code)
        if link is not None or self._reader is None:
            return link
        ends = await self._reader.end_offsets()

        async def caught_up() -> None:
            assert self._reader is not None
            while True:
                positions = await self._reader.positions()
                if all(positions.get(p, 0) >= end for p, end in ends.items()):
                    return
                async with self._progress:
                    await self._progress.wait()

        try:
            await asyncio.wait_for(caught_up(), wait_seconds)
        except TimeoutError:
            log.warning("link directory still behind the topic after %.1fs", wait_seconds)
        return self._links.get(code)
