"""Scrubbing lists fast: hashing on every core, a Bloom filter for the numbers nobody opted out.

A campaign list of a million numbers is mostly numbers with no record at all. For each number
``CheckBatch`` must normalise it, compute its keyed pseudonym (HMAC-SHA-256, the costly part)
and find out whether the view holds anything for it. Three things keep that fast:

* :class:`NumberHasher` computes the HMAC with the key's pads precomputed, and
  :class:`HashPool` spreads a chunk over worker processes, so both cores hash.
* :class:`SubjectFilter`, a Bloom filter of every subject the view holds, fed by the same
  materialiser that writes the view, answers "no record" for most numbers without Redis. It
  never forgets a subject, so it may say "maybe" for a number with no record (then Redis
  answers), but never "no" for one the view holds — for the offsets it says it has covered.
  Answers are as of the smaller of those offsets and the view's own.
* The answer is written as protobuf bytes directly: most results are one of two constant
  four-byte messages, and building a million message objects would cost more than the lookup.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from stopsms.adapters.view import SuppressionView
from stopsms.domain.privacy import SUBJECT_DIGEST_BYTES, Key, NumberHasher
from stopsms.domain.rules import combine
from stopsms.domain.viewcodec import (
    DIGEST_FIELD_BYTES,
    LOCATED_BYTES,
    ScopeEntry,
    ViewLayout,
    locate_digests,
    varint,
)
from stopsms.v1 import registry_pb2

#: Bloom filter size and hash count: 2^29 bits (64 MiB) and 5 probes keep false "maybe"s
#: under 1 % up to 50 million subjects.
DEFAULT_FILTER_BITS = 1 << 29
FILTER_PROBES = 5


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


def _probe_positions(located: np.ndarray, bits: int) -> np.ndarray:
    """Bloom probe positions (n × probes) from the located digests (n × 12 bytes).

    The field bytes are independent keyed-hash bits: two 40-bit halves drive double hashing.
    """
    field = located[:, 2 : 2 + DIGEST_FIELD_BYTES].astype(np.uint64)
    weights = (np.uint64(1) << (np.arange(4, -1, -1, dtype=np.uint64) * np.uint64(8))).astype(
        np.uint64
    )
    h1 = field[:, :5] @ weights
    h2 = (field[:, 5:] @ weights) | np.uint64(1)
    probes = np.arange(FILTER_PROBES, dtype=np.uint64)
    return (h1[:, None] + probes[None, :] * h2[:, None]) % np.uint64(bits)


class SubjectFilter:
    """A Bloom filter of located subjects (bucket + field), with the offsets it covers."""

    def __init__(self, bits: int = DEFAULT_FILTER_BITS) -> None:
        if bits < 1024 or bits % 8:
            raise ValueError("the filter needs at least 1024 bits, a multiple of 8")
        self.bits = bits
        self._array = np.zeros(bits // 8, dtype=np.uint8)
        #: Next offset per partition up to which every subject of the topic has been added.
        self.offsets: dict[int, int] = {}
        self.ready = False
        self.added = 0

    def add(self, located: bytes) -> None:
        """Add subjects given as 12-byte located digests, joined."""
        if not located:
            return
        positions = _probe_positions(_as_rows(located), self.bits).ravel()
        np.bitwise_or.at(
            self._array,
            (positions >> np.uint64(3)).astype(np.intp),
            (np.uint8(1) << (positions & np.uint64(7)).astype(np.uint8)),
        )
        self.added += len(located) // LOCATED_BYTES

    def might_hold(self, located: np.ndarray) -> np.ndarray:
        """For each located digest (rows of 12 bytes): False when surely absent."""
        positions = _probe_positions(located, self.bits)
        bytes_ = self._array[(positions >> np.uint64(3)).astype(np.intp)]
        present = (bytes_ >> (positions & np.uint64(7)).astype(np.uint8)) & np.uint8(1)
        return np.asarray(present.all(axis=1))

    def might_hold_one(self, located: bytes) -> bool:
        """:meth:`might_hold` for one subject, without numpy's per-call overhead (``Check``)."""
        field = located[2 : 2 + DIGEST_FIELD_BYTES]
        h1 = int.from_bytes(field[:5], "big")
        h2 = int.from_bytes(field[5:], "big") | 1
        array, bits = self._array, self.bits
        for probe in range(FILTER_PROBES):
            position = (h1 + probe * h2) % bits
            if not array[position >> 3] >> (position & 7) & 1:
                return False
        return True

    def covered(self, partition_offsets: dict[int, int]) -> None:
        """Record that every subject up to these offsets has been added."""
        for p, o in partition_offsets.items():
            if o > self.offsets.get(p, 0):
                self.offsets[p] = o


def _as_rows(located: bytes) -> np.ndarray:
    return np.frombuffer(located, dtype=np.uint8).reshape(-1, LOCATED_BYTES)


# CheckBatchResponse.results is field 1; each CheckResult is length-delimited. The two results
# that need no record: ALLOWED with nothing on record, and INVALID_NUMBER.
_NO_RECORD = b"\x0a\x02\x08" + bytes([registry_pb2.VERDICT_ALLOWED])
_INVALID = b"\x0a\x02\x08" + bytes([registry_pb2.VERDICT_INVALID_NUMBER])


def _result_bytes(sender: ScopeEntry | None, global_: ScopeEntry | None) -> bytes:
    verdict = combine(sender, global_)
    result = registry_pb2.CheckResult(verdict=verdict.verdict, matched_scope=verdict.matched_scope)
    if verdict.record is not None:
        result.since.FromMilliseconds(verdict.record.action_time_ms)
    body = result.SerializeToString()
    return b"\x0a" + varint(len(body)) + body


