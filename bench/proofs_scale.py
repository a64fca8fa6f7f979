"""Proofs that do not weigh on the notifier: five million done, its memory, an old one's lookup.

The notifier runs as its own process with mutual TLS on a real broker and Redis. Five million
done proofs (three operators and two PSVAs each, done over the past days, as a year of
requests would leave them) are written to ``stopsms.propagation.v1`` in campaign-sized
batches; the notifier reads them, and its proof store takes the done ones. It prints:

* ``notifier_rss_growth_mb_5m_proofs``: its resident memory once it has read them all and the
  store holds them, minus at its start (goal: within 100 MB);
* ``get_propagation_old_p99_ms``: ``GetPropagation`` of random old proofs (as the regulator),
  beside a bare Redis GET of a stored proof measured in the same run;
* ``proof_store_bytes_per_proof``: Redis memory per stored proof.

    python -m bench.proofs_scale [--proofs 5000000] [--lookups 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from pathlib import Path

import redis.asyncio as aioredis

from bench.links_scale import rss_mb
from bench.propagation_sweep import cpu_seconds
from bench.results import capacity_directory, figure, percentile, record
from stopsms.adapters.kafka import KafkaPublisher
from stopsms.domain.topics import Topics
from stopsms.tools.local_platform import DEFAULT_PORTS, LocalPlatform
from stopsms.v1 import events_pb2, notifier_pb2, notifier_pb2_grpc

BATCH = 10_000
PARTIES = [
    ("iam", events_pb2.PARTY_KIND_OPERATOR),
    ("orange", events_pb2.PARTY_KIND_OPERATOR),
    ("inwi", events_pb2.PARTY_KIND_OPERATOR),
    ("atlas-sms", events_pb2.PARTY_KIND_PSVA),
    ("sahara-push", events_pb2.PARTY_KIND_PSVA),
]


def event_of(i: int) -> str:
    """The event id of the ``i``-th proof (the shape intake gives them)."""
    return f"iam:bench-{i:012d}"


def done_proof(i: int, now: float) -> bytes:
    """A done proof, done between 1 and 30 days ago."""
    done_ms = int((now - 86_400 - (i % 29) * 86_400) * 1000)
    proof = events_pb2.PropagationRecord(
        event_id=event_of(i),
        request_id=f"bench-{i:012d}",
        origin_party_id="iam",
        sender_id="JUMIA",
        action=events_pb2.ACTION_OPT_OUT,
        done=True,
    )
    proof.action_time.FromMilliseconds(done_ms - 400)
    proof.done_time.FromMilliseconds(done_ms)
    for party, kind in PARTIES:
        delivery = proof.deliveries.add(
            party_id=party, party_kind=kind, status=events_pb2.DELIVERY_STATUS_APPLIED
        )
        delivery.applied_time.FromMilliseconds(done_ms - 100)
    return proof.SerializeToString()


async def run(platform: LocalPlatform, proofs: int, lookups: int) -> list[dict[str, object]]:
    """Write the proofs, wait until the notifier and its store hold them, take the figures."""
    topics = Topics(platform.namespace)
    redis = aioredis.Redis.from_url(platform.endpoints["redis"])
    pid = platform.processes["notifier"].pid
    await asyncio.sleep(0)  # the notifier serves: its start is measured now
    rss_start = rss_mb(pid)
    used_before = int((await redis.info("memory"))["used_memory"])
    publisher = KafkaPublisher(platform.endpoints["kafka"], client_id="bench-proofs")
    await publisher.start()
    now = time.time()
    cpu_before = cpu_seconds(pid)
    started = time.perf_counter()
    try:
        for start in range(0, proofs, BATCH):
            batch = [
                (event_of(i).encode(), done_proof(i, now))
                for i in range(start, min(start + BATCH, proofs))
            ]
            await publisher.publish_many(topics.propagation, batch)
            if (start + BATCH) % 1_000_000 == 0:
                print(f"  {start + BATCH:,} proofs written", flush=True)
    finally:
        await publisher.stop()
    written_s = time.perf_counter() - started
    offsets_key = f"{platform.namespace}proofs:#offsets"
    deadline = time.perf_counter() + 900
    while True:  # the store holds every proof once its offsets reach the topic's ends
        applied = sum(int(v) for v in (await redis.hgetall(offsets_key)).values())
        if applied >= proofs:
            break
        assert time.perf_counter() < deadline, f"the proof store applied {applied:,} of {proofs:,}"
        await asyncio.sleep(0.5)
    stored_s = time.perf_counter() - started
    channel, metadata = platform.channel("notifier", "cndp")
    latencies, bare = [], []
    async with channel:
        stub = notifier_pb2_grpc.NotifierServiceStub(channel)
        # The index has read everything once the last proof is found.
        last = event_of(proofs - 1)
        await stub.GetPropagation(
            notifier_pb2.GetPropagationRequest(event_id=last), metadata=metadata, timeout=600
        )
        cpu = cpu_seconds(pid) - cpu_before
        await asyncio.sleep(3)  # the index lets go of what the store holds (every second)
        rss_end = rss_mb(pid)
        for _ in range(lookups):
            event = event_of(random.randrange(proofs))
            t0 = time.perf_counter()
            reply = await stub.GetPropagation(
                notifier_pb2.GetPropagationRequest(event_id=event), metadata=metadata
            )
            t1 = time.perf_counter()
            await redis.get(f"{platform.namespace}proofs:{event}")
            bare.append(time.perf_counter() - t1)
            latencies.append(t1 - t0)
            assert reply.propagation.done and reply.propagation.event_id == event
    used_after = int((await redis.info("memory"))["used_memory"])
    await redis.aclose()
    print(
        f"wrote {proofs:,} proofs in {written_s:.1f}s; stored after {stored_s:.1f}s; notifier "
        f"RSS {rss_start:.0f} → {rss_end:.0f} MB; {cpu / proofs * 1e6:.1f} µs CPU a proof read",
        flush=True,
    )
    return [
        figure("notifier_rss_growth_mb_5m_proofs", rss_end - rss_start, "MB"),
        figure(
            "get_propagation_old_p99_ms",
            percentile(latencies, 99) * 1000,
            "ms",
            percentile(bare, 99) * 1000,
        ),
        figure("proof_store_bytes_per_proof", (used_after - used_before) / proofs, "B"),
        figure("notifier_cpu_us_per_proof_read", cpu / proofs * 1e6, "µs"),
    ]


def main() -> int:
    """Entry point: ``python -m bench.proofs_scale``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--proofs", type=int, default=5_000_000)
    parser.add_argument("--lookups", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="stopsms-bench-") as tmp:
        print("starting Kafka, Redis and the notifier...", flush=True)
        platform = LocalPlatform(
            Path(tmp),
            preferred_ports={name: 0 for name in DEFAULT_PORTS},
            services=("notifier",),
            parties_file=capacity_directory(Path(tmp) / "parties.yaml", ("cndp",)),
        )
        with platform:
            figures = asyncio.run(run(platform, args.proofs, args.lookups))
    record(figures, short_of="fewer than five million proofs" if args.proofs < 5_000_000 else None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
