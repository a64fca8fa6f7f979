"""Each party's compliance: how fast it applied the changes that concerned it, day by day.

Fed with the proofs of propagation as they change, :class:`ComplianceBook` counts each
(change, party) once, when the party's delivery first has an applied time: its propagation
time (the citizen's action to the party's applying it) goes into the party's histogram of that
UTC day. The histograms have buckets 5 % wide, so a percentile is exact to within 5 % and a
day costs a few hundred counters whatever the volume. A change applied after the objective is
LATE; so is one still pending past it (counted at question time from the open proofs).

A question about a period adds up its days: the cost grows with the days asked about and the
parties, never with the history. Memory too: which parties were counted is kept per open proof
only; once a proof is done its remaining parties are counted and it is forgotten, apart from
the last :data:`RECENTLY_DONE` done event ids (a done record read again is not counted twice).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field

from stopsms.v1 import events_pb2

DAY_MS = 86_400_000
#: Done proofs remembered, latest first, so that their record read again counts nothing. A done
#: proof is published once; a second copy (a notifier replaying a partition) follows it closely.
RECENTLY_DONE = 100_000
_GROWTH = 1.05
_LOG_GROWTH = math.log(_GROWTH)


def bucket_of(ms: int) -> int:
    """The histogram bucket of a duration: 0 for ≤ 1 ms, then 5 % wider each."""
    return 0 if ms <= 1 else math.ceil(math.log(ms) / _LOG_GROWTH)


def bucket_top(bucket: int) -> int:
    """The largest duration a bucket holds (what a percentile answers)."""
    return 1 if bucket <= 0 else math.floor(_GROWTH**bucket)


def percentile(histogram: Counter[int], fraction: float) -> int:
    """The duration below which ``fraction`` of the histogram's values fall (0 when empty)."""
    total = sum(histogram.values())
    if total == 0:
        return 0
    rank = max(1, math.ceil(fraction * total))
    seen = 0
    for bucket in sorted(histogram):
        seen += histogram[bucket]
        if seen >= rank:
            return bucket_top(bucket)
    return bucket_top(max(histogram))


@dataclass
class _Day:
    histogram: Counter[int] = field(default_factory=Counter)
    applied: int = 0
    late: int = 0


@dataclass(frozen=True)
class DayFigures:
    """One day of one party."""

    day_ms: int
    applied: int
    p50_ms: int
    p99_ms: int
    late: int


@dataclass(frozen=True)
class PartyFigures:
    """One party over a period."""

    party_id: str
    party_kind: int
    applied: int
    p50_ms: int
    p99_ms: int
    late: int
    days: tuple[DayFigures, ...]


