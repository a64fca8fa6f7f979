"""A console that does not grow with the list, the log or the proofs: a million opt-outs.

The console runs as its own process (with the notifier, which fills the proof store) with
mutual TLS on a real broker and Redis. A million citizens' opt-outs are written as the platform
leaves them — each a request on ``stopsms.requests.v1``, its decision on
``stopsms.suppressions.v1`` and its done proof on ``stopsms.propagation.v1`` — and the console
reads all three. It prints:

* ``console_rss_growth_mb_1m_optouts``: the console's resident memory once it has stored them
  all, minus at its start; beside it, the bytes of the records it read (what an index in its
  memory would hold at least);
* ``search_requests_p99_ms_1m``: ``SearchRequests`` of random citizens by an opt-out's event
  id (the decision store, the request log store, the proof store), beside a bare Redis round
  trip reading one subject's requests, measured in the same run;
* ``console_store_bytes_per_optout``: Redis memory per opt-out in the console's decision and
  request log stores.

    python -m bench.console_scale [--optouts 1000000] [--searches 1000]
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
from bench.proofs_scale import done_proof
from bench.results import SMOKE, capacity_directory, figure, percentile, record
from stopsms.adapters.kafka import KafkaPublisher
from stopsms.domain.topics import Topics, suppression_key
from stopsms.tools.local_platform import DEFAULT_PORTS, LocalPlatform
from stopsms.v1 import events_pb2, regulator_pb2, regulator_pb2_grpc

BATCH = 10_000


def subject_of(i: int) -> str:
    """The ``i``-th citizen's subject (a pseudonym's shape; the stores do not read it)."""
    return f"pk1:{i:064x}"


def event_of(i: int) -> str:
    """The event id of the ``i``-th citizen's opt-out (the shape intake gives them)."""
    return f"iam:bench-{i:012d}"


def opt_out(i: int, now: float) -> tuple[bytes, bytes, bytes]:
    """The ``i``-th opt-out: its key, its request and its decision."""
    subject, event = subject_of(i), event_of(i)
    accepted_ms = int((now - 86_400 - (i % 29) * 86_400) * 1000)
    request = events_pb2.PreferenceRequested(
        event_id=event,
        subject=subject,
        party_id="iam",
        channel=events_pb2.CHANNEL_SMS,
        action=events_pb2.ACTION_OPT_OUT,
        sender_id="JUMIA",
    )
    request.action_time.FromMilliseconds(accepted_ms - 200)
    request.accepted_time.FromMilliseconds(accepted_ms)
    decision = events_pb2.SuppressionChanged(
        event_id=event,
        subject=subject,
        sender_id="JUMIA",
        state=events_pb2.STATE_SUPPRESSED,
        changed=True,
    )
    decision.decided_time.FromMilliseconds(accepted_ms + 5)
    key = suppression_key(subject, "JUMIA").encode()
    return key, request.SerializeToString(), decision.SerializeToString()


async def stored(redis: aioredis.Redis, offsets_key: str, records: int) -> None:
    """Wait until a store has applied ``records`` (the sum of its offsets)."""
    deadline = time.perf_counter() + 1800
    while True:
        applied = sum(int(v) for v in (await redis.hgetall(offsets_key)).values())
        if applied >= records:
            return
        assert time.perf_counter() < deadline, f"{offsets_key}: {applied:,} of {records:,}"
        await asyncio.sleep(0.5)


