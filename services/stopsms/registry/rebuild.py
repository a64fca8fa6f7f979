"""Rebuilding the view from offset 0 on every core, then verifying it.

Decoding millions of records is Python work, so a rebuild splits the partitions of
``stopsms.suppressions.v1`` among worker processes. That is exact because every record of one
subject is in one partition (the topic is partitioned by subject): each worker keeps the latest
entry of its own subjects and computes their census, and since the checksum is a sum, the
workers' censuses add up to what the whole view must hold. Writes are version-checked, so a
registry that rebuilds beside this one cannot make the view wrong, only the check inconclusive.

Used by ``stopsms registry rebuild`` and by the registry itself when it finds its view empty.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import multiprocessing
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

from stopsms.adapters.bus import KafkaBus
from stopsms.adapters.kafka import RecordBatchReader
from stopsms.adapters.kafka_access import KafkaAccess
from stopsms.adapters.view import RedisSuppressionView, SuppressionView
from stopsms.domain.viewcodec import Census, ExpectedCensus, ViewLayout
from stopsms.registry.applying import ChangeApplier

log = logging.getLogger(__name__)

#: Allocations between two collections of the youngest generation in a rebuild's processes
#: (Python's default: 700). A worker makes millions of short-lived objects that hold no cycles
#: (a fetch's records, their entries, a bucket's fields), and at the default each fetch set
#: off thousands of collections whose older generations walked every record still held:
#: 1.4 µs of a worker's CPU a record, against 0.06 at this threshold (measured offline on 2 MB
#: fetches, the collector's own time from ``gc.callbacks``).
WORKER_GC_THRESHOLD = 100_000
#: Records a rebuild's worker gathers, per bucket of the view, before writing them bucket by
#: bucket (it reads the next window while Redis takes this one). Written one by one, a record
#: costs Redis a call into its bucket; a window writes a bucket's run in two calls, so the more
#: records a run holds the less each costs. At about four a run, Redis spent 3.4 µs a record
#: where it spent 4.4–5.2 one by one, and the rebuild of two million entries took 13.0 s
#: against 15.5–17.0 (docs/registry.md). A national view (2²⁰ buckets) gathers four million
#: records a window, about 200 MB of a worker's memory.
RECORDS_PER_BUCKET = 4


@dataclass
class Progress:
    """Where the current catch-up stands (shown by ``stopsms registry rebuild``)."""

    rebuilding: bool = False
    started: float = 0.0
    start_records: int = 0
    target_records: int = 0
    applied_records: int = 0
    entries_read: int = 0
    verified: Census | None = None
    #: Time spent verifying (counting and checksumming both sides) at the end of a rebuild.
    verify_seconds: float = 0.0

    @property
    def seconds(self) -> float:
        """Time since the phase began."""
        return time.monotonic() - self.started


class ViewVerificationError(RuntimeError):
    """After a rebuild the view does not hold what was read from the topic."""


@dataclass(frozen=True)
class _Share:
    bootstrap: KafkaAccess | str
    topic: str
    redis_url: str
    namespace: str
    bucket_bits: int
    targets: dict[int, int]
    #: This share's place among the counts of records read (:data:`_read`).
    slot: int = 0
    #: Records gathered before a window is written (0: written batch by batch).
    window: int = 0


@dataclass(frozen=True)
class _ShareResult:
    records: int
    census: Census
    applied: dict[int, int]


#: In a rebuild's worker process: records read so far, a slot per share (shared with the
#: registry's process, which shows them while the view is written a window at a time).
_read: Any = None


def _worker_started(read: Any) -> None:
    """A rebuild process collects garbage seldom (:data:`WORKER_GC_THRESHOLD`)."""
    global _read
    _read = read
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(WORKER_GC_THRESHOLD, older, oldest)


def _rebuild_share(share: _Share) -> _ShareResult:
    """Worker process: apply the share's partitions from offset 0 to their targets."""
    return asyncio.run(_apply_share(share))


async def _apply_share(share: _Share) -> _ShareResult:
    """The share's partitions from offset 0 to their targets, through the materialiser's loop."""
    view = RedisSuppressionView.from_url(
        share.redis_url, share.namespace, ViewLayout(share.bucket_bits)
    )
    reader = RecordBatchReader(share.bootstrap, share.topic, {p: 0 for p in share.targets})
    applier = ChangeApplier(
        view,
        applied={p: 0 for p in share.targets},
        expected=ExpectedCensus(),
        window=share.window,
    )
    await reader.start()
    try:
        while not applier.reached(share.targets):
            await applier.step(reader, 200)
            if _read is not None:
                _read[share.slot] = applier.records
        await applier.settle()
    finally:
        await reader.stop()
        await view.close()
    assert applier.expected is not None
    return _ShareResult(applier.records, applier.expected.census(), applier.applied)


