"""Intake benchmark: opt-outs accepted per second, latency at a steady rate, links per second.

Intake runs as its own process with mutual TLS on a real broker. In the same run, a raw
aiokafka producer with the same settings (acks=all, idempotent) sends the same events with
the same number of sends in flight, each awaited: the ratio says what intake's validation,
pseudonymisation, sealing, gRPC and TLS cost over Kafka itself.

    python -m bench.intake [--seconds 5] [--in-flight 64] [--rate 500]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
import uuid
from pathlib import Path

from aiokafka import AIOKafkaProducer

from bench.results import capacity_directory, figure, percentile, record
from stopsms.adapters.settings import Settings
from stopsms.domain.topics import Topics, partition_for_key
from stopsms.intake.submission import InMemoryRequestReferences, RequestSubmitter
from stopsms.tools.local_platform import DEFAULT_PORTS, LocalPlatform
from stopsms.v1 import events_pb2, intake_pb2, intake_pb2_grpc


def _request() -> intake_pb2.SubmitOptOutRequest:
    return intake_pb2.SubmitOptOutRequest(
        request_id=str(uuid.uuid4()),
        msisdn=f"06{random.randrange(10**8):08d}",
        sender_id=random.choice(["JUMIA", "MARJANE", "KITEA", ""]),
        channel=events_pb2.CHANNEL_API,
    )


async def accepted_per_second(stub, metadata, seconds: float, in_flight: int) -> float:
    """SubmitOptOut calls completed per second with ``in_flight`` callers."""
    deadline = time.perf_counter() + seconds
    done = 0

    async def caller() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            await stub.SubmitOptOut(_request(), metadata=metadata)
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(in_flight)))
    return done / (time.perf_counter() - started)


async def raw_per_second(
    bootstrap: str, topic: str, sample: bytes, seconds: float, in_flight: int
) -> float:
    """Records per second of a bare producer (acks=all, idempotent), each send awaited."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=1
    )
    await producer.start()
    deadline = time.perf_counter() + seconds
    done = 0

    async def sender() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            key = f"pk1:{random.getrandbits(128):032x}".encode()
            await producer.send_and_wait(
                topic, sample, key=key, partition=partition_for_key(key, 12)
            )
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(sender() for _ in range(in_flight)))
    rate = done / (time.perf_counter() - started)
    await producer.stop()
    return rate


async def latencies_at(stub, metadata, rate: float, seconds: float) -> list[float]:
    """Accept latencies of an open-loop load at ``rate`` requests per second."""
    latencies: list[float] = []

    async def one() -> None:
        started = time.perf_counter()
        await stub.SubmitOptOut(_request(), metadata=metadata)
        latencies.append(time.perf_counter() - started)

    tasks = []
    started = time.perf_counter()
    for i in range(int(rate * seconds)):
        await asyncio.sleep(max(0.0, started + i / rate - time.perf_counter()))
        tasks.append(asyncio.create_task(one()))
    await asyncio.gather(*tasks)
    return latencies


async def links_per_second(stub, metadata, batches: int = 3, size: int = 10_000) -> float:
    """Links issued per second in campaign batches."""
    request = intake_pb2.IssueStopLinksRequest(
        requests=[
            intake_pb2.IssueStopLinkRequest(msisdn=f"07{i:08d}", sender_id="JUMIA")
            for i in range(size)
        ]
    )
    started = time.perf_counter()
    for _ in range(batches):
        reply = await stub.IssueStopLinks(request, metadata=metadata, timeout=120)
        assert len(reply.links) == size
    return batches * size / (time.perf_counter() - started)


async def run(
    platform: LocalPlatform, seconds: float, in_flight: int, rate: float
) -> list[dict[str, object]]:
    """Measure intake and the raw producer in one run."""
    settings = Settings.from_env({"STOPSMS_DATA_DIR": str(platform.data_dir)})
    topics = Topics(platform.namespace)
    sample_subject = RequestSubmitter(
        None, settings.pseudonymiser(), None, topics, 12, InMemoryRequestReferences()
    ).protect("+212612345678")  # type: ignore[arg-type]
    sample = events_pb2.PreferenceRequested(
        event_id=str(uuid.uuid4()),
        request_id=str(uuid.uuid4()),
        party_id="iam",
        action=events_pb2.ACTION_OPT_OUT,
        sender_id="JUMIA",
        channel=events_pb2.CHANNEL_API,
        subject=sample_subject.subject,
        sealed_msisdn=sample_subject.sealed,
    )
    sample.action_time.GetCurrentTime()
    sample.accepted_time.GetCurrentTime()
    channel, iam = platform.channel("intake", "iam")
    _, atlas = platform.channel("intake", "atlas-sms")
    async with channel:
        stub = intake_pb2_grpc.IntakeServiceStub(channel)
        await accepted_per_second(stub, iam, 1.0, in_flight)  # warm-up
        print("intake: accepted per second...", flush=True)
        intake_rate = await accepted_per_second(stub, iam, seconds, in_flight)
        print("raw producer...", flush=True)
        raw_rate = await raw_per_second(
            platform.endpoints["kafka"], topics.dlq, sample.SerializeToString(), seconds, in_flight
        )
        print(f"steady {rate:.0f}/s...", flush=True)
        latencies = await latencies_at(stub, iam, rate, seconds)
    links_channel, atlas = platform.channel("intake", "atlas-sms")
    async with links_channel:
        print("links...", flush=True)
        links = await links_per_second(intake_pb2_grpc.IntakeServiceStub(links_channel), atlas)
    return [
        figure("intake_accept_per_s", intake_rate, "1/s", raw_rate),
        figure("raw_producer_per_s", raw_rate, "1/s"),
        figure("intake_ratio_to_raw_producer", intake_rate / raw_rate, "ratio"),
        figure("intake_p99_ms_at_500", percentile(latencies, 99) * 1000, "ms"),
        # Not ``links_per_s``: that name is the national figure of bench/links_scale.py (ten
        # million links over two replicas), which this burst through one replica overwrote.
        figure("intake_links_per_s", links, "1/s"),
    ]


def main() -> int:
    """Entry point: ``python -m bench.intake``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--in-flight", type=int, default=64)
    parser.add_argument("--rate", type=float, default=500.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="stopsms-bench-") as tmp:
        print("starting Kafka, Redis and intake...", flush=True)
        platform = LocalPlatform(
            Path(tmp),
            preferred_ports={name: 0 for name in DEFAULT_PORTS},
            services=("intake",),
            parties_file=capacity_directory(Path(tmp) / "parties.yaml", ("iam",)),
            extra_env={"STOPSMS_NUMBER_REQUESTS_PER_MINUTE": "1000000"},
        )
        with platform:
            figures = asyncio.run(run(platform, args.seconds, args.in_flight, args.rate))
    record(figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
