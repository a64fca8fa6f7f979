"""The proof of propagation, derived from each party's progress rather than from receipts.

A change sits at (partition, offset) of ``stopsms.suppressions.v1``. An operator has applied
it once its consumer group's committed offset on that partition is past the offset; a PSVA,
once its acknowledged cursor is. So the proof needs, per party, only how far it got and since
when — work in proportion to parties × partitions × rounds, never to changes × parties:

* :class:`ProgressLog` holds each party's position per partition and the times it advanced, so
  the applied time of any change is the time of the first progress past it;
* :class:`ProofTracker` holds the changes of the partitions this replica proves, grouped by who
  must apply them (their *scope*), and tells which are done when a party advances: in a scope
  the changes wait in offset order, so only the head of each of the party's scopes is looked at;
* :func:`start_record`, :func:`done_record` and :func:`with_progress` are the proof itself: the
  first names every concerned party PENDING, the last every applied time and the done time, and
  the third fills in, when asked, what is applied so far.

Everything here is pure and deterministic: the same progress gives the same proof, which is what
makes a proof published again after a crash identical to the first.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from stopsms.v1 import events_pb2

PENDING = events_pb2.DELIVERY_STATUS_PENDING
APPLIED = events_pb2.DELIVERY_STATUS_APPLIED
#: How many advances of one party on one partition are kept to date older changes.
HISTORY = 4096


@dataclass
class _Track:
    """One party on one partition: positions it reached, ascending, and when."""

    offsets: list[int] = field(default_factory=list)
    times: list[int] = field(default_factory=list)


class ProgressLog:
    """How far every party has applied each partition, and since when.

    ``advance`` keeps the positions ascending (a progress that does not move forward is ignored,
    so receipts read twice, or an operator's commit seen by two replicas, change nothing). Older
    advances are forgotten beyond ``HISTORY`` per party and partition: a change older than what
    is kept is dated by the oldest advance kept, which is later than the truth, never earlier.
    """

    def __init__(self, history: int = HISTORY) -> None:
        self._history = history
        self._tracks: dict[tuple[str, int], _Track] = {}
        #: The same tracks by party: a party's positions are asked for every acknowledgement,
        #: and must not cost a walk over every party's partitions.
        self._tracks_of: dict[str, dict[int, _Track]] = {}
        self.kinds: dict[str, int] = {}

    def position(self, party_id: str, partition: int) -> int:
        """The next offset ``party_id`` has not applied on ``partition`` (0: nothing yet)."""
        track = self._tracks.get((party_id, partition))
        return track.offsets[-1] if track and track.offsets else 0

    def positions(self, party_id: str) -> dict[int, int]:
        """Every partition's position of one party."""
        return {
            partition: track.offsets[-1]
            for partition, track in self._tracks_of.get(party_id, {}).items()
            if track.offsets
        }

    def advance(self, party_id: str, kind: int, partition: int, offset: int, time_ms: int) -> bool:
        """Record that ``party_id`` reached ``offset`` on ``partition`` at ``time_ms``."""
        if kind:
            self.kinds[party_id] = kind
        track = self._tracks.get((party_id, partition))
        if track is None:
            track = self._tracks[(party_id, partition)] = _Track()
            self._tracks_of.setdefault(party_id, {})[partition] = track
        if track.offsets and offset <= track.offsets[-1]:
            return False
        track.offsets.append(offset)
        track.times.append(max(time_ms, track.times[-1]) if track.times else time_ms)
        if len(track.offsets) > self._history:
            del track.offsets[: -self._history]
            del track.times[: -self._history]
        return True

    def applied_time(self, party_id: str, partition: int, offset: int) -> int | None:
        """When ``party_id`` first passed ``offset`` on ``partition``, or None if not yet."""
        track = self._tracks.get((party_id, partition))
        if not track or not track.offsets or track.offsets[-1] <= offset:
            return None
        return track.times[bisect.bisect_right(track.offsets, offset)]

    def apply(self, progress: Iterable[events_pb2.PartyProgress]) -> list[tuple[str, int]]:
        """Apply a progress receipt; return the (party, partition) that advanced."""
        moved = []
        for entry in progress:
            at = entry.applied_time.ToMilliseconds()
            for position in entry.positions:
                party, kind = entry.party_id, entry.party_kind
                if self.advance(party, kind, position.partition, position.offset, at):
                    moved.append((party, position.partition))
        return moved


@dataclass(frozen=True)
class OpenChange:
    """A change whose proof is not done: where it is, and its start record."""

    offset: int
    record: events_pb2.PropagationRecord


class ProofTracker:
    """The changes of the partitions this replica proves, until every concerned party applied.

    Changes are queued per (partition, scope), a scope being the exact set of parties concerned;
    a queue is in offset order, and a party at a position past a change is past every earlier
    change of the queue too. So when a party advances, only the heads of its own scopes are
    looked at, and each change is looked at once more when it is done.
    """

    def __init__(self, log: ProgressLog) -> None:
        self.log = log
        self._queues: dict[tuple[int, tuple[str, ...]], deque[OpenChange]] = {}
        self._scopes_of: dict[tuple[str, int], set[tuple[str, ...]]] = {}
        self._open: set[str] = set()

    def __len__(self) -> int:
        return len(self._open)

    def is_open(self, event_id: str) -> bool:
        """Whether the change of ``event_id`` is tracked and not done."""
        return event_id in self._open

    def open(self, record: events_pb2.PropagationRecord) -> list[events_pb2.PropagationRecord]:
        """Track a change from its start record; return it done at once if it already is."""
        if record.event_id in self._open or record.done:
            return []
        partition, offset = record.change_position.partition, record.change_position.offset
        scope = tuple(sorted(d.party_id for d in record.deliveries))
        queue = self._queues.get((partition, scope))
        if queue is None:
            queue = self._queues[(partition, scope)] = deque()
            for party_id in scope:
                self._scopes_of.setdefault((party_id, partition), set()).add(scope)
        if queue and queue[-1].offset > offset:  # rebuilt out of order: keep the queue sorted
            queue.insert(
                bisect.bisect_right([c.offset for c in queue], offset), OpenChange(offset, record)
            )
        else:
            queue.append(OpenChange(offset, record))
        self._open.add(record.event_id)
        return self._pop_done(partition, scope)

    def advanced(self, party_id: str, partition: int) -> list[events_pb2.PropagationRecord]:
        """The changes done now that ``party_id`` advanced on ``partition``."""
        return self.advanced_all([(party_id, partition)])

    def advanced_all(self, moved: Iterable[tuple[str, int]]) -> list[events_pb2.PropagationRecord]:
        """The changes done now that each (party, partition) of ``moved`` advanced.

        A scope shared by many of them (the global one: every party) is looked at once, not once
        per party that moved: a progress receipt names tens of PSVAs at a time.
        """
        scopes = {
            (partition, scope)
            for party_id, partition in moved
            for scope in self._scopes_of.get((party_id, partition), ())
        }
        done: list[events_pb2.PropagationRecord] = []
        for partition, scope in scopes:
            done.extend(self._pop_done(partition, scope))
        return done

    def recheck(self) -> list[events_pb2.PropagationRecord]:
        """Every change done by now (after the progress log was filled in bulk)."""
        done: list[events_pb2.PropagationRecord] = []
        for partition, scope in list(self._queues):
            done.extend(self._pop_done(partition, scope))
        return done

    def drop_partition(self, partition: int) -> None:
        """Forget a partition another replica now proves."""
        for key in [k for k in self._queues if k[0] == partition]:
            for change in self._queues.pop(key):
                self._open.discard(change.record.event_id)
            for party_id in key[1]:
                scopes = self._scopes_of.get((party_id, partition))
                if scopes is not None:
                    scopes.discard(key[1])
                    if not scopes:
                        del self._scopes_of[(party_id, partition)]

    def _pop_done(
        self, partition: int, scope: tuple[str, ...]
    ) -> list[events_pb2.PropagationRecord]:
        queue = self._queues.get((partition, scope))
        done = []
        while queue:
            head = queue[0]
            if any(self.log.position(p, partition) <= head.offset for p in scope):
                break
            queue.popleft()
            self._open.discard(head.record.event_id)
            done.append(done_record(head.record, self.log))
        if queue is not None and not queue:
            del self._queues[(partition, scope)]
            for party_id in scope:
                scopes = self._scopes_of.get((party_id, partition))
                if scopes is not None:
                    scopes.discard(scope)
                    if not scopes:
                        del self._scopes_of[(party_id, partition)]
        return done


def start_record(
    change: events_pb2.SuppressionChanged,
    partition: int,
    offset: int,
    concerned: Iterable[tuple[str, int]],
) -> events_pb2.PropagationRecord:
    """The proof as it starts: every concerned party (id, kind) PENDING."""
    record = events_pb2.PropagationRecord(
        event_id=change.event_id,
        request_id=change.request_id,
        origin_party_id=change.party_id,
        sender_id=change.sender_id,
        action=change.action,
    )
    record.action_time.CopyFrom(change.action_time)
    record.change_position.partition = partition
    record.change_position.offset = offset
    for party_id, kind in sorted(concerned):
        record.deliveries.add(party_id=party_id, party_kind=kind, status=PENDING)
    return record


def with_progress(
    record: events_pb2.PropagationRecord, log: ProgressLog
) -> events_pb2.PropagationRecord:
    """A copy of the record where each party that applied the change by now says so."""
    out = events_pb2.PropagationRecord()
    out.CopyFrom(record)
    if record.done or not record.HasField("change_position"):
        return out
    partition, offset = record.change_position.partition, record.change_position.offset
    for delivery in out.deliveries:
        if delivery.status == PENDING:
            at = log.applied_time(delivery.party_id, partition, offset)
            if at is not None:
                delivery.status = APPLIED
                delivery.applied_time.FromMilliseconds(at)
    return out


def done_record(
    record: events_pb2.PropagationRecord, log: ProgressLog
) -> events_pb2.PropagationRecord:
    """The proof once every concerned party applied: each applied time, and the done time."""
    out = with_progress(record, log)
    if out.deliveries and all(d.status == APPLIED for d in out.deliveries):
        out.done = True
        out.done_time.FromMilliseconds(max(d.applied_time.ToMilliseconds() for d in out.deliveries))
    elif not out.deliveries:  # concerns nobody: done when seen
        out.done = True
        out.done_time.CopyFrom(out.action_time)
    return out


def progress_receipt(
    entries: Iterable[tuple[str, int, dict[int, int], int]],
) -> events_pb2.DeliveryReceipt:
    """A progress receipt from (party id, kind, {partition: next offset}, time in ms) entries."""
    receipt = events_pb2.DeliveryReceipt(status=APPLIED)
    for party_id, kind, positions, time_ms in entries:
        entry = receipt.progress.add(party_id=party_id, party_kind=kind)
        entry.applied_time.FromMilliseconds(time_ms)
        for partition, offset in sorted(positions.items()):
            entry.positions.add(partition=partition, offset=offset)
    return receipt
