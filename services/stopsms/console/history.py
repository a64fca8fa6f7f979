"""What the regulator's search reads: each citizen's requests, and who looked at them.

Both follow their topic (the request log and the audit trail are kept as the legal record)
and keep, per subject, what the search answers with — the requests without their sealed
numbers, and the latest audit entries that name the subject. The requests are kept in Redis
(:mod:`stopsms.adapters.request_log_store`: the log's three years would not fit a process);
the audit lines in memory, at most :data:`AUDIT_PER_SUBJECT` a subject. The registry's own
lookups (``Check``, ``CheckBatch``: operators and PSVAs checking every number before each
campaign) are counted by the audit trail but not indexed here: they would make the index as
large as every number ever checked.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Iterable
from typing import Protocol

import mode
from redis.exceptions import RedisError

from stopsms.adapters.bus import AppliesOffsets, Bus, TopicReading
from stopsms.adapters.decision_store import (
    DecisionStore,
    InMemoryDecisionStore,
    StoreUnavailable,
)
from stopsms.adapters.decision_store import batch_of as decisions_of_batch
from stopsms.adapters.decision_store import read_entry as read_decision
from stopsms.adapters.kafka import Record
from stopsms.adapters.request_log_store import (
    CHAIN_LIMIT,
    InMemoryRequestLogStore,
    RequestLogStore,
    batch_of,
    read_entries,
    unavailable,
)
from stopsms.domain.complaints import Decision
from stopsms.domain.topics import GLOBAL_SCOPE
from stopsms.v1 import events_pb2

log = logging.getLogger(__name__)

#: The request log and the audit trail are read at most five times a second: nobody waits on
#: them record by record, and each wake-up costs a fetch of every partition.
FOLLOW_WINDOW_S = 0.2
#: The audit lines kept per subject, latest last.
AUDIT_PER_SUBJECT = 100
#: Audited methods not indexed per subject (bulk lookups, see the module's docstring).
BULK_LOOKUPS = frozenset(
    {"/stopsms.v1.RegistryService/Check", "/stopsms.v1.RegistryService/CheckBatch"}
)


class _TopicFollower(mode.Service):
    """Reads one topic from its beginning, batch by batch, for the life of the process."""

    def __init__(self, bus: Bus, topic: str, client_id: str, **kwargs: object) -> None:
        self._bus = bus
        self._topic = topic
        self._client_id = client_id
        self._reader: TopicReading | None = None
        self.read_to_end = asyncio.Event()  # set once the topic as it was at start is read
        super().__init__(**kwargs)  # type: ignore[arg-type]

    async def on_start(self) -> None:
        """Assign every partition from the beginning."""
        self._reader = self._bus.reader(
            self._topic, client_id=self._client_id, batch_window_s=FOLLOW_WINDOW_S
        )
        await self._reader.start()

    async def on_stop(self) -> None:
        """Close the reader."""
        if self._reader is not None:
            await self._reader.stop()

    def take(self, value: bytes) -> None:
        """One record's value (subclasses)."""

    @mode.Service.task
    async def _follow(self) -> None:
        assert self._reader is not None
        async for records in self._reader.read_to_end():
            self._took(records)
        self.read_to_end.set()
        while not self.should_stop:
            self._took(await self._reader.read(timeout_ms=200))

    def _took(self, records: list[Record]) -> None:
        for record in records:
            if record.value is None:
                continue
            try:
                self.take(record.value)
            except Exception:  # noqa: BLE001 - one bad record must not stop the index
                log.exception("unreadable record on %s at offset %d", self._topic, record.offset)


class StoredOffsets(AppliesOffsets, Protocol):
    """A store filled from a topic, with its offsets, that holds a connection."""

    async def close(self) -> None:
        """Let go of the connection."""
        ...


