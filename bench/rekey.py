"""Pseudonym re-keying's cost in the decision stage: CPU per subject moved, beside the bare work.

A decision stage's state holds N subjects decided under the pseudonym key ``pk1`` (each with a
global opt-out); the list holds their records. The registry then holds ``pk2`` with ``pk1`` as
the previous key, and the whole re-keying is timed in CPU seconds of this process:

1. the move: one pass of the :class:`~stopsms.registry.rekeying.Rekeyer` (reading the list from
   an in-process bus, checking each record against the state, unsealing the number, deriving
   its new subject, publishing the migration, marking the state);
2. the new subjects taking their migrations (:class:`~stopsms.registry.app.Decisions`: the
   state of each new subject, its records published again with ``previous_subject``);
3. the end, after the grace period: a pass tombstoning each old subject and forgetting its
   state.

Beside it, a bare loop does the unavoidable work of the same subjects: parse the record, unseal
the number, compute its new subject, serialise the record under it. Reading the list from
Kafka is the same read as a view rebuild's (``rebuild_seconds_50m`` in bench/results.json).

* ``rekey_cpu_us_per_subject``: the three steps' CPU per subject (baseline: the bare loop);
* ``rekey_seconds_per_million``: the same for a million subjects on one core.

Then the same re-keying on the real broker and Redis (``--broker-subjects``, 0 to skip): a
registry process decides that many opt-outs under ``pk1`` (with done proofs standing in for the
notifier) and the ledger check passes; it restarts with ``pk2`` and ``pk1`` as the previous key,
its pass every second and a short grace; the list is counted as ``stopsms keys
rotate-pseudonyms`` counts it until every decision in force is under ``pk2`` with its
``previous_subject`` (the move), then until the old subjects are tombstoned (the end); the
ledger check passes again, none lost or doubled.

* ``rekey_broker_seconds_per_million``: the move's wall time per million subjects, beside the
  same registry's time to decide them in the first place (the baseline: the same records read,
  decided and published once);
* ``rekey_broker_registry_cpu_us_per_subject``: the registry process's CPU through the move
  and the end, per subject.

    python -m bench.rekey [--subjects 200000] [--broker-subjects 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from aiokafka import AIOKafkaProducer

from bench.propagation_sweep import cpu_seconds
from bench.reseal import PARTITIONS, TOPICS, filled
from bench.results import figure, record
from stopsms.adapters.bus import InMemoryBus, KafkaBus
from stopsms.adapters.kafka import Record
from stopsms.adapters.settings import Settings
from stopsms.adapters.streams import StateStore
from stopsms.adapters.view import RedisSuppressionView
from stopsms.domain.privacy import Key, Pseudonymiser
from stopsms.domain.topics import Topics, partition_for_key
from stopsms.domain.viewcodec import ViewLayout
from stopsms.registry.app import Decisions
from stopsms.registry.rekeying import Rekeyer, SubjectRouter
from stopsms.tools.local_platform import DEFAULT_PORTS, LocalPlatform
from stopsms.tools.reseal import SealCount, count_seals
from stopsms.tools.verify import verify
from stopsms.v1 import events_pb2

PK1, PK2, DK1 = Key("pk1", b"p" * 32), Key("pk2", b"q" * 32), Key("dk1", b"1" * 32)
ROTATING = Pseudonymiser(PK2, [DK1], previous_pseudonym_key=PK1)


async def one_pass(
    rekeyer: Rekeyer, decisions: Decisions, bus: InMemoryBus, clock: list[float]
) -> tuple[int, int, int]:
    """One whole pass, its migrations taken: (migrations, records moved, tombstones)."""
    clock[0] += 3600
    migrations = moved = tombstones = 0
    while True:
        batch = rekeyer.round()
        if batch is not None:
            requests = []
            for out in batch.outputs:
                if out.topic == TOPICS.requests:
                    requests.append(Record(out.topic, out.partition or 0, 0, out.key, out.value, 0))
                elif out.topic == TOPICS.suppressions:
                    tombstones += 1
            migrations += len(requests)
            for out in (await decisions.process(requests)).outputs if requests else []:
                if out.topic == TOPICS.suppressions and out.value is not None:
                    bus.append(out.topic, out.key, out.value, partition=out.partition)
                    moved += 1
        if not rekeyer.running:
            return migrations, moved, tombstones
        await asyncio.sleep(0)


def bare(values: list[bytes]) -> float:
    """CPU seconds of the unavoidable work alone, for the same records."""
    started = time.process_time()
    for value in values:
        change = events_pb2.SuppressionChanged.FromString(value)
        number = ROTATING.unseal(change.sealed_msisdn)
        change.previous_subject = change.subject
        change.subject = ROTATING.subject(number)
        change.SerializeToString()
    return time.process_time() - started


async def in_process(subjects: int) -> None:
    """The re-keying's CPU in this process, on an in-process bus (the module docstring)."""
    store, bus, values = await filled(subjects)
    state: StateStore = store
    clock = [0.0, 1_800_000_000.0]
    rekeyer = Rekeyer(
        bus, TOPICS, state, ROTATING, PARTITIONS, pass_every_s=3600, grace_s=60,
        clock=lambda: clock[1], monotonic=lambda: clock[0],
    )  # fmt: skip
    decisions = Decisions(TOPICS, PARTITIONS, state, SubjectRouter(ROTATING, TOPICS, PARTITIONS))
    started = time.process_time()
    migrations, moved, _ = await one_pass(rekeyer, decisions, bus, clock)
    move_cpu = time.process_time() - started
    assert migrations == moved == subjects, f"{migrations} moved of {subjects}"
    clock[1] += 60  # the grace period over
    started = time.process_time()
    again, _, tombstones = await one_pass(rekeyer, decisions, bus, clock)
    end_cpu = time.process_time() - started
    assert again == 0 and tombstones == subjects, f"{again} moved again, {tombstones} ended"
    baseline = bare(values)
    per = (move_cpu + end_cpu) / subjects * 1e6
    print(
        f"{subjects:,} subjects re-keyed: move {move_cpu:.2f} s, end {end_cpu:.2f} s of CPU "
        f"(bare {baseline:.2f} s)"
    )
    record(
        [
            figure("rekey_cpu_us_per_subject", per, "us", baseline / len(values) * 1e6),
            figure("rekey_seconds_per_million", per, "s"),
        ],
        short_of=None if subjects >= 100_000 else "fewer than 100,000 subjects",
    )


