"""Lateness: a party that has not applied a change within the SLO is late, and everyone sees it.

The SLO (``STOPSMS_PROPAGATION_SLO_SECONDS``, 5 s by default) runs from the citizen's action.
A delivery still PENDING past it is reported LATE by ``GetPropagation`` (computed when asked,
so the proof never claims more than what happened), counted in the per-party lag metrics, and
logged once per change and party (one line per party and round, naming the oldest, so a backlog
does not flood the log). Webhook receivers are retried until they answer; stream PSVAs get
the change again when they reconnect from their acknowledged cursor.

Metrics (Prometheus):
* ``stopsms_propagation_seconds{party_kind}``: action to applied, per delivery (a histogram);
* ``stopsms_party_pending_changes{party}``, ``stopsms_party_oldest_pending_seconds{party}``:
  each party's lag — changes not yet applied, and how old the oldest is;
* ``stopsms_party_late_changes{party}``: of those, how many are past the SLO.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import mode
from prometheus_client import Gauge, Histogram

from stopsms.domain.parties import KIND_BY_NAME
from stopsms.v1 import events_pb2

log = logging.getLogger(__name__)

PENDING = events_pb2.DELIVERY_STATUS_PENDING
LATE = events_pb2.DELIVERY_STATUS_LATE
KIND_NAMES = {value: name for name, value in KIND_BY_NAME.items()}

PROPAGATION_SECONDS = Histogram(
    "stopsms_propagation_seconds",
    "Seconds from the citizen's action to a party's applying the change.",
    ["party_kind"],
    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 3600),
)
PENDING_CHANGES = Gauge(
    "stopsms_party_pending_changes", "Changes a party has not applied yet.", ["party"]
)
OLDEST_PENDING = Gauge(
    "stopsms_party_oldest_pending_seconds",
    "Age of the oldest change a party has not applied.",
    ["party"],
)
LATE_CHANGES = Gauge(
    "stopsms_party_late_changes", "Changes a party has not applied within the SLO.", ["party"]
)


#: Parties ever seen lagging: their gauges go back to 0 rather than freeze at the last value.
PENDING_CHANGES_PARTIES: set[str] = set()


def observe_applied(party_kind: int, action_time_ms: int, applied_time_ms: int) -> None:
    """Record one delivery's propagation time (called once per party's APPLIED folded)."""
    if action_time_ms and applied_time_ms:
        seconds = (applied_time_ms - action_time_ms) / 1000
        PROPAGATION_SECONDS.labels(KIND_NAMES.get(party_kind, "unknown")).observe(max(seconds, 0.0))


def with_lateness(
    record: events_pb2.PropagationRecord, slo_seconds: float, now_ms: int | None = None
) -> events_pb2.PropagationRecord:
    """A copy of the record where deliveries pending past the SLO say LATE."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    out = events_pb2.PropagationRecord()
    out.CopyFrom(record)
    deadline = record.action_time.ToMilliseconds() + slo_seconds * 1000
    if now_ms > deadline:
        for delivery in out.deliveries:
            if delivery.status == PENDING:
                delivery.status = LATE
    return out


class LatenessWatcher(mode.Service):
    """Every second: each party's lag from the open propagation records, and who is late."""

    def __init__(
        self,
        open_records: dict[str, events_pb2.PropagationRecord],
        slo_seconds: float,
        fill: Callable[[events_pb2.PropagationRecord], events_pb2.PropagationRecord] = (
            lambda record: record
        ),
        **kwargs: object,
    ) -> None:
        self.open_records = open_records
        self.slo_seconds = slo_seconds
        #: What the parties applied since the record was published (their progress).
        self.fill = fill
        self._reported: set[tuple[str, str]] = set()
        super().__init__(**kwargs)  # type: ignore[arg-type]

    def scan(self, now_ms: int | None = None) -> dict[str, tuple[int, float, int]]:
        """Per party: (pending, oldest age in seconds, late); also sets metrics and logs."""
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        lag: dict[str, tuple[int, float, int]] = {}
        still_open = set()
        newly_late: dict[str, list[tuple[float, str]]] = {}
        for event_id, published in list(self.open_records.items()):
            record = self.fill(published)
            age = (now_ms - record.action_time.ToMilliseconds()) / 1000
            for delivery in record.deliveries:
                if delivery.status != PENDING:
                    continue
                pending, oldest, late = lag.get(delivery.party_id, (0, 0.0, 0))
                is_late = age > self.slo_seconds
                lag[delivery.party_id] = (pending + 1, max(oldest, age), late + is_late)
                key = (event_id, delivery.party_id)
                still_open.add(key)
                if is_late and key not in self._reported:
                    self._reported.add(key)
                    newly_late.setdefault(delivery.party_id, []).append((age, record.request_id))
        for party_id, items in newly_late.items():
            # One line per party and round, naming its oldest: a backlog must not flood the log.
            age, request_id = max(items)
            log.warning(
                "%s is late: request %s not applied %.1f s after the action (SLO %g s)%s",
                party_id,
                request_id,
                age,
                self.slo_seconds,
                f"; {len(items) - 1} more changes late" if len(items) > 1 else "",
            )
        self._reported &= still_open
        for party in {*lag, *PENDING_CHANGES_PARTIES}:
            pending, oldest, late = lag.get(party, (0, 0.0, 0))
            PENDING_CHANGES.labels(party).set(pending)
            OLDEST_PENDING.labels(party).set(oldest)
            LATE_CHANGES.labels(party).set(late)
        PENDING_CHANGES_PARTIES.update(lag)
        return lag

    @mode.Service.task
    async def _watch(self) -> None:
        while not self.should_stop:
            await self.sleep(1.0)
            self.scan()
