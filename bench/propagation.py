"""Propagation benchmark: from the citizen's action to every concerned party's receipt.

Runs the whole platform (real Kafka, Redis, the three services as processes) with the default
parties directory: its three operators follow the list with the reference kafka-python consumer
and commit after applying, its two PSVAs watch their changes and acknowledge each
(:mod:`stopsms.tools.demo_parties`). N opt-outs go
through intake at a steady rate, for a mix of senders and the global scope; for each, the
platform's own proof (``done_time - action_time`` of its propagation record) is the figure.

In the same run, on the same broker, a raw aiokafka round trip (acks=all, one record awaited
at a time, produce then consume) is the baseline; the ratios hold on a noisy machine where the
absolute times swing.

    python -m bench.propagation [--count 300] [--rate 30]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
import uuid
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bench.results import figure, percentile, record
from stopsms.adapters.kafka import TopicReader
from stopsms.domain.topics import Topics
from stopsms.tools.demo_parties import DemoParties
from stopsms.tools.local_platform import DEFAULT_PORTS, LocalPlatform
from stopsms.v1 import events_pb2, intake_pb2, intake_pb2_grpc

SENDERS = ("JUMIA", "MARJANE", "LYDEC", "ELECTROPLANET", "KITEA", "IAM", "")


async def kafka_round_trips(bootstrap: str, topic: str, count: int) -> list[float]:
    """Produce one record (acks=all), wait until a consumer reads it; repeat."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, fetch_max_wait_ms=10)
    await producer.start()
    await consumer.start()
    tp = TopicPartition(topic, 0)
    consumer.assign([tp])
    await consumer.seek_to_end(tp)
    times = []
    try:
        for i in range(count):
            started = time.perf_counter()
            await producer.send_and_wait(topic, value=f"{i}".encode(), key=b"bench", partition=0)
            while True:
                batch = await consumer.getmany(tp, timeout_ms=1000)
                if any(m.value == f"{i}".encode() for m in batch.get(tp, [])):
                    break
            times.append(time.perf_counter() - started)
    finally:
        await producer.stop()
        await consumer.stop()
    return times


async def run(count: int, rate: float, platform: LocalPlatform) -> list[dict[str, object]]:
    """Drive the load and collect the figures."""
    ends = platform.endpoints
    topics = Topics(platform.namespace)
    print("raw Kafka round trips...", flush=True)
    raw = await kafka_round_trips(ends["kafka"], topics.dlq, max(50, count // 2))

    parties = DemoParties.for_platform(platform).start()
    proofs = TopicReader(ends["kafka"], topics.propagation)
    await proofs.start()

    print(f"{count} opt-outs through intake at {rate:.0f}/s...", flush=True)
    submitted: set[str] = set()
    channel, metadata = platform.channel("intake", "iam")
    async with channel:
        intake = intake_pb2_grpc.IntakeServiceStub(channel)
        started = time.perf_counter()
        for i in range(count):
            number = f"06{random.randrange(10**8):08d}"
            reply = await intake.SubmitOptOut(
                intake_pb2.SubmitOptOutRequest(
                    request_id=str(uuid.uuid4()),
                    msisdn=number,
                    sender_id=random.choice(SENDERS),
                    channel=events_pb2.CHANNEL_API,
                ),
                metadata=metadata,
            )
            submitted.add(reply.event_id)
            await asyncio.sleep(max(0.0, started + (i + 1) / rate - time.perf_counter()))

    done: dict[str, float] = {}
    deadline = time.monotonic() + 60
    while len(done) < len(submitted) and time.monotonic() < deadline:
        for rec in await proofs.read(timeout_ms=500):
            proof = events_pb2.PropagationRecord.FromString(rec.value)
            if proof.done and proof.event_id in submitted and proof.event_id not in done:
                seconds = proof.done_time.ToMilliseconds() - proof.action_time.ToMilliseconds()
                done[proof.event_id] = seconds / 1000
    await proofs.stop()
    parties.stop()
    if len(done) < len(submitted):
        print(
            f"warning: {len(submitted) - len(done)} requests not fully propagated in time",
            file=sys.stderr,
        )
    times = list(done.values())
    raw_p50, raw_p99 = percentile(raw, 50), percentile(raw, 99)
    print(f"propagated {len(done)}/{len(submitted)}; max {max(times):.3f}s")
    return [
        figure("propagation_p50_s", percentile(times, 50), "s", raw_p50),
        figure("propagation_p95_s", percentile(times, 95), "s", raw_p50),
        figure("propagation_p99_s", percentile(times, 99), "s", raw_p99),
        figure("kafka_roundtrip_p50_s", raw_p50, "s"),
        figure("kafka_roundtrip_p99_s", raw_p99, "s"),
    ]


def main() -> int:
    """Entry point: ``python -m bench.propagation``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=300, help="opt-outs to send")
    parser.add_argument("--rate", type=float, default=30.0, help="opt-outs per second")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="stopsms-bench-") as tmp:
        print("starting the platform...", flush=True)
        with LocalPlatform(
            Path(tmp),
            preferred_ports={name: 0 for name in DEFAULT_PORTS},
            services=("registry", "notifier", "intake"),  # the propagation path
        ) as platform:
            figures = asyncio.run(run(args.count, args.rate, platform))
    record(figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
