"""Client processes of the benchmarks and fault tests, separate from the services.

    python -m bench.load_clients psvas <notifier> <tls folder> <party id>... [--record DIR]
    python -m bench.load_clients operators <kafka> <namespace> <party id>...
    python -m bench.load_clients load <intake> <tls folder> --rate R --count N --senders FILE
        --ledger FILE [--numbers POOL]

PSVAs watch their changes (one stream each, all in this process) and acknowledge the latest
cursor every 100 ms on one ``AcknowledgeStream`` call, as a PSVA that applies changes in batches
would; with ``--record`` each
writes the event ids it received (``<party>.received``) and any change sent again after it was
acknowledged (``<party>.repeats``, which must stay empty). Operators consume the list with their
groups and commit after each poll. The load submits opt-outs at a steady rate (open loop),
retries an unanswered or UNAVAILABLE request with the same request id until it is answered, and
writes the ledger: one ``<request id> <event id>`` line per acknowledged request, flushed as it
goes, so a fault test can watch it grow and ``stopsms verify`` can check it.

The senders file has one ``<sender id> <weight>`` per line; ``*`` is the global scope.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
import uuid
from pathlib import Path
from typing import TextIO

import grpc
from aiokafka import AIOKafkaConsumer, TopicPartition

from stopsms.adapters.clients import party_channel
from stopsms.adapters.eventloop import install_event_loop
from stopsms.domain.topics import Topics
from stopsms.v1 import events_pb2, intake_pb2, intake_pb2_grpc, notifier_pb2, notifier_pb2_grpc

#: Answers after which the same request is sent again (the platform promised nothing yet).
RETRYABLE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.UNKNOWN,
}
#: How long one request is retried before the load gives up on it.
RETRY_FOR_S = 180.0
#: How long an operator's commit (or its consumer's stop) may take before it connects again.
COMMIT_BOUND_S = 10.0


class Recorder:
    """What one PSVA received, and any change sent again after it was acknowledged.

    A stream that opens resumes from the acknowledgements made *before* it opened: a change
    covered by one of those must not come again. (An acknowledgement still in flight when the
    stream opened may legitimately be overtaken by the changes it covers.)
    """

    def __init__(self, folder: Path, party_id: str) -> None:
        self.received_file = (folder / f"{party_id}.received").open("a")
        self.repeats_file = (folder / f"{party_id}.repeats").open("a")
        self.acknowledged: set[str] = set()
        self.unacknowledged: list[str] = []
        self.fence: set[str] = set()

    def stream_opened(self) -> None:
        """A new stream: what is acknowledged by now must not be sent on it."""
        self.fence = set(self.acknowledged)

    def received(self, event_id: str) -> None:
        """Record one change; a change acknowledged before the stream opened is a repeat."""
        if event_id in self.fence:
            self.repeats_file.write(event_id + "\n")
            self.repeats_file.flush()
        self.unacknowledged.append(event_id)
        self.received_file.write(event_id + "\n")
        self.received_file.flush()

    def acknowledged_first(self, count: int) -> None:
        """The first ``count`` unacknowledged changes are covered by an acknowledged cursor."""
        self.acknowledged.update(self.unacknowledged[:count])
        del self.unacknowledged[:count]


async def psva(
    address: str, tls: Path, party_id: str, record: Path | None = None, ack_seconds: float = 0.1
) -> None:
    """One PSVA: watch, acknowledge the latest cursor every ``ack_seconds``, resume on errors."""
    channel, metadata = party_channel(address, party_id, tls)
    stub = notifier_pb2_grpc.NotifierServiceStub(channel)
    recorder = Recorder(record, party_id) if record else None
    latest: list[str] = []
    received = 0  # changes received since the process started

    async def acknowledge() -> None:
        # One AcknowledgeStream call carries every acknowledgement (a third of the CPU of a
        # unary call each); a broken call is opened again. (Writing on a call the server ended
        # raises InvalidStateError, not AioRpcError.)
        sent, covered = "", 0
        while True:
            acks = stub.AcknowledgeStream(metadata=metadata)
            try:
                while not acks.done():
                    await asyncio.sleep(ack_seconds)
                    if latest and latest[-1] != sent:
                        cursor, count = latest[-1], received
                        await acks.write(notifier_pb2.AcknowledgeStreamRequest(cursor=cursor))
                        if await acks.read() == grpc.aio.EOF:
                            break
                        sent = cursor
                        if recorder:
                            recorder.acknowledged_first(count - covered)
                        covered = count
            except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
                pass
            finally:
                acks.cancel()
            await asyncio.sleep(0.5)

    acker = asyncio.create_task(acknowledge())
    try:
        while True:
            if recorder:
                recorder.stream_opened()
            try:
                # Without a cursor the stream resumes from the last acknowledgement.
                async for response in stub.WatchChanges(
                    notifier_pb2.WatchChangesRequest(), metadata=metadata
                ):
                    if response.HasField("change"):
                        received += 1
                        if recorder:
                            recorder.received(response.change.event_id)
                        latest.append(response.cursor)
                        del latest[:-1]
            except grpc.aio.AioRpcError:
                await asyncio.sleep(0.5)
    finally:
        acker.cancel()


async def operator(
    bootstrap: str, namespace: str, party_id: str, commit_seconds: float = 0.1
) -> None:
    """One operator: consume everything, commit what it applied, resume after broker loss.

    As docs/operators.md advises: the partitions that moved, at most every ``commit_seconds``
    (the platform reads operators' groups every 0.1 s; a commit of every partition after
    every poll costs the cluster a record per partition and gains nothing).
    """
    topics = Topics(namespace)
    while True:
        consumer = AIOKafkaConsumer(
            topics.suppressions,
            bootstrap_servers=bootstrap,
            group_id=topics.operator_group(party_id),
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        try:
            await consumer.start()
            applied: dict[TopicPartition, int] = {}
            committed_at = 0.0
            while True:
                batch = await consumer.getmany(timeout_ms=100)
                for tp, messages in batch.items():
                    applied[tp] = messages[-1].offset + 1
                if applied and time.monotonic() - committed_at >= commit_seconds:
                    # A commit in flight when the broker dies may wait on a coordinator that
                    # never answers it: bounded, and the operator connects again.
                    async with asyncio.timeout(COMMIT_BOUND_S):
                        await consumer.commit(dict(applied))
                    applied, committed_at = {}, time.monotonic()
        except Exception as exc:  # noqa: BLE001 - a broker restart: connect again
            print(f"{time.strftime('%H:%M:%S')} operator {party_id}: {exc!r}; reconnecting",
                  flush=True)  # fmt: skip
            await asyncio.sleep(1)
        finally:
            try:
                async with asyncio.timeout(COMMIT_BOUND_S):
                    await consumer.stop()
            except (TimeoutError, asyncio.CancelledError) as exc:
                # aiokafka's stop lets the CancelledError of its own fetch tasks out: only a
                # cancellation of this operator ends it.
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise
                print(f"operator {party_id}: the old consumer did not stop cleanly ({exc!r})",
                      flush=True)  # fmt: skip


def read_senders(path: Path) -> tuple[list[str], list[float]]:
    """Senders (empty for global) and their weights, from ``<sender> <weight>`` lines."""
    senders, weights = [], []
    for line in path.read_text().splitlines():
        if line.strip():
            name, _, weight = line.partition(" ")
            senders.append("" if name == "*" else name)
            weights.append(float(weight or 1))
    return senders, weights


async def load(
    address: str,
    tls: Path,
    *,
    rate: float,
    count: int,
    senders_file: Path,
    ledger: TextIO,
    numbers: int,
) -> None:
    """Submit ``count`` requests at ``rate``; write the ledger of acknowledged ones."""
    senders, weights = read_senders(senders_file)
    channel, metadata = party_channel(address, "iam", tls)
    stub = intake_pb2_grpc.IntakeServiceStub(channel)
    latencies: list[float] = []
    unavailable = 0
    gave_up = 0
    refused = 0

    async def one() -> None:
        nonlocal unavailable, gave_up, refused
        request = intake_pb2.SubmitOptOutRequest(
            request_id=str(uuid.uuid4()),
            msisdn=f"06{random.randrange(numbers):08d}",
            sender_id=random.choices(senders, weights)[0],
            channel=events_pb2.CHANNEL_API,
        )
        asked = time.perf_counter()
        while True:
            try:
                reply = await stub.SubmitOptOut(request, metadata=metadata, timeout=10)
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in RETRYABLE:
                    refused += 1
                    print(f"load: refused {exc.code().name}: {exc.details()}", flush=True)
                    return
                unavailable += 1
                if time.perf_counter() - asked > RETRY_FOR_S:
                    gave_up += 1
                    return
                await asyncio.sleep(0.5 + random.random())  # the same request id, again
                continue
            ledger.write(f"{request.request_id} {reply.event_id}\n")
            latencies.append(time.perf_counter() - asked)
            return

    async def flush_ledger() -> None:
        while True:
            await asyncio.sleep(0.2)
            ledger.flush()

    flusher = asyncio.create_task(flush_ledger())
    tasks = []
    started = time.perf_counter()
    for i in range(count):
        await asyncio.sleep(max(0.0, started + i / rate - time.perf_counter()))
        tasks.append(asyncio.create_task(one()))
    await asyncio.gather(*tasks)
    flusher.cancel()
    ledger.flush()
    elapsed = time.perf_counter() - started
    latencies.sort()
    p50, p99 = (latencies[int(len(latencies) * q)] if latencies else 0.0 for q in (0.5, 0.99))
    print(
        f"load: {len(latencies)} accepted, {unavailable} retried answers, {refused} refused, "
        f"{gave_up} given up in {elapsed:.1f} s; "
        f"intake answered in p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms",
        flush=True,
    )
    await channel.close()


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The command line of the three kinds of client."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="kind", required=True)
    psvas = sub.add_parser("psvas")
    psvas.add_argument("address")
    psvas.add_argument("tls", type=Path)
    psvas.add_argument("parties", nargs="+")
    psvas.add_argument("--record", type=Path)
    psvas.add_argument("--ack-seconds", type=float, default=0.1)
    operators = sub.add_parser("operators")
    operators.add_argument("bootstrap")
    operators.add_argument("namespace")
    operators.add_argument("parties", nargs="+")
    loader = sub.add_parser("load")
    loader.add_argument("address")
    loader.add_argument("tls", type=Path)
    loader.add_argument("--rate", type=float, required=True)
    loader.add_argument("--count", type=int, required=True)
    loader.add_argument("--senders", type=Path, required=True)
    loader.add_argument("--ledger", type=Path, required=True)
    loader.add_argument("--numbers", type=int, default=10**8, help="how many distinct numbers")
    return parser.parse_args(argv)


async def main(argv: list[str]) -> None:
    """Dispatch on the kind of client."""
    args = parse_args(argv)
    if args.kind == "psvas":
        await asyncio.gather(
            *(psva(args.address, args.tls, p, args.record, args.ack_seconds) for p in args.parties)
        )
    elif args.kind == "operators":
        await asyncio.gather(*(operator(args.bootstrap, args.namespace, p) for p in args.parties))
    else:
        with args.ledger.open("a") as ledger:
            await load(
                args.address,
                args.tls,
                rate=args.rate,
                count=args.count,
                senders_file=args.senders,
                ledger=ledger,
                numbers=args.numbers,
            )


if __name__ == "__main__":
    install_event_loop()  # the clients, like the services, on uvloop
    asyncio.run(main(sys.argv[1:]))
