from stopsms.domain.parties import PartiesDirectory, Party
from stopsms.domain.proof import (
    ProgressLog,
    ProofTracker,
    done_record,
    progress_receipt,
    start_record,
    with_progress,
)
from stopsms.v1 import events_pb2

OP, PSVA = events_pb2.PARTY_KIND_OPERATOR, events_pb2.PARTY_KIND_PSVA
DIRECTORY = PartiesDirectory(
    [
        Party("iam", OP, "IAM", frozenset({"IAM"})),
        Party("orange", OP, "Orange"),
        Party("atlas", PSVA, "Atlas", frozenset({"JUMIA"})),
        Party("sahara", PSVA, "Sahara", frozenset({"KITEA"})),
        Party("cndp", events_pb2.PARTY_KIND_REGULATOR, "CNDP"),
    ]
)


def change(sender: str, event_id: str = "e1") -> events_pb2.SuppressionChanged:
    c = events_pb2.SuppressionChanged(
        event_id=event_id, request_id="r1", party_id="iam", sender_id=sender
    )
    c.action_time.FromMilliseconds(1_000)
    return c


def started(sender: str, offset: int = 7, event_id: str = "e1") -> events_pb2.PropagationRecord:
    """The start of a proof, as the notifier publishes it for a change at (3, offset)."""
    concerned = [(p.id, p.kind) for p in DIRECTORY.concerned_by(sender)]
    return start_record(change(sender, event_id), 3, offset, concerned)


def test_a_sender_change_concerns_every_operator_and_that_senders_psvas_only() -> None:
    record = started("JUMIA")
    assert [d.party_id for d in record.deliveries] == ["atlas", "iam", "orange"]
    assert {d.status for d in record.deliveries} == {events_pb2.DELIVERY_STATUS_PENDING}
    assert (record.change_position.partition, record.change_position.offset) == (3, 7)
    assert not record.done


def test_a_global_change_concerns_every_operator_and_every_psva() -> None:
    record = started("")
    assert [d.party_id for d in record.deliveries] == ["atlas", "iam", "orange", "sahara"]


def test_done_only_when_every_concerned_party_applied_in_any_order_and_repeats() -> None:
    log = ProgressLog()
    tracker = ProofTracker(log)
    log.advance("iam", OP, 3, 8, 1_500)  # a party past the change before the proof starts
    assert tracker.open(started("JUMIA")) == []
    log.advance("orange", OP, 3, 8, 1_700)
    assert tracker.advanced("orange", 3) == []
    log.advance("sahara", PSVA, 3, 20, 1_800)  # not concerned: changes nothing
    assert tracker.advanced("sahara", 3) == []
    log.advance("atlas", PSVA, 3, 7, 1_900)  # at the change, not past it
    assert tracker.advanced("atlas", 3) == []
    log.advance("atlas", PSVA, 3, 9, 2_100)
    (record,) = tracker.advanced("atlas", 3)
    assert record.done and record.done_time.ToMilliseconds() == 2_100
    assert {d.party_id: d.applied_time.ToMilliseconds() for d in record.deliveries} == {
        "atlas": 2_100,
        "iam": 1_500,
        "orange": 1_700,
    }
    assert not log.advance("atlas", PSVA, 3, 9, 9_999)  # a repeat changes nothing
    assert tracker.advanced("atlas", 3) == [] and len(tracker) == 0
    assert done_record(started("JUMIA"), log) == record  # the same progress, the same proof


def test_only_the_heads_of_a_partys_scopes_wait_and_later_changes_follow_in_order() -> None:
    log = ProgressLog()
    tracker = ProofTracker(log)
    for offset, event in ((7, "a"), (9, "b"), (12, "c")):
        tracker.open(started("", offset, event))
    tracker.open(started("JUMIA", 8, "j"))
    for party in ("iam", "orange", "sahara"):
        log.advance(party, OP, 3, 100, 2_000)
        tracker.advanced(party, 3)
    log.advance("atlas", PSVA, 3, 10, 2_500)
    done = tracker.advanced("atlas", 3)
    assert sorted(r.event_id for r in done) == ["a", "b", "j"] and tracker.is_open("c")
    tracker.drop_partition(3)
    assert len(tracker) == 0 and not tracker.is_open("c")


def test_a_change_older_than_the_kept_history_is_dated_later_never_earlier() -> None:
    log = ProgressLog(history=2)
    for offset, at in ((5, 1_000), (10, 2_000), (15, 3_000)):
        log.advance("iam", OP, 0, offset, at)
    assert log.applied_time("iam", 0, 12) == 3_000
    assert log.applied_time("iam", 0, 3) == 2_000  # truly 1_000; that advance was forgotten
    assert log.applied_time("iam", 0, 15) is None and log.position("iam", 0) == 15


def test_one_progress_receipt_speaks_for_several_parties_and_fills_an_open_proof() -> None:
    log = ProgressLog()
    receipt = progress_receipt([("iam", OP, {3: 8}, 1_800), ("atlas", PSVA, {3: 8, 4: 2}, 1_850)])
    assert log.apply(receipt.progress) == [("iam", 3), ("atlas", 3), ("atlas", 4)]
    assert log.apply(receipt.progress) == []  # read twice: nothing moves
    shown = with_progress(started("JUMIA"), log)
    assert {d.party_id: d.status for d in shown.deliveries} == {
        "atlas": events_pb2.DELIVERY_STATUS_APPLIED,
        "iam": events_pb2.DELIVERY_STATUS_APPLIED,
        "orange": events_pb2.DELIVERY_STATUS_PENDING,
    }
    assert not shown.done


def test_parties_that_moved_together_pop_each_shared_scope_once_and_in_order() -> None:
    log = ProgressLog()
    tracker = ProofTracker(log)
    for offset, event in ((7, "a"), (9, "b")):
        tracker.open(started("", offset, event))
    tracker.open(started("JUMIA", 8, "j"))
    moved = []
    for party, kind in (("iam", OP), ("orange", OP), ("sahara", PSVA), ("atlas", PSVA)):
        log.advance(party, kind, 3, 10, 2_000)
        moved.append((party, 3))
    done = tracker.advanced_all(moved)
    assert sorted(r.event_id for r in done) == ["a", "b", "j"]
    assert [r.event_id for r in done if r.event_id != "j"] == ["a", "b"]  # in offset order
    assert len(tracker) == 0


def test_a_partys_positions_are_its_own_partitions() -> None:
    log = ProgressLog()
    log.advance("atlas", PSVA, 3, 10, 1_000)
    log.advance("atlas", PSVA, 5, 4, 1_000)
    log.advance("sahara", PSVA, 3, 99, 1_000)
    assert log.positions("atlas") == {3: 10, 5: 4}
    assert log.positions("nobody") == {}