class _StoredLog(mode.Service):
    """Follows a topic into a store that keeps its own offsets (a new or flushed one: refilled).

    It reads every partition from where the store has applied it and writes each batch with
    the offsets after it, so the console's memory does not grow with the topic. The console
    runs one replica: it reads every partition, with no consumer group.
    """

    #: Named in the logs and the reader's client id.
    WHAT = "store"

    def __init__(self, bus: Bus, topic: str, store: StoredOffsets, **kwargs: object) -> None:
        self._bus = bus
        self._topic = topic
        self._offsets_store = store
        self._reader: TopicReading | None = None
        self.read_to_end = asyncio.Event()  # set once the topic as it was at start is stored
        super().__init__(**kwargs)  # type: ignore[arg-type]

    async def on_start(self) -> None:
        """Read every partition from the store's offsets (a partition not applied: the start).

        Until Redis answers, the start waits: the console's first answers need the store.
        """
        while True:
            try:
                applied = await self._offsets_store.applied_offsets()
                break
            except (RedisError, OSError):
                log.warning("%s unreachable; waiting for it", self.WHAT, exc_info=True)
                await asyncio.sleep(1.0)
        self._reader = self._bus.reader(
            self._topic,
            start_offsets=applied,
            client_id=f"stopsms-console-{self.WHAT.split()[0]}",
            batch_window_s=FOLLOW_WINDOW_S,
        )
        await self._reader.start()

    async def on_stop(self) -> None:
        """Close the reader."""
        if self._reader is not None:
            await self._reader.stop()

    async def on_shutdown(self) -> None:
        """Let go of the store."""
        await self._offsets_store.close()

    async def caught_up(self, wait_seconds: float = 3.0) -> bool:
        """Wait until the topic as it was at start is stored (False: not within the wait)."""
        try:
            await asyncio.wait_for(self.read_to_end.wait(), wait_seconds)
            return True
        except TimeoutError:
            log.warning("%s still behind after %.1fs", self.WHAT, wait_seconds)
            return False

    @mode.Service.task
    async def _follow(self) -> None:
        while self._reader is None and not self.should_stop:
            await asyncio.sleep(0.05)
        assert self._reader is not None
        async for records in self._reader.read_to_end():
            await self._store(records)
        self.read_to_end.set()
        while not self.should_stop:
            await self._store(await self._reader.read(timeout_ms=200))

    async def _store(self, records: list[Record]) -> None:
        """Write a batch and its offsets; while Redis is away, the same batch again."""
        if not records:
            return
        while True:
            try:
                await self.write(records)
                return
            except (RedisError, OSError):
                log.warning("%s unreachable; the batch waits", self.WHAT, exc_info=True)
                await asyncio.sleep(1.0)

    async def write(self, records: list[Record]) -> None:
        """Write a batch of records and the offsets after them (subclasses)."""
        raise NotImplementedError


class RequestHistory(_StoredLog):
    """Each subject's requests from the request log, kept in a store, in the order received.

    The log's three years stay in Redis (:mod:`stopsms.adapters.request_log_store`), not in
    the console's memory. Without a store (tests of the console alone), the store is in memory.
    """

    WHAT = "request log store"

    def __init__(
        self, bus: Bus, topic: str, store: RequestLogStore | None = None, **kwargs: object
    ) -> None:
        self.store: RequestLogStore = store or InMemoryRequestLogStore()
        super().__init__(bus, topic, self.store, **kwargs)

    async def write(self, records: list[Record]) -> None:
        """Keep the batch's requests (once each) and re-keying moves, with the offsets."""
        requests, moves, offsets = batch_of(records)
        await self.store.apply(requests, moves, offsets)

    async def of(self, subject: str) -> list[events_pb2.PreferenceRequested]:
        """A subject's requests, with those made under the subjects it moved from, oldest first.

        After a pseudonym re-keying a citizen's number has a new subject; the requests made
        before are still theirs. Raises a ``ConnectionError`` while the store is away.
        """
        return (await self.of_many([subject]))[subject]

    async def of_many(
        self, subjects: Iterable[str]
    ) -> dict[str, list[events_pb2.PreferenceRequested]]:
        """:meth:`of` for many subjects: a round trip per re-keying followed, then one."""
        wanted = list(dict.fromkeys(subjects))
        chains = {subject: [subject] for subject in wanted}
        try:
            ends = list(wanted)  # the subjects whose earlier subject is asked this round
            for _ in range(CHAIN_LIMIT - 1):
                if not ends:
                    break
                earlier = await self.store.moved_from(ends)
                moved = {end: was for end, was in zip(ends, earlier, strict=True) if was}
                further: list[str] = []
                for chain in chains.values():
                    was = moved.get(chain[-1])
                    if was is not None and was not in chain:
                        chain.append(was)
                        further.append(was)
                ends = list(dict.fromkeys(further))
            members = list(dict.fromkeys(m for chain in chains.values() for m in chain))
            stored = dict(zip(members, await self.store.entries(members), strict=True))
        except RedisError as exc:
            raise unavailable(exc) from exc
        oldest = self.store.oldest_ms()
        return {
            subject: [
                request
                for earlier in reversed(chain)
                for request in read_entries(stored[earlier], oldest)
            ]
            for subject, chain in chains.items()
        }

    async def subject_of(self, event_id: str) -> str | None:
        """The subject of a request's event id (None: not in the log)."""
        try:
            return await self.store.subject_of(event_id)
        except RedisError as exc:
            raise unavailable(exc) from exc


