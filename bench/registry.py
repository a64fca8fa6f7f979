"""Registry benchmark: view size, rebuild rate, Check latency and throughput, list scrubbing.

On a real broker and redis-server, with the registry as its own process behind mutual TLS:

1. 1,000,000 suppression records (90 % for one of 20 senders, 10 % global) are published, and
   the view is rebuilt from them (``stopsms registry rebuild``'s code, two processes):
   entries per second, verification included, and Redis bytes per entry of the project's
   layout. The same entries
   written one key per entry (a 16-byte binary digest and the scope as the key, the packed
   entry as the value: as small as one key per entry gets) give the naive figure, measured on
   the same Redis.
2. ``Check`` at a steady 1,000 requests/s (open loop, latency from the scheduled send, after
   a warm-up) gives the p99 and the registry's CPU per call (``/proc/<pid>/stat``); the same
   open loop against a raw grpc.aio echo service with the same TLS gives the harness's own
   p99 and the echo's CPU per call. ``Check`` and the echo, each driven by the same number of
   concurrent callers in alternating windows, give the throughput ratio, and ``Check`` at 30 %
   of the echo's capacity a p99 at the same share of any machine. The numbers checked are
   those of the list below: one in twenty has a record.
3. A list of 1,000,000 numbers (5 % of them opted out) is scrubbed with one ``CheckBatch``
   through the project's client, end to end; a raw single-process loop (HMAC each number, MGET
   1,000 keys per round trip against the naive keys) scrubs the same list in the same run.
4. ``stopsms scrub`` on a CSV of the same list.

    python -m bench.registry [--entries 1000000] [--numbers 1000000] [--seconds 10]
    python -m bench.registry --national --entries 50000000   # the view at national size
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hmac
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import redis
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.echo_server import METHOD, wait_for_address
from bench.propagation_sweep import children_cpu, cpu_seconds
from bench.results import capacity_directory, figure, percentile, record
from stopsms.adapters.kafka import KafkaPublisher
from stopsms.adapters.kafka_access import KafkaAccess
from stopsms.adapters.settings import RegistrySettings, Settings
from stopsms.adapters.tls import channel_credentials
from stopsms.adapters.view import RedisSuppressionView
from stopsms.domain.privacy import NumberHasher
from stopsms.domain.topics import Topics, suppression_key
from stopsms.domain.viewcodec import NATIONAL_BUCKET_BITS, ScopeEntry, ViewLayout
from stopsms.registry.client import chunked, scrub
from stopsms.registry.rebuild import rebuild_in_parallel
from stopsms.tools.launcher import start_process, stop_process
from stopsms.tools.local_platform import DEFAULT_PORTS, LocalPlatform
from stopsms.v1 import events_pb2, registry_pb2, registry_pb2_grpc

SENDERS = [f"S{i:02d}" for i in range(20)]
CAMPAIGN_SENDER = "S00"
PARTY = "iam"  # an operator: may check any sender
#: Seconds of calls before each measured open loop (not measured).
WARM_UP_SECONDS = 3


def opted_out_number(n: int) -> str:
    """The n-th number with a record (spread over the 06 range)."""
    return f"+2126{n * 97 % 10**8:08d}"  # 97 is prime to 10⁸: distinct up to 100 million


def sender_of(n: int) -> str:
    """The scope of the n-th record: global for one in ten, else one of the senders."""
    return "" if n % 10 == 0 else SENDERS[(n // 10) % 20]


def campaign(numbers: int, entries: int) -> list[str]:
    """The list to scrub: 5 % numbers with a record, the rest never seen."""
    out = []
    for i in range(numbers):
        out.append(opted_out_number(i // 20 * 7 % entries) if i % 20 == 0 else f"+2127{i:08d}")
    return out


async def publish_entries(settings: Settings, topic: str, entries: int) -> None:
    """Publish ``entries`` suppression records, as the registry would have."""
    hasher = NumberHasher(settings.pseudonymiser().pseudonym_key.secret)
    key_id = settings.pseudonymiser().pseudonym_key.key_id
    publisher = KafkaPublisher(settings.kafka_bootstrap, timeout_seconds=120)
    await publisher.start()
    started = time.perf_counter()
    try:
        batch: list[tuple[bytes, bytes]] = []
        for n in range(entries):
            digests, _ = hasher.hash_chunk([opted_out_number(n)])
            subject = f"{key_id}:{digests.hex()}"
            sender = sender_of(n)
            change = events_pb2.SuppressionChanged(
                event_id=f"bench-{n}",
                request_id=f"bench-{n}",
                party_id="iam",
                action=events_pb2.ACTION_OPT_OUT,
                sender_id=sender,
                channel=events_pb2.CHANNEL_LINK,
                subject=subject,
                state=events_pb2.STATE_SUPPRESSED,
                version=1,
                changed=True,
            )
            change.action_time.FromMilliseconds(1_764_000_000_000 + n)
            batch.append((suppression_key(subject, sender).encode(), change.SerializeToString()))
            if len(batch) == 50_000:
                await publisher.publish_many(topic, batch)
                batch = []
                print(f"  published {n + 1:,} records", flush=True)
        if batch:
            await publisher.publish_many(topic, batch)
    finally:
        await publisher.stop()
    print(f"  {entries:,} records in {time.perf_counter() - started:.1f} s", flush=True)


def used_memory(client: redis.Redis) -> int:
    """Redis' used_memory after letting freed memory settle."""
    client.execute_command("MEMORY", "PURGE")
    return int(client.info("memory")["used_memory"])


