"""The one loop that applies suppression records to the view: to follow the topic and to rebuild.

The materialiser follows ``stopsms.suppressions.v1`` with it, and each worker of a parallel
rebuild applies its share of the partitions with it, so the two paths decode, verify and write
the same way. Per step it reads a batch, decodes it (:func:`decode_partitions`), adds it to the
expected view when the phase is verified, and hands it to the view while the next one is read
and decoded: one batch in the view at a time, so the stored offsets only move forward. A write
that fails for any reason but a lost view is tried again, never skipped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from stopsms.adapters.bus import GroupedReading
from stopsms.adapters.view import SuppressionView, ViewLost
from stopsms.domain.viewcodec import ChangeBatch, ExpectedCensus, decode_partitions

log = logging.getLogger(__name__)

#: Records read per poll: large polls keep a rebuild fast, and a steady state takes what comes.
READ_BATCH = 10_000
#: How long a failed write waits before it is tried again (Redis away).
RETRY_S = 1.0


class ChangeApplier:
    """Applies what a reader gives to a view; ``applied`` is where every partition stands.

    ``expected``, when given, receives every batch read (the rebuild's verification);
    ``on_applied`` is called after each batch is in the view (the subject filter).
    """

    def __init__(
        self,
        view: SuppressionView,
        *,
        applied: dict[int, int] | None = None,
        expected: ExpectedCensus | None = None,
        on_applied: Callable[[ChangeBatch], None] | None = None,
    ) -> None:
        self.view = view
        self.applied: dict[int, int] = dict(applied or {})
        self.expected = expected
        self.on_applied = on_applied
        #: Records decoded so far.
        self.records = 0
        self._writing: asyncio.Task[None] | None = None
        self._stopped = False

    async def step(self, reader: GroupedReading, timeout_ms: int) -> int:
        """Read one batch and start applying it, after the previous one is in; records read.

        Raises :class:`ViewLost` (from the previous batch) when the view was flushed.
        """
        batch = decode_partitions(
            await reader.read_grouped(timeout_ms=timeout_ms), self.view.layout
        )
        if not batch.offsets:
            await self.settle()
            return 0
        if self.expected is not None:
            self.expected.add(batch)
        await self.settle()
        self._writing = asyncio.create_task(self._write(batch))
        self.records += len(batch)
        return len(batch)

    async def settle(self) -> None:
        """Wait until the batch being applied is in the view (:class:`ViewLost` if flushed)."""
        if self._writing is not None:
            writing, self._writing = self._writing, None
            await writing

    def reached(self, targets: dict[int, int]) -> bool:
        """Whether every partition is applied up to ``targets``."""
        return all(self.applied.get(p, 0) >= end for p, end in targets.items())

    def stop(self) -> None:
        """Give up retrying (the owner is stopping); the batch in flight is not applied."""
        self._stopped = True
        if self._writing is not None:
            self._writing.cancel()

    async def _write(self, batch: ChangeBatch) -> None:
        packed = batch.packed()
        while not self._stopped:
            try:
                await self.view.apply_packed(packed, batch.offsets)
                break
            except ViewLost:
                raise
            except Exception:  # noqa: BLE001 - Redis away: retry, never skip a batch
                log.exception("applying %d changes failed; retrying", len(batch))
                await asyncio.sleep(RETRY_S)
        else:
            return
        for partition, offset in batch.offsets.items():
            if offset > self.applied.get(partition, 0):
                self.applied[partition] = offset
        if self.on_applied is not None:
            self.on_applied(batch)
