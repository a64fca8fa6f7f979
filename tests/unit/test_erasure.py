"""Erasure as the decision stage's housekeeping: who is erased, what is written, what follows."""

from __future__ import annotations

from stopsms.adapters.kafka import Record
from stopsms.adapters.kafka_access import KafkaAccess
from stopsms.adapters.streams import StateStore
from stopsms.domain.rules import SubjectDecisions, erasable
from stopsms.domain.topics import DAY_MS, Topics, partition_for_key
from stopsms.domain.viewcodec import ScopeEntry
from stopsms.registry.app import Decisions
from stopsms.registry.erasure import FLOOR_KEY, ROUND_EVERY_S, Eraser
from stopsms.v1 import events_pb2

TOPICS = Topics()
PARTITIONS = 12
OUT, IN = events_pb2.STATE_SUPPRESSED, events_pb2.STATE_ALLOWED
YEAR_MS = 365 * DAY_MS
LEGAL_RECORD_DAYS = 3 * 365


def test_a_subject_is_erasable_only_with_no_opt_out_in_force_and_its_legal_record_over() -> None:
    now = 10 * YEAR_MS
    old, recent = now - 4 * YEAR_MS, now - YEAR_MS
    legal = 3 * YEAR_MS

    def subject(*scopes: tuple[str, int, int]) -> SubjectDecisions:
        return SubjectDecisions(
            version=len(scopes),
            scopes={
                scope: ScopeEntry(state, n + 1, at) for n, (scope, state, at) in enumerate(scopes)
            },  # fmt: skip
        )

    assert erasable(subject(("*", IN, old)), now, legal)
    assert erasable(subject(("*", IN, old), ("JUMIA", IN, old)), now, legal)
    assert not erasable(subject(("*", OUT, old)), now, legal), "an opt-out in force stays"
    assert not erasable(subject(("*", IN, old), ("JUMIA", OUT, old)), now, legal)
    assert not erasable(subject(("*", IN, old), ("JUMIA", IN, recent)), now, legal)
    assert not erasable(SubjectDecisions(), now, legal)


def request(subject: str, event_id: str, action: int, at_ms: int, sender: str = "") -> bytes:
    r = events_pb2.PreferenceRequested(
        event_id=event_id, request_id=event_id, party_id="iam", subject=subject,
        sender_id=sender, action=action,
    )  # fmt: skip
    r.action_time.FromMilliseconds(at_ms)
    return r.SerializeToString()


class Clock:
    def __init__(self, wall_s: float) -> None:
        self.wall_s, self.mono_s = wall_s, 0.0

    def wall(self) -> float:
        return self.wall_s

    def mono(self) -> float:
        return self.mono_s


def subject_in(partition: int, n: int) -> str:
    """A subject whose records go to ``partition``."""
    while True:
        subject = f"pk1:{n:032x}"
        if partition_for_key(subject.encode(), PARTITIONS) == partition:
            return subject
        n += 1


async def test_an_erased_subject_is_tombstoned_everywhere_and_starts_again_above_its_versions():
    store = StateStore(KafkaAccess.of("unused:9092"), "decisions-changelog")
    decisions = Decisions(TOPICS, PARTITIONS, store)
    long_ago = 1_000_000
    gone, kept = subject_in(5, 1), subject_in(5, 1000)
    await decisions.process(
        [
            Record(TOPICS.requests, 5, 0, gone.encode(),
                   request(gone, "e1", events_pb2.ACTION_OPT_OUT, long_ago), 0),
            Record(TOPICS.requests, 5, 1, gone.encode(),
                   request(gone, "e2", events_pb2.ACTION_OPT_IN, long_ago + 1), 0),
            Record(TOPICS.requests, 5, 2, gone.encode(),
                   request(gone, "e3", events_pb2.ACTION_OPT_IN, long_ago + 2, "JUMIA"), 0),
            Record(TOPICS.requests, 5, 3, kept.encode(),
                   request(kept, "e4", events_pb2.ACTION_OPT_OUT, long_ago), 0),
        ]
    )  # fmt: skip
    clock = Clock(wall_s=(long_ago + 3 * YEAR_MS) / 1000 + 1)
    eraser = Eraser(TOPICS, PARTITIONS, store, LEGAL_RECORD_DAYS, pass_every_s=3600,
                    clock=clock.wall, monotonic=clock.mono)  # fmt: skip
    assert eraser.round() is None, "the first pass waits a little after the start"
    clock.mono_s = 3600
    batch = eraser.round()
    assert batch is not None
    written = {(o.topic, o.key, o.value) for o in batch.outputs}
    assert (TOPICS.suppressions, f"{gone}|*".encode(), None) in written
    assert (TOPICS.suppressions, f"{gone}|JUMIA".encode(), None) in written
    assert {(TOPICS.propagation, e, None) for e in (b"e1", b"e2", b"e3")} <= written
    assert ("decisions-changelog", gone.encode(), None) in written
    assert ("decisions-changelog", FLOOR_KEY, b"3") in written
    assert not any(o.key and o.key.startswith(kept.encode()) for o in batch.outputs), (
        "a subject with an opt-out in force was erased"
    )
    assert {o.partition for o in batch.outputs if o.topic == TOPICS.suppressions} == {5}
    assert store.get(5, gone.encode()) is None
    assert not eraser.running and eraser.round() is None, "a pass is over, the next waits"

    again = await decisions.process(
        [Record(TOPICS.requests, 5, 4, gone.encode(),
                request(gone, "e5", events_pb2.ACTION_OPT_OUT, 10 * YEAR_MS), 0)]
    )  # fmt: skip
    (change,) = [
        events_pb2.SuppressionChanged.FromString(o.value or b"")
        for o in again.outputs
        if o.topic == TOPICS.suppressions
    ]
    assert change.version == 4, "a returning subject is newer than anything erased"
    assert change.state == OUT


async def test_a_pass_looks_at_a_slice_per_round_and_covers_every_partition_held() -> None:
    store = StateStore(KafkaAccess.of("unused:9092"), "decisions-changelog")
    decisions = Decisions(TOPICS, PARTITIONS, store)
    records = []
    for n in range(2500):
        subject = f"pk1:{n:032x}"
        partition = partition_for_key(subject.encode(), PARTITIONS)
        records.append(Record(TOPICS.requests, partition, n, subject.encode(),
                              request(subject, f"e{n}", events_pb2.ACTION_OPT_IN, 0), 0))  # fmt: skip
    await decisions.process(records)
    clock = Clock(wall_s=4 * YEAR_MS / 1000)
    eraser = Eraser(TOPICS, PARTITIONS, store, LEGAL_RECORD_DAYS, pass_every_s=1,
                    clock=clock.wall, monotonic=clock.mono)  # fmt: skip
    clock.mono_s = 1
    erased = 0
    rounds = 0
    while rounds == 0 or eraser.running:
        batch = eraser.round()
        rounds += 1
        clock.mono_s += ROUND_EVERY_S
        erased += sum(1 for o in (batch.outputs if batch else []) if o.topic == TOPICS.propagation)
    assert erased == 2500 and rounds == 2, "2,000 subjects a round, every partition held"
    assert len([k for p in store.partitions() for k in store.keys(p) if k != FLOOR_KEY]) == 0
