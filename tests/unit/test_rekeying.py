"""Pseudonym re-keying in the decision stage: every subject moves, one place decides, none lost.

The requests topic is played by a queue that the stage's own outputs feed (a migration or a
passed-on request comes back to the stage, in its new subject's partition), the list by the
in-memory bus, so that a whole rotation runs here: decisions before it, requests under both
keys while intake replicas roll, the passes, the end.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict

from stopsms.adapters.bus import InMemoryBus
from stopsms.adapters.kafka import Record
from stopsms.adapters.kafka_access import KafkaAccess
from stopsms.adapters.streams import Output, StateStore
from stopsms.domain.privacy import Key, Pseudonymiser
from stopsms.domain.rules import SubjectDecisions
from stopsms.domain.topics import Topics, partition_for_key
from stopsms.registry.app import Decisions
from stopsms.registry.rekeying import Rekeyer, SubjectRouter, apply_migration
from stopsms.tools.verify import decision_content
from stopsms.v1 import events_pb2

TOPICS = Topics()
PARTITIONS = 12
PK1, PK2 = Key("pk1", b"p" * 32), Key("pk2", b"q" * 32)
DK = Key("dk1", b"1" * 32)
OLD = Pseudonymiser(PK1, [DK])  # intake before the rotation, and the registry before it
NEW = Pseudonymiser(PK2, [DK])  # intake after it
ROTATING = Pseudonymiser(PK2, [DK], previous_pseudonym_key=PK1)  # the registry during it
OUT, IN = events_pb2.ACTION_OPT_OUT, events_pb2.ACTION_OPT_IN
GRACE_S = 600.0


class Clock:
    def __init__(self) -> None:
        self.wall_s = 1_800_000_000.0
        self.mono_s = 0.0

    def wall(self) -> float:
        return self.wall_s

    def mono(self) -> float:
        return self.mono_s


class Platform:
    """The decision stage between an in-memory requests topic and an in-memory list."""

    def __init__(self, keys: Pseudonymiser, store: StateStore | None = None) -> None:
        self.store = store or StateStore(KafkaAccess.of("unused:9092"), "decisions-changelog")
        self.list = InMemoryBus(PARTITIONS)
        self.clock = Clock()
        self.use(keys)

    def use(self, keys: Pseudonymiser) -> None:
        """The registry restarted with ``keys`` (its state and the list stay)."""
        self.decisions = Decisions(
            TOPICS, PARTITIONS, self.store, SubjectRouter(keys, TOPICS, PARTITIONS)
        )
        self.rekeyer = Rekeyer(
            self.list, TOPICS, self.store, keys, PARTITIONS, pass_every_s=3600, grace_s=GRACE_S,
            clock=self.clock.wall, monotonic=self.clock.mono,
        )  # fmt: skip

    async def submit(self, keys: Pseudonymiser, number: str, event: str, action: int,
                     sender: str = "") -> None:  # fmt: skip
        """A citizen's request as an intake replica holding ``keys`` publishes it."""
        subject = keys.subject(number)
        r = events_pb2.PreferenceRequested(
            event_id=event, request_id=event, party_id="iam", subject=subject,
            sender_id=sender, action=action, sealed_msisdn=keys.seal(number),
        )  # fmt: skip
        r.action_time.FromMilliseconds(1_700_000_000_000)
        partition = partition_for_key(subject.encode(), PARTITIONS)
        await self.run([Record(TOPICS.requests, partition, 0, subject.encode(),
                               r.SerializeToString(), 0)])  # fmt: skip

    async def run(self, records: list[Record]) -> None:
        """Decide ``records``, and whatever the stage passes on, until nothing is left."""
        hops = 0
        while records:
            hops += 1
            assert hops < 10, "a request went round in circles"
            records = self.take((await self.decisions.process(records)).outputs)

    def take(self, outputs: list[Output]) -> list[Record]:
        """List records onto the list; requests back as the next records to decide."""
        again = []
        for out in outputs:
            if out.topic == TOPICS.suppressions:
                self.list.append(out.topic, out.key, out.value, partition=out.partition)
            elif out.topic == TOPICS.requests:
                assert out.partition == partition_for_key(out.key, PARTITIONS)
                again.append(Record(out.topic, out.partition, 0, out.key, out.value, 0))
        return again

    async def rekeying_pass(self) -> None:
        """One whole pass of the re-keying, its migrations decided as they come."""
        self.clock.mono_s += 3600
        for _ in range(1000):
            batch = self.rekeyer.round()
            if batch is not None:
                await self.run(self.take(batch.outputs))
            if not self.rekeyer.running:
                return
            await asyncio.sleep(0)
        raise AssertionError("the re-keying pass never ended")

    def in_force(self) -> dict[bytes, events_pb2.SuppressionChanged]:
        """The list as compaction leaves it: the latest record of each key, tombstones out."""
        latest: dict[bytes, events_pb2.SuppressionChanged | None] = {}
        for log in self.list.partitions_of(TOPICS.suppressions):
            for record in log:
                latest[record.key or b""] = (
                    None if record.value is None
                    else events_pb2.SuppressionChanged.FromString(record.value)
                )  # fmt: skip
        return {k: v for k, v in latest.items() if v is not None}

    def all_decisions(self) -> list[events_pb2.SuppressionChanged]:
        return [
            events_pb2.SuppressionChanged.FromString(record.value)
            for log in self.list.partitions_of(TOPICS.suppressions)
            for record in log
            if record.value is not None
        ]

    def by_number(self) -> dict[tuple[str, str], tuple[int, int]]:
        """What an operator keyed by number holds: (number, scope) → (state, version)."""
        rows: dict[tuple[str, str], tuple[int, int]] = {}
        for change in self.in_force().values():
            place = (DK_READER.unseal(change.sealed_msisdn), change.sender_id)
            if place not in rows or rows[place][1] < change.version:
                rows[place] = (change.state, change.version)
        return rows