async def run(platform: LocalPlatform, optouts: int, searches: int) -> list[dict[str, object]]:
    """Write the opt-outs, wait until the console has stored them, take the figures."""
    namespace = platform.namespace
    topics = Topics(namespace)
    redis = aioredis.Redis.from_url(platform.endpoints["redis"])
    pid = platform.processes["console"].pid
    rss_start = rss_mb(pid)
    used_before = int((await redis.info("memory"))["used_memory"])
    publisher = KafkaPublisher(platform.endpoints["kafka"], client_id="bench-console")
    await publisher.start()
    now = time.time()
    payload = 0
    started = time.perf_counter()
    try:
        # The proofs first, as history leaves them: a decision whose proof the notifier does
        # not hold yet would get a new (open) proof from it.
        for start in range(0, optouts, BATCH):
            proofs = [
                (event_of(i).encode(), done_proof(i, now))
                for i in range(start, min(start + BATCH, optouts))
            ]
            payload += sum(len(p) for _, p in proofs)
            await publisher.publish_many(topics.propagation, proofs)
        await stored(redis, f"{namespace}proofs:#offsets", optouts)
        for start in range(0, optouts, BATCH):
            written = [opt_out(i, now) for i in range(start, min(start + BATCH, optouts))]
            payload += sum(len(r) + len(d) for _, r, d in written)
            await asyncio.gather(
                publisher.publish_many(topics.requests, [(k, r) for k, r, _ in written]),
                publisher.publish_many(topics.suppressions, [(k, d) for k, _, d in written]),
            )
            if (start + BATCH) % 200_000 == 0:
                print(f"  {start + BATCH:,} opt-outs written", flush=True)
    finally:
        await publisher.stop()
    written_s = time.perf_counter() - started
    for store in ("decisions", "requests"):
        await stored(redis, f"{namespace}{store}:#offsets", optouts)
    stored_s = time.perf_counter() - started
    await asyncio.sleep(3)  # the console's proof index lets go of what the store holds
    rss_end = rss_mb(pid)
    used_after = int((await redis.info("memory"))["used_memory"])
    # The notifier's proof store grew too: take it out, from a sample of its keys.
    sample = [f"{namespace}proofs:{event_of(random.randrange(optouts))}" for _ in range(500)]
    sizes = [int(await redis.memory_usage(key) or 0) for key in sample]
    proofs_bytes = sum(sizes) / len(sizes) * optouts
    channel, metadata = platform.channel("console", "cndp")
    latencies, bare = [], []
    async with channel:
        stub = regulator_pb2_grpc.RegulatorServiceStub(channel)
        for _ in range(searches):
            i = random.randrange(optouts)
            t0 = time.perf_counter()
            answer = await stub.SearchRequests(
                regulator_pb2.SearchRequestsRequest(reference=event_of(i)), metadata=metadata
            )
            t1 = time.perf_counter()
            await redis.lrange(f"{namespace}requests:s:{subject_of(i)}", 0, -1)
            bare.append(time.perf_counter() - t1)
            latencies.append(t1 - t0)
            found = answer.requests[0]
            assert found.event_id == event_of(i) and found.proof.done and found.changed
    await redis.aclose()
    per_optout = (used_after - used_before - proofs_bytes) / optouts
    print(
        f"wrote {optouts:,} opt-outs (3 records each, {payload / 1e6:.0f} MB) in "
        f"{written_s:.1f}s; stored after {stored_s:.1f}s; console RSS {rss_start:.0f} → "
        f"{rss_end:.0f} MB; its stores {per_optout:.0f} B an opt-out in Redis",
        flush=True,
    )
    return [
        figure(
            "console_rss_growth_mb_1m_optouts", rss_end - rss_start, "MB", payload / 1024 / 1024
        ),
        figure(
            "search_requests_p99_ms_1m",
            percentile(latencies, 99) * 1000,
            "ms",
            percentile(bare, 99) * 1000,
        ),
        figure("console_store_bytes_per_optout", per_optout, "B"),
    ]


def main() -> int:
    """Entry point: ``python -m bench.console_scale``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--optouts", type=int, default=2_000 if SMOKE else 1_000_000)
    parser.add_argument("--searches", type=int, default=20 if SMOKE else 1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="stopsms-bench-") as tmp:
        print("starting Kafka, Redis, the notifier and the console...", flush=True)
        platform = LocalPlatform(
            Path(tmp),
            preferred_ports={name: 0 for name in DEFAULT_PORTS},
            services=("notifier", "console"),
            parties_file=capacity_directory(Path(tmp) / "parties.yaml", ("cndp",)),
        )
        with platform:
            figures = asyncio.run(run(platform, args.optouts, args.searches))
    record(figures, short_of="fewer than a million opt-outs" if args.optouts < 1_000_000 else None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
