"""What the regulator's search reads: each citizen's requests, and who looked at them.

Both follow their topic from its beginning (the request log and the audit trail are kept as
the legal record) and keep, per subject, what the search answers with — the requests without
their sealed numbers, and the latest audit entries that name the subject. The index lives in
memory: a subject costs its requests (about 150 bytes each) and at most
:data:`AUDIT_PER_SUBJECT` audit lines. The registry's own lookups (``Check``, ``CheckBatch``:
operators and PSVAs checking every number before each campaign) are counted by the audit
trail but not indexed here: they would make the index as large as every number ever checked.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict, deque

import mode

from stopsms.adapters.bus import Bus, TopicReading
from stopsms.adapters.kafka import Record
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


class RequestHistory(_TopicFollower):
    """Each subject's requests from the request log, in the order received."""

    def __init__(self, bus: Bus, topic: str, **kwargs: object) -> None:
        super().__init__(bus, topic, "stopsms-console-requests", **kwargs)
        self.by_subject: dict[str, list[events_pb2.PreferenceRequested]] = defaultdict(list)
        self.subject_of: dict[str, str] = {}  # event id → subject
        #: A subject under the current pseudonym key → the one it moved from (a re-keying).
        self.moved_from: dict[str, str] = {}

    def take(self, value: bytes) -> None:
        """Keep the request, without the sealed number; a retried (or passed on) one once.

        A migration (a pseudonym re-keying moving a subject's decisions) is no request.
        """
        request = events_pb2.PreferenceRequested.FromString(value)
        if request.HasField("migration"):
            self.moved_from[request.subject] = request.migration.from_subject
            return
        if not request.subject or request.event_id in self.subject_of:
            return
        self.subject_of[request.event_id] = request.subject
        request.ClearField("sealed_msisdn")
        self.by_subject[request.subject].append(request)

    def of(self, subject: str) -> list[events_pb2.PreferenceRequested]:
        """A subject's requests, with those made under the subjects it moved from, oldest first.

        After a pseudonym re-keying a citizen's number has a new subject; the requests made
        before are still theirs.
        """
        chain = [subject]
        while chain[-1] in self.moved_from and len(chain) < 8:
            chain.append(self.moved_from[chain[-1]])
        return [r for earlier in reversed(chain) for r in self.by_subject.get(earlier, ())]


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
