"""The evidence of a case: masked numbers, the timeline, the pack's PDF and its signatures."""

from __future__ import annotations

import json

import pytest

from stopsms.domain import compliance, evidence
from stopsms.domain.compliance import (
    DAY_MS,
    ComplaintTally,
    ComplianceBook,
    bucket_of,
    bucket_top,
    percentile,
)
from stopsms.v1 import events_pb2, regulator_pb2

T0 = 1_790_000_000_000


@pytest.mark.parametrize(
    ("e164", "shown"),
    [
        ("+212612345678", "+212 6•• •• •• 78"),
        ("+212522123456", "+212 5•• •• •• 56"),
        ("+33612345678", "+336 ••••••78"),
        ("0612", "••••"),
    ],
)
def test_numbers_are_masked_but_for_the_country_the_first_and_the_last_two_digits(
    e164: str, shown: str
) -> None:
    assert evidence.mask_number(e164) == shown


def complaint_and_assessment() -> tuple[
    events_pb2.ComplaintFiled, events_pb2.ComplaintAssessed, events_pb2.PropagationRecord
]:
    complaint = events_pb2.ComplaintFiled(
        complaint_id="c1", reference="SPAM-ABCDEF12", party_id="iam", sender_id="JUMIA"
    )
    complaint.received_time.FromMilliseconds(T0)
    complaint.filed_time.FromMilliseconds(T0 + 60_000)
    assessed = events_pb2.ComplaintAssessed(
        complaint_id="c1",
        reference="SPAM-ABCDEF12",
        finding=events_pb2.COMPLAINT_FINDING_SENT_AFTER_OPT_OUT,
        findings=[events_pb2.COMPLAINT_FINDING_SENT_AFTER_OPT_OUT],
        opt_out_scope="JUMIA",
        opt_out_event_id="e-1",
        decided_before_message_ms=3_600_000,
    )
    assessed.opt_out_decided_time.FromMilliseconds(T0 - 3_600_000)
    for party, before in (("iam", 3_599_000), ("atlas-sms", 3_590_000)):
        applied = assessed.applied.add(party_id=party, applied_before_message_ms=before)
        applied.applied_time.FromMilliseconds(T0 - before)
    proof = events_pb2.PropagationRecord(event_id="e-1", origin_party_id="link", done=True)
    proof.action_time.FromMilliseconds(T0 - 3_600_100)
    return complaint, assessed, proof


def test_the_timeline_runs_from_the_opt_out_to_the_complaint() -> None:
    steps = evidence.timeline(*complaint_and_assessment())
    kinds = [s.kind for s in steps]
    assert kinds == [
        regulator_pb2.TIMELINE_EVENT_KIND_OPT_OUT_REQUESTED,
        regulator_pb2.TIMELINE_EVENT_KIND_OPT_OUT_DECIDED,
        regulator_pb2.TIMELINE_EVENT_KIND_PARTY_APPLIED,
        regulator_pb2.TIMELINE_EVENT_KIND_PARTY_APPLIED,
        regulator_pb2.TIMELINE_EVENT_KIND_MESSAGE_RECEIVED,
        regulator_pb2.TIMELINE_EVENT_KIND_COMPLAINT_FILED,
    ]
    assert [s.party_id for s in steps][2:4] == ["iam", "atlas-sms"]
    assert "60 min avant le message" in steps[2].detail


def signed_pack(tmp_path) -> tuple[evidence.ExportSigner, bytes, bytes]:  # type: ignore[no-untyped-def]
    signer = evidence.ExportSigner.load(tmp_path / "export.pem", generate=True)
    complaint, assessed, proof = complaint_and_assessment()
    case = events_pb2.Case(case_id="k1", reference="CASE-00000001", sender_id="JUMIA")
    shown = regulator_pb2.CaseComplaint(
        assessment=assessed,
        complainant=evidence.mask_number("+212612345678"),
        origin="JUMIA",
        text="Soldes chez Jumia ! شكاية",
        timeline=evidence.timeline(complaint, assessed, proof),
    )
    lines = evidence.pack_lines(
        case,
        [shown],
        generated_ms=T0,
        generated_by="cndp",
        key_id=signer.key_id,
        full_numbers=False,
    )
    pdf = evidence.pdf_document(lines, "CASE-00000001")
    return signer, pdf, signer.sign(pdf, "CASE-00000001.pdf")


def test_the_pdf_is_a_pdf_with_the_masked_number_and_the_timeline(tmp_path) -> None:  # type: ignore[no-untyped-def]
    _, pdf, _ = signed_pack(tmp_path)
    assert pdf.startswith(b"%PDF-1.4") and pdf.rstrip().endswith(b"%%EOF")
    assert b"+212 6\x95\x95 \x95\x95 \x95\x95 78" in pdf  # the bullets, in WinAnsi
    assert b"612345678" not in pdf
    assert b"atlas-sms applique l'opposition" in pdf
    # the cross-reference table points at every object
    xref = int(pdf.rsplit(b"startxref\n", 1)[1].split(b"\n")[0])
    assert pdf[xref:].startswith(b"xref")


