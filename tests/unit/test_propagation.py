from stopsms.core.parties import PartiesDirectory, Party
from stopsms.notifier.app import pending_receipts
from stopsms.notifier.propagation import fold
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


def change(sender: str) -> events_pb2.SuppressionChanged:
    c = events_pb2.SuppressionChanged(
        event_id="e1", request_id="r1", party_id="iam", sender_id=sender
    )
    c.action_time.FromMilliseconds(1_000)
    return c


def applied(party: str, kind: int, at_ms: int) -> events_pb2.DeliveryReceipt:
    r = events_pb2.DeliveryReceipt(
        event_id="e1", party_id=party, party_kind=kind, status=events_pb2.DELIVERY_STATUS_APPLIED
    )
    r.applied_time.FromMilliseconds(at_ms)
    return r


def test_a_sender_change_concerns_every_operator_and_that_senders_psvas_only() -> None:
    receipts = pending_receipts(change("JUMIA"), 3, 7, DIRECTORY)
    assert len(receipts) == 1 and receipts[0].party_id == ""
    assert list(receipts[0].concerned_party_ids) == ["atlas", "iam", "orange"]


def test_a_global_change_concerns_every_operator_and_every_psva() -> None:
    (receipt,) = pending_receipts(change(""), 3, 7, DIRECTORY)
    assert list(receipt.concerned_party_ids) == ["atlas", "iam", "orange", "sahara"]


def test_done_only_when_every_concerned_party_applied_in_any_order_and_repeats() -> None:
    pending = pending_receipts(change("JUMIA"), 3, 7, DIRECTORY)
    state, _ = fold(None, applied("iam", OP, 1_500))  # an APPLIED before the PENDING
    state, _ = fold(state, pending[0])
    assert not state.done
    for receipt in pending[1:]:
        state, _ = fold(state, receipt)
    state, _ = fold(state, applied("orange", OP, 1_700))
    assert not state.done
    state, changed = fold(state, applied("atlas", PSVA, 2_100))
    assert changed and state.done
    record = state.to_record()
    assert record.done and record.done_time.ToMilliseconds() == 2_100
    assert {d.party_id: d.applied_time.ToMilliseconds() for d in record.deliveries} == {
        "atlas": 2_100,
        "iam": 1_500,
        "orange": 1_700,
    }
    again, changed = fold(state, applied("atlas", PSVA, 9_999))
    assert not changed and again.done_time_ms == 2_100


def test_recent_changes_cover_a_contiguous_span_and_forget_what_all_confirmed() -> None:
    from stopsms.notifier.app import RecentChanges

    recent = RecentChanges(capacity=4)
    for offset in range(3, 8):
        recent.add(0, offset, change("JUMIA"))
    assert recent.span(0) == (4, 8)  # capacity: the oldest entry fell out
    recent.add(0, 6, None)  # a redelivery from offset 6 replaces what followed it
    assert recent.span(0) == (4, 7)
    assert [o for o, _ in recent.between(0, 5, 10)] == [5, 6]
    recent.prune(0, 6)
    assert recent.span(0) == (6, 7)
    assert recent.span(1) is None


def test_one_applied_receipt_may_speak_for_several_parties() -> None:
    (pending,) = pending_receipts(change("JUMIA"), 3, 7, DIRECTORY)
    state, _ = fold(None, pending)
    round_ = events_pb2.DeliveryReceipt(
        event_id="e1", status=events_pb2.DELIVERY_STATUS_APPLIED, applied_party_ids=["iam", "atlas"]
    )
    round_.applied_time.FromMilliseconds(1_800)
    state, changed = fold(state, round_)
    assert changed and state.applied() == {"iam", "atlas"} and not state.done
    state, changed = fold(state, round_)
    assert not changed
    state, _ = fold(state, applied("orange", OP, 2_000))
    assert state.done and state.done_time_ms == 2_000
