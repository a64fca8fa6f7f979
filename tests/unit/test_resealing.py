"""Re-sealing as the decision stage's housekeeping: what is re-published, what never is."""

from __future__ import annotations

import asyncio

from stopsms.adapters.bus import InMemoryBus
from stopsms.adapters.kafka import Record
from stopsms.adapters.kafka_access import KafkaAccess
from stopsms.adapters.streams import Output, StateStore
from stopsms.domain.privacy import Key, Pseudonymiser
from stopsms.domain.rules import SubjectDecisions
from stopsms.domain.topics import Topics, partition_for_key
from stopsms.registry.app import Decisions
from stopsms.registry.resealing import Resealer
from stopsms.tools.reseal import key_change_record
from stopsms.tools.verify import decision_content
from stopsms.v1 import events_pb2

TOPICS = Topics()
PARTITIONS = 12
PK = Key("pk1", b"p" * 32)
DK1, DK2, DK0 = Key("dk1", b"1" * 32), Key("dk2", b"2" * 32), Key("dk0", b"0" * 32)
BEFORE = Pseudonymiser(PK, [DK1])  # intake before the change
AFTER = Pseudonymiser(PK, [DK2, DK1])  # the registry during it


class Clock:
    def __init__(self) -> None:
        self.mono_s = 0.0

    def wall(self) -> float:
        return 1_800_000_000.0

    def mono(self) -> float:
        return self.mono_s


def request(keys: Pseudonymiser, number: str, event_id: str, action: int, sender: str) -> Record:
    subject = keys.subject(number)
    r = events_pb2.PreferenceRequested(
        event_id=event_id, request_id=event_id, party_id="iam", subject=subject,
        sender_id=sender, action=action, sealed_msisdn=keys.seal(number),
    )  # fmt: skip
    r.action_time.FromMilliseconds(1_700_000_000_000)
    partition = partition_for_key(subject.encode(), PARTITIONS)
    return Record(TOPICS.requests, partition, 0, subject.encode(), r.SerializeToString(), 0)


async def decide(decisions: Decisions, bus: InMemoryBus, records: list[Record]) -> None:
    """Decide ``records`` and put the decisions on the in-memory list, as the stage does."""
    for out in (await decisions.process(records)).outputs:
        if out.topic == TOPICS.suppressions:
            bus.append(out.topic, out.key, out.value, partition=out.partition)


async def run_pass(resealer: Resealer, clock: Clock) -> list[Output]:
    """Every output of one whole pass (rounds until the pass has read the list and ended)."""
    clock.mono_s += 3600
    outputs: list[Output] = []
    for _ in range(1000):
        batch = resealer.round()
        outputs += batch.outputs if batch else []
        if not resealer.running:
            return outputs
        await asyncio.sleep(0)
    raise AssertionError("the pass never ended")


def published(outputs: list[Output]) -> list[events_pb2.SuppressionChanged]:
    return [
        events_pb2.SuppressionChanged.FromString(o.value)
        for o in outputs
        if o.topic == TOPICS.suppressions and o.value
    ]


async def test_only_decisions_in_force_are_resealed_and_only_once() -> None:
    store = StateStore(KafkaAccess.of("unused:9092"), "decisions-changelog")
    decisions, bus, clock = Decisions(TOPICS, PARTITIONS, store), InMemoryBus(PARTITIONS), Clock()
    out, in_ = events_pb2.ACTION_OPT_OUT, events_pb2.ACTION_OPT_IN
    await decide(decisions, bus, [
        request(BEFORE, "+212611000001", "e1", out, ""),
        request(BEFORE, "+212611000002", "e2", out, "JUMIA"),
        request(BEFORE, "+212611000003", "e3", out, "KITEA"),
    ])  # fmt: skip
    # Decided after the change (sealed under dk2 by intake): nothing to re-seal.
    await decide(decisions, bus, [request(AFTER, "+212611000004", "e4", out, "")])
    resealer = Resealer(bus, TOPICS, store, AFTER, pass_every_s=3600,
                        clock=clock.wall, monotonic=clock.mono)  # fmt: skip
    assert resealer.round() is None, "the first pass waits for the stage's start"
    # e3's subject opts back in after the reader found e3 but before it is re-sealed: only
    # the state, not the list, says so yet, as when the decision is in the batch between.
    clock.mono_s += 3600
    assert resealer.round() is None
    for _ in range(3):
        await asyncio.sleep(0)
    await decisions.process([request(BEFORE, "+212611000003", "e5", in_, "KITEA")])
    outputs = await run_pass(resealer, clock)

    resealed = published(outputs)
    assert sorted(c.event_id for c in resealed) == ["e1", "e2"], "e3 was superseded by e5"
    for change in resealed:
        assert change.sealed_msisdn.key_id == "dk2" and change.HasField("resealed_time")
        assert AFTER.unseal(change.sealed_msisdn) in {"+212611000001", "+212611000002"}
        assert change.version == 1 and change.state == events_pb2.STATE_SUPPRESSED
    changelog = [o for o in outputs if o.topic == store.changelog]
    assert len(changelog) == 2, "each re-sealed subject's state remembers it"
    for o in changelog:
        assert SubjectDecisions.from_json(o.value).resealed in ({"*": 1}, {"JUMIA": 1})

    # The next pass still reads e1 and e2 under dk1 (compaction is days away): nothing again.
    for o in outputs:
        if o.topic == TOPICS.suppressions:
            bus.append(o.topic, o.key, o.value, partition=o.partition)
    assert published(await run_pass(resealer, clock)) == []


