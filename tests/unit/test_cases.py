"""Cases: complaints grouped by sender or originating address, opened by the policy."""

from __future__ import annotations

import pytest

from stopsms.domain import cases
from stopsms.domain.cases import CaseBook, CasePolicy, group_of, same_case
from stopsms.v1 import events_pb2

DAY = cases.DAY_MS
T0 = 1_790_000_000_000
SENT_AFTER = events_pb2.COMPLAINT_FINDING_SENT_AFTER_OPT_OUT
UNDECLARED = events_pb2.COMPLAINT_FINDING_UNDECLARED_SENDER
NO_MENTION = events_pb2.COMPLAINT_FINDING_NO_STOPSMS_MENTION
NO_FINDING = events_pb2.COMPLAINT_FINDING_NO_FINDING


def assessed(
    complaint_id: str,
    finding: int,
    received_ms: int,
    *,
    sender_id: str = "ACME",
    declared: bool = True,
    origin_subject: str = "",
    parties: tuple[str, ...] = ("atlas-sms",),
) -> events_pb2.ComplaintAssessed:
    record = events_pb2.ComplaintAssessed(
        complaint_id=complaint_id,
        sender_id=sender_id,
        sender_declared=declared,
        origin_subject=origin_subject,
        sender_party_ids=parties if declared else (),
        finding=finding,
        findings=[finding],
    )
    record.received_time.FromMilliseconds(received_ms)
    return record


def test_groups_declared_sender_informal_sender_id_and_phone_number() -> None:
    assert group_of(assessed("a", NO_MENTION, T0)) == "sender:ACME"
    assert group_of(assessed("b", UNDECLARED, T0, sender_id="PROMO", declared=False)) == (
        "informal:PROMO"
    )
    by_number = assessed("c", UNDECLARED, T0, sender_id="", declared=False, origin_subject="s1")
    assert group_of(by_number) == "number:s1"
    assert group_of(assessed("d", UNDECLARED, T0, sender_id="", declared=False)) is None


def test_the_first_complaint_sent_after_an_opt_out_opens_the_case() -> None:
    book = CaseBook()
    assert book.add(assessed("c1", SENT_AFTER, T0), "iam") == "sender:ACME"
    case = book.case("sender:ACME", now_ms=T0 + 5)
    assert case is not None
    assert case.kind == events_pb2.CASE_KIND_DECLARED_SENDER
    assert case.opened_by == events_pb2.CASE_OPENING_SENT_AFTER_OPT_OUT
    assert case.opening_complaint_id == "c1"
    assert list(case.party_ids) == ["atlas-sms", "iam"]
    assert case.reference.startswith("CASE-") and len(case.reference) == 13
    assert case.revision == 1 and case.opened_time.ToMilliseconds() == T0 + 5


def test_five_complaints_within_ten_days_open_an_informal_sector_case() -> None:
    book = CaseBook()
    for n in range(4):
        complaint = assessed(
            f"c{n}", UNDECLARED, T0 + n * 2 * DAY, sender_id="PROMO", declared=False
        )
        assert book.add(complaint, "orange") is None
    assert book.case("informal:PROMO", T0) is None
    fifth = assessed("c4", UNDECLARED, T0 + 8 * DAY, sender_id="PROMO", declared=False)
    assert book.add(fifth, "inwi") == "informal:PROMO"
    case = book.case("informal:PROMO", T0 + 9 * DAY)
    assert case is not None
    assert case.kind == events_pb2.CASE_KIND_INFORMAL_SECTOR
    assert case.opened_by == events_pb2.CASE_OPENING_COMPLAINT_THRESHOLD
    assert case.opening_complaint_id == "c4"
    assert case.complaint_count == 5
    assert [(f.finding, f.count) for f in case.findings] == [(UNDECLARED, 5)]
    assert list(case.party_ids) == ["inwi", "orange"]
    assert case.first_received_time.ToMilliseconds() == T0
    assert case.last_received_time.ToMilliseconds() == T0 + 8 * DAY


def test_complaints_spread_wider_than_the_window_open_nothing() -> None:
    book = CaseBook()
    for n in range(10):
        complaint = assessed(f"c{n}", NO_MENTION, T0 + n * 3 * DAY)
        assert book.add(complaint) is None  # never 5 within 10 days
    assert book.open_groups() == []


def test_a_late_complaint_filling_the_window_from_the_middle_opens_it() -> None:
    book = CaseBook()
    for n, day in enumerate((0, 1, 3, 9)):
        assert book.add(assessed(f"c{n}", NO_MENTION, T0 + day * DAY)) is None
    assert book.add(assessed("late", NO_MENTION, T0 + 2 * DAY)) == "sender:ACME"


def test_complaints_without_finding_do_not_count() -> None:
    book = CaseBook()
    for n in range(8):
        assert book.add(assessed(f"c{n}", NO_FINDING, T0 + n)) is None
    assert book.open_groups() == []


def test_a_case_stays_open_and_its_counts_follow_reassessments() -> None:
    book = CaseBook(CasePolicy(complaints=2, window_ms=DAY))
    book.add(assessed("c1", NO_MENTION, T0))
    assert book.add(assessed("c2", NO_MENTION, T0 + 1)) == "sender:ACME"
    first = book.case("sender:ACME", T0 + 2)
    assert first is not None
    # a late decision turns c1 into a complaint sent after an opt-out: counts move
    assert book.add(assessed("c1", SENT_AFTER, T0)) == "sender:ACME"
    second = book.case("sender:ACME", T0 + 3, before=first)
    assert second is not None
    assert [(f.finding, f.count) for f in second.findings] == [(SENT_AFTER, 1), (NO_MENTION, 1)]
    assert second.opened_by == first.opened_by and second.opened_time == first.opened_time
    assert second.revision == 2
    # c2 turns out to have no finding: the case stays open
    assert book.add(assessed("c2", NO_FINDING, T0 + 1)) == "sender:ACME"
    assert book.case("sender:ACME", T0 + 4) is not None


def test_the_same_assessment_again_changes_nothing() -> None:
    book = CaseBook()
    book.add(assessed("c1", SENT_AFTER, T0), "iam")
    assert book.add(assessed("c1", SENT_AFTER, T0), "iam") is None
    a = book.case("sender:ACME", T0)
    b = book.case("sender:ACME", T0 + 100, before=a)
    assert a is not None and b is not None and same_case(a, b)


def test_complaints_of_a_group_are_listed_oldest_message_first() -> None:
    book = CaseBook()
    book.add(assessed("later", NO_MENTION, T0 + 10))
    book.add(assessed("earlier", NO_MENTION, T0))
    assert book.complaint_ids("sender:ACME") == ["earlier", "later"]
    assert book.group_of_complaint("later") == "sender:ACME"


@pytest.mark.parametrize(("complaints", "window"), [(0, DAY), (3, -1)])
def test_a_policy_that_can_never_hold_is_refused(complaints: int, window: int) -> None:
    with pytest.raises(ValueError):
        CasePolicy(complaints=complaints, window_ms=window)


def test_the_informal_senders_most_complained_about_come_first_opened_or_not() -> None:
    book = CaseBook()
    for n in range(3):
        book.add(assessed(f"a{n}", UNDECLARED, T0 + n, sender_id="PROMO", declared=False))
    book.add(assessed("b", UNDECLARED, T0, sender_id="", declared=False, origin_subject="s1"))
    book.add(assessed("c", NO_MENTION, T0))  # a declared sender: not the informal sector
    assert book.most_complained_informal() == [("PROMO", "", 3, False), ("", "s1", 1, False)]
