"""Stream layer: the registry's decide-and-publish work, by faust and by a plain aiokafka loop.

The same requests (N ``PreferenceRequested`` on a 12-partition topic, one real broker) are
decided with :func:`stopsms.domain.rules.decide` — state per subject, one
``SuppressionChanged`` published per request, the state remembered in a changelog — by:

a. a faust agent tuned with faust's documented settings (``take_events`` batches,
   ``broker_max_poll_records``, ``stream_buffer_maxsize``, ``producer_linger_ms``), a
   changelog-backed table, acks=all;
b. a plain aiokafka consumer-group loop: ``getmany`` → decide → one Kafka transaction per batch
   with the records, the changelog entries and the input offsets
   (``send_offsets_to_transaction``), exactly once.

Each runs in a process of its own, from the start of the topic with a fresh group, until every
output is on the topic. Figures: records per second (wall) and CPU milliseconds per record of
that process (``/proc/<pid>/stat``), and the ratio (a) / (b).

    python -m bench.stream_layer [--requests 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from kafka import KafkaConsumer
from kafka import TopicPartition as KafkaTopicPartition

from bench.propagation_sweep import cpu_seconds
from bench.results import SMOKE, figure, record
from stopsms.domain.rules import SubjectDecisions, decide
from stopsms.domain.topics import partition_for_key, suppression_key
from stopsms.tools.launcher import LocalInfrastructure, start_process, stop_process
from stopsms.v1 import events_pb2

PARTITIONS = 12
BATCH = 1000


def request_records(count: int) -> list[tuple[bytes, bytes]]:
    """Opt-outs of ``count // 2`` subjects, each asked for two senders (state matters)."""
    out = []
    for i in range(count):
        subject = f"subject-{i // 2:08d}"
        request = events_pb2.PreferenceRequested(
            event_id=str(uuid.uuid4()),
            request_id=f"r{i}",
            party_id="iam",
            subject=subject,
            sender_id=("JUMIA", "KITEA")[i % 2],
            action=events_pb2.ACTION_OPT_OUT,
        )
        request.action_time.GetCurrentTime()
        out.append((subject.encode(), request.SerializeToString()))
    return out


def decide_one(
    states: dict[bytes, SubjectDecisions], key: bytes, value: bytes, timestamp_ms: int
) -> tuple[bytes, bytes, int, bytes] | None:
    """The registry's work for one request: (output key, output value, partition, new state)."""
    request = events_pb2.PreferenceRequested.FromString(value)
    state = states.get(key) or SubjectDecisions.from_json(None)
    change, new_state = decide(state, request, timestamp_ms)
    if change is None:
        return None
    states[key] = new_state
    out_key = suppression_key(change.subject, change.sender_id).encode()
    return (
        out_key,
        change.SerializeToString(),
        partition_for_key(out_key, PARTITIONS),
        new_state.to_json().encode(),
    )


def run_faust(bootstrap: str, source: str, sink: str, group: str) -> None:
    """(a) The faust agent, as the registry is written, with faust's throughput settings."""
    import faust

    app = faust.App(
        group,
        broker=f"kafka://{bootstrap}",
        store="memory://",
        web_enabled=False,
        topic_partitions=PARTITIONS,
        consumer_auto_offset_reset="earliest",
        key_serializer="raw",
        value_serializer="raw",
        producer_acks=-1,
        producer_linger_ms=5,
        broker_max_poll_records=BATCH,
        stream_buffer_maxsize=4 * BATCH,
        stream_wait_empty=False,
        datadir=tempfile.mkdtemp(prefix="stopsms-faust-"),
    )
    topic = app.topic(source, partitions=PARTITIONS)
    out = app.topic(sink, partitions=PARTITIONS)
    table = app.Table("decisions", default=None, partitions=PARTITIONS)

    @app.agent(topic)
    async def decide_requests(stream: Any) -> None:
        # One event at a time, faust's own way: a table may be written only while its event
        # is current (batches from take_events cannot name one without faust's private API).
        async for event in stream.events():
            m = event.message
            states: dict[bytes, SubjectDecisions] = {}
            if table.get(m.key) is not None:
                states[m.key] = SubjectDecisions.from_json(table[m.key])
            decided = decide_one(states, m.key, event.value, int(m.timestamp * 1000))
            if decided:
                out_key, value, partition, state = decided
                await out.send(key=out_key, value=value, partition=partition)
                table[m.key] = state

    sys.argv = [sys.argv[0], "worker", "-l", "warn"]
    app.main()


