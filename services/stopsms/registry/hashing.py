"""Hashing a campaign list on every core: the subject HMAC of each number, in worker processes.

The HMAC (:class:`~stopsms.domain.privacy.NumberHasher`, the one home of the pseudonym) is the
costly part of ``CheckBatch``; :class:`HashPool` spreads a chunk over worker processes and keeps
a share for the serving process, so both cores hash.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor

from stopsms.domain.privacy import Key, NumberHasher

_worker_hasher: NumberHasher | None = None


def _start_worker(secret: bytes) -> None:
    global _worker_hasher
    _worker_hasher = NumberHasher(secret)


def _hash_in_worker(numbers: list[str]) -> tuple[bytes, list[int]]:
    assert _worker_hasher is not None
    return _worker_hasher.hash_chunk(numbers)


class HashPool:
    """Hashes a chunk partly here and partly in worker processes, in parallel."""

    def __init__(self, key: Key, workers: int) -> None:
        self._hasher = NumberHasher(key.secret)
        self.workers = workers
        self._pool = (
            ProcessPoolExecutor(
                workers,
                # spawn: the serving process runs gRPC and Kafka threads that must not be forked
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_worker,
                initargs=(key.secret,),
            )
            if workers
            else None
        )

    @property
    def hasher(self) -> NumberHasher:
        """The hasher of the serving process itself."""
        return self._hasher

    def close(self) -> None:
        """Stop the worker processes."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    async def hash_chunk(self, numbers: Sequence[str]) -> tuple[bytes, list[int]]:
        """Like :meth:`NumberHasher.hash_chunk`, on every core."""
        if self._pool is None or len(numbers) < 512:
            return self._hasher.hash_chunk(numbers)
        loop = asyncio.get_running_loop()
        # This process also parses, filters and answers: it takes a smaller share.
        share = len(numbers) // (2 * self.workers + 1)
        bounds = [0, share]
        step = (len(numbers) - share) / self.workers
        bounds += [share + round(step * (i + 1)) for i in range(self.workers)]
        futures = [
            loop.run_in_executor(self._pool, _hash_in_worker, list(numbers[a:b]))
            for a, b in zip(bounds[1:-1], bounds[2:], strict=True)
        ]
        parts = [self._hasher.hash_chunk(numbers[: bounds[1]])]
        parts += await asyncio.gather(*futures)
        digests = b"".join(p[0] for p in parts)
        invalid = [start + i for start, part in zip(bounds, parts, strict=False) for i in part[1]]
        return digests, invalid