def naive_keys(settings: Settings, namespace: str, entries: int) -> list[bytes]:
    """One key per entry, as short as it gets: ``<ns>n:`` + 16 digest bytes + scope."""
    hasher = NumberHasher(settings.pseudonymiser().pseudonym_key.secret)
    prefix = f"{namespace}n:".encode()
    keys = []
    for n in range(entries):
        digests, _ = hasher.hash_chunk([opted_out_number(n)])
        keys.append(prefix + digests + sender_of(n).encode())
    return keys


def raw_loop(settings: Settings, namespace: str, numbers: list[str], url: str) -> float:
    """Seconds for the plain loop: HMAC each number, MGET 1,000 keys per round trip."""
    secret = settings.pseudonymiser().pseudonym_key.secret
    client = redis.Redis.from_url(url)
    prefix = f"{namespace}n:".encode()
    suffix = CAMPAIGN_SENDER.encode()
    started = time.perf_counter()
    found = 0
    for start in range(0, len(numbers), 1000):
        keys = [
            prefix + hmac.digest(secret, n.encode(), "sha256")[:16] + suffix
            for n in numbers[start : start + 1000]
        ]
        found += sum(v is not None for v in client.mget(keys))
    seconds = time.perf_counter() - started
    client.close()
    print(f"  raw loop: {found:,} found, {seconds:.2f} s", flush=True)
    return seconds


async def wait_until_view_serving(channel: grpc.aio.Channel, timeout: float = 300) -> None:
    """Wait for stopsms.v1.RegistryService SERVING (the view caught up, the filter filled)."""
    health = health_pb2_grpc.HealthStub(channel)
    request = health_pb2.HealthCheckRequest(service="stopsms.v1.RegistryService")
    deadline = time.monotonic() + timeout
    while (await health.Check(request)).status != health_pb2.HealthCheckResponse.SERVING:
        if time.monotonic() > deadline:
            raise TimeoutError("the registry did not report its view ready")
        await asyncio.sleep(0.2)


async def check_latencies(
    stub, metadata, rate: float, seconds: float, numbers: list[str]
) -> list[float]:
    """Open loop at ``rate``: latency measured from each call's scheduled time.

    The collector is off while the calls run (and collects before): this client's own full
    passes took 11–29 ms in the middle of the window, and every call scheduled meanwhile was
    counted late — the harness's pause, not the registry's.
    """
    gc.collect()
    gc.disable()
    try:
        return await _open_loop(stub, metadata, rate, seconds, numbers)
    finally:
        gc.enable()


