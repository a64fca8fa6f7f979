"""A housekeeping pass over the decisions list: what re-sealing and re-keying share.

Both read the partitions of ``stopsms.suppressions.v1`` whose requests this replica decides,
keep the records they are about, and act on each while the subject's state says it is still in
force. Reading happens in a task of its own, a batch at a time into a short queue; each
housekeeping round of the decision stage (between two batches of requests) handles what is
queued, so the decisions never wait behind a whole pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from stopsms.adapters.bus import Bus
from stopsms.adapters.streams import Output, ProcessedBatch, StateStore
from stopsms.domain.topics import Topics
from stopsms.v1 import events_pb2

log = logging.getLogger(__name__)

#: The first pass starts this long after the stage (its state restored by then).
FIRST_PASS_AFTER_S = 30.0
#: Records handled per housekeeping round: a round stays short beside the decisions it runs
#: between (sealing or hashing costs about 10 µs a record).
RECORDS_PER_ROUND = 2000
#: Batches of records found waiting for a round: the reader waits beyond.
QUEUED_BATCHES = 4
#: Records read from the list per fetch.
READ_BATCH = 5000

Found = tuple[int, list[events_pb2.SuppressionChanged]]


class ListPass:
    """Reads this replica's partitions of the list and hands the wanted records to ``handle``.

    A subclass says when it has work (:attr:`enabled`), which records it wants
    (:meth:`wanted`), what it publishes for them (:meth:`handle`) and what it reports
    (:meth:`started`, :meth:`finished`).
    """

    #: The Kafka client id of the pass's reader.
    client_id = "stopsms-registry-pass"
    #: What the logs call the pass.
    name = "list pass"

    def __init__(
        self,
        bus: Bus,
        topics: Topics,
        state: StateStore,
        pass_every_s: float,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bus = bus
        self.topics = topics
        self.state = state
        self.pass_every_s = pass_every_s
        self._clock, self._monotonic = clock, monotonic
        self._next_pass = monotonic() + min(FIRST_PASS_AFTER_S, pass_every_s)
        self._found: asyncio.Queue[Found] = asyncio.Queue(QUEUED_BATCHES)
        self._held: list[events_pb2.SuppressionChanged] = []
        self._held_partition = 0
        self._reading: asyncio.Task[None] | None = None
        self._started = 0.0

    @property
    def enabled(self) -> bool:
        """Whether there is anything to do at all."""
        raise NotImplementedError

    @property
    def running(self) -> bool:
        """Whether a pass is under way."""
        return self._reading is not None

    def wanted(self, change: events_pb2.SuppressionChanged) -> bool:
        """Whether the reader keeps a record for :meth:`handle`."""
        raise NotImplementedError

    def handle(self, partition: int, changes: list[events_pb2.SuppressionChanged]) -> list[Output]:
        """What to publish for a slice of the kept records of ``partition``."""
        raise NotImplementedError

    def started(self) -> None:
        """A pass starts: reset its figures."""

    def finished(self, seconds: float) -> None:
        """A pass read every partition and handled every record: report it."""

    def round(self) -> ProcessedBatch | None:
        """What the next slice found calls for, or None when nothing is to do now."""
        if not self.enabled:
            return None
        if self._reading is None:
            if self._monotonic() < self._next_pass:
                return None
            self._start_pass()
        outputs: list[Output] = []
        handled = 0
        while handled < RECORDS_PER_ROUND:
            if not self._held:
                try:
                    self._held_partition, self._held = self._found.get_nowait()
                except asyncio.QueueEmpty:
                    break
            take = RECORDS_PER_ROUND - handled
            chunk, self._held = self._held[:take], self._held[take:]
            handled += len(chunk)
            outputs += self.handle(self._held_partition, chunk)
        assert self._reading is not None
        if self._reading.done() and self._found.empty() and not self._held:
            self._end_pass(self._reading)
        return ProcessedBatch(outputs) if outputs else None

    async def stop(self) -> None:
        """Give up a pass under way: the process is stopping.

        Its reader is closed rather than left to the loop's end; what it found and was not
        handled is read again by the next process's pass (a pass is idempotent).
        """
        reading, self._reading = self._reading, None
        if reading is None:
            return
        reading.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await reading
        self._held = []
        while not self._found.empty():
            self._found.get_nowait()

    def _start_pass(self) -> None:
        self._started = self._clock()
        self.started()
        self._reading = asyncio.get_running_loop().create_task(self._read(self.state.partitions()))

    def _end_pass(self, reading: asyncio.Task[None]) -> None:
        self._reading = None
        self._next_pass = self._monotonic() + self.pass_every_s
        failure = None if reading.cancelled() else reading.exception()
        if failure is not None:
            # The list could not be read (Kafka away): the next pass starts over, sooner.
            log.error("%s failed (%r); trying again in a minute", self.name, failure)
            self._next_pass = self._monotonic() + min(60.0, self.pass_every_s)
            return
        self.finished(self._clock() - self._started)

    async def _read(self, partitions: list[int]) -> None:
        """Queue, per partition of this replica, the list's records the pass wants."""
        parse = events_pb2.SuppressionChanged.FromString
        for partition in partitions:
            reader = self.bus.reader(
                self.topics.suppressions,
                only_partitions=[partition],
                client_id=self.client_id,
                max_records=READ_BATCH,
            )
            await reader.start()
            try:
                async for records in reader.read_to_end():
                    found = [
                        change
                        for record in records
                        if record.value is not None and self.wanted(change := parse(record.value))
                    ]
                    if found:
                        await self._found.put((partition, found))
            finally:
                with contextlib.suppress(Exception):
                    await reader.stop()