async def run_aiokafka(bootstrap: str, source: str, sink: str, group: str) -> None:
    """(b) A plain consumer-group loop, one transaction per batch (records, state, offsets)."""
    consumer = AIOKafkaConsumer(
        source,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        max_poll_records=BATCH,
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, transactional_id=f"{group}-0", linger_ms=5
    )
    await consumer.start()
    await producer.start()
    states: dict[bytes, SubjectDecisions] = {}
    changelog = f"{group}-decisions-changelog"
    try:
        while True:
            batches = await consumer.getmany(timeout_ms=500)
            if not batches:
                continue
            async with producer.transaction():
                offsets = {}
                for tp, messages in batches.items():
                    for m in messages:
                        decided = decide_one(states, m.key, m.value, m.timestamp)
                        if decided:
                            out_key, value, partition, state = decided
                            await producer.send(sink, key=out_key, value=value, partition=partition)
                            await producer.send(
                                changelog, key=m.key, value=state, partition=tp.partition
                            )
                    offsets[tp] = messages[-1].offset + 1
                await producer.send_offsets_to_transaction(offsets, group)
    finally:
        await producer.stop()
        await consumer.stop()


def end_total(bootstrap: str, topic: str) -> int:
    """Records on a topic (the sum of its partitions' end offsets)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    try:
        tps = [KafkaTopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        return sum(consumer.end_offsets(tps).values())
    finally:
        consumer.close()


async def prepare(bootstrap: str, count: int) -> str:
    """The input topic, filled with the requests; the output and changelog topics."""
    source = f"bench.stream.requests.{uuid.uuid4().hex[:6]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(source, PARTITIONS, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=10)
    await producer.start()
    try:
        for key, value in request_records(count):
            await producer.send(
                source, key=key, value=value, partition=partition_for_key(key, PARTITIONS)
            )
        await producer.flush()
    finally:
        await producer.stop()
    return source


async def create(bootstrap: str, names: list[str]) -> None:
    """Topics for one contender's output and state."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(n, PARTITIONS, 1) for n in names])
    finally:
        await admin.close()


def measure(kind: str, bootstrap: str, source: str, count: int, logs: Path) -> tuple[float, float]:
    """Run one contender until ``count`` outputs are on its topic: (records/s, CPU ms/record)."""
    group = f"bench-stream-{kind}-{uuid.uuid4().hex[:6]}"
    sink = f"{group}.out"
    topics = [sink] if kind == "faust" else [sink, f"{group}-decisions-changelog"]
    asyncio.run(create(bootstrap, topics))
    process = start_process(
        [sys.executable, "-m", "bench.stream_layer", "--run", kind, bootstrap, source, sink, group],
        logs / f"{kind}.log",
    )
    try:
        started = None
        before = 0.0
        deadline = time.monotonic() + 600
        while True:
            done = end_total(bootstrap, sink)
            if started is None and done > 0:  # from the first output: startup is not the work
                started, before, first = time.monotonic(), cpu_seconds(process.pid), done
            if done >= count:
                break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{kind} stopped after {done} of {count} records")
            time.sleep(0.05)
        elapsed = time.monotonic() - (started or time.monotonic())
        spent = cpu_seconds(process.pid) - before
    finally:
        stop_process(process)
        print((logs / f"{kind}.log").read_text()[-3000:]) if process.returncode else None
    work = count - first
    return work / max(elapsed, 1e-9), spent * 1000 / max(work, 1)


def main() -> int:
    """Entry point: ``python -m bench.stream_layer``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000 if SMOKE else 40_000)
    parser.add_argument("--run", nargs=5, metavar=("KIND", "BOOTSTRAP", "SOURCE", "SINK", "GROUP"))
    args = parser.parse_args()
    if args.run:
        kind, bootstrap, source, sink, group = args.run
        if kind == "faust":
            run_faust(bootstrap, source, sink, group)
        else:
            asyncio.run(run_aiokafka(bootstrap, source, sink, group))
        return 0
    with tempfile.TemporaryDirectory(prefix="stopsms-stream-") as tmp:
        work = Path(tmp)
        with LocalInfrastructure(work / "infra") as infra:
            bootstrap = infra.kafka.bootstrap
            source = asyncio.run(prepare(bootstrap, args.requests))
            results = {}
            for kind in ("aiokafka", "faust"):
                rate, cpu = measure(kind, bootstrap, source, args.requests, work)
                results[kind] = (rate, cpu)
                print(f"{kind:<9} {rate:9.0f} records/s  {cpu:7.3f} ms CPU per record", flush=True)
    (fa_rate, fa_cpu), (ai_rate, ai_cpu) = results["faust"], results["aiokafka"]
    record(
        [
            figure("stream_faust_records_per_s", fa_rate, "1/s", ai_rate),
            figure("stream_aiokafka_records_per_s", ai_rate, "1/s"),
            figure("stream_faust_cpu_ms_per_record", fa_cpu, "ms", ai_cpu),
            figure("stream_aiokafka_cpu_ms_per_record", ai_cpu, "ms"),
        ]
    )
    verdict = "stays" if fa_rate >= 0.5 * ai_rate else "gives way to the aiokafka loop"
    if SMOKE:  # a few thousand records say nothing about either layer's speed
        verdict = "(a smoke run decides nothing)"
    print(f"faust reaches {fa_rate / ai_rate:.2f} of the plain loop: faust {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
