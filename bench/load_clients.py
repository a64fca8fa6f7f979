"""Client processes of the load benchmark, separate from the services.

    python -m bench.load_clients psvas <notifier> <tls folder> <party id>...
    python -m bench.load_clients operators <kafka> <namespace> <party id>...
    python -m bench.load_clients load <intake> <tls folder> <rate> <seconds> <senders file> <out>

PSVAs watch their changes (one stream each, all in this process) and acknowledge the latest
cursor every 100 ms, as a PSVA that applies changes in batches would. Operators consume the
list with their groups and commit after each poll. The load submits opt-outs at a steady rate
(open loop) and writes every acknowledged event id, one per line.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
import uuid
from pathlib import Path

import grpc
from aiokafka import AIOKafkaConsumer

from stopsms.core.clients import party_channel
from stopsms.core.topics import Topics
from stopsms.v1 import events_pb2, intake_pb2, intake_pb2_grpc, notifier_pb2, notifier_pb2_grpc


async def psva(address: str, tls: Path, party_id: str) -> None:
    """One PSVA: watch, acknowledge the latest cursor every 100 ms, resume on errors."""
    channel, metadata = party_channel(address, party_id, tls)
    stub = notifier_pb2_grpc.NotifierServiceStub(channel)
    latest: list[str] = []

    async def acknowledge() -> None:
        sent = ""
        while True:
            await asyncio.sleep(0.1)
            if latest and latest[-1] != sent:
                sent = latest[-1]
                try:
                    await stub.Acknowledge(
                        notifier_pb2.AcknowledgeRequest(cursor=sent), metadata=metadata
                    )
                except grpc.aio.AioRpcError:
                    pass

    acker = asyncio.create_task(acknowledge())
    try:
        while True:
            try:
                async for response in stub.WatchChanges(
                    notifier_pb2.WatchChangesRequest(), metadata=metadata
                ):
                    if response.HasField("change"):
                        latest.append(response.cursor)
                        del latest[:-1]
            except grpc.aio.AioRpcError:
                await asyncio.sleep(0.5)
    finally:
        acker.cancel()


async def operator(bootstrap: str, namespace: str, party_id: str) -> None:
    """One operator: consume everything, commit after each poll."""
    topics = Topics(namespace)
    consumer = AIOKafkaConsumer(
        topics.suppressions,
        bootstrap_servers=bootstrap,
        group_id=topics.operator_group(party_id),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        fetch_max_wait_ms=50,
    )
    await consumer.start()
    try:
        while True:
            batch = await consumer.getmany(timeout_ms=100)
            if batch:
                await consumer.commit()
    finally:
        await consumer.stop()


async def load(
    address: str, tls: Path, rate: float, seconds: float, senders_file: Path, out: Path
) -> None:
    """Submit opt-outs at ``rate`` for ``seconds``; write the acknowledged event ids."""
    senders = senders_file.read_text().split()  # 90 % the first, 10 % global
    channel, metadata = party_channel(address, "iam", tls)
    stub = intake_pb2_grpc.IntakeServiceStub(channel)
    accepted: list[str] = []
    latencies: list[float] = []
    failed = 0

    async def one() -> None:
        nonlocal failed
        sender = senders[0] if random.random() < 0.9 else ""
        asked = time.perf_counter()
        try:
            reply = await stub.SubmitOptOut(
                intake_pb2.SubmitOptOutRequest(
                    request_id=str(uuid.uuid4()),
                    msisdn=f"06{random.randrange(10**8):08d}",
                    sender_id=sender,
                    channel=events_pb2.CHANNEL_API,
                ),
                metadata=metadata,
                timeout=30,
            )
            accepted.append(reply.event_id)
            latencies.append(time.perf_counter() - asked)
        except grpc.aio.AioRpcError:
            failed += 1

    tasks = []
    started = time.perf_counter()
    for i in range(int(rate * seconds)):
        await asyncio.sleep(max(0.0, started + i / rate - time.perf_counter()))
        tasks.append(asyncio.create_task(one()))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - started
    out.write_text("\n".join(accepted) + "\n")
    latencies.sort()
    p50, p99 = (latencies[int(len(latencies) * q)] if latencies else 0.0 for q in (0.5, 0.99))
    print(
        f"load: {len(accepted)} accepted, {failed} failed in {elapsed:.1f} s; "
        f"intake answered in p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms",
        flush=True,
    )
    await channel.close()


async def main(argv: list[str]) -> None:
    """Dispatch on the first argument."""
    kind, *rest = argv
    if kind == "psvas":
        address, tls, *parties = rest
        await asyncio.gather(*(psva(address, Path(tls), p) for p in parties))
    elif kind == "operators":
        bootstrap, namespace, *parties = rest
        await asyncio.gather(*(operator(bootstrap, namespace, p) for p in parties))
    elif kind == "load":
        address, tls, rate, seconds, senders, out = rest
        await load(address, Path(tls), float(rate), float(seconds), Path(senders), Path(out))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
