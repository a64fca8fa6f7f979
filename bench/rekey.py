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

    python -m bench.rekey [--subjects 200000]
"""

from __future__ import annotations

import argparse
import asyncio
import time

from bench.reseal import PARTITIONS, TOPICS, filled
from bench.results import figure, record
from stopsms.adapters.bus import InMemoryBus
from stopsms.adapters.kafka import Record
from stopsms.adapters.streams import StateStore
from stopsms.domain.privacy import Key, Pseudonymiser
from stopsms.registry.app import Decisions
from stopsms.registry.rekeying import Rekeyer, SubjectRouter
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


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=200_000)
    args = parser.parse_args()
    store, bus, values = await filled(args.subjects)
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
    assert migrations == moved == args.subjects, f"{migrations} moved of {args.subjects}"
    clock[1] += 60  # the grace period over
    started = time.process_time()
    again, _, tombstones = await one_pass(rekeyer, decisions, bus, clock)
    end_cpu = time.process_time() - started
    assert again == 0 and tombstones == args.subjects, f"{again} moved again, {tombstones} ended"
    baseline = bare(values)
    per = (move_cpu + end_cpu) / args.subjects * 1e6
    print(
        f"{args.subjects:,} subjects re-keyed: move {move_cpu:.2f} s, end {end_cpu:.2f} s of CPU "
        f"(bare {baseline:.2f} s)"
    )
    record(
        [
            figure("rekey_cpu_us_per_subject", per, "us", baseline / len(values) * 1e6),
            figure("rekey_seconds_per_million", per, "s"),
        ],
        short_of=None if args.subjects >= 100_000 else "fewer than 100,000 subjects",
    )


if __name__ == "__main__":
    asyncio.run(main())