async def _open_loop(
    stub, metadata, rate: float, seconds: float, numbers: list[str]
) -> list[float]:
    latencies: list[float] = []

    async def one(i: int, scheduled: float) -> None:
        number = numbers[i % len(numbers)]
        await stub.Check(
            registry_pb2.CheckRequest(msisdn=number, sender_id=CAMPAIGN_SENDER), metadata=metadata
        )
        latencies.append(time.perf_counter() - scheduled)

    tasks = []
    started = time.perf_counter()
    for i in range(int(rate * seconds)):
        scheduled = started + i / rate
        await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
        tasks.append(asyncio.create_task(one(i, scheduled)))
    await asyncio.gather(*tasks)
    return latencies


class EchoStub:
    """The echo service behind the same ``Check(request, metadata=...)`` call as the registry."""

    def __init__(self, call) -> None:  # type: ignore[no-untyped-def]
        self._call = call

    async def Check(self, request, metadata=()):  # type: ignore[no-untyped-def]  # noqa: N802
        return await self._call(request)


async def interleaved_rates(
    check, echo, seconds: float, concurrency: int, rounds: int = 4
) -> tuple[float, float]:
    """Calls per second of ``check`` and ``echo``, in alternating windows of the same length.

    Measured one after the other, each rate saw a different moment of a shared, noisy
    machine; alternating short windows lets both see the same moments, so their ratio moves
    with the registry's cost and not with the neighbours'.
    """
    totals = {check: [0, 0.0], echo: [0, 0.0]}
    for _ in range(rounds):
        for call in (check, echo):
            done, elapsed = await completed_calls(call, seconds / rounds, concurrency)
            totals[call][0] += done
            totals[call][1] += elapsed
    return totals[check][0] / totals[check][1], totals[echo][0] / totals[echo][1]


async def completed_calls(call, seconds: float, concurrency: int) -> tuple[int, float]:
    """Calls completed by ``concurrency`` callers in about ``seconds``, and the time taken."""
    deadline = time.perf_counter() + seconds
    done = 0

    async def caller(k: int) -> None:
        nonlocal done
        i = k
        while time.perf_counter() < deadline:
            await call(i)
            done += 1
            i += concurrency

    started = time.perf_counter()
    await asyncio.gather(*(caller(k) for k in range(concurrency)))
    return done, time.perf_counter() - started


async def scrub_list(channel: grpc.aio.Channel, metadata, numbers: list[str]) -> tuple[float, int]:
    """Seconds to scrub ``numbers`` with one CheckBatch, and how many were suppressed."""
    suppressed = 0
    started = time.perf_counter()
    async for chunk in scrub(channel, chunked(numbers), CAMPAIGN_SENDER, metadata):
        suppressed += chunk.verdicts.count(registry_pb2.VERDICT_SUPPRESSED)
    return time.perf_counter() - started, suppressed


