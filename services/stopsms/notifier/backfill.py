"""Backfill: a PSVA newly authorised for a sender first gets that sender's current list.

Once a reloaded directory grants sender S to PSVA P, P's live stream carries S's changes from
then on. The changes of S *before* P's acknowledged position were never P's to receive, so
they are delivered first: a **backfill** of S, read from ``stopsms.suppressions.v1`` (up to
P's acknowledged offsets when the grant was seen), before the live changes, with cursors of
their own (``b1.``) that P acknowledges like any other. A backfill is not a receipt for the
original requests: it moves only its own groups, never P's receipted position.

Durable, in Kafka like every cursor: the group ``<psva group>.backfill.<S>.until`` holds the
end of the backfill, ``<psva group>.backfill.<S>`` the progress P acknowledged. A live cursor
issued after a stream delivered the backfill names it (``c2.``), so acknowledging it closes
the backfill too. Every replica sees a reload and records the same grant; that is idempotent.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from collections.abc import Set as AbstractSet

from stopsms.adapters.bus import Bus
from stopsms.adapters.kafka import ConsumerGroups
from stopsms.domain.parties import PartiesDirectory
from stopsms.domain.topics import Topics, is_key_change
from stopsms.v1 import events_pb2

log = logging.getLogger(__name__)


class Backfills:
    """Open, read and advance backfills."""

    def __init__(
        self,
        bus: Bus,
        topics: Topics,
        offsets: ConsumerGroups,
        acknowledged: Callable[[str], Awaitable[dict[int, int]]],
    ) -> None:
        self._bus = bus
        self._topics = topics
        self._offsets = offsets
        #: A PSVA's acknowledged position (its durable cursor, on any replica).
        self._acknowledged = acknowledged
        self._closed: set[tuple[str, str]] = set()  # known complete: no need to ask Kafka

    def _group(self, party_id: str, sender_id: str) -> str:
        return f"{self._topics.psva_group(party_id)}.backfill.{sender_id}"

    async def open(self, party_id: str, sender_id: str) -> bool:
        """Record a grant: the backfill runs up to what the PSVA has acknowledged so far."""
        until = {p: o for p, o in (await self._acknowledged(party_id)).items() if o > 0}
        if not until:
            return False  # it never acknowledged anything: its stream starts at the beginning
        group = self._group(party_id, sender_id)
        await self._offsets.commit(group + ".until", self._topics.suppressions, until)
        await self._offsets.commit(group, self._topics.suppressions, {p: 0 for p in until})
        self._closed.discard((party_id, sender_id))
        log.info("backfill of %s opened for %s up to %s", sender_id, party_id, until)
        return True

    async def pending(
        self, party_id: str, senders: AbstractSet[str]
    ) -> list[tuple[str, dict[int, int], dict[int, int]]]:
        """The open backfills among ``senders``: (sender, progress, until)."""
        topic = self._topics.suppressions
        out = []
        for sender in sorted(senders):
            if (party_id, sender) in self._closed:
                continue
            group = self._group(party_id, sender)
            until = await self._offsets.committed(group + ".until", topic)
            progress = await self._offsets.committed(group, topic)
            if until and any(progress.get(p, 0) < o for p, o in until.items()):
                out.append((sender, progress, until))
            else:
                self._closed.add((party_id, sender))
        return out

    async def advance(self, party_id: str, sender_id: str, offsets: dict[int, int]) -> None:
        """The PSVA applied the backfill up to ``offsets`` (never moves back)."""
        group = self._group(party_id, sender_id)
        topic = self._topics.suppressions
        durable = await self._offsets.committed(group, topic)
        forward = {p: o for p, o in offsets.items() if o > durable.get(p, -1)}
        if forward:
            await self._offsets.commit(group, topic, forward)

    async def close(self, party_id: str, sender_id: str) -> None:
        """The whole backfill is applied (a live cursor after it was acknowledged)."""
        group = self._group(party_id, sender_id)
        until = await self._offsets.committed(group + ".until", self._topics.suppressions)
        if until:
            await self.advance(party_id, sender_id, until)
        self._closed.add((party_id, sender_id))

    async def read(
        self, sender_id: str, progress: dict[int, int], until: dict[int, int]
    ) -> AsyncIterator[tuple[events_pb2.SuppressionChanged, dict[int, int]]]:
        """The sender's changes from ``progress`` to ``until``, each with the position after."""
        partitions = [p for p, o in until.items() if progress.get(p, 0) < o]
        if not partitions:
            return
        reader = self._bus.reader(
            self._topics.suppressions,
            start_offsets={p: progress.get(p, 0) for p in partitions},
            only_partitions=partitions,
            client_id="stopsms-backfill",
        )
        await reader.start()
        positions = {p: progress.get(p, 0) for p in until}
        try:
            while any(positions[p] < until[p] for p in partitions):
                for record in await reader.read(timeout_ms=500):
                    if record.offset >= until[record.partition]:
                        continue  # the live stream has it
                    positions[record.partition] = record.offset + 1
                    if record.value is None:
                        continue
                    change = events_pb2.SuppressionChanged.FromString(record.value)
                    if change.sender_id == sender_id and not is_key_change(change.subject):
                        yield change, dict(positions)
        finally:
            await reader.stop()


def follow_grants(directory: PartiesDirectory, backfills: Backfills) -> None:
    """Open a backfill for every sender a reloaded directory grants to a PSVA."""
    granted_before = {p.id: set(p.senders) for p in directory if p.is_psva}

    def on_replace(current: PartiesDirectory) -> None:
        for party in current:
            if not party.is_psva:
                continue
            before = granted_before.get(party.id)
            new = set(party.senders) - (before or set())
            granted_before[party.id] = set(party.senders)
            if before is None:
                continue  # a new PSVA: its stream starts at the beginning anyway
            for sender in sorted(new):
                asyncio.get_running_loop().create_task(backfills.open(party.id, sender))

    directory.on_replace(on_replace)
