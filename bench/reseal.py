"""Re-sealing's cost in the decision stage: CPU per decision re-sealed, beside the bare crypto.

A decision stage's state holds N subjects decided under ``dk1`` (each with a global opt-out);
the list holds their records. One pass of the :class:`~stopsms.registry.resealing.Resealer`
(reading the list from an in-process bus, checking each record against the state, unsealing,
sealing under ``dk2``, marking the state) is timed in CPU seconds of this process, beside a bare
loop doing only the cryptography and serialisation of the same records (unseal, seal,
serialise). Reading the list from Kafka is the same read as a view rebuild's
(``rebuild_seconds_50m`` in bench/results.json).

* ``reseal_cpu_us_per_record``: the pass's CPU per decision re-sealed (baseline: the bare loop);
* ``reseal_seconds_per_million``: the same for a million decisions on one core.

    python -m bench.reseal [--subjects 200000]
"""

from __future__ import annotations

import argparse
import asyncio
import time

from bench.results import figure, record
from stopsms.adapters.bus import InMemoryBus
from stopsms.adapters.kafka import Record
from stopsms.adapters.kafka_access import KafkaAccess
from stopsms.adapters.streams import StateStore
from stopsms.domain.privacy import Key, Pseudonymiser
from stopsms.domain.topics import Topics, partition_for_key
from stopsms.registry.app import Decisions
from stopsms.registry.resealing import Resealer
from stopsms.v1 import events_pb2

TOPICS = Topics()
PARTITIONS = 12
PK = Key("pk1", b"p" * 32)
BEFORE = Pseudonymiser(PK, [Key("dk1", b"1" * 32)])
AFTER = Pseudonymiser(PK, [Key("dk2", b"2" * 32), Key("dk1", b"1" * 32)])


async def filled(subjects: int) -> tuple[StateStore, InMemoryBus, list[bytes]]:
    """A state and a list of ``subjects`` global opt-outs sealed under dk1."""
    store = StateStore(KafkaAccess.of("unused:9092"), "decisions-changelog")
    decisions, bus = Decisions(TOPICS, PARTITIONS, store), InMemoryBus(PARTITIONS)
    values: list[bytes] = []
    for start in range(0, subjects, 10_000):
        batch = []
        for i in range(start, min(start + 10_000, subjects)):
            number = f"+2126{i:08d}"
            subject = BEFORE.subject(number)
            r = events_pb2.PreferenceRequested(
                event_id=f"e{i}", request_id=f"r{i}", party_id="iam", subject=subject,
                action=events_pb2.ACTION_OPT_OUT, sealed_msisdn=BEFORE.seal(number),
            )  # fmt: skip
            partition = partition_for_key(subject.encode(), PARTITIONS)
            batch.append(Record(TOPICS.requests, partition, i, subject.encode(),
                                r.SerializeToString(), 0))  # fmt: skip
        for out in (await decisions.process(batch)).outputs:
            if out.topic == TOPICS.suppressions and out.value is not None:
                bus.append(out.topic, out.key, out.value, partition=out.partition)
                values.append(out.value)
    return store, bus, values


async def one_pass(store: StateStore, bus: InMemoryBus) -> tuple[int, float]:
    """Decisions re-sealed by one whole pass, and the CPU seconds it took."""
    clock = [0.0]
    resealer = Resealer(bus, TOPICS, store, AFTER, pass_every_s=3600,
                        monotonic=lambda: clock[0])  # fmt: skip
    clock[0] = 3600
    resealed = 0
    started = time.process_time()
    while True:
        batch = resealer.round()
        if batch is not None:
            resealed += sum(1 for o in batch.outputs if o.topic == TOPICS.suppressions)
        if not resealer.running:
            return resealed, time.process_time() - started
        await asyncio.sleep(0)


def bare(values: list[bytes]) -> float:
    """CPU seconds of the cryptography and serialisation alone, for the same records."""
    started = time.process_time()
    for value in values:
        change = events_pb2.SuppressionChanged.FromString(value)
        number = AFTER.unseal(change.sealed_msisdn)
        change.sealed_msisdn.CopyFrom(AFTER.seal(number))
        change.SerializeToString()
    return time.process_time() - started


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=200_000)
    args = parser.parse_args()
    store, bus, values = await filled(args.subjects)
    resealed, cpu = await one_pass(store, bus)
    assert resealed == args.subjects, f"{resealed} re-sealed of {args.subjects}"
    baseline = bare(values)
    again, _ = await one_pass(store, bus)
    assert again == 0, f"a second pass re-sealed {again}"
    per = cpu / resealed * 1e6
    print(f"{resealed:,} decisions re-sealed in {cpu:.2f} s of CPU (bare {baseline:.2f} s)")
    record(
        [
            figure("reseal_cpu_us_per_record", per, "us", baseline / len(values) * 1e6),
            figure("reseal_seconds_per_million", per, "s"),
        ],
        short_of=None if args.subjects >= 100_000 else "fewer than 100,000 subjects",
    )


if __name__ == "__main__":
    asyncio.run(main())