DK_READER = OLD  # an operator holds the data key only


async def test_a_rotation_moves_every_subject_and_one_place_decides_each_request() -> None:
    platform = Platform(OLD)
    a, b, c, d = "+212611000001", "+212611000002", "+212611000003", "+212611000004"
    await platform.submit(OLD, a, "a1", OUT)
    await platform.submit(OLD, b, "b1", OUT, "JUMIA")
    await platform.submit(OLD, b, "b2", IN)
    await platform.submit(OLD, c, "c1", OUT)
    before = platform.by_number()
    assert before[(b, "JUMIA")] == (events_pb2.STATE_SUPPRESSED, 1)

    platform.use(ROTATING)
    # Intake replicas roll: requests arrive under either key before anything has moved.
    await platform.submit(OLD, a, "a2", OUT, "KITEA")  # decided under the old subject
    await platform.submit(NEW, b, "b3", OUT, "KITEA")  # passed to the old subject, decided there
    await platform.submit(NEW, d, "d1", OUT)  # nobody had it: decided under the new subject
    old_b = OLD.subject(b)
    assert {c.subject for c in platform.all_decisions() if c.event_id == "b3"} == {old_b}
    assert {c.subject for c in platform.all_decisions() if c.event_id == "d1"} == {NEW.subject(d)}

    await platform.rekeying_pass()
    moved = [c for c in platform.all_decisions() if c.previous_subject]
    assert {c.event_id for c in moved} == {"a1", "a2", "b1", "b2", "b3", "c1"}
    for change in moved:
        assert change.subject.startswith("pk2:") and change.previous_subject.startswith("pk1:")
        assert NEW.subject(DK_READER.unseal(change.sealed_msisdn)) == change.subject

    # After the move: an old-key request goes to the new subject, and versions continue.
    await platform.submit(OLD, a, "a3", IN)
    await platform.submit(NEW, c, "c2", IN)
    a3 = next(c for c in platform.all_decisions() if c.event_id == "a3")
    assert a3.subject == NEW.subject(a) and a3.version == 3, "a's versions continue from 2"
    # A migration repeated (a crash after publishing it) changes nothing.
    await platform.rekeying_pass()
    assert len([c for c in platform.all_decisions() if c.previous_subject]) == len(moved)

    # The grace period over, the next pass ends every old subject.
    platform.clock.wall_s += GRACE_S
    await platform.rekeying_pass()
    in_force = platform.in_force()
    assert all(key.startswith(b"pk2:") for key in in_force), "no old subject left in force"
    assert platform.rekeyer._remaining == set()
    for p in range(PARTITIONS):
        assert not any(k.startswith(b"pk1:") for k in platform.store.keys(p)), "old states gone"

    # Not one opt-out lost or doubled: each number's rows are those before, plus what came.
    after = platform.by_number()
    expected = dict(before)
    expected[(a, "KITEA")] = (events_pb2.STATE_SUPPRESSED, 2)
    expected[(a, "")] = (events_pb2.STATE_ALLOWED, 3)
    expected[(b, "KITEA")] = (events_pb2.STATE_SUPPRESSED, 3)
    expected[(c, "")] = (events_pb2.STATE_ALLOWED, 2)
    expected[(d, "")] = (events_pb2.STATE_SUPPRESSED, 1)
    assert after == expected
    decided: dict[str, set[bytes]] = defaultdict(set)
    for change in platform.all_decisions():
        decided[change.event_id].add(decision_content(change))
    assert all(len(v) == 1 for v in decided.values()), "an event decided twice"

    # A late request under the old key (an intake replica not rolled) still lands right.
    await platform.submit(OLD, b, "b4", IN, "KITEA")
    b4 = next(c for c in platform.all_decisions() if c.event_id == "b4")
    assert b4.subject == NEW.subject(b) and b4.version == 4


