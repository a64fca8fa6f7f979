"""The view materialiser: fills the Redis view from ``stopsms.suppressions.v1`` only.

It resumes from the offsets stored in the view itself (written in the same atomic step as the
entries), so a restart neither skips nor needs to replay; an empty view starts from offset 0,
which is also how the view is rebuilt. Nothing else ever writes the view.
"""

from __future__ import annotations

import asyncio
import logging

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

    def __init__(self, bootstrap: str, topic: str, view: SuppressionView, **kwargs: object) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.view = view
        self.reader: TopicReader | None = None
        self.caught_up = asyncio.Event()
        super().__init__(**kwargs)  # type: ignore[arg-type]

    async def on_start(self) -> None:
        """Open a reader positioned at the offsets the view says it has applied."""
        offsets = await self.view.applied_offsets()
        log.info("view resumes at %d applied records", sum(offsets.values()))
        self.reader = TopicReader(self.bootstrap, self.topic, start_offsets=offsets)
        await self.reader.start()

    async def on_stop(self) -> None:
        """Close the reader."""
        if self.reader is not None:
            await self.reader.stop()

    @mode.Service.task
    async def _apply_forever(self) -> None:
        assert self.reader is not None
        while not self.should_stop:
            records = await self.reader.read(timeout_ms=100)
            if not records:
                if not self.caught_up.is_set():
                    self.caught_up.set()
                continue
            updates, offsets = updates_from(records)
            while not self.should_stop:
                try:
                    await self.view.apply(updates, offsets)
                    break
                except Exception:  # noqa: BLE001 - Redis away: retry, never skip a batch
                    log.exception("applying %d changes to the view failed; retrying", len(updates))
                    await asyncio.sleep(1.0)
