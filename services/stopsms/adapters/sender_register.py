"""Every process follows the register of declared senders and entitles its parties from it.

The register's records (``stopsms.senders.v1``) are read into an in-memory index; after each
batch the process's one :class:`PartiesDirectory` is replaced by one entitled by the new
register, so a sender granted, moved or aliased reaches every reader of the directory (the
authoriser, the fan-out, the backfills of newly granted senders) within one read of the topic,
without a restart. Rebuilding costs one pass over the senders per batch of changes: senders
change rarely and number in the thousands, not millions.
"""

from __future__ import annotations

import asyncio
import logging

from stopsms.adapters.bus import Bus, CompactedTopicIndex
from stopsms.adapters.kafka import Publisher, message_headers
from stopsms.domain.parties import PartiesDirectory
from stopsms.domain.senders import SenderRegister
from stopsms.domain.topics import Topics
from stopsms.v1 import senders_pb2

log = logging.getLogger(__name__)


class SenderRegisterFollower(CompactedTopicIndex[senders_pb2.Sender]):
    """The register, current within a read of the topic, and the directory entitled by it."""

    def __init__(
        self,
        bus: Bus,
        topic: str,
        directory: PartiesDirectory,
        *,
        ready_seconds: float = 15.0,
        **kwargs: object,
    ) -> None:
        super().__init__(bus, topic, senders_pb2.Sender.FromString, **kwargs)
        self._directory = directory
        self._ready_seconds = ready_seconds
        self.register = SenderRegister.empty()
        self._changed = False

    async def on_started(self) -> None:
        """Wait (bounded) until the register is read: entitlements come from it.

        A process starts its services in order, so what follows the follower (the decisions,
        the feed, the gRPC endpoint) starts only once every declared sender is known; otherwise
        a party's first calls after a restart would be refused for its own senders.
        """
        if self._ready_seconds and not await self.caught_up(self._ready_seconds):
            log.warning(
                "sender register not read within %.0f s; serving with what is read so far",
                self._ready_seconds,
            )

    def on_value(self, key: str, value: senders_pb2.Sender | None) -> None:
        """A sender's record changed: the register is rebuilt after the batch."""
        self._changed = True

    def on_batch(self) -> None:
        """Rebuild the register and entitle the directory by it."""
        if self._changed:
            self._changed = False
            self._entitle()

    def put(self, key: str, value: senders_pb2.Sender) -> None:
        """A record this replica just published: entitle by it at once."""
        super().put(key, value)
        self._entitle()

    def _entitle(self) -> None:
        self.register = SenderRegister.of(self._values.values())
        for line in self._directory.replace(self._directory.with_senders(self.register)):
            log.info("sender register: %s", line)


async def publish_change(
    publisher: Publisher, topics: Topics, changed: senders_pb2.SenderChanged
) -> None:
    """Write one change of the register: the record (compacted) and the change (its history)."""
    key = changed.sender.sender_id.encode()
    await asyncio.gather(
        publisher.publish(
            topics.senders,
            key,
            changed.sender.SerializeToString(),
            headers=message_headers("stopsms.v1.Sender"),
        ),
        publisher.publish(
            topics.sender_changes,
            key,
            changed.SerializeToString(),
            headers=message_headers("stopsms.v1.SenderChanged"),
        ),
    )