class DecisionHistory(_StoredLog):
    """Each subject's decided changes from the suppression list, kept in a store.

    Every decision read is kept, not only each scope's latest, so "in force when the message
    arrived" can be answered (:mod:`stopsms.adapters.decision_store`); ``on_decision`` is told
    of each one once it is stored (the assessor looks again at the complaints it concerns).
    Without a store (tests of the console alone), the store is in memory.
    """

    WHAT = "decision store"

    def __init__(
        self, bus: Bus, topic: str, store: DecisionStore | None = None, **kwargs: object
    ) -> None:
        self.store: DecisionStore = store or InMemoryDecisionStore()
        self.on_decision: Callable[[Decision, str], None] = lambda decision, subject: None
        super().__init__(bus, topic, self.store, **kwargs)

    async def write(self, records: list[Record]) -> None:
        """Keep the batch's decisions and erasures, with the offsets; then tell the assessor."""
        changes, offsets, read = decisions_of_batch(records)
        await self.store.apply(changes, offsets)
        for change in read:
            self.on_decision(decision_of(change), change.subject)

    async def changes_of(
        self, subjects: Iterable[str]
    ) -> dict[str, list[events_pb2.SuppressionChanged]]:
        """Each subject's decided changes, oldest first, in one round trip.

        Raises a ``ConnectionError`` while the store is away.
        """
        wanted = list(dict.fromkeys(subjects))
        try:
            stored = await self.store.entries(wanted)
        except RedisError as exc:
            raise StoreUnavailable(f"decision store: {exc}") from exc
        return {
            subject: [read_decision(value) for value in values]
            for subject, values in zip(wanted, stored, strict=True)
        }


def decision_of(change: events_pb2.SuppressionChanged) -> Decision:
    """A decided change as the complaint rule reads it."""
    return Decision(
        change.sender_id or GLOBAL_SCOPE,
        change.state,
        change.decided_time.ToMilliseconds(),
        change.event_id,
    )


class AuditIndex(_TopicFollower):
    """The latest audit lines naming each subject."""

    def __init__(self, bus: Bus, topic: str, **kwargs: object) -> None:
        super().__init__(bus, topic, "stopsms-console-audit", **kwargs)
        self.by_subject: dict[str, deque[events_pb2.AuditEntry]] = {}

    def take(self, value: bytes) -> None:
        """Index an entry under each subject it names (bulk lookups aside)."""
        entry = events_pb2.AuditEntry.FromString(value)
        if entry.method in BULK_LOOKUPS or not entry.subjects:
            return
        line = events_pb2.AuditEntry()
        line.CopyFrom(entry)
        line.ClearField("subjects")
        for subject in entry.subjects:
            kept = self.by_subject.get(subject)
            if kept is None:
                kept = self.by_subject[subject] = deque(maxlen=AUDIT_PER_SUBJECT)
            kept.append(line)

    def of(self, subject: str) -> list[events_pb2.AuditEntry]:
        """The subject's audit lines, latest first."""
        return list(reversed(self.by_subject.get(subject, ())))