class ComplianceBook:
    """Per party and UTC day: propagation times and lateness, from the proofs."""

    def __init__(self, objective_ms: int) -> None:
        self.objective_ms = objective_ms
        self._days: dict[str, dict[int, _Day]] = defaultdict(dict)
        self._kinds: dict[str, int] = {}
        #: Open proofs: event id → parties counted (a million done proofs held here were a
        #: gigabyte of the console's memory).
        self._counted: dict[str, set[str]] = defaultdict(set)
        self._open: dict[str, events_pb2.PropagationRecord] = {}
        self._done: deque[str] = deque()
        self._done_ids: set[str] = set()

    def record(self, proof: events_pb2.PropagationRecord) -> None:
        """Take a proof's latest record; each party's applying is counted once."""
        event_id = proof.event_id
        if event_id in self._done_ids:
            return  # done and counted already
        if proof.done:
            self._open.pop(event_id, None)
            counted = self._counted.pop(event_id, set())
            self._done.append(event_id)
            self._done_ids.add(event_id)
            if len(self._done) > RECENTLY_DONE:
                self._done_ids.discard(self._done.popleft())
        else:
            self._open[event_id] = proof
            counted = self._counted[event_id]
        if not proof.HasField("action_time"):
            return
        action_ms = proof.action_time.ToMilliseconds()
        for delivery in proof.deliveries:
            if delivery.party_id in counted or not delivery.HasField("applied_time"):
                continue
            counted.add(delivery.party_id)
            self._kinds[delivery.party_id] = delivery.party_kind
            applied_ms = delivery.applied_time.ToMilliseconds()
            took = max(0, applied_ms - action_ms)
            day = self._days[delivery.party_id].setdefault(applied_ms // DAY_MS * DAY_MS, _Day())
            day.histogram[bucket_of(took)] += 1
            day.applied += 1
            if took > self.objective_ms:
                day.late += 1

    def parties(self) -> list[str]:
        """Every party that applied something, by id."""
        return sorted(self._days)

    def _pending_late(self, party_id: str, start_ms: int, end_ms: int, now_ms: int) -> Counter[int]:
        """Per day of the action: changes the party has not applied, past the objective now."""
        late: Counter[int] = Counter()
        for proof in self._open.values():
            action_ms = proof.action_time.ToMilliseconds()
            if not start_ms <= action_ms < end_ms or now_ms - action_ms <= self.objective_ms:
                continue
            for delivery in proof.deliveries:
                if delivery.party_id == party_id and not delivery.HasField("applied_time"):
                    late[action_ms // DAY_MS * DAY_MS] += 1
        return late

    def figures(
        self, party_id: str, start_ms: int, end_ms: int, now_ms: int, party_kind: int = 0
    ) -> PartyFigures:
        """One party's figures over ``[start_ms, end_ms)`` (whole UTC days it touches)."""
        days = self._days.get(party_id, {})
        pending = self._pending_late(party_id, start_ms, end_ms, now_ms)
        total: Counter[int] = Counter()
        rows: list[DayFigures] = []
        first_day = start_ms // DAY_MS * DAY_MS
        for day_ms in range(first_day, end_ms, DAY_MS):
            day = days.get(day_ms)
            late = pending.get(day_ms, 0) + (day.late if day is not None else 0)
            if day is None and not late:
                continue
            histogram = day.histogram if day is not None else Counter()
            total.update(histogram)
            rows.append(
                DayFigures(
                    day_ms=day_ms,
                    applied=day.applied if day is not None else 0,
                    p50_ms=percentile(histogram, 0.5),
                    p99_ms=percentile(histogram, 0.99),
                    late=late,
                )
            )
        return PartyFigures(
            party_id=party_id,
            party_kind=self._kinds.get(party_id, party_kind),
            applied=sum(row.applied for row in rows),
            p50_ms=percentile(total, 0.5),
            p99_ms=percentile(total, 0.99),
            late=sum(row.late for row in rows),
            days=tuple(rows),
        )


class ComplaintTally:
    """Per party and UTC day of the message: complaints with a finding that concern it.

    A complaint concerns the parties that send for its sender and the operator that carried
    the message. A re-assessment moves the complaint's count (a late decision may turn it
    into a finding, never twice counted).
    """

    def __init__(self) -> None:
        self._counts: dict[str, Counter[int]] = defaultdict(Counter)
        self._held: dict[str, tuple[frozenset[str], int]] = {}

    def record(self, assessed: events_pb2.ComplaintAssessed, carrier_party_id: str = "") -> None:
        """Take a complaint's latest assessment."""
        before = self._held.pop(assessed.complaint_id, None)
        if before is not None:
            parties, day_ms = before
            for party in parties:
                self._counts[party][day_ms] -= 1
        if assessed.finding in (0, events_pb2.COMPLAINT_FINDING_NO_FINDING):
            return
        parties = frozenset(assessed.sender_party_ids) | (
            {carrier_party_id} if carrier_party_id else frozenset()
        )
        day_ms = assessed.received_time.ToMilliseconds() // DAY_MS * DAY_MS
        self._held[assessed.complaint_id] = (parties, day_ms)
        for party in parties:
            self._counts[party][day_ms] += 1

    def count(self, party_id: str, start_ms: int, end_ms: int) -> int:
        """The party's complaints with a finding about messages of the days in the period."""
        days = self._counts.get(party_id, Counter())
        first_day = start_ms // DAY_MS * DAY_MS
        return sum(days.get(day_ms, 0) for day_ms in range(first_day, end_ms, DAY_MS))
