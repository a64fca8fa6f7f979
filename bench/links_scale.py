"""Links at the scale of campaigns: ten million issued, the store they live in, the page's lookup.

Intake runs as its own process(es) with mutual TLS on a real broker and Redis; a client issues
links in campaign batches of 10,000 (``IssueStopLinks``) with a few calls in flight, until
``--links`` are issued and the link store has applied them all. Meanwhile a separate process
looks up random issued codes the way the link page does (one store read, the value unsealed)
a few hundred times a second. It prints:

* ``links_per_s``: links issued per second over the whole run, beside a bare aiokafka producer
  sending the same link records (acks=all, idempotent) in the same run;
* ``intake_rss_growth_mb_10m_links``: the intake process's resident memory after, minus before
  (all its processes when ``--workers`` > 1);
* ``link_store_bytes_per_link``: Redis memory of the store's buckets per live link;
* ``link_lookup_p99_ms``: the page's lookup while issuing, beside a bare Redis HGET's p99;
* CPU milliseconds per thousand links of intake and of the broker (``/proc/<pid>/stat``).

    python -m bench.links_scale [--links 10000000] [--replicas 2] [--in-flight 2] [--lookups 200]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import random
import tempfile
import time
from collections import deque
from pathlib import Path

import grpc
import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer

from bench.propagation_sweep import cpu_seconds, machine_busy
from bench.results import capacity_directory, figure, percentile, record
from stopsms.adapters.clients import party_channel
from stopsms.adapters.link_store import LinkSealer, RedisLinkStore, split_code
from stopsms.adapters.settings import Settings
from stopsms.domain.topics import Topics
from stopsms.tools.local_platform import DEFAULT_PORTS, LocalPlatform
from stopsms.v1 import intake_pb2, intake_pb2_grpc

BATCH = 10_000
#: Distinct numbers the campaigns go to (cycled): a store's size does not depend on them.
NUMBERS = 1_000_000
ISSUER = "atlas-sms"


def rss_mb(pid: int) -> float:
    """Resident memory of a process, MB (``/proc/<pid>/status``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def campaigns(count: int) -> list[intake_pb2.IssueStopLinksRequest]:
    """``count`` campaign batches over :data:`NUMBERS` numbers."""
    batches = []
    for b in range(count):
        start = (b * BATCH) % NUMBERS
        batches.append(
            intake_pb2.IssueStopLinksRequest(
                requests=[
                    intake_pb2.IssueStopLinkRequest(
                        msisdn=f"07{(start + i) % NUMBERS:08d}", sender_id="JUMIA"
                    )
                    for i in range(BATCH)
                ]
            )
        )
    return batches


def lookups(
    redis_url: str, namespace: str, data_dir: str, codes_file: str, rate: float, stop_file: str
) -> None:
    """In a process of its own: look up random issued codes at ``rate``/s until ``stop_file``."""

    async def run() -> None:
        client = aioredis.Redis.from_url(redis_url)
        store = RedisLinkStore(client, namespace)
        sealer = LinkSealer.of(Settings.from_env({"STOPSMS_DATA_DIR": data_dir}).pseudonymiser())
        page, bare, misses = [], [], 0
        started = time.perf_counter()
        i = 0
        while not os.path.exists(stop_file):
            codes = Path(codes_file).read_text().split()
            if codes:
                code = random.choice(codes)
                t0 = time.perf_counter()
                (value,) = await store.values([code])
                if value is None:  # the store is behind the topic: the page would wait
                    misses += 1
                else:
                    sealer.unpack(code, value)
                    t1 = time.perf_counter()
                    bucket, field = split_code(code)
                    await client.hget(f"{namespace}links:b:{bucket}", field)
                    page.append(t1 - t0)
                    bare.append(time.perf_counter() - t1)
            i += 1
            await asyncio.sleep(max(0.0, started + i / rate - time.perf_counter()))
        p99s = (percentile(page, 99), percentile(bare, 99)) if page else (0.0, 0.0)
        Path(stop_file + ".out").write_text(f"{len(page)} {misses} {p99s[0]} {p99s[1]}")
        await client.aclose()

    asyncio.run(run())


async def bare_producer_per_s(bootstrap: str, topic: str, sample: bytes, count: int) -> float:
    """Link-sized records per second of a bare producer (acks=all, idempotent)."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5
    )
    await producer.start()
    try:
        started = time.perf_counter()
        sent = []
        for i in range(count):
            sent.append(await producer.send(topic, key=f"bare{i:07d}".encode(), value=sample))
        await asyncio.gather(*sent)
        return count / (time.perf_counter() - started)
    finally:
        await producer.stop()


async def run(
    platform: LocalPlatform, links: int, in_flight: int, lookup_rate: float, replicas: int
) -> list:
    """Issue ``links`` links, then take the figures."""
    topics = Topics(platform.namespace)
    redis = aioredis.Redis.from_url(platform.endpoints["redis"])
    store = RedisLinkStore(redis, platform.namespace)
    for i in range(2, replicas + 1):
        platform.serve_replica("intake", f"intake-{i}", 120)
    intake_pids = [p.pid for name, p in platform.processes.items() if name.startswith("intake")]
    assert platform.infra is not None and platform.infra.kafka.process is not None
    broker_pid = platform.infra.kafka.process.pid
    rss_before = sum(rss_mb(pid) for pid in intake_pids)
    used_before = int((await redis.info("memory"))["used_memory"])
    batches = campaigns(min(links // BATCH or 1, NUMBERS // BATCH))
    channels = [platform.channel("intake", ISSUER)] + [
        party_channel(platform.replica_grpc[f"intake-{i}"], ISSUER, platform.tls_folder)
        for i in range(2, replicas + 1)
    ]
    codes_file = Path(platform.data_dir) / "codes.txt"
    codes_file.write_text("")
    stop_file = str(Path(platform.data_dir) / "lookups.stop")
    looker = multiprocessing.get_context("spawn").Process(
        target=lookups,
        args=(
            platform.endpoints["redis"],
            platform.namespace,
            str(platform.data_dir),
            str(codes_file),
            lookup_rate,
            stop_file,
        ),
    )
    looker.start()
    issued = 0
    sample_codes: deque[tuple[float, list[str]]] = deque(maxlen=100)
    cpu_before = {pid: cpu_seconds(pid) for pid in [*intake_pids, broker_pid]}
    busy_before = machine_busy()
    started = time.perf_counter()
    stubs = [(intake_pb2_grpc.IntakeServiceStub(c), metadata) for c, metadata in channels]
    next_batch = 0

    retried = 0

    async def issue(stub, request, metadata) -> intake_pb2.IssueStopLinksResponse:
        """One batch, sent again on UNAVAILABLE (Kafka did not acknowledge), as a PSVA does."""
        nonlocal retried
        for attempt in range(1, 6):
            try:
                return await stub.IssueStopLinks(request, metadata=metadata, timeout=300)
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE or attempt == 5:
                    raise
                retried += 1
                await asyncio.sleep(0.5 * attempt)  # the caller's back-off
        raise AssertionError("unreachable")

    async def issuer(n: int) -> None:
        nonlocal issued, next_batch
        stub, metadata = stubs[n % len(stubs)]  # callers spread over the replicas
        while next_batch * BATCH < links:
            request = batches[next_batch % len(batches)]
            next_batch += 1
            reply = await issue(stub, request, metadata)
            issued += len(reply.links)
            sample_codes.append((time.monotonic(), [r.code for r in reply.links[::500]]))
            # Looked up once 5 s old, as a click comes after the SMS: a link just issued
            # is found too (the page waits for the store), but that wait is not the lookup.
            ready = [c for t, codes in sample_codes if t < time.monotonic() - 5 for c in codes]
            codes_file.write_text("\n".join(ready[-2000:]))
            if issued // 1_000_000 != (issued - len(reply.links)) // 1_000_000:
                rate = issued / (time.perf_counter() - started)
                print(f"  {issued:,} links issued, {rate:,.0f}/s", flush=True)

    await asyncio.gather(*(issuer(n) for n in range(in_flight * len(stubs))))
    issued_s = time.perf_counter() - started
    # The store has every link once its offsets reach the topic's ends.
    while True:
        applied = await store.applied_offsets()
        if sum(applied.values()) >= issued:
            break
        if time.perf_counter() - started > issued_s + 600:
            raise AssertionError(
                f"the link store applied {sum(applied.values()):,} of {issued:,} links"
            )
        await asyncio.sleep(0.2)
    filled_s = time.perf_counter() - started
    cpu = {pid: cpu_seconds(pid) - cpu_before[pid] for pid in cpu_before}
    busy, capacity = (b - a for a, b in zip(busy_before, machine_busy(), strict=True))
    for channel, _ in channels:
        await channel.close()
    Path(stop_file).touch()
    looker.join(60)
    count, misses, lookup_p99, bare_p99 = Path(stop_file + ".out").read_text().split()
    rss_after = sum(rss_mb(pid) for pid in intake_pids)
    store_bytes = await store.memory()
    used_after = int((await redis.info("memory"))["used_memory"])
    print("bare producer...", flush=True)
    bare = await bare_producer_per_s(
        platform.endpoints["kafka"], topics.dlq, b"x" * 149, min(links, 200_000)
    )  # 149 bytes: a link record's size on the topic
    await redis.aclose()
    intake_cpu = sum(cpu[pid] for pid in intake_pids)
    print(
        f"issued {issued:,} in {issued_s:.1f}s, all in the store after {filled_s:.1f}s; "
        f"machine {busy / capacity:.0%} busy; {retried} batches sent again (UNAVAILABLE); "
        f"{count} lookups, {misses} more of links not yet "
        "in the store; redis used_memory grew "
        f"{(used_after - used_before) / issued:.1f} bytes a link",
        flush=True,
    )
    return [
        figure("links_per_s", issued / issued_s, "1/s", bare),
        figure("bare_producer_link_records_per_s", bare, "1/s"),
        figure("intake_rss_growth_mb_10m_links", rss_after - rss_before, "MB"),
        figure("link_store_bytes_per_link", store_bytes / issued, "B"),
        figure("link_lookup_p99_ms", float(lookup_p99) * 1000, "ms", float(bare_p99) * 1000),
        figure("intake_cpu_ms_per_1000_links", intake_cpu / issued * 1e6, "ms"),
        figure("broker_cpu_ms_per_1000_links", cpu[broker_pid] / issued * 1e6, "ms"),
    ]


def main() -> int:
    """Entry point: ``python -m bench.links_scale``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--links", type=int, default=10_000_000)
    parser.add_argument("--in-flight", type=int, default=2, help="calls in flight per replica")
    parser.add_argument("--replicas", type=int, default=2, help="intake processes")
    parser.add_argument("--lookups", type=float, default=200.0, help="page lookups per second")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="stopsms-bench-") as tmp:
        print("starting Kafka, Redis and intake...", flush=True)
        platform = LocalPlatform(
            Path(tmp),
            preferred_ports={name: 0 for name in DEFAULT_PORTS},
            services=("intake",),
            parties_file=capacity_directory(Path(tmp) / "parties.yaml", (ISSUER,)),
        )
        with platform:
            figures = asyncio.run(
                run(platform, args.links, args.in_flight, args.lookups, args.replicas)
            )
    record(figures, short_of="fewer than ten million links" if args.links < 10_000_000 else None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
