"""Audit overhead: Check throughput with and without auditing, in one run.

Two registry gRPC servers in this process (mutual TLS, as in production) answer from the same
real Redis view; one audits
every check to Kafka (batched, as in production), the other audits nothing. The same client
load (concurrent Check calls) runs against each in turn, twice, and the ratio of their
throughputs is ``audit_overhead_ratio`` (goal: at least 0.9).

    python -m bench.audit [--seconds 5] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import redis.asyncio as aioredis

from bench.results import capacity_directory, figure, record
from stopsms.adapters.clients import party_channel
from stopsms.adapters.identity import AuditTrail, Authenticator
from stopsms.adapters.kafka import KafkaPublisher
from stopsms.adapters.serving import GrpcEndpoint, servicer_registration
from stopsms.adapters.tls import server_credentials
from stopsms.adapters.view import RedisSuppressionView
from stopsms.domain.privacy import Key, Pseudonymiser
from stopsms.domain.topics import Topics
from stopsms.domain.viewcodec import ScopeEntry, ViewUpdate
from stopsms.registry.hashing import HashPool
from stopsms.registry.lookup import BatchChecker
from stopsms.registry.server import SERVICE_NAME, RegistryServicer
from stopsms.tools.certificates import create_tls_folder
from stopsms.tools.launcher import LocalInfrastructure
from stopsms.tools.senders import local_directory
from stopsms.v1 import registry_pb2, registry_pb2_grpc

NUMBERS = [f"06{i:08d}" for i in range(1000)]


async def load(address: str, tls: Path, seconds: float, concurrency: int) -> float:
    """Checks per second that ``concurrency`` callers get from the server at ``address``."""
    channel, metadata = party_channel(address, "iam", tls)
    async with channel:
        stub = registry_pb2_grpc.RegistryServiceStub(channel)
        deadline = time.perf_counter() + seconds
        done = 0

        async def caller(offset: int) -> None:
            nonlocal done
            i = offset
            while time.perf_counter() < deadline:
                await stub.Check(
                    registry_pb2.CheckRequest(msisdn=NUMBERS[i % len(NUMBERS)], sender_id="JUMIA"),
                    metadata=metadata,
                )
                done += 1
                i += concurrency

        started = time.perf_counter()
        await asyncio.gather(*(caller(k) for k in range(concurrency)))
        return done / (time.perf_counter() - started)


async def run(
    infra: LocalInfrastructure, tls: Path, seconds: float, concurrency: int
) -> list[dict[str, object]]:
    """Measure both servers, alternating, and return the figures."""
    topics = Topics("bench.")
    pseudonymiser = Pseudonymiser(Key("pk1", bytes(32)), [Key("dk1", bytes(range(32)))])
    view = RedisSuppressionView(aioredis.from_url(infra.redis.url), "bench.")
    await view.write_meta()  # a view is built before it is applied to, as the registry does
    await view.apply(
        [
            ViewUpdate(pseudonymiser.subject("+212" + n[1:]), "JUMIA", ScopeEntry(1, 1, 1))
            for n in NUMBERS[::2]
        ],
        {0: 1},
    )
    directory = local_directory(capacity_directory(tls.parent / "parties.yaml", ("iam",)))
    publisher = KafkaPublisher(infra.kafka.bootstrap)
    await publisher.start()
    audited = AuditTrail(publisher, topics.audit)
    endpoints = {}
    for name, trail in (("audited", audited), ("plain", AuditTrail(None, topics.audit))):
        servicer = RegistryServicer(
            lookups=BatchChecker(
                view, HashPool(pseudonymiser.pseudonym_key, 0), pseudonymiser.pseudonym_key.key_id
            ),
            auth=Authenticator(directory, insecure=False, audit=trail),
        )
        endpoint = GrpcEndpoint(
            "127.0.0.1:0",
            [
                servicer_registration(
                    servicer, registry_pb2.DESCRIPTOR.services_by_name["RegistryService"]
                )
            ],
            [SERVICE_NAME],
            credentials=server_credentials(tls),
        )
        await endpoint.start()
        endpoints[name] = endpoint
    rates: dict[str, list[float]] = {"audited": [], "plain": []}
    await load(f"127.0.0.1:{endpoints['plain'].port}", tls, 1.0, concurrency)  # warm-up
    for _ in range(2):
        for name in ("plain", "audited"):
            rate = await load(f"127.0.0.1:{endpoints[name].port}", tls, seconds, concurrency)
            rates[name].append(rate)
            print(f"{name:<8} {rate:8.0f} checks/s", flush=True)
    await audited.flush()
    for endpoint in endpoints.values():
        await endpoint.stop(0)
    await publisher.stop()
    await view.close()
    plain, with_audit = statistics.median(rates["plain"]), statistics.median(rates["audited"])
    return [
        figure("check_throughput_audited_per_s", with_audit, "1/s", plain),
        figure("check_throughput_plain_per_s", plain, "1/s"),
        figure("audit_overhead_ratio", with_audit / plain, "ratio"),
    ]


def main() -> int:
    """Entry point: ``python -m bench.audit``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each measurement")
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent callers")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="stopsms-bench-") as tmp:
        tls = Path(tmp) / "tls"
        create_tls_folder(tls, ["iam"])
        with LocalInfrastructure(Path(tmp), topics=Topics("bench.")) as infra:
            figures = asyncio.run(run(infra, tls, args.seconds, args.concurrency))
    record(figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