@dataclass
class ChunkAnswer:
    """One CheckBatchResponse, serialised, and what the audit trail needs."""

    response: bytes
    subjects: list[str]
    looked_up: int


class BatchChecker:
    """Answers CheckBatch chunks from the filter and the view."""

    def __init__(
        self,
        view: SuppressionView,
        hashing: HashPool,
        key_id: str,
        subject_filter: SubjectFilter | None = None,
    ) -> None:
        self._view = view
        self._hashing = hashing
        self._key_id = key_id
        self._filter = subject_filter
        self.single = SingleLookups(view, subject_filter)

    @property
    def hasher(self) -> NumberHasher:
        """The in-process hasher (``Check`` hashes one number here)."""
        return self._hashing.hasher

    @property
    def key_id(self) -> str:
        """The pseudonym key's id, which prefixes every subject."""
        return self._key_id

    @property
    def layout(self) -> ViewLayout:
        """The view's layout."""
        return self._view.layout

    async def check(self, numbers: Sequence[str], sender_id: str, chunk_index: int) -> ChunkAnswer:
        """Verdicts for one chunk, in order, as a serialised CheckBatchResponse."""
        digests, invalid = await self._hashing.hash_chunk(numbers)
        located = locate_digests(digests, self._view.layout)
        use_filter = self._filter is not None and self._filter.ready
        if use_filter:
            assert self._filter is not None
            maybe = np.flatnonzero(self._filter.might_hold(located))
        else:
            maybe = np.arange(len(located))
        values, stored = await self._view.lookup_packed(located[maybe].tobytes(), sender_id)
        as_of = stored
        if use_filter:
            assert self._filter is not None
            covered = self._filter.offsets
            as_of = {p: min(o, covered.get(p, 0)) for p, o in stored.items()}
        answers = [_NO_RECORD] * len(located)
        for row, (sender_value, global_value) in zip(maybe.tolist(), values, strict=True):
            if sender_value is not None or global_value is not None:
                answers[row] = _result_bytes(
                    ScopeEntry.unpack(sender_value), ScopeEntry.unpack(global_value)
                )
        if invalid:  # put the invalid numbers back in their places
            valid = iter(answers)
            refused = set(invalid)
            answers = [_INVALID if i in refused else next(valid) for i in range(len(numbers))]
        positions = [registry_pb2.PartitionOffset(partition=p, offset=o) for p, o in as_of.items()]
        positions.sort(key=lambda position: position.partition)
        tail = registry_pb2.CheckBatchResponse(
            chunk_index=chunk_index, as_of=positions
        ).SerializeToString()
        hex_digests = digests.hex()
        prefix = self._key_id + ":"
        width = 2 * SUBJECT_DIGEST_BYTES
        subjects = [prefix + hex_digests[i : i + width] for i in range(0, len(hex_digests), width)]
        return ChunkAnswer(b"".join(answers) + tail, subjects, len(maybe))


@dataclass
class SingleAnswer:
    """What ``Check`` needs from a lookup: both scopes' entries and the offsets it is as of."""

    sender: ScopeEntry | None
    global_: ScopeEntry | None
    as_of: dict[int, int]


class SingleLookups:
    """``Check``'s lookups: the filter first, then Redis, with concurrent calls coalesced.

    Under load, many ``Check`` calls wait for Redis at once; rather than one round trip each
    (whose client-side cost is most of a call's), the calls that arrive while a round trip is in
    flight share the next one.
    """

    MAX_IN_FLIGHT = 1

    def __init__(self, view: SuppressionView, subject_filter: SubjectFilter | None) -> None:
        self._view = view
        self._filter = subject_filter
        self._waiting: dict[str, list[tuple[bytes, asyncio.Future[Any]]]] = {}
        self._in_flight = 0

    async def lookup(self, located: bytes, sender_id: str) -> SingleAnswer:
        """The entries of one located subject for ``sender_id`` (and global)."""
        subject_filter = self._filter
        if subject_filter is not None and subject_filter.ready:
            if not subject_filter.might_hold_one(located):
                return SingleAnswer(None, None, dict(subject_filter.offsets))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(sender_id, []).append((located, future))
        self._send()
        (sender_value, global_value), stored = await future
        as_of = stored
        if subject_filter is not None and subject_filter.ready:
            covered = subject_filter.offsets
            as_of = {p: min(o, covered.get(p, 0)) for p, o in stored.items()}
        return SingleAnswer(ScopeEntry.unpack(sender_value), ScopeEntry.unpack(global_value), as_of)

    def _send(self) -> None:
        while self._waiting and self._in_flight < self.MAX_IN_FLIGHT:
            sender_id = next(iter(self._waiting))
            waiting = self._waiting.pop(sender_id)
            self._in_flight += 1
            asyncio.get_running_loop().create_task(self._round_trip(sender_id, waiting))

    async def _round_trip(
        self, sender_id: str, waiting: list[tuple[bytes, asyncio.Future[Any]]]
    ) -> None:
        try:
            values, stored = await self._view.lookup_packed(
                b"".join(located for located, _ in waiting), sender_id
            )
        except Exception as exc:  # noqa: BLE001 - every caller gets the failure
            for _, future in waiting:
                if not future.done():
                    future.set_exception(exc)
        else:
            for (_, future), pair in zip(waiting, values, strict=True):
                if not future.done():
                    future.set_result((pair, stored))
        finally:
            self._in_flight -= 1
            self._send()
