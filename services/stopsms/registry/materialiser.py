"""The view materialiser: fills the Redis view from ``stopsms.suppressions.v1`` only.

Until it has applied everything that was in the topic when it started, the registry reports
``stopsms.v1.RegistryService`` NOT_SERVING, so no replica answers from a view that is behind.
It resumes from the offsets stored in the view itself (written in the same atomic step as the
entries), so a restart neither skips nor needs to replay; an empty view starts from offset 0,
which is also how the view is rebuilt. Nothing else ever writes the view.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import mode

from stopsms.core.kafka import TopicReader
from stopsms.core.view import ScopeEntry, SuppressionView, ViewUpdate
from stopsms.v1 import events_pb2

log = logging.getLogger(__name__)


def updates_from(records: list) -> tuple[list[ViewUpdate], dict[int, int]]:  # type: ignore[type-arg]
    """Turn suppression records into view updates and the offsets after them."""
    updates: list[ViewUpdate] = []
    offsets: dict[int, int] = {}
    for record in records:
        offsets[record.partition] = max(offsets.get(record.partition, 0), record.offset + 1)
        if record.value is None:
            continue  # an erasure tombstone; erasure arrives with the retention work
        change = events_pb2.SuppressionChanged.FromString(record.value)
        updates.append(
            ViewUpdate(
                change.subject,
                change.sender_id,
                ScopeEntry(change.state, change.version, change.action_time.ToMilliseconds()),
            )
        )
    return updates, offsets


class ViewMaterialiser(mode.Service):
    """Reads every partition of the suppressions topic and applies it to the view."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        view: SuppressionView,
        on_caught_up: Callable[[], Awaitable[None]] | None = None,
        **kwargs: object,
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.view = view
        self.on_caught_up = on_caught_up
        self._targets: dict[int, int] = {}
        self.reader: TopicReader | None = None
        self.caught_up = asyncio.Event()
        super().__init__(**kwargs)  # type: ignore[arg-type]

    async def on_start(self) -> None:
        """Open a reader positioned at the offsets the view says it has applied."""
        offsets = await self.view.applied_offsets()
        log.info("view resumes at %d applied records", sum(offsets.values()))
        self.reader = TopicReader(self.bootstrap, self.topic, start_offsets=offsets)
        await self.reader.start()
        self._targets = await self.reader.end_offsets()  # caught up once these are applied

    async def on_stop(self) -> None:
        """Close the reader."""
        if self.reader is not None:
            await self.reader.stop()

    @mode.Service.task
    async def _apply_forever(self) -> None:
        assert self.reader is not None
        while not self.should_stop:
            records = await self.reader.read(timeout_ms=100)
            if records:
                updates, offsets = updates_from(records)
                while not self.should_stop:
                    try:
                        await self.view.apply(updates, offsets)
                        break
                    except Exception:  # noqa: BLE001 - Redis away: retry, never skip a batch
                        log.exception("applying %d changes failed; retrying", len(updates))
                        await asyncio.sleep(1.0)
            if not self.caught_up.is_set() and await self._reached_targets():
                self.caught_up.set()
                log.info("the view has caught up with the suppression list")
                if self.on_caught_up is not None:
                    await self.on_caught_up()

    async def _reached_targets(self) -> bool:
        assert self.reader is not None
        positions = await self.reader.positions()
        return all(positions.get(p, 0) >= end for p, end in self._targets.items())
