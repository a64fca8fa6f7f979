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
from collections.abc import Iterable

import mode
from redis.exceptions import RedisError

from stopsms.adapters.bus import Bus, TopicReading
from stopsms.adapters.kafka import Record
from stopsms.adapters.request_log_store import (
    CHAIN_LIMIT,
    InMemoryRequestLogStore,
    RequestLogStore,
    batch_of,
    read_entries,
    unavailable,
)
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


class RequestHistory(mode.Service):
    """Each subject's requests from the request log, kept in a store, in the order received.

    It reads the log from where the store has applied it (a new or flushed store: from the
    beginning) and writes each batch with the offsets after it, so the console's memory does
    not grow with the log's three years (:mod:`stopsms.adapters.request_log_store`). The
    console runs one replica: it reads every partition, with no consumer group. Without a
    store (tests of the console alone), the store is in memory.
    """

    def __init__(
        self, bus: Bus, topic: str, store: RequestLogStore | None = None, **kwargs: object
    ) -> None:
        self._bus = bus
        self._topic = topic
        self.store: RequestLogStore = store or InMemoryRequestLogStore()
        self._reader: TopicReading | None = None
        self.read_to_end = asyncio.Event()  # set once the log as it was at start is stored
        super().__init__(**kwargs)  # type: ignore[arg-type]

    async def on_start(self) -> None:
        """Read every partition from the store's offsets (a partition not applied: the start).

        Until Redis answers, the start waits: the console's first answers need the log.
        """
        while True:
            try:
                applied = await self.store.applied_offsets()
                break
            except (RedisError, OSError):
                log.warning("request log store unreachable; waiting for it", exc_info=True)
                await asyncio.sleep(1.0)
        self._reader = self._bus.reader(
            self._topic,
            start_offsets=applied,
            client_id="stopsms-console-requests",
            batch_window_s=FOLLOW_WINDOW_S,
        )
        await self._reader.start()

    async def on_stop(self) -> None:
        """Close the reader."""
        if self._reader is not None:
            await self._reader.stop()

    async def on_shutdown(self) -> None:
        """Let go of the store."""
        await self.store.close()

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
        requests, moves, offsets = batch_of(records)
        while True:
            try:
                await self.store.apply(requests, moves, offsets)
                return
            except (RedisError, OSError):
                log.warning("request log store unreachable; the batch waits", exc_info=True)
                await asyncio.sleep(1.0)

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
