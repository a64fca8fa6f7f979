"""Lateness: pending past the SLO is LATE in the proof, in the lag metrics, and in the log."""

from __future__ import annotations

import logging

from stopsms.notifier.lateness import LatenessWatcher, with_lateness
from stopsms.v1 import events_pb2

PENDING, APPLIED, LATE = (
    events_pb2.DELIVERY_STATUS_PENDING,
    events_pb2.DELIVERY_STATUS_APPLIED,
    events_pb2.DELIVERY_STATUS_LATE,
)


def record(event: str, action_ms: int, statuses: dict[str, int]) -> events_pb2.PropagationRecord:
    r = events_pb2.PropagationRecord(event_id=event, request_id=f"r-{event}")
    r.action_time.FromMilliseconds(action_ms)
    for party, status in statuses.items():
        r.deliveries.add(party_id=party, status=status)
    return r


def test_pending_past_the_slo_is_late_and_applied_stays_applied() -> None:
    r = record("e1", 10_000, {"iam": APPLIED, "atlas-sms": PENDING})
    assert [d.status for d in with_lateness(r, 5, now_ms=14_000).deliveries] == [APPLIED, PENDING]
    assert [d.status for d in with_lateness(r, 5, now_ms=15_001).deliveries] == [APPLIED, LATE]
    assert r.deliveries[1].status == PENDING  # the stored record is left as it is


def test_the_watcher_measures_each_partys_lag_and_logs_a_late_party_once(caplog) -> None:
    open_records = {
        "e1": record("e1", 0, {"iam": APPLIED, "atlas-sms": PENDING}),
        "e2": record("e2", 8_000, {"iam": PENDING, "atlas-sms": PENDING}),
    }
    watcher = LatenessWatcher(open_records, slo_seconds=5)
    with caplog.at_level(logging.WARNING):
        lag = watcher.scan(now_ms=10_000)
        watcher.scan(now_ms=10_500)
    assert lag == {"atlas-sms": (2, 10.0, 1), "iam": (1, 2.0, 0)}
    late_lines = [r.message for r in caplog.records if "is late" in r.message]
    assert len(late_lines) == 1 and late_lines[0].startswith("atlas-sms is late: request r-e1")
    del open_records["e1"]
    assert watcher.scan(now_ms=11_000) == {"atlas-sms": (1, 3.0, 0), "iam": (1, 3.0, 0)}