async def run(platform: LocalPlatform, args: argparse.Namespace) -> list[dict[str, object]]:
    """Every measurement, in order."""
    settings = Settings.from_env(platform.environment())
    topics = Topics(platform.namespace)
    url = platform.endpoints["redis"]
    client = redis.Redis.from_url(url)
    figures: list[dict[str, object]] = []

    print(f"publishing {args.entries:,} suppression records...", flush=True)
    await publish_entries(settings, topics.suppressions, args.entries)

    registry_settings = RegistrySettings.from_env(platform.environment())
    layout = ViewLayout(registry_settings.view_bucket_bits)
    print(f"rebuilding the view from the topic ({layout.buckets:,} buckets)...", flush=True)
    before = used_memory(client)
    view = RedisSuppressionView.from_url(url, platform.namespace, layout)
    rebuild_cpu = CpuSplit(platform, workers=True)
    progress = await rebuild_in_parallel(
        platform.endpoints["kafka"],
        topics.suppressions,
        view,
        url,
        platform.namespace,
        registry_settings.rebuild_workers,
    )
    rebuild_seconds = progress.seconds
    cpu_split = rebuild_cpu.split(progress.entries_read, rebuild_seconds)
    await view.close()
    rebuild_rate = progress.entries_read / rebuild_seconds
    assert progress.verified is not None
    entries = progress.verified.count
    compact = (used_memory(client) - before) / entries
    print(
        f"  {progress.verified} in {rebuild_seconds:.1f} s "
        f"(verification {progress.verify_seconds:.1f} s)",
        flush=True,
    )
    print(f"  CPU per record: {cpu_split}", flush=True)

    print("the same entries one key per entry...", flush=True)
    keys = naive_keys(settings, platform.namespace, args.entries)
    before = used_memory(client)
    with client.pipeline(transaction=False) as pipe:
        for i, key in enumerate(keys):
            pipe.set(key, ScopeEntry(1, 1, 1_764_000_000_000 + i).pack())
            if i % 10_000 == 9_999:
                pipe.execute()
        pipe.execute()
    naive = (used_memory(client) - before) / len(keys)
    figures += [
        figure("redis_bytes_per_entry", compact, "B", naive),
        figure("redis_bytes_per_entry_naive", naive, "B"),
        figure("rebuild_entries_per_s", rebuild_rate, "1/s"),
    ]

    numbers = campaign(args.numbers, args.entries)
    print(f"raw loop over {len(numbers):,} numbers...", flush=True)
    raw_seconds = raw_loop(settings, platform.namespace, numbers, url)
    with client.pipeline(transaction=False) as pipe:
        for start in range(0, len(keys), 10_000):
            pipe.unlink(*keys[start : start + 10_000])
        pipe.execute()

    print("starting the registry...", flush=True)
    platform.services = ("registry",)
    platform.start_service("registry")
    platform.wait_until_serving(300)
    channel, metadata = platform.channel("registry", PARTY)
    assert platform.tls_folder is not None
    echo, echo_address = start_echo(platform, "echo")
    try:
        async with channel:
            await wait_until_view_serving(channel)
            stub = registry_pb2_grpc.RegistryServiceStub(channel)
            await scrub_list(channel, metadata, numbers[:50_000])  # warm-up
            print(f"CheckBatch of {len(numbers):,} numbers...", flush=True)
            batch_seconds, suppressed = await scrub_list(channel, metadata, numbers)
            print(f"  {suppressed:,} suppressed, {batch_seconds:.2f} s", flush=True)
            figures += [
                figure("scrub_1m_seconds", batch_seconds, "s"),
                figure("checkbatch_numbers_per_s", len(numbers) / batch_seconds, "1/s"),
                figure("checkbatch_ratio_to_raw_loop", raw_seconds / batch_seconds, "ratio"),
                figure("raw_loop_numbers_per_s", len(numbers) / raw_seconds, "1/s"),
            ]

            print(f"Check at a steady 1,000/s for {args.seconds:.0f} s...", flush=True)
            # The lists above are long-lived: keep the collector's full passes off them, so
            # that the latencies measured are the registry's and not this client's pauses.
            gc.collect()
            gc.freeze()
            # The first calls find cold paths (connections to Redis opening, code not yet run):
            # a PSVA's steady traffic does not, so they are not measured.
            await check_latencies(stub, metadata, 1000, WARM_UP_SECONDS, numbers[-5000:])
            registry_pid = platform.processes["registry"].pid
            cpu_before = cpu_seconds(registry_pid)
            latencies = await check_latencies(stub, metadata, 1000, args.seconds, numbers)
            check_cpu = (cpu_seconds(registry_pid) - cpu_before) / len(latencies)

            async def check(i: int) -> None:
                number = numbers[i % len(numbers)]
                await stub.Check(
                    registry_pb2.CheckRequest(msisdn=number, sender_id=CAMPAIGN_SENDER),
                    metadata=metadata,
                )

            echo_channel = grpc.aio.secure_channel(
                echo_address, channel_credentials(platform.tls_folder, PARTY)
            )
            async with echo_channel:
                echo_call = echo_channel.unary_unary(
                    METHOD,
                    request_serializer=registry_pb2.CheckRequest.SerializeToString,
                    response_deserializer=registry_pb2.CheckRequest.FromString,
                )

                async def echo_once(i: int) -> None:
                    await echo_call(
                        registry_pb2.CheckRequest(msisdn=f"+2127{i:08d}", sender_id=CAMPAIGN_SENDER)
                    )

                # The harness's own tail and the echo's CPU per call: the same open loop at
                # 1,000/s against the echo.
                echo_stub = EchoStub(echo_call)
                await check_latencies(echo_stub, (), 1000, WARM_UP_SECONDS, numbers)
                cpu_before = cpu_seconds(echo.pid)
                echo_latencies = await check_latencies(echo_stub, (), 1000, args.seconds, numbers)
                echo_cpu = (cpu_seconds(echo.pid) - cpu_before) / len(echo_latencies)
                print(
                    f"Check and raw echo, {args.concurrency} callers each, alternating...",
                    flush=True,
                )
                check_rate, echo_rate = await interleaved_rates(
                    check, echo_once, args.seconds, args.concurrency
                )
            # The same load for every machine: 30 % of the echo's capacity in this run.
            share = 0.3 * echo_rate
            print(f"Check at 30 % of the echo's capacity ({share:,.0f}/s)...", flush=True)
            # Warmed up like every measured window: right after the saturated windows, this
            # window unwarmed once gave a p99 of 19 ms where other runs gave 4–8 ms.
            await check_latencies(stub, metadata, share, WARM_UP_SECONDS, numbers[-5000:])
            share_latencies = await check_latencies(stub, metadata, share, args.seconds, numbers)
            figures += [
                figure("check_p99_ms_at_30pct_echo", percentile(share_latencies, 99) * 1000, "ms"),
                figure("echo_p99_ms_at_1000", percentile(echo_latencies, 99) * 1000, "ms"),
                figure("check_p99_ms_at_1000", percentile(latencies, 99) * 1000, "ms"),
                figure("check_p50_ms_at_1000", percentile(latencies, 50) * 1000, "ms"),
                figure("check_cpu_ms_per_call", check_cpu * 1000, "ms", echo_cpu * 1000),
                figure("echo_cpu_ms_per_call", echo_cpu * 1000, "ms"),
                figure("check_per_s", check_rate, "1/s", echo_rate),
                figure("check_ratio_to_raw_grpc", check_rate / echo_rate, "ratio"),
                figure("raw_grpc_echo_per_s", echo_rate, "1/s"),
            ]
    finally:
        stop_process(echo)

    print(f"stopsms scrub on a CSV of {len(numbers):,} numbers...", flush=True)
    csv_path = platform.data_dir / "campaign.csv"
    with csv_path.open("w") as handle:
        handle.write("msisdn,first_name\n")
        for i, number in enumerate(numbers):
            handle.write(f"0{number[4:]},client {i}\n")
    env = {
        **os.environ,
        "STOPSMS_REGISTRY_GRPC_ADDRESS": platform.endpoints["registry_grpc"],
        "STOPSMS_TLS_DIR": str(platform.tls_folder),
        "STOPSMS_DATA_DIR": str(platform.data_dir),
    }
    started = time.perf_counter()
    subprocess.run(
        ["stopsms", "scrub", str(csv_path), "--sender", CAMPAIGN_SENDER, "--party", PARTY],
        env=env,
        check=True,
    )
    csv_seconds = time.perf_counter() - started
    figures.append(figure("scrub_csv_numbers_per_s", len(numbers) / csv_seconds, "1/s"))
    client.close()
    return figures


