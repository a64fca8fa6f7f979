"""The registry's lookups: ``Check`` one number at a time, ``CheckBatch`` a list chunk by chunk.

A campaign list of a million numbers is mostly numbers with no record at all. For each number
``CheckBatch`` must normalise it, compute its keyed pseudonym and find out whether the view holds
anything for it. Three things keep that fast:

* hashing on every core (:mod:`stopsms.registry.hashing`);
* the subject filter (:mod:`stopsms.registry.subject_filter`), which answers "no record" for
  most numbers without Redis;
* the answer written as protobuf bytes directly: most results are one of two constant
  four-byte messages, and building a million message objects would cost more than the lookup.

``Check``'s calls that arrive while a Redis round trip is in flight share the next one
(:class:`SingleLookups`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from stopsms.adapters.view import SuppressionView
from stopsms.domain.privacy import SUBJECT_DIGEST_BYTES, NumberHasher
from stopsms.domain.rules import combine
from stopsms.domain.viewcodec import (
    ScopeEntry,
    ViewLayout,
    locate_digests,
    varint,
)
from stopsms.registry.hashing import HashPool
from stopsms.registry.subject_filter import SubjectFilter
from stopsms.v1 import registry_pb2

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


def newer(a: ScopeEntry | None, b: ScopeEntry | None) -> ScopeEntry | None:
    """The entry of higher version.

    During a pseudonym re-keying a number has two subjects, and the one its latest decision
    was made under holds the higher version.
    """
    if a is None or (b is not None and b.version > a.version):
        return b
    return a


def _earliest(one: dict[int, int], other: dict[int, int]) -> dict[int, int]:
    """The offsets both answers are as of: the lower one of each partition."""
    return {p: min(one.get(p, o), o) for p, o in other.items()} | {
        p: o for p, o in one.items() if p not in other
    }


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
        previous: NumberHasher | None = None,
    ) -> None:
        """Answer lookups from the view.

        ``previous``: the previous pseudonym key's hasher, while a re-keying runs; every lookup
        then reads both subjects of a number and takes the newer entry of each scope.
        """
        self._view = view
        self._hashing = hashing
        self._key_id = key_id
        self._filter = subject_filter
        self._previous = previous
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

    async def check_one(self, e164: str, sender_id: str) -> SingleAnswer:
        """``Check``'s lookup: one number's entries for ``sender_id`` and global."""
        layout = self._view.layout
        located = layout.located_digest(self.hasher.digest(e164))
        if self._previous is None:
            return await self.single.lookup(located, sender_id)
        new, old = await asyncio.gather(
            self.single.lookup(located, sender_id),
            self.single.lookup(layout.located_digest(self._previous.digest(e164)), sender_id),
        )
        return SingleAnswer(
            newer(new.sender, old.sender),
            newer(new.global_, old.global_),
            _earliest(new.as_of, old.as_of),
        )

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
        if self._previous is not None:
            old_stored = await self._with_previous(numbers, sender_id, maybe, values, answers)
            as_of = _earliest(as_of, old_stored)
        else:
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

    async def _with_previous(
        self,
        numbers: Sequence[str],
        sender_id: str,
        maybe: Any,
        values: list[tuple[bytes | None, bytes | None]],
        answers: list[bytes],
    ) -> dict[int, int]:
        """During a re-keying: the chunk's numbers looked up under the previous key too.

        Returns the offsets that lookup is as of.

        Hashed in this process and without the filter (which holds current subjects only):
        a chunk costs about twice as much while the re-keying runs.
        """
        assert self._previous is not None
        old_digests, _ = self._previous.hash_chunk(numbers)
        old_located = locate_digests(old_digests, self._view.layout)
        old_values, old_stored = await self._view.lookup_packed(old_located.tobytes(), sender_id)
        current = dict(zip(maybe.tolist(), values, strict=True))
        for row, (old_sender, old_global) in enumerate(old_values):
            new_sender, new_global = current.get(row, (None, None))
            sender = newer(ScopeEntry.unpack(new_sender), ScopeEntry.unpack(old_sender))
            global_ = newer(ScopeEntry.unpack(new_global), ScopeEntry.unpack(old_global))
            if sender is not None or global_ is not None:
                answers[row] = _result_bytes(sender, global_)
        return old_stored


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
