"""The view materialiser: fills the Redis view from ``stopsms.suppressions.v1`` only.

It resumes from the offsets stored in the view itself (written in the same atomic step as the
entries), so a restart neither skips nor needs to replay. The view is *rebuilt* from offset 0
when it is empty (a new Redis, a flush, a replacement), written with another layout, or when
it falls behind what this process has already applied (a failover that lost acknowledged
writes, a flush while running): the materialiser notices within a second by comparing the
stored offsets with its own.

While it catches up (to the topic's end offsets taken when the phase began), the registry
reports ``stopsms.v1.RegistryService`` NOT_SERVING, so no replica answers from a view that is
behind; the process itself stays SERVING. After a rebuild from offset 0 it verifies the view:
the count and checksum of every entry in Redis must equal those of the latest entry per subject
and scope among the records it read. Nothing else ever writes the view.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import mode
from prometheus_client import Gauge

from stopsms.adapters.bus import Bus, TopicReading
from stopsms.adapters.kafka import BATCH_WINDOW_S
from stopsms.adapters.view import SuppressionView, ViewLost
from stopsms.domain.viewcodec import LOCATED_BYTES, ChangeBatch, ExpectedCensus
from stopsms.registry.applying import READ_BATCH, ChangeApplier
from stopsms.registry.rebuild import (
    Progress,
    ViewVerificationError,
    rebuild_in_parallel,
)
from stopsms.registry.subject_filter import SubjectFilter

log = logging.getLogger(__name__)

#: Below this many records a rebuild stays in this process: starting workers would cost more.
PARALLEL_REBUILD_FROM = 50_000
#: How often the stored offsets are compared with this process's own (a flush is seen this fast).
CHECK_INTERVAL_S = 1.0


#: 1 while the view is rebuilt or caught up after a loss (lookups answer NOT_SERVING), else 0.
VIEW_BEHIND = Gauge(
    "stopsms_view_behind",
    "1 while the registry's view is being rebuilt or caught up (lookups NOT_SERVING).",
)


class ViewMaterialiser(mode.Service):
    """Reads every partition of the suppressions topic and applies it to the view."""

    def __init__(
        self,
        bus: Bus,
        topic: str,
        view: SuppressionView,
        on_caught_up: Callable[[], Awaitable[None]] | None = None,
        on_behind: Callable[[], Awaitable[None]] | None = None,
        *,
        rebuild: bool = False,
        subject_filter: SubjectFilter | None = None,
        rebuild_workers: int = 1,
        parallel_rebuild_from: int = PARALLEL_REBUILD_FROM,
        redis_url: str = "",
        namespace: str = "",
        **kwargs: object,
    ) -> None:
        self.bus = bus
        self.topic = topic
        self.view = view
        self.on_caught_up = on_caught_up
        self.on_behind = on_behind
        self._force_rebuild = rebuild
        self.subject_filter = subject_filter
        #: Processes a rebuild from offset 0 uses (see :mod:`stopsms.registry.rebuild`); they
        #: reach Kafka and Redis by address, so a bus in this process only rebuilds here.
        self.rebuild_workers = rebuild_workers if redis_url and bus.kafka is not None else 1
        self.parallel_rebuild_from = parallel_rebuild_from
        self._redis_url = redis_url
        self._namespace = namespace
        self._targets: dict[int, int] = {}
        self._applier = ChangeApplier(view)
        self._failed_verifications = 0
        self._verify_after = 0.0
        self.reader: TopicReading | None = None
        self.caught_up = asyncio.Event()
        self.progress = Progress()
        super().__init__(**kwargs)  # type: ignore[arg-type]

    async def on_start(self) -> None:
        """Decide between resuming and rebuilding, and position the reader."""
        warning = await self.view.listpack_warning()
        if warning:
            log.warning(warning)
        await self._begin_phase(clear=self._force_rebuild)

    async def on_stop(self) -> None:
        """Close the reader."""
        self._applier.stop()
        if self.reader is not None:
            await self.reader.stop()

    async def _begin_phase(self, *, clear: bool = False) -> None:
        meta = await self.view.meta()
        offsets = await self.view.applied_offsets()
        if meta != self.view.expected_meta() and (meta or offsets):
            log.warning(
                "the view was written with layout %s, this registry uses %s: rebuilding",
                meta or "(unrecorded)",
                self.view.expected_meta(),
            )
            clear = True
        if clear:
            await self.view.clear()
            offsets = {}
        rebuilding = not offsets
        if (
            rebuilding
            and self.rebuild_workers > 1
            and await self._records_in_topic() >= self.parallel_rebuild_from
        ):
            offsets = await self._rebuild_in_parallel()
            rebuilding = False  # verified already: what is left is an ordinary catch-up
        if rebuilding:
            await self.view.write_meta()
        if self.subject_filter is not None and not self.subject_filter.ready:
            added = await self._fill_subject_filter(self.subject_filter)
            self.subject_filter.ready = True
            log.info("subject filter filled with %d subjects", added)
        if self.reader is not None:
            await self.reader.stop()
        self.reader = self.bus.reader(
            self.topic,
            start_offsets=offsets,
            max_records=READ_BATCH,
            batch_window_s=BATCH_WINDOW_S,
        )
        await self.reader.start()
        self._targets = await self.reader.end_offsets()
        self._applier.stop()  # a batch of the phase before is stale
        self._applier = ChangeApplier(
            self.view,
            applied={p: offsets.get(p, 0) for p in self._targets},
            expected=ExpectedCensus() if rebuilding else None,
            on_applied=self._applied_batch,
        )
        applied = sum(self._applier.applied.values())
        self.progress = Progress(
            rebuilding=rebuilding,
            started=time.monotonic(),
            start_records=applied,
            target_records=sum(self._targets.values()),
            applied_records=applied,
        )
        self.caught_up.clear()
        log.info(
            "%s the view: %d of %d records applied",
            "rebuilding" if rebuilding else "resuming",
            self.progress.applied_records,
            self.progress.target_records,
        )

    async def _records_in_topic(self) -> int:
        reader = self.bus.reader(self.topic, fetching=False)
        await reader.start()
        try:
            return sum((await reader.end_offsets()).values())
        finally:
            await reader.stop()

    async def _rebuild_in_parallel(self) -> dict[int, int]:
        """Rebuild from offset 0 on several cores until verified; the offsets reached."""
        failures = 0
        while True:
            try:
                assert self.bus.kafka is not None
                progress = await rebuild_in_parallel(
                    self.bus.kafka,
                    self.topic,
                    self.view,
                    self._redis_url,
                    self._namespace,
                    self.rebuild_workers,
                )
                break
            except ViewVerificationError as exc:
                failures += 1
                log.error("view verification failed (%s); rebuilding again", exc)
                await asyncio.sleep(min(30.0, 2.0**failures))
        seconds = progress.seconds
        log.info(
            "view rebuilt and verified: %s, %d records in %.1f s by %d processes "
            "(%.0f entries/s, verification %.1f s)",
            progress.verified,
            progress.entries_read,
            seconds,
            self.rebuild_workers,
            progress.entries_read / max(seconds, 1e-9),
            progress.verify_seconds,
        )
        self.progress = progress
        if self.subject_filter is not None:
            await self._fill_subject_filter(self.subject_filter)
        return await self.view.applied_offsets()

    async def _fill_subject_filter(self, subject_filter: SubjectFilter) -> int:
        """Add every subject the view holds to the filter, a chunk at a time; how many.

        The offsets are read before the scan: the view held at least everything up to them.
        """
        covered = await self.view.applied_offsets()
        added = 0
        async for located in self.view.located_chunks():
            subject_filter.add(located)
            added += len(located) // LOCATED_BYTES
        subject_filter.covered(covered)
        return added

    @mode.Service.task
    async def _apply_forever(self) -> None:
        last_check = time.monotonic()
        while not self.should_stop:
            assert self.reader is not None
            try:
                self.progress.entries_read += await self._applier.step(self.reader, 100)
                if (
                    not self.caught_up.is_set()
                    and self._applier.reached(self._targets)
                    and time.monotonic() >= self._verify_after
                ):
                    await self._finish_phase()
                if time.monotonic() - last_check >= CHECK_INTERVAL_S:
                    last_check = time.monotonic()
                    await self._applier.settle()
                    await self._check_not_behind()
            except ViewLost:
                await self._view_went_back("the view was flushed")

    def _applied_batch(self, batch: ChangeBatch) -> None:
        """After each batch is in the view: the subject filter and the progress follow."""
        if self.subject_filter is not None:
            self.subject_filter.add(b"".join(batch.located))
            self.subject_filter.covered(batch.offsets)
        self.progress.applied_records = sum(self._applier.applied.values())

    async def _finish_phase(self) -> None:
        await self._applier.settle()
        if self._applier.expected is not None:
            verify_started = time.monotonic()
            expected = self._applier.expected.census()
            actual, stored = await self.view.census()
            self.progress.verify_seconds = time.monotonic() - verify_started
            if actual != expected:
                if stored != self._applier.applied:
                    # another materialiser wrote further: verify again once level with it
                    self._verify_after = time.monotonic() + CHECK_INTERVAL_S
                    return
                self._failed_verifications += 1
                log.error(
                    "view verification failed: read %s, the view holds %s; rebuilding again",
                    expected,
                    actual,
                )
                await asyncio.sleep(min(30.0, 2.0**self._failed_verifications))
                await self._begin_phase(clear=True)
                return
            self.progress.verified = actual
            seconds = self.progress.seconds
            log.info(
                "view rebuilt and verified: %s, %d records in %.1f s (%.0f entries/s)",
                actual,
                self.progress.applied_records,
                seconds,
                self.progress.entries_read / max(seconds, 1e-9),
            )
            self._applier.expected = None
            self._failed_verifications = 0
        self.caught_up.set()
        log.info("the view has caught up with the suppression list")
        if self.on_caught_up is not None:
            await self.on_caught_up()

    async def _check_not_behind(self) -> None:
        try:
            meta = await self.view.meta()
            stored = await self.view.applied_offsets()
        except Exception:  # noqa: BLE001 - Redis away: the next apply retries and logs
            return
        if not meta:
            await self._view_went_back("the view was flushed")
            return
        behind = {p: o for p, o in self._applier.applied.items() if o > stored.get(p, 0)}
        if behind:
            await self._view_went_back(
                f"the view is behind what this registry applied ({len(behind)} partitions; "
                "a failover lost writes)"
            )

    async def _view_went_back(self, why: str) -> None:
        log.warning("%s: NOT_SERVING until it has caught up from its stored offsets", why)
        if self.on_behind is not None:
            await self.on_behind()
        await self._begin_phase()