class CpuSplit:
    """Where a phase's CPU goes: Redis, the broker, this process and the services started.

    With ``workers``, also the pool's child processes, counted once reaped (the pool is shut
    down by the time a rebuild returns).
    """

    def __init__(self, platform: LocalPlatform, *, workers: bool = False) -> None:
        infra = platform.infra
        assert infra is not None and infra.redis.process and infra.kafka.process
        self._pids = {
            "Redis": infra.redis.process.pid,
            "broker": infra.kafka.process.pid,
            "this process": os.getpid(),
            **{name: process.pid for name, process in platform.processes.items()},
        }
        self._before = {name: cpu_seconds(pid) for name, pid in self._pids.items()}
        self._workers = workers
        self._workers_before = children_cpu()

    def split(self, units: int, seconds: float, unit: str = "record") -> str:
        """CPU µs per unit of each, and the cores kept busy on average over ``seconds``."""
        cpu = {name: cpu_seconds(pid) - self._before[name] for name, pid in self._pids.items()}
        if self._workers:
            cpu["workers"] = children_cpu() - self._workers_before
        return (
            ", ".join(f"{name} {s / units * 1e6:.2f} µs" for name, s in cpu.items())
            + f" a {unit}; {sum(cpu.values()) / seconds:.2f} cores busy on average"
        )