def _census_share(redis_url: str, namespace: str, bucket_bits: int, buckets: range) -> Census:
    """Worker process: the census of some of the view's buckets."""

    async def count() -> Census:
        view = RedisSuppressionView.from_url(redis_url, namespace, ViewLayout(bucket_bits))
        try:
            census, _ = await view.census(buckets)
            return census
        finally:
            await view.close()

    return asyncio.run(count())


async def _view_census(
    pool: ProcessPoolExecutor, view: SuppressionView, redis_url: str, namespace: str, shares: int
) -> tuple[Census, dict[int, int]]:
    """The view's census, its buckets split among the pool's processes, and its offsets.

    Hashing every entry is Python work (about a minute for fifty million in one process).
    The offsets are read after the scan: a writer beside this rebuild shows there.
    """
    loop = asyncio.get_running_loop()
    buckets = view.layout.buckets
    bounds = [buckets * i // shares for i in range(shares + 1)]
    parts = await asyncio.gather(
        *(
            loop.run_in_executor(
                pool,
                _census_share,
                redis_url,
                namespace,
                view.layout.bucket_bits,
                range(start, stop),
            )
            for start, stop in zip(bounds, bounds[1:], strict=False)
        )
    )
    census = Census(
        sum(p.count for p in parts), sum(p.checksum for p in parts) & 0xFFFFFFFFFFFFFFFF
    )
    return census, await view.applied_offsets()


async def rebuild_in_parallel(
    bootstrap: KafkaAccess | str,
    topic: str,
    view: SuppressionView,
    redis_url: str,
    namespace: str,
    workers: int = 2,
    on_progress: Callable[[Progress], None] | None = None,
    interval_s: float = 0.2,
) -> Progress:
    """Clear the view, rebuild it from offset 0 to the current end, and verify it."""
    reader = KafkaBus(bootstrap).reader(topic, fetching=False)
    await reader.start()
    try:
        targets = await reader.end_offsets()
    finally:
        await reader.stop()
    progress = Progress(
        rebuilding=True, started=time.monotonic(), target_records=sum(targets.values())
    )
    await view.clear()
    await view.write_meta()
    partitions = sorted(targets)
    workers = max(1, min(workers, len(partitions)))
    shares = [
        _Share(
            bootstrap,
            topic,
            redis_url,
            namespace,
            view.layout.bucket_bits,
            {p: targets[p] for p in partitions[i::workers]},
            slot=i,
            window=view.layout.buckets * RECORDS_PER_BUCKET,
        )
        for i in range(workers)
    ]
    loop = asyncio.get_running_loop()
    spawn = multiprocessing.get_context("spawn")
    read = spawn.RawArray("q", workers)
    with ProcessPoolExecutor(
        workers, mp_context=spawn, initializer=_worker_started, initargs=(read,)
    ) as pool:
        futures = [loop.run_in_executor(pool, _rebuild_share, share) for share in shares]
        done = asyncio.gather(*futures)
        while not done.done():
            progress.applied_records = sum((await view.applied_offsets()).values())
            progress.entries_read = sum(read)
            if on_progress is not None:
                on_progress(progress)
            await asyncio.wait([done], timeout=interval_s)
        results: list[_ShareResult] = done.result()
        progress.entries_read = sum(r.records for r in results)
        applied = {p: o for r in results for p, o in r.applied.items()}
        progress.applied_records = sum(applied.values())
        verify_started = time.monotonic()
        expected = Census(
            sum(r.census.count for r in results),
            sum(r.census.checksum for r in results) & 0xFFFFFFFFFFFFFFFF,
        )
        actual, stored = await _view_census(pool, view, redis_url, namespace, workers)
        progress.verify_seconds = time.monotonic() - verify_started
    if actual == expected:
        progress.verified = actual
    elif stored != applied:
        log.warning(
            "another registry wrote the view during this rebuild (read %s, the view holds %s): "
            "not verifiable here; that registry verifies its own rebuild",
            expected,
            actual,
        )
    else:
        raise ViewVerificationError(f"read {expected}, the view holds {actual}")
    if on_progress is not None:
        on_progress(progress)
    return progress