def opt_outs(settings: Settings, count: int) -> list[events_pb2.PreferenceRequested]:
    """``count`` global opt-outs of distinct numbers, as intake publishes them under ``pk1``."""
    keys = settings.pseudonymiser()
    requests = []
    for i in range(count):
        number = f"+2126{i:08d}"
        r = events_pb2.PreferenceRequested(
            event_id=f"rekey-bench-{i}", request_id=f"r{i}", party_id="iam",
            subject=keys.subject(number), action=events_pb2.ACTION_OPT_OUT,
            channel=events_pb2.CHANNEL_API, sealed_msisdn=keys.seal(number),
        )  # fmt: skip
        r.action_time.GetCurrentTime()
        r.accepted_time.GetCurrentTime()
        requests.append(r)
    return requests


async def publish(
    settings: Settings, topics: Topics, requests: list[events_pb2.PreferenceRequested]
) -> None:
    """The requests, then a done proof of each (the notifier does not run here)."""
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, acks="all", enable_idempotence=True,
        linger_ms=5, max_batch_size=256 * 1024,
    )  # fmt: skip
    await producer.start()
    try:
        for start in range(0, len(requests), 5000):
            sent = []
            for r in requests[start : start + 5000]:
                key = r.subject.encode()
                sent.append(await producer.send(
                    topics.requests, r.SerializeToString(), key=key,
                    partition=partition_for_key(key, settings.partitions),
                ))  # fmt: skip
                proof = events_pb2.PropagationRecord(event_id=r.event_id, done=True)
                sent.append(await producer.send(
                    topics.propagation, proof.SerializeToString(), key=r.event_id.encode()
                ))  # fmt: skip
            await asyncio.gather(*sent)
    finally:
        await producer.stop()


async def until_count(
    bus: KafkaBus, topics: Topics, partitions: int, done: Callable[[SealCount], bool],
    what: str, deadline: float,
) -> SealCount:  # fmt: skip
    """Count the list as ``stopsms keys rotate-pseudonyms`` does until ``done`` holds."""
    while True:
        count = await count_seals(bus, topics, partitions, client_id="stopsms-bench-rekey")
        if done(count):
            return count
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} never happened: {dict(count.by_pseudonym_key)}")
        await asyncio.sleep(0.5)


async def ledger_check(
    settings: Settings, topics: Topics, view: RedisSuppressionView, ledger: list[str], when: str
) -> float:
    """The ledger check; its wall seconds. Raises when an opt-out is lost or doubled."""
    started = time.monotonic()
    report = await verify(ledger, bootstrap=settings.kafka_bootstrap, topics=topics, view=view,
                          wait_seconds=600)  # fmt: skip
    assert report.ok and report.changes_found == len(ledger), f"{when}: {report.summary()}"
    print(f"ledger check {when}: {report.summary().splitlines()[-1]}", flush=True)
    return time.monotonic() - started