async def publish_entries_fast(settings: Settings, topic: str, entries: int) -> None:
    """:func:`publish_entries` for tens of millions: numbers hashed 50,000 at a time."""
    hasher = NumberHasher(settings.pseudonymiser().pseudonym_key.secret)
    key_id = settings.pseudonymiser().pseudonym_key.key_id
    publisher = KafkaPublisher(settings.kafka_bootstrap, timeout_seconds=300)
    await publisher.start()
    started = time.perf_counter()
    template = events_pb2.SuppressionChanged(
        party_id="iam",
        action=events_pb2.ACTION_OPT_OUT,
        channel=events_pb2.CHANNEL_LINK,
        state=events_pb2.STATE_SUPPRESSED,
        version=1,
        changed=True,
    )
    try:
        for start in range(0, entries, 50_000):
            numbers = range(start, min(start + 50_000, entries))
            digests, invalid = hasher.hash_chunk([opted_out_number(n) for n in numbers])
            assert not invalid
            size = len(digests) // len(numbers)
            batch = []
            for i, n in enumerate(numbers):
                subject = f"{key_id}:{digests[i * size : (i + 1) * size].hex()}"
                sender = sender_of(n)
                change = events_pb2.SuppressionChanged()
                change.CopyFrom(template)
                change.event_id = change.request_id = f"bench-{n}"
                change.sender_id, change.subject = sender, subject
                change.action_time.FromMilliseconds(1_764_000_000_000 + n)
                batch.append(
                    (suppression_key(subject, sender).encode(), change.SerializeToString())
                )
            await publisher.publish_many(topic, batch)
            if (start + 50_000) % 5_000_000 == 0:
                rate = (start + 50_000) / (time.perf_counter() - started)
                print(f"  published {start + 50_000:,} records, {rate:,.0f}/s", flush=True)
    finally:
        await publisher.stop()
    print(f"  {entries:,} records in {time.perf_counter() - started:.1f} s", flush=True)


#: Records the bare rebuild loop reads and writes: the baseline of a national rebuild.
BARE_REBUILD_SAMPLE = 1_000_000
#: Where it writes: buckets named as a view's in a namespace of their own, cleared as one.
BARE_NAMESPACE = "bare:"
BARE_BUCKETS = f"{BARE_NAMESPACE}view:b:".encode()