async def test_a_subject_decided_while_its_scopes_are_gathered_moves_at_the_next_pass() -> None:
    platform = Platform(OLD)
    number = "+212611000011"
    await platform.submit(OLD, number, "x1", OUT)
    platform.use(ROTATING)
    platform.clock.mono_s += 3600
    assert platform.rekeyer.round() is None  # the pass starts; its reader has not read yet
    for _ in range(3):
        await asyncio.sleep(0)
    await platform.submit(OLD, number, "x2", OUT, "JUMIA")  # a second scope, not yet read
    await platform.rekeying_pass()
    moved = {c.event_id for c in platform.all_decisions() if c.previous_subject}
    if not moved:  # the reader met x1 before x2 existed: the next pass moves both
        await platform.rekeying_pass()
        moved = {c.event_id for c in platform.all_decisions() if c.previous_subject}
    assert moved == {"x1", "x2"}


def test_a_migration_meeting_decisions_keeps_the_higher_version_of_each_scope() -> None:
    held = SubjectDecisions(version=5)
    held.scopes["*"] = SubjectDecisions.from_json('{"v":5,"s":{"*":[1,5,9]},"d":{}}').scopes["*"]
    old = events_pb2.SuppressionChanged(event_id="o1", subject="pk1:aa", version=3,
                                        state=events_pb2.STATE_ALLOWED)  # fmt: skip
    other = events_pb2.SuppressionChanged(event_id="o2", subject="pk1:aa", version=4,
                                          sender_id="JUMIA", state=events_pb2.STATE_SUPPRESSED)  # fmt: skip
    migration = events_pb2.PreferenceRequested(
        event_id="rekey:pk1:aa", subject="pk2:bb",
        migration=events_pb2.SubjectMigration(from_subject="pk1:aa", version=4,
                                              in_force=[old, other]),
    )  # fmt: skip
    records, state = apply_migration(held, True, migration)
    assert state is not None and state.version == 5
    assert [r.event_id for r in records] == ["o2"], "the global scope's version 5 is newer"
    assert state.scopes["*"].version == 5 and state.scopes["JUMIA"].version == 4
    assert apply_migration(state, True, migration) == ([], None), "a repeat changes nothing"


def test_without_a_previous_pseudonym_key_nothing_is_routed() -> None:
    router = SubjectRouter(OLD, TOPICS, PARTITIONS)
    request = events_pb2.PreferenceRequested(event_id="e", subject=OLD.subject("+212611000001"))
    assert not router.enabled and router.destination(request, None) is None


def test_the_ledger_check_takes_a_moved_record_for_the_same_decision() -> None:
    first = events_pb2.SuppressionChanged(event_id="e1", subject="pk1:00", version=3)
    moved = events_pb2.SuppressionChanged()
    moved.CopyFrom(first)
    moved.subject, moved.previous_subject = "pk2:11", "pk1:00"
    assert decision_content(first) == decision_content(moved)
    twice = events_pb2.SuppressionChanged()
    twice.CopyFrom(first)
    twice.subject = "pk2:11"  # decided again under the new subject, not moved: a defect
    assert decision_content(first) != decision_content(twice)


async def test_a_citizens_history_follows_the_subject_it_moved_from() -> None:
    from stopsms.adapters.kafka import Record
    from stopsms.console.history import RequestHistory

    history = RequestHistory(InMemoryBus(PARTITIONS), TOPICS.requests)
    number = "+212611000021"
    old, new = OLD.subject(number), NEW.subject(number)
    written = [
        events_pb2.PreferenceRequested(event_id=event, subject=subject, forwarded_from=forwarded)
        for event, subject, forwarded in (("h1", old, ""), ("h2", new, old), ("h2", old, ""))
    ]
    written.append(events_pb2.PreferenceRequested(
        event_id=f"rekey:{old}", subject=new,
        migration=events_pb2.SubjectMigration(from_subject=old, version=2),
    ))  # fmt: skip
    written.append(events_pb2.PreferenceRequested(event_id="h3", subject=new))
    written[0].sealed_msisdn.CopyFrom(OLD.seal(number))
    await history._store(  # what the console's reader does with a batch of the log
        [
            Record(TOPICS.requests, 0, n, None, request.SerializeToString(), 0)
            for n, request in enumerate(written)
        ]
    )
    assert [r.event_id for r in await history.of(new)] == ["h1", "h2", "h3"], "each request once"
    assert [r.event_id for r in await history.of(old)] == ["h1"]
    assert await history.subject_of("h2") == new and await history.subject_of("h9") is None
    assert not (await history.of(new))[0].HasField("sealed_msisdn")