async def test_a_new_decision_in_a_resealed_subject_keeps_the_other_scopes_marks() -> None:
    store = StateStore(KafkaAccess.of("unused:9092"), "decisions-changelog")
    decisions, bus, clock = Decisions(TOPICS, PARTITIONS, store), InMemoryBus(PARTITIONS), Clock()
    out = events_pb2.ACTION_OPT_OUT
    number = "+212611000009"
    await decide(decisions, bus, [
        request(BEFORE, number, "a1", out, ""),
        request(BEFORE, number, "a2", out, "JUMIA"),
    ])  # fmt: skip
    resealer = Resealer(bus, TOPICS, store, AFTER, pass_every_s=3600,
                        clock=clock.wall, monotonic=clock.mono)  # fmt: skip
    assert len(published(await run_pass(resealer, clock))) == 2
    await decide(decisions, bus, [request(AFTER, number, "a3", out, "KITEA")])
    subject = AFTER.subject(number).encode()
    state = SubjectDecisions.from_json(store.get(partition_for_key(subject, PARTITIONS), subject))
    assert state.resealed == {"*": 1, "JUMIA": 2}
    assert published(await run_pass(resealer, clock)) == []


async def test_a_decision_under_a_key_not_held_is_counted_and_left() -> None:
    store = StateStore(KafkaAccess.of("unused:9092"), "decisions-changelog")
    decisions, bus, clock = Decisions(TOPICS, PARTITIONS, store), InMemoryBus(PARTITIONS), Clock()
    older = Pseudonymiser(PK, [DK0])
    await decide(decisions, bus, [request(older, "+212611000007", "z1",
                                          events_pb2.ACTION_OPT_OUT, "")])  # fmt: skip
    resealer = Resealer(bus, TOPICS, store, AFTER, pass_every_s=3600,
                        clock=clock.wall, monotonic=clock.mono)  # fmt: skip
    assert published(await run_pass(resealer, clock)) == []
    assert resealer._unknown_keys == {"dk0"}


def test_without_previous_keys_there_is_no_pass() -> None:
    store = StateStore(KafkaAccess.of("unused:9092"), "decisions-changelog")
    resealer = Resealer(InMemoryBus(PARTITIONS), TOPICS, store,
                        Pseudonymiser(PK, [DK2]), pass_every_s=1)  # fmt: skip
    assert not resealer.enabled and resealer.round() is None


def test_the_key_change_record_reads_as_an_entry_for_no_number() -> None:
    record = key_change_record(AFTER, "dk1", resealed=12, now_ms=1_800_000_000_000)
    assert record.subject.startswith("#") and record.key_change.retired_key_id == "dk1"
    assert AFTER.unseal(record.sealed_msisdn) == "", "an older reader unseals it to nothing"
    assert record.state == events_pb2.STATE_UNSPECIFIED
    days = (record.key_change.retire_after.ToMilliseconds() - 1_800_000_000_000) / 86_400_000
    assert days == 15, "retire after compaction's lag and a day's margin"


def test_the_ledger_check_takes_a_resealed_record_for_the_same_decision() -> None:
    first = events_pb2.SuppressionChanged(event_id="e1", subject="pk1:00", version=3,
                                          sealed_msisdn=BEFORE.seal("+212611000001"))  # fmt: skip
    again = events_pb2.SuppressionChanged()
    again.CopyFrom(first)
    again.sealed_msisdn.CopyFrom(AFTER.seal("+212611000001"))
    again.resealed_time.FromSeconds(1)
    assert decision_content(first) == decision_content(again)
    other = events_pb2.SuppressionChanged()
    other.CopyFrom(first)
    other.version = 4
    assert decision_content(first) != decision_content(other)


async def test_stopping_closes_a_pass_under_way() -> None:
    """A stage that stops mid-pass ends the pass's reading task; the next pass starts over."""
    store = StateStore(KafkaAccess.of("unused:9092"), "decisions-changelog")
    decisions, bus, clock = Decisions(TOPICS, PARTITIONS, store), InMemoryBus(PARTITIONS), Clock()
    await decide(
        decisions, bus, [request(BEFORE, "+212611000001", "s1", events_pb2.ACTION_OPT_OUT, "")]
    )
    resealer = Resealer(bus, TOPICS, store, AFTER, pass_every_s=3600,
                        clock=clock.wall, monotonic=clock.mono)  # fmt: skip
    clock.mono_s += 3600
    resealer.round()
    reading = resealer._reading
    assert resealer.running and reading is not None, "the pass never started"
    await resealer.stop()
    assert not resealer.running and reading.done(), "the pass's reading task outlived the stop"
    assert len(published(await run_pass(resealer, clock))) == 1, "the next pass starts over"
