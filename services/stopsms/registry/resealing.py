"""Re-sealing: decisions in force sealed under an older data key, published again under the new.

Once none is left under it, the older key can be retired.

The list is compacted: the record in force for a subject and scope is its latest, and a number
that never changes again keeps the seal it was decided under for ever. While the registry holds
previous data keys (``STOPSMS_PREVIOUS_DATA_KEY_FILES``), a pass of the :class:`Resealer` reads
the partitions of ``stopsms.suppressions.v1`` whose requests this replica decides, and publishes
each record sealed under another key again: the same decision (event id, version, state,
times), its number sealed under the current key, and ``resealed_time`` set.

It runs as the decision stage's housekeeping, between batches of requests, because only there
is re-publishing safe: a record is re-sealed only while the subject's state says that its
version is the one in force for its scope. A decision made meanwhile has a higher version, so
the stale record is skipped and never lands after the newer one (which compaction would then
keep). The state also remembers the version re-sealed (``SubjectDecisions.resealed``), so a
later pass, which still reads the superseded records until compaction removes them, publishes
nothing twice.

Reading the topic happens in a task of its own, a batch at a time into a short queue; each
housekeeping round re-seals what is queued. ``stopsms keys reseal`` follows the passes from the
list itself and, once no decision in force is sealed under the retired key, publishes the
key-change record (docs/operations.md, "Re-seal the list").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from prometheus_client import Counter, Gauge

from stopsms.adapters.bus import Bus
from stopsms.adapters.kafka import message_headers
from stopsms.adapters.streams import Output, ProcessedBatch, StateStore
from stopsms.domain.privacy import KeyMaterialError, Pseudonymiser
from stopsms.domain.rules import SubjectDecisions
from stopsms.domain.topics import (
    GLOBAL_SCOPE,
    Topics,
    is_key_change,
    suppression_key,
)
from stopsms.v1 import events_pb2

log = logging.getLogger(__name__)

#: The first pass starts this long after the stage (its state restored by then).
FIRST_PASS_AFTER_S = 30.0
#: Records re-sealed per housekeeping round: sealing costs about 10 µs, so a round stays short
#: beside the decisions it runs between.
RESEALS_PER_ROUND = 2000
#: Batches of records found under older keys waiting for a round: the reader waits beyond.
QUEUED_BATCHES = 4
#: Records read from the list per fetch.
READ_BATCH = 5000

RESEALED = Counter(
    "stopsms_resealed_records",
    "Decisions in force published again under the current data key (re-sealing).",
)
PASS_STARTED = Gauge(
    "stopsms_reseal_pass_started_timestamp_seconds",
    "When the re-sealing pass under way (or the last one) started; 0 without previous keys.",
)
PASS_ENDED = Gauge(
    "stopsms_reseal_pass_completed_timestamp_seconds",
    "When the last complete re-sealing pass ended (every partition of this replica read).",
)
UNSEALABLE = Gauge(
    "stopsms_reseal_unsealable_records",
    "Decisions in force found by the last pass under a data key this registry does not hold.",
)

Found = tuple[int, list[events_pb2.SuppressionChanged]]


class Resealer:
    """Re-seals, a round at a time, the decisions in force sealed under an older data key."""

    def __init__(
        self,
        bus: Bus,
        topics: Topics,
        state: StateStore,
        pseudonymiser: Pseudonymiser,
        pass_every_s: float,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bus = bus
        self.topics = topics
        self.state = state
        self.pseudonymiser = pseudonymiser
        self.current = pseudonymiser.data_key.key_id
        self.pass_every_s = pass_every_s
        self._clock, self._monotonic = clock, monotonic
        self._next_pass = monotonic() + min(FIRST_PASS_AFTER_S, pass_every_s)
        self._found: asyncio.Queue[Found] = asyncio.Queue(QUEUED_BATCHES)
        self._held: list[events_pb2.SuppressionChanged] = []
        self._held_partition = 0
        self._reading: asyncio.Task[None] | None = None
        self._started = 0.0
        self._resealed = self._unsealable = 0
        self._unknown_keys: set[str] = set()

    @property
    def enabled(self) -> bool:
        """Whether there is anything to re-seal from: previous data keys are held."""
        return len(self.pseudonymiser.data_keys) > 1

    @property
    def running(self) -> bool:
        """Whether a pass is under way."""
        return self._reading is not None

    def round(self) -> ProcessedBatch | None:
        """The re-sealed records of the next slice found, or None when nothing is to do now."""
        if not self.enabled:
            return None
        if self._reading is None:
            if self._monotonic() < self._next_pass:
                return None
            self._start_pass()
        outputs: list[Output] = []
        while len(outputs) < RESEALS_PER_ROUND:
            if not self._held:
                try:
                    self._held_partition, self._held = self._found.get_nowait()
                except asyncio.QueueEmpty:
                    break
            take = RESEALS_PER_ROUND - len(outputs)
            chunk, self._held = self._held[:take], self._held[take:]
            outputs += self._reseal(self._held_partition, chunk)
        assert self._reading is not None
        if self._reading.done() and self._found.empty() and not self._held:
            self._end_pass(self._reading)
        return ProcessedBatch(outputs) if outputs else None

    def _start_pass(self) -> None:
        self._started = self._clock()
        self._resealed = self._unsealable = 0
        PASS_STARTED.set(self._started)
        self._reading = asyncio.get_running_loop().create_task(self._read(self.state.partitions()))

    def _end_pass(self, reading: asyncio.Task[None]) -> None:
        self._reading = None
        self._next_pass = self._monotonic() + self.pass_every_s
        failure = None if reading.cancelled() else reading.exception()
        if failure is not None:
            # The list could not be read (Kafka away): the next pass starts over, sooner.
            log.error("re-sealing pass failed (%r); trying again in a minute", failure)
            self._next_pass = self._monotonic() + min(60.0, self.pass_every_s)
            return
        PASS_ENDED.set(self._clock())
        UNSEALABLE.set(self._unsealable)
        log.info(
            "re-sealing pass: %d decisions in force re-sealed under %s, %d under keys not "
            "held, in %.1f s",
            self._resealed,
            self.current,
            self._unsealable,
            self._clock() - self._started,
        )

    async def _read(self, partitions: list[int]) -> None:
        """Queue, per partition of this replica, the list's records under other keys."""
        parse = events_pb2.SuppressionChanged.FromString
        for partition in partitions:
            reader = self.bus.reader(
                self.topics.suppressions,
                only_partitions=[partition],
                client_id="stopsms-registry-reseal",
                max_records=READ_BATCH,
            )
            await reader.start()
            try:
                async for records in reader.read_to_end():
                    found = []
                    for record in records:
                        if record.value is None:
                            continue
                        change = parse(record.value)
                        if change.sealed_msisdn.key_id != self.current and not is_key_change(
                            change.subject
                        ):
                            found.append(change)
                    if found:
                        await self._found.put((partition, found))
            finally:
                with contextlib.suppress(Exception):
                    await reader.stop()

    def _reseal(self, partition: int, changes: list[events_pb2.SuppressionChanged]) -> list[Output]:
        """Each record still in force, sealed under the current key; the states marked."""
        outputs: list[Output] = []
        marked: dict[bytes, SubjectDecisions] = {}
        now = self._clock()
        # One trace for the slice: a re-sealing continues no citizen's request.
        headers = message_headers("stopsms.v1.SuppressionChanged")
        for change in changes:
            subject = change.subject.encode()
            state = marked.get(subject)
            if state is None:
                raw = self.state.get(partition, subject)
                if raw is None:
                    continue  # erased, or the partition was handed to another replica
                state = SubjectDecisions.from_json(raw)
            scope = change.sender_id or GLOBAL_SCOPE
            entry = state.scopes.get(scope)
            if entry is None or entry.version != change.version:
                continue  # superseded: the newer decision is sealed under the current key
            if state.resealed.get(scope) == change.version:
                continue  # re-sealed by an earlier pass; compaction has not removed this yet
            try:
                number = self.pseudonymiser.unseal(change.sealed_msisdn)
            except KeyMaterialError:
                self._unsealable += 1
                if change.sealed_msisdn.key_id not in self._unknown_keys:
                    self._unknown_keys.add(change.sealed_msisdn.key_id)
                    log.error(
                        "decisions in force are sealed under data key %r, which this registry "
                        "does not hold: add it to STOPSMS_PREVIOUS_DATA_KEY_FILES to re-seal them",
                        change.sealed_msisdn.key_id,
                    )
                continue
            resealed = events_pb2.SuppressionChanged()
            resealed.CopyFrom(change)
            resealed.sealed_msisdn.CopyFrom(self.pseudonymiser.seal(number))
            resealed.resealed_time.FromNanoseconds(round(now * 1e9))
            # Read from ``partition``, where its subject places it: it goes back there.
            key = suppression_key(change.subject, change.sender_id).encode()
            value = resealed.SerializeToString()
            outputs.append(Output(self.topics.suppressions, key, value, partition, headers))
            state.resealed[scope] = change.version
            marked[subject] = state
        for subject, state in marked.items():
            outputs.append(self.state.put(partition, subject, state.to_json().encode()))
        self._resealed += len(outputs) - len(marked)
        RESEALED.inc(len(outputs) - len(marked))
        return outputs