async def on_broker(
    platform: LocalPlatform, subjects: int, grace_s: int
) -> list[dict[str, object]]:
    """The broker run of the module docstring; its figures."""
    env = platform.environment()
    first = Settings.from_env(env)
    topics = Topics(platform.namespace)
    bus = KafkaBus(first.kafka_bootstrap)
    view = RedisSuppressionView.from_url(first.redis_url, platform.namespace, ViewLayout())
    deadline = time.monotonic() + 1800
    try:
        requests = opt_outs(first, subjects)
        ledger = [r.event_id for r in requests]
        registry = platform.processes["registry"].pid
        cpu_before = cpu_seconds(registry)
        started = time.monotonic()
        await publish(first, topics, requests)
        await until_count(bus, topics, first.partitions,
                          lambda c: c.by_pseudonym_key["pk1"] == subjects,
                          f"every opt-out decided under pk1 ({subjects:,})", deadline)  # fmt: skip
        decide_s = time.monotonic() - started
        decide_cpu = cpu_seconds(registry) - cpu_before
        print(f"{subjects:,} opt-outs published and decided in {decide_s:.1f} s "
              f"(registry CPU {decide_cpu:.1f} s)", flush=True)  # fmt: skip
        await ledger_check(first, topics, view, ledger, "before the rotation")

        pk2 = Path(platform.data_dir) / "pseudonym-pk2.key"
        pk2.write_text(f"pk2:{secrets.token_hex(32)}\n")
        rotating = {
            "STOPSMS_PSEUDONYM_KEY_FILE": str(pk2),
            "STOPSMS_PREVIOUS_PSEUDONYM_KEY_FILE": str(first.key_dir / "pseudonym.key"),
            "STOPSMS_REKEY_PASS_SECONDS": "1",
            "STOPSMS_REKEY_GRACE_SECONDS": str(grace_s),
        }
        platform.stop_service("registry")
        platform.start_service("registry", env=rotating)
        platform.wait_until_serving(120, ["registry"])
        second = Settings.from_env({**env, **rotating})
        registry = platform.processes["registry"].pid
        cpu_before = cpu_seconds(registry)
        started = time.monotonic()
        moved = await until_count(
            bus, topics, first.partitions,
            lambda c: c.by_pseudonym_key["pk2"] == subjects and c.moved == subjects,
            f"every decision in force under pk2 with its previous subject ({subjects:,})",
            deadline,
        )  # fmt: skip
        move_s = time.monotonic() - started
        await until_count(bus, topics, first.partitions,
                          lambda c: c.by_pseudonym_key["pk1"] == 0,
                          "the old subjects tombstoned", deadline)  # fmt: skip
        end_s = time.monotonic() - started
        rotate_cpu = cpu_seconds(registry) - cpu_before
        print(
            f"re-keyed on the broker: moved in {move_s:.1f} s "
            f"(pk2 {moved.by_pseudonym_key['pk2']:,}, {moved.moved:,} with their previous "
            f"subject), ended {end_s:.1f} s after the restart (grace {grace_s} s); "
            f"registry CPU {rotate_cpu:.1f} s",
            flush=True,
        )
        await ledger_check(second, topics, view, ledger, "after the rotation")
    finally:
        await view.close()
    return [
        figure(
            "rekey_broker_seconds_per_million",
            move_s / subjects * 1e6,
            "s",
            decide_s / subjects * 1e6,
        ),  # fmt: skip
        figure(
            "rekey_broker_registry_cpu_us_per_subject",
            rotate_cpu / subjects * 1e6,
            "us",
            decide_cpu / subjects * 1e6,
        ),  # fmt: skip
    ]


def broker_run(subjects: int, grace_s: int) -> None:
    """Kafka, Redis and one registry process for :func:`on_broker`; records its figures."""
    with tempfile.TemporaryDirectory(prefix="stopsms-bench-") as tmp:
        print("starting Kafka, Redis and the registry...", flush=True)
        platform = LocalPlatform(
            Path(tmp), preferred_ports={name: 0 for name in DEFAULT_PORTS},
            services=("registry",), insecure=True,
        )  # fmt: skip
        with platform:
            figures = asyncio.run(on_broker(platform, subjects, grace_s))
    record(figures, short_of=None if subjects >= 100_000 else "fewer than 100,000 subjects")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=200_000)
    parser.add_argument("--broker-subjects", type=int, default=100_000)
    parser.add_argument(
        "--grace", type=int, default=10, help="seconds the old subjects stay after the move"
    )
    args = parser.parse_args()
    asyncio.run(in_process(args.subjects))
    if args.broker_subjects:
        broker_run(args.broker_subjects, args.grace)


if __name__ == "__main__":
    main()
