"""Audit batching and per-party rate limits, with an in-memory broker."""

import asyncio

from stopsms.adapters.bus import InMemoryPublisher
from stopsms.adapters.identity import SUBJECTS_PER_ENTRY, AuditTrail
from stopsms.domain.ratelimit import RateLimiter
from stopsms.v1 import events_pb2


async def test_permitted_calls_are_gathered_and_refusals_kept_apart() -> None:
    publisher = InMemoryPublisher()
    trail = AuditTrail(publisher, "stopsms.audit.v1", flush_seconds=0.01)
    for i in range(500):
        trail.record_permitted("atlas-sms", events_pb2.PARTY_KIND_PSVA, "/Check", [f"pk1:{i:04x}"])
    trail.record(
        "atlas-sms", events_pb2.PARTY_KIND_PSVA, "/Check", events_pb2.AUDIT_DECISION_DENIED, "KITEA"
    )
    await asyncio.sleep(0.05)
    entries = [
        events_pb2.AuditEntry.FromString(v) for _, v, _ in publisher.records["stopsms.audit.v1"]
    ]
    permitted = [e for e in entries if e.decision == events_pb2.AUDIT_DECISION_PERMITTED]
    denied = [e for e in entries if e.decision == events_pb2.AUDIT_DECISION_DENIED]
    assert len(permitted) == 1 and len(permitted[0].subjects) == 500
    assert permitted[0].detail == "500 permitted calls"
    assert len(denied) == 1 and denied[0].detail == "KITEA"


async def test_a_scrubs_subjects_are_split_into_entries_kafka_accepts() -> None:
    publisher = InMemoryPublisher()
    trail = AuditTrail(publisher, "stopsms.audit.v1", flush_seconds=10)
    for chunk in range(3):
        subjects = [f"pk1:{chunk:02x}{i:030x}" for i in range(10_000)]
        trail.record_permitted("iam", events_pb2.PARTY_KIND_OPERATOR, "/CheckBatch", subjects)
    await trail.flush()
    records = publisher.records["stopsms.audit.v1"]
    entries = [events_pb2.AuditEntry.FromString(v) for _, v, _ in records]
    assert [len(e.subjects) for e in entries] == [SUBJECTS_PER_ENTRY] * 3
    assert entries[2].detail == "3 permitted calls (part 3 of 3)"
    assert max(len(v) for _, v, _ in records) < 1_000_000
    assert len({s for e in entries for s in e.subjects}) == 30_000


async def test_a_full_audit_buffer_drops_and_counts_instead_of_growing() -> None:
    trail = AuditTrail(InMemoryPublisher(), "audit", capacity=10)
    for _ in range(20):
        trail.record_permitted("iam", events_pb2.PARTY_KIND_OPERATOR, "/Check", ["pk1:00"])
    assert trail.dropped == 10
    await trail.flush()


def test_a_party_over_its_rate_waits_and_others_are_not_limited() -> None:
    limiter = RateLimiter({"flood-sms": 5.0})
    waits = [limiter.retry_after("flood-sms") for _ in range(8)]
    assert waits[:5] == [0.0] * 5
    assert all(0 < w <= 1.0 for w in waits[5:])
    assert all(limiter.retry_after("atlas-sms") == 0.0 for _ in range(100))
