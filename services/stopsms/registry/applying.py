"""The one loop that applies suppression records to the view: to follow the topic and to rebuild.

The materialiser follows ``stopsms.suppressions.v1`` with it, and each worker of a parallel
rebuild applies its share of the partitions with it, so the two paths decode, verify and write
the same way. Per step it reads a batch, decodes it (:func:`decode_partitions`), adds it to the
expected view when the phase is verified, and hands it to the view while the next one is read
and decoded: one batch in the view at a time, so the stored offsets only move forward. A write
that fails for any reason but a lost view is tried again, never skipped.

A rebuild's worker gathers its batches into windows of millions of records instead
(``window``), written bucket by bucket (:class:`BucketWindow`) while the next window is read:
at fifty million entries a bucket then costs Redis two calls a window rather than one an entry.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from stopsms.adapters.bus import GroupedReading
from stopsms.adapters.view import SuppressionView, ViewLost
from stopsms.domain.viewcodec import (
    BucketWindow,
    ChangeBatch,
    ExpectedCensus,
    decode_partitions,
)

log = logging.getLogger(__name__)

#: Records read per poll: large polls keep a rebuild fast, and a steady state takes what comes.
READ_BATCH = 10_000
#: How long a failed write waits before it is tried again (Redis away).
RETRY_S = 1.0
#: Records of a window written in one script call: about 1.5 MB, tens of milliseconds of Redis.
WINDOW_CHUNK = 50_000


class ChangeApplier:
    """Applies what a reader gives to a view; ``applied`` is where every partition stands.

    ``expected``, when given, receives every batch read (the rebuild's verification);
    ``on_applied`` is called after each batch is in the view (the subject filter). With
    ``window``, batches are gathered until that many records and written bucket by bucket
    (a rebuild's worker; no ``on_applied`` then).
    """

    def __init__(
        self,
        view: SuppressionView,
        *,
        applied: dict[int, int] | None = None,
        expected: ExpectedCensus | None = None,
        on_applied: Callable[[ChangeBatch], None] | None = None,
        window: int = 0,
    ) -> None:
        if window and on_applied is not None:
            raise ValueError("a windowed applier tells of no batch applied")
        self.view = view
        self.applied: dict[int, int] = dict(applied or {})
        self.expected = expected
        self.on_applied = on_applied
        self.window = window
        self._gathered = BucketWindow()
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
        self.records += len(batch)
        if self.window:
            self._gathered.add(batch)
            if self._gathered.count >= self.window:
                await self._write_gathered()
            return len(batch)
        await self.settle()
        self._writing = asyncio.create_task(self._write(batch))
        return len(batch)

    async def settle(self) -> None:
        """Wait until everything read is in the view (:class:`ViewLost` if flushed)."""
        if self.window and self._gathered.offsets:
            await self._write_gathered()
        if self._writing is not None:
            writing, self._writing = self._writing, None
            await writing

    async def _write_gathered(self) -> None:
        """Start writing the window gathered, once the one before it is in the view."""
        window, self._gathered = self._gathered, BucketWindow()
        if self._writing is not None:
            writing, self._writing = self._writing, None
            await writing
        self._writing = asyncio.create_task(self._write_window(window))

    def reached(self, targets: dict[int, int]) -> bool:
        """Whether every partition is applied up to ``targets``."""
        return all(self.applied.get(p, 0) >= end for p, end in targets.items())

    def stop(self) -> None:
        """Give up retrying (the owner is stopping); the batch in flight is not applied."""
        self._stopped = True
        if self._writing is not None:
            self._writing.cancel()

    async def _write(self, batch: ChangeBatch) -> None:
        if not await self._applied(self.view.apply_packed, batch.packed(), batch.offsets):
            return
        self._moved(batch.offsets)
        if self.on_applied is not None:
            self.on_applied(batch)

    async def _write_window(self, window: BucketWindow) -> None:
        """A window's records, bucket by bucket; its offsets go with its last chunk."""
        chunks = list(window.chunks(WINDOW_CHUNK)) or [b""]
        for n, chunk in enumerate(chunks, 1):
            offsets = window.offsets if n == len(chunks) else {}
            if not await self._applied(self.view.apply_by_bucket, chunk, offsets):
                return
        self._moved(window.offsets)

    async def _applied(
        self,
        apply: Callable[[bytes, dict[int, int]], Awaitable[None]],
        packed: bytes,
        offsets: dict[int, int],
    ) -> bool:
        """Apply, retrying until it is in (False: given up because the owner stops)."""
        while not self._stopped:
            try:
                await apply(packed, offsets)
                return True
            except ViewLost:
                raise
            except Exception:  # noqa: BLE001 - Redis away: retry, never skip a batch
                log.exception("applying %d bytes of changes failed; retrying", len(packed))
                await asyncio.sleep(RETRY_S)
        return False

    def _moved(self, offsets: dict[int, int]) -> None:
        for partition, offset in offsets.items():
            if offset > self.applied.get(partition, 0):
                self.applied[partition] = offset
