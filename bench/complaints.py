"""Complaint assessment on a real broker: assessments per second, and complaint to assessment.

The assessor (``stopsms.console.assessor``) runs in this process over a real Kafka broker, with
a history of opt-outs and their proofs already on the topics. Two measurements:

* **throughput**: a backlog of complaints is filed before the assessor starts; it assesses
  them all. Assessments per second and the CPU milliseconds per assessment of this process
  (``/proc/self/stat``) are printed beside the raw baseline: the bare loop of the same rule
  (``domain.complaints.assess``) over the same evidence, without Kafka.
* **latency**: complaints are filed at 50 per second; the time from a complaint acknowledged
  by Kafka to its assessment read back from ``stopsms.complaint-assessments.v1`` by a reader
  (what the regulator's side sees), p50 and p99, beside a bare Kafka round trip.

    python -m bench.complaints [--backlog 2000] [--rate 50] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

from bench.propagation import kafka_round_trips
from bench.propagation_sweep import cpu_seconds
from bench.results import SMOKE, figure, percentile, record
from stopsms.adapters.bus import CompactedTopicIndex, KafkaBus
from stopsms.adapters.decision_store import RedisDecisionStore
from stopsms.adapters.kafka import KafkaPublisher
from stopsms.adapters.redis_pool import connect_redis
from stopsms.console.assessor import ComplaintAssessor
from stopsms.domain.complaints import assess
from stopsms.domain.message_check import LinkSite
from stopsms.domain.privacy import Key, Pseudonymiser
from stopsms.domain.topics import Topics, partition_for_key, suppression_key
from stopsms.intake.complaints import ComplaintDesk
from stopsms.intake.submission import InMemoryRequestReferences, RequestSubmitter
from stopsms.tools.launcher import LocalInfrastructure
from stopsms.tools.senders import local_directory
from stopsms.v1 import events_pb2

KEYS = Pseudonymiser(Key("pk1", bytes(32)), [Key("dk1", bytes(range(32)))])
SITE = LinkSite("https://stopsms.ma/")
TEXTS = (
    "SPAM Soldes chez Jumia -30%! STOP au 3030",
    "SPAM Jumia: offre du jour, profitez-en vite !",
    "SPAM Credit rapide sans dossier, appelez vite",
)
ORIGINS = ("JUMIA", "JUMIA", "+212 699 00 00 01")


def number(i: int) -> str:
    return f"+2126{i:08d}"


async def run(
    infra: LocalInfrastructure, backlog: int, rate: float, seconds: float
) -> list[dict[str, object]]:
    topics = infra.topics
    bootstrap = infra.kafka.bootstrap
    directory = local_directory()
    publisher = KafkaPublisher(bootstrap)
    await publisher.start()
    submitter = RequestSubmitter(
        publisher, KEYS, directory, topics, infra.partitions, InMemoryRequestReferences()
    )
    desk = ComplaintDesk(publisher, submitter, KEYS, topics, infra.partitions)
    now_ms = int(time.time() * 1000)
    print(f"history: {backlog:,} opt-outs with their proofs...", flush=True)
    changes, proofs = [], []
    for i in range(backlog):
        subject = KEYS.subject(number(i))
        change = events_pb2.SuppressionChanged(
            event_id=f"opt-out-{i}",
            subject=subject,
            sender_id="JUMIA" if i % 2 else "",
            state=events_pb2.STATE_SUPPRESSED,
            changed=True,
        )
        change.decided_time.FromMilliseconds(now_ms - 3_600_000)
        changes.append((suppression_key(subject, change.sender_id).encode(), change))
        proof = events_pb2.PropagationRecord(event_id=change.event_id, done=True)
        for party in ("iam", "orange", "inwi", "atlas-sms"):
            delivery = proof.deliveries.add(
                party_id=party, status=events_pb2.DELIVERY_STATUS_APPLIED
            )
            delivery.applied_time.FromMilliseconds(now_ms - 3_500_000)
        proofs.append((change.event_id.encode(), proof.SerializeToString()))
    await asyncio.gather(
        *(
            publisher.publish(
                topics.suppressions,
                key,
                change.SerializeToString(),
                partition=partition_for_key(key, infra.partitions),
            )
            for key, change in changes
        )
    )
    await publisher.publish_many(topics.propagation, proofs)

    def complaint(i: int, request: str) -> events_pb2.ComplaintFiled:
        return desk.build(
            party_id="iam",
            request_id=request,
            channel=events_pb2.CHANNEL_SMS,
            complainant=submitter.protect(number(i)),
            origin=desk.origin(ORIGINS[i % 3]),
            received_time=None,
            text=TEXTS[i % 3],
        )

    filed = [complaint(i, f"backlog-{i}") for i in range(backlog)]
    await asyncio.gather(*(desk.file(record_) for record_ in filed))

    # The decisions in Redis, as the console keeps them; the proofs in memory (no notifier
    # here fills their store).
    assessor = ComplaintAssessor(
        KafkaBus(bootstrap),
        publisher,
        topics,
        directory,
        KEYS,
        SITE,
        decision_store=RedisDecisionStore(connect_redis(infra.redis.url), topics.namespace),
    )
    cpu_before, started = cpu_seconds(os.getpid()), time.perf_counter()
    await assessor.start()
    try:
        while assessor.assessed < backlog:
            if time.perf_counter() - started > 300:
                raise SystemExit(f"only {assessor.assessed} of {backlog} assessed in 300 s")
            await asyncio.sleep(0.01)
        drained = time.perf_counter() - started
        cpu_ms = (cpu_seconds(os.getpid()) - cpu_before) * 1000 / backlog
        # the bare loop: the same rule over the same evidence, without Kafka
        readings = [assessor.reading(c) for c in filed]
        codes = {code for r in readings if r is not None for code in r.link_codes}
        links = await assessor.links.get_many(codes)
        changes, asked = await assessor.histories({c.subject for c in filed})
        decided = [
            assessor.opt_out_of(c, changes.get(c.subject, ()), asked.get(c.subject, ()))
            for c in filed
        ]
        proofs = await assessor.proofs.latest(
            {opt_out.event_id for _, opt_out in decided if opt_out is not None}
        )
        evidence = [
            assessor.evidence(c, r, links, d, proofs)
            for c, r, d in zip(filed, readings, decided, strict=True)
        ]
        bare_started = time.perf_counter()
        for item in evidence:
            assess(item, now_ms)
        bare = time.perf_counter() - bare_started
        per_s, bare_per_s = backlog / drained, backlog / bare
        print(
            f"assessed a backlog of {backlog:,} complaints in {drained:.2f} s "
            f"({per_s:,.0f}/s, {cpu_ms:.2f} ms CPU each, start included); the bare rule: "
            f"{bare_per_s:,.0f}/s; ratio {per_s / bare_per_s:.3f}"
        )

        reader: CompactedTopicIndex[events_pb2.ComplaintAssessed] = CompactedTopicIndex(
            KafkaBus(bootstrap),
            topics.complaint_assessments,
            events_pb2.ComplaintAssessed.FromString,
        )
        await reader.start()
        await reader.caught_up(30)
        count = max(1, int(rate * seconds))
        print(f"latency: {count} complaints at {rate:.0f}/s...", flush=True)
        filed_ms: dict[str, int] = {}
        stamped: list[int] = []
        latencies: list[float] = []
        waiting: dict[str, float] = {}

        async def watch() -> None:
            """Note when each filed complaint's assessment is readable (polled every 2 ms)."""
            while True:
                for complaint_id in list(waiting):
                    found = reader.peek(complaint_id)
                    if found is not None:
                        latencies.append(time.perf_counter() - waiting.pop(complaint_id))
                        stamped.append(
                            found.assessed_time.ToMilliseconds() - filed_ms[complaint_id]
                        )
                await asyncio.sleep(0.002)

        watcher = asyncio.create_task(watch())
        pace = time.perf_counter()
        for i in range(count):
            pace += 1 / rate
            record_ = complaint(i, f"live-{i}")
            await desk.file(record_)
            filed_ms[record_.complaint_id] = record_.filed_time.ToMilliseconds()
            waiting[record_.complaint_id] = time.perf_counter()
            await asyncio.sleep(max(0.0, pace - time.perf_counter()))
        deadline = time.perf_counter() + 60
        while waiting and time.perf_counter() < deadline:
            await asyncio.sleep(0.05)
        watcher.cancel()
        if waiting:
            raise SystemExit(f"{len(waiting)} complaints never assessed within 60 s")
        print(
            "  of which filed to assessed (the assessor's own stamp): p50 "
            f"{percentile([float(x) for x in stamped], 50):.0f} ms",
            flush=True,
        )
        await reader.stop()
    finally:
        await assessor.stop()
        await publisher.stop()
    print("bare Kafka round trips...", flush=True)
    raw = await kafka_round_trips(bootstrap, topics.dlq, 50)
    raw_p50 = percentile(raw, 50)
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    print(
        f"complaint to assessment at {rate:.0f}/s: p50 {p50 * 1000:.1f} ms, p99 "
        f"{p99 * 1000:.1f} ms; a bare Kafka round trip: p50 {raw_p50 * 1000:.1f} ms; "
        f"ratio {p50 / raw_p50:.1f}"
    )
    return [
        figure("assessments_per_s", per_s, "complaints/s", bare_per_s),
        figure("assessment_cpu_ms", cpu_ms, "ms CPU per complaint"),
        figure("complaint_to_assessment_p50_s", p50, "s", raw_p50),
        figure("complaint_to_assessment_p99_s", p99, "s", raw_p50),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backlog", type=int, default=200 if SMOKE else 2000)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--seconds", type=float, default=2.0 if SMOKE else 10.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="stopsms-bench-") as tmp:
        with LocalInfrastructure(Path(tmp), topics=Topics("bench.")) as infra:
            figures = asyncio.run(run(infra, args.backlog, args.rate, args.seconds))
    record(figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