async def bare_rebuild_seconds_per_record(
    settings: Settings, topic: str, redis_url: str, sample: int
) -> float:
    """A bare loop doing a rebuild's work, one process: the baseline of ``rebuild_seconds``.

    It reads the first ``sample`` records with a plain consumer, parses each and writes its
    entry with a pipelined HSETNX into buckets of its own (no script, no versions, no
    census), then removes them. This machine's speed swings by half between days; the rebuild
    beside this loop's time, measured minutes apart, says what the code costs on that day.
    """
    consumer = AIOKafkaConsumer(
        topic,
        **KafkaAccess.of(settings.kafka_bootstrap).client_options(),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=10_000,
    )
    client = aioredis.Redis.from_url(redis_url)
    parse = events_pb2.SuppressionChanged.FromString
    await consumer.start()
    done = 0
    try:
        started = time.perf_counter()
        while done < sample:
            batches = await consumer.getmany(timeout_ms=1000)
            async with client.pipeline(transaction=False) as pipe:
                for records in batches.values():
                    for record in records[: sample - done]:
                        change = parse(record.value)
                        digest = bytes.fromhex(change.subject.partition(":")[2])
                        field = digest[3:13] + change.sender_id.encode()
                        pipe.hsetnx(BARE_BUCKETS + digest[:3], field, change.version)
                        done += 1
                await pipe.execute()
        seconds = time.perf_counter() - started
        await RedisSuppressionView(client, BARE_NAMESPACE).clear()  # the view's buckets' names
        return seconds / done
    finally:
        await consumer.stop()
        await client.aclose()


async def run_national(
    platform: LocalPlatform, args: argparse.Namespace
) -> list[dict[str, object]]:
    """The view at national size: its bytes per entry, its rebuild, Check at 1,000/s.

    The figures are named for fifty million entries (``_50m``) and recorded only from a run of
    that size; smaller runs print them.
    """
    settings = Settings.from_env(platform.environment())
    topics = Topics(platform.namespace)
    url = platform.endpoints["redis"]
    client = redis.Redis.from_url(url)
    print(f"publishing {args.entries:,} suppression records...", flush=True)
    await publish_entries_fast(settings, topics.suppressions, args.entries)
    registry_settings = RegistrySettings.from_env(platform.environment())
    layout = ViewLayout(registry_settings.view_bucket_bits)
    sample = min(BARE_REBUILD_SAMPLE, args.entries)
    print(f"the bare rebuild loop over {sample:,} records...", flush=True)
    bare_per_record = await bare_rebuild_seconds_per_record(
        settings, topics.suppressions, url, sample
    )
    print(
        f"  {bare_per_record * 1e6:.2f} µs a record: "
        f"{bare_per_record * args.entries:.1f} s for {args.entries:,}",
        flush=True,
    )
    print(f"rebuilding the view from the topic ({layout.buckets:,} buckets)...", flush=True)
    before = used_memory(client)
    view = RedisSuppressionView.from_url(url, platform.namespace, layout)
    rebuild_cpu = CpuSplit(platform, workers=True)
    progress = await rebuild_in_parallel(
        platform.endpoints["kafka"],
        topics.suppressions,
        view,
        url,
        platform.namespace,
        registry_settings.rebuild_workers,
    )
    rebuild_seconds = progress.seconds  # a live figure: taken before anything else runs
    cpu_split = rebuild_cpu.split(args.entries, rebuild_seconds)
    await view.close()
    assert progress.verified is not None
    per_entry = (used_memory(client) - before) / progress.verified.count
    print(
        f"  {progress.verified} in {rebuild_seconds:.1f} s "
        f"(verification {progress.verify_seconds:.1f} s)",
        flush=True,
    )
    print(f"  CPU per record: {cpu_split}", flush=True)
    print("starting the registry...", flush=True)
    platform.services = ("registry",)
    platform.start_service("registry")
    platform.wait_until_serving(900)
    channel, metadata = platform.channel("registry", PARTY)
    numbers = campaign(min(args.numbers, 200_000), args.entries)
    async with channel:
        await wait_until_view_serving(channel, timeout=1800)
        stub = registry_pb2_grpc.RegistryServiceStub(channel)
        gc.collect()
        gc.freeze()
        await check_latencies(stub, metadata, 1000, WARM_UP_SECONDS, numbers[-5000:])
        print(f"Check at a steady 1,000/s for {args.seconds:.0f} s...", flush=True)
        check_cpu, started = CpuSplit(platform), time.perf_counter()
        latencies = await check_latencies(stub, metadata, 1000, args.seconds, numbers)
        check_seconds = time.perf_counter() - started
        print(f"  CPU: {check_cpu.split(len(latencies), check_seconds, 'call')}", flush=True)
    print(f"the bare echo at a steady 1,000/s for {args.seconds:.0f} s...", flush=True)
    echo = await echo_latencies(platform, numbers, args.seconds)
    client.close()
    check_p99, echo_p99 = percentile(latencies, 99) * 1000, percentile(echo, 99) * 1000
    return [
        figure("redis_bytes_per_entry_50m", per_entry, "B"),
        figure("rebuild_seconds_50m", rebuild_seconds, "s", bare_per_record * args.entries),
        figure("rebuild_entries_per_s_50m", progress.entries_read / rebuild_seconds, "1/s"),
        figure("check_p99_ms_at_1000_50m", check_p99, "ms", echo_p99),
    ]


