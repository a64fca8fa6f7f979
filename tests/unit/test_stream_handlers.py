"""The two stream processors as plain handlers: records in, records and state out, no broker."""

from __future__ import annotations

import asyncio

from stopsms.adapters.kafka import Record
from stopsms.adapters.kafka_access import KafkaAccess
from stopsms.adapters.streams import StateStore
from stopsms.domain.parties import PartiesDirectory, Party
from stopsms.domain.proof import ProgressLog
from stopsms.domain.rules import SubjectDecisions
from stopsms.domain.topics import Topics
from stopsms.notifier.app import Prover
from stopsms.registry.app import Decisions
from stopsms.v1 import events_pb2

TOPICS = Topics()
OP, PSVA = events_pb2.PARTY_KIND_OPERATOR, events_pb2.PARTY_KIND_PSVA


def request(subject: str, event_id: str, sender: str) -> bytes:
    r = events_pb2.PreferenceRequested(
        event_id=event_id,
        request_id=event_id,
        party_id="iam",
        subject=subject,
        sender_id=sender,
        action=events_pb2.ACTION_OPT_OUT,
    )
    r.action_time.FromMilliseconds(1_000)
    return r.SerializeToString()


def rec(topic: str, partition: int, offset: int, value: bytes | None) -> Record:
    return Record(topic, partition, offset, b"key", value, 2_000)


async def test_each_request_is_decided_after_the_earlier_ones_of_its_subject_in_the_batch() -> None:
    store = StateStore(KafkaAccess.of("unused:9092"), "decisions-changelog")
    decisions = Decisions(TOPICS, 12, store)
    batch = await decisions.process(
        [
            rec(TOPICS.requests, 3, 0, request("s1", "e1", "JUMIA")),
            rec(TOPICS.requests, 3, 1, request("s1", "e2", "KITEA")),
            rec(TOPICS.requests, 3, 2, request("s1", "e1", "JUMIA")),  # a repeat: nothing new
            rec(TOPICS.requests, 3, 3, b"\xff not a request"),
        ]
    )
    changes = [
        events_pb2.SuppressionChanged.FromString(o.value or b"")
        for o in batch.outputs
        if o.topic == TOPICS.suppressions
    ]
    assert [(c.event_id, c.version) for c in changes] == [("e1", 1), ("e2", 2)]
    (letter,) = [o for o in batch.outputs if o.topic == TOPICS.dlq]
    assert b"unreadable request" in (letter.value or b"")
    (state,) = [o for o in batch.outputs if o.topic == "decisions-changelog"]
    assert state.partition == 3 and state.key == b"s1"  # one state write per subject
    remembered = SubjectDecisions.from_json(store.get(3, b"s1"))
    assert {"e1", "e2"} <= set(remembered.decided)
    again = await decisions.process([rec(TOPICS.requests, 3, 4, request("s1", "e2", "KITEA"))])
    assert again.outputs == []  # decided before, in the state: the repeat publishes nothing


class FakePublisher:
    """Records what the prover publishes outside the stage's transaction (done proofs)."""

    def __init__(self) -> None:
        self.sent: list[events_pb2.PropagationRecord] = []

    def send(self, topic: str, key: bytes, value: bytes, type_name: str) -> asyncio.Future[object]:
        self.sent.append(events_pb2.PropagationRecord.FromString(value))
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        future.set_result((0, 0))
        return future


class FakeProofs:
    """The propagation index, in memory."""

    def __init__(self) -> None:
        self.values: dict[str, events_pb2.PropagationRecord] = {}

    def peek(self, key: str) -> events_pb2.PropagationRecord | None:
        return self.values.get(key)

    def put(self, key: str, value: events_pb2.PropagationRecord) -> None:
        self.values[key] = value

    def open_records(self) -> list[events_pb2.PropagationRecord]:
        return [r for r in self.values.values() if not r.done]

    async def caught_up(self, wait_seconds: float = 3.0) -> bool:
        return True

    async def stored(self, keys) -> dict[str, events_pb2.PropagationRecord]:
        return {}  # everything is in memory here


def change(event_id: str, sender: str) -> bytes:
    c = events_pb2.SuppressionChanged(event_id=event_id, request_id=event_id, sender_id=sender)
    c.action_time.FromMilliseconds(1_000)
    return c.SerializeToString()


async def test_a_proof_starts_with_its_offsets_and_is_done_when_every_party_passed_it() -> None:
    directory = PartiesDirectory(
        [
            Party("iam", OP, "IAM"),
            Party("atlas", PSVA, "Atlas", frozenset({"JUMIA"})),
            Party("sahara", PSVA, "Sahara", frozenset({"KITEA"})),
        ]
    )
    log, publisher, proofs = ProgressLog(), FakePublisher(), FakeProofs()
    prover = Prover(TOPICS, directory, publisher, proofs, log)  # type: ignore[arg-type]
    done_before = events_pb2.PropagationRecord(event_id="old", done=True)
    proofs.put("old", done_before)
    batch = await prover.process(
        [
            rec(TOPICS.suppressions, 5, 10, change("e1", "JUMIA")),
            rec(TOPICS.suppressions, 5, 11, change("old", "JUMIA")),  # proven before a restart
            rec(TOPICS.suppressions, 5, 12, None),  # a tombstone
        ]
    )
    (start,) = [events_pb2.PropagationRecord.FromString(o.value or b"") for o in batch.outputs]
    assert start.event_id == "e1" and not start.done
    assert (start.change_position.partition, start.change_position.offset) == (5, 10)
    assert [d.party_id for d in start.deliveries] == ["atlas", "iam"]
    assert not prover.waiting()  # nothing waits before the batch is committed
    assert batch.after_published is not None
    batch.after_published()
    assert prover.waiting() and publisher.sent == []
    log.advance("iam", OP, 5, 11, 1_400)
    prover.advanced([("iam", 5)])
    log.advance("atlas", PSVA, 5, 13, 1_600)
    prover.advanced([("atlas", 5)])
    (done,) = publisher.sent
    assert done.done and done.done_time.ToMilliseconds() == 1_600
    assert not prover.waiting() and proofs.peek("e1") == done
