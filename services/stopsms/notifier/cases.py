"""The cases that concern each PSVA: followed from ``stopsms.cases.v1``, handed to its stream.

The console opens cases and publishes each record (docs/complaints.md, Cases); a PSVA learns
of those that name it on ``WatchCases`` or, with a webhook, in a ``WebhookBatch`` of cases.
Delivery is at least once: a new stream (or a notifier's restart) gets the latest record of
every case that concerns the party again, then each new record as it is read. A PSVA keeps the
highest ``revision`` of each case id.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from stopsms.adapters.bus import Bus, CompactedTopicIndex
from stopsms.v1 import events_pb2


class CaseFeed(CompactedTopicIndex[events_pb2.Case]):
    """The latest record of every case, and a wake-up for each one read."""

    def __init__(self, bus: Bus, topic: str, **kwargs: object) -> None:
        super().__init__(bus, topic, events_pb2.Case.FromString, **kwargs)
        self._subscribers: list[asyncio.Queue[events_pb2.Case]] = []

    def on_value(self, key: str, value: events_pb2.Case | None) -> None:
        """Hand a case record to every open subscription."""
        if value is not None:
            for queue in self._subscribers:
                queue.put_nowait(value)

    async def cases_of(
        self, party_id: str, wait_seconds: float = 5.0
    ) -> AsyncIterator[events_pb2.Case]:
        """The cases that name ``party_id``: every latest record now, then each new one."""
        queue: asyncio.Queue[events_pb2.Case] = asyncio.Queue()
        self._subscribers.append(queue)  # before the snapshot: nothing falls between the two
        try:
            await self.caught_up(wait_seconds)
            sent: dict[str, int] = {}
            for case in sorted(self.values(), key=lambda c: c.opened_time.ToMilliseconds()):
                if party_id in case.party_ids:
                    sent[case.case_id] = case.revision
                    yield case
            while True:
                case = await queue.get()
                if party_id in case.party_ids and case.revision > sent.get(case.case_id, 0):
                    sent[case.case_id] = case.revision
                    yield case
        finally:
            self._subscribers.remove(queue)