def start_echo(platform: LocalPlatform, name: str) -> tuple[subprocess.Popen[bytes], str]:
    """The bare gRPC echo with the platform's TLS on a port of its own: (process, address)."""
    assert platform.tls_folder is not None
    log = platform.data_dir / "logs" / f"{name}.log"
    echo = start_process(
        [sys.executable, "-m", "bench.echo_server", "127.0.0.1:0", str(platform.tls_folder)],
        log,
        dict(os.environ),
    )
    return echo, wait_for_address(log)


async def echo_latencies(
    platform: LocalPlatform, numbers: list[str], seconds: float
) -> list[float]:
    """The bare gRPC echo's latencies at a steady 1,000 calls/s: the harness's own tail.

    Same TLS, same open loop, same machine at the same moment as the Check it is set beside.
    """
    assert platform.tls_folder is not None
    echo, address = start_echo(platform, "echo-national")
    try:
        channel = grpc.aio.secure_channel(address, channel_credentials(platform.tls_folder, PARTY))
        async with channel:
            call = channel.unary_unary(
                METHOD,
                request_serializer=registry_pb2.CheckRequest.SerializeToString,
                response_deserializer=registry_pb2.CheckRequest.FromString,
            )
            stub = EchoStub(call)
            await check_latencies(stub, (), 1000, WARM_UP_SECONDS, numbers)
            return await check_latencies(stub, (), 1000, seconds, numbers)
    finally:
        stop_process(echo)


def main() -> int:
    """Entry point: ``python -m bench.registry``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--numbers", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument(
        "--national",
        action="store_true",
        help="the view at national size only (with --entries 50000000: the _50m figures)",
    )
    parser.add_argument(
        "--bucket-bits",
        type=int,
        default=None,
        help=f"the view's bucket bits (default: the registry's; {NATIONAL_BUCKET_BITS} national)",
    )
    args = parser.parse_args()
    bucket_bits = args.bucket_bits or (NATIONAL_BUCKET_BITS if args.national else None)
    with tempfile.TemporaryDirectory(prefix="stopsms-bench-") as tmp:
        print("starting Kafka and Redis...", flush=True)
        platform = LocalPlatform(
            Path(tmp),
            preferred_ports={name: 0 for name in DEFAULT_PORTS},
            services=(),
            parties_file=capacity_directory(Path(tmp) / "parties.yaml", (PARTY,)),
        )
        if bucket_bits is not None:
            platform.extra_env["STOPSMS_VIEW_BUCKET_BITS"] = str(bucket_bits)
        with platform:
            figures = asyncio.run((run_national if args.national else run)(platform, args))
    short = args.national and args.entries < 50_000_000
    record(figures, short_of="fewer than fifty million entries" if short else None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