def test_a_signed_pack_verifies_and_one_changed_byte_does_not(tmp_path) -> None:  # type: ignore[no-untyped-def]
    signer, pdf, signature = signed_pack(tmp_path)
    public = evidence.load_public_key(signer.public_pem())
    assert evidence.verify(pdf, signature, public) == signer.key_id
    tampered = bytearray(pdf)
    tampered[len(pdf) // 2] ^= 0x01
    with pytest.raises(evidence.SignatureError, match="does not match"):
        evidence.verify(bytes(tampered), signature, public)
    other = evidence.ExportSigner.load(tmp_path / "other.pem", generate=True)
    with pytest.raises(evidence.SignatureError, match="signed with key"):
        evidence.verify(pdf, signature, evidence.load_public_key(other.public_pem()))
    with pytest.raises(evidence.SignatureError, match="unreadable"):
        evidence.verify(pdf, b"{}", public)
    assert json.loads(signature)["sha256"]


def test_the_signing_key_is_kept_and_reloaded(tmp_path) -> None:  # type: ignore[no-untyped-def]
    first = evidence.ExportSigner.load(tmp_path / "k.pem", generate=True)
    again = evidence.ExportSigner.load(tmp_path / "k.pem")
    assert first.key_id == again.key_id and len(first.key_id) == 16
    with pytest.raises(evidence.SignatureError, match="does not exist"):
        evidence.ExportSigner.load(tmp_path / "missing.pem")


def test_histogram_percentiles_are_within_five_percent() -> None:
    for ms in (1, 2, 17, 950, 4_321, 86_400_000):
        top = bucket_top(bucket_of(ms))
        assert ms <= top <= ms * 1.05 + 1
    from collections import Counter

    histogram = Counter(bucket_of(ms) for ms in range(1, 1001))
    assert 500 <= percentile(histogram, 0.5) <= 525
    assert 990 <= percentile(histogram, 0.99) <= 1040
    assert percentile(Counter(), 0.5) == 0


def proof(event: str, action_ms: int, applied: dict[str, int | None], done: bool):  # type: ignore[no-untyped-def]
    record = events_pb2.PropagationRecord(event_id=event, done=done)
    record.action_time.FromMilliseconds(action_ms)
    for party, at in applied.items():
        delivery = record.deliveries.add(party_id=party, party_kind=events_pb2.PARTY_KIND_PSVA)
        if at is not None:
            delivery.applied_time.FromMilliseconds(at)
    return record


def test_compliance_counts_each_party_once_per_change_by_day_and_lateness() -> None:
    book = ComplianceBook(objective_ms=5_000)
    book.record(proof("e1", T0, {"a": None, "b": T0 + 100}, done=False))
    book.record(proof("e1", T0, {"a": T0 + 9_000, "b": T0 + 100}, done=True))  # b again
    book.record(proof("e2", T0 + DAY_MS, {"a": T0 + DAY_MS + 200, "b": None}, done=False))
    now = T0 + DAY_MS + 60_000
    a = book.figures("a", T0 - DAY_MS, T0 + 2 * DAY_MS, now)
    assert a.applied == 2 and a.late == 1
    assert [d.applied for d in a.days] == [1, 1]
    b = book.figures("b", T0 - DAY_MS, T0 + 2 * DAY_MS, now)
    assert b.applied == 1 and b.late == 1  # e2 still pending a minute after the action
    assert 100 <= b.p50_ms <= 105
    assert book.figures("b", T0 + 2 * DAY_MS, T0 + 3 * DAY_MS, now).applied == 0


def test_compliance_forgets_done_proofs_and_counts_one_read_again_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(compliance, "RECENTLY_DONE", 2)
    book = ComplianceBook(objective_ms=5_000)
    for n in range(5):
        done = proof(f"e{n}", T0, {"a": T0 + 100}, done=True)
        book.record(done)
        book.record(done)  # read again at once: not counted twice
    book.record(proof("e9", T0, {"a": None}, done=False))
    assert book.figures("a", T0 - DAY_MS, T0 + DAY_MS, T0 + 1_000).applied == 5
    assert set(book._counted) == {"e9"} and len(book._done_ids) == 2  # open ones, latest done


def test_the_complaint_tally_follows_reassessments() -> None:
    tally = ComplaintTally()
    assessed = events_pb2.ComplaintAssessed(
        complaint_id="c1",
        sender_party_ids=["atlas-sms"],
        finding=events_pb2.COMPLAINT_FINDING_NO_STOPSMS_MENTION,
    )
    assessed.received_time.FromMilliseconds(T0)
    tally.record(assessed, "iam")
    tally.record(assessed, "iam")
    assert tally.count("atlas-sms", T0, T0 + 1) == 1 and tally.count("iam", T0, T0 + 1) == 1
    assessed.finding = events_pb2.COMPLAINT_FINDING_NO_FINDING
    tally.record(assessed, "iam")
    assert tally.count("iam", T0, T0 + 1) == 0
