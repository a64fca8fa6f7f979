"""Complaints: reading a forwarded SMS, filing it through intake, and the assessment's rule."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from stopsms.adapters.bus import InMemoryPublisher
from stopsms.adapters.identity import PARTY_HEADER, Authenticator
from stopsms.adapters.serving import GrpcEndpoint, servicer_registration
from stopsms.adapters.settings import IntakeSettings
from stopsms.console.assessor import received_time_readable
from stopsms.domain import complaints as c
from stopsms.domain.message_check import LinkSite, read_text
from stopsms.domain.privacy import Key, Pseudonymiser
from stopsms.domain.senders import ACTIVE, SUSPENDED
from stopsms.domain.topics import Topics
from stopsms.intake.citizen_messages import CitizenMessages
from stopsms.intake.complaints import ComplaintDesk
from stopsms.intake.server import SERVICE_NAME, IntakeServicer
from stopsms.intake.submission import InMemoryRequestReferences, RequestSubmitter
from stopsms.tools.senders import local_directory
from stopsms.v1 import events_pb2, intake_pb2, intake_pb2_grpc, senders_pb2

PSEUDONYMISER = Pseudonymiser(Key("pk1", bytes(32)), [Key("dk1", bytes(range(32)))])


@pytest.mark.parametrize(
    ("text", "forwarded"),
    [
        ("SPAM Promo -50% chez X", "Promo -50% chez X"),
        ("spam: Soldes", "Soldes"),
        ("Plainte - Offre", "Offre"),
        ("Réclamation Offre", "Offre"),
        ("شكاية عرض خاص", "عرض خاص"),
        ("chikaya promo", "promo"),
        ("SPAM", ""),
    ],
)
def test_a_complaint_keyword_is_read_and_removed(text: str, forwarded: str) -> None:
    assert c.read_complaint(text) == (True, forwarded)


@pytest.mark.parametrize("text", ["spammer du texte", "STOP", "plaintes", "bonjour"])
def test_other_texts_are_not_complaints(text: str) -> None:
    assert c.read_complaint(text)[0] is False


@pytest.fixture
async def intake():
    directory = local_directory()
    publisher = InMemoryPublisher()
    submitter = RequestSubmitter(
        publisher, PSEUDONYMISER, directory, Topics(), 12, InMemoryRequestReferences()
    )
    servicer = IntakeServicer(
        IntakeSettings(public_base_url="https://stopsms.ma/"),
        submitter=submitter,
        citizens=CitizenMessages(publisher, PSEUDONYMISER, Topics(), 12),
        publisher=publisher,
        auth=Authenticator(directory, insecure=True),
        complaints=ComplaintDesk(publisher, submitter, PSEUDONYMISER, Topics(), 12),
    )
    endpoint = GrpcEndpoint(
        "127.0.0.1:0",
        [servicer_registration(servicer, intake_pb2.DESCRIPTOR.services_by_name["IntakeService"])],
        [SERVICE_NAME],
    )
    await endpoint.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{endpoint.port}")
    yield intake_pb2_grpc.IntakeServiceStub(channel), publisher
    await channel.close()
    await endpoint.stop(0)


def complaint(**overrides) -> intake_pb2.SubmitComplaintRequest:
    fields = dict(
        request_id="c-1",
        msisdn="06 12 34 56 78",
        from_address="JUMIA",
        text="SPAM Soldes -70% chez Jumia! https://jumia.ma/x",
    )
    fields.update(overrides)
    return intake_pb2.SubmitComplaintRequest(**fields)


def filed(publisher) -> list[events_pb2.ComplaintFiled]:
    return [
        events_pb2.ComplaintFiled.FromString(value)
        for _, value, _ in publisher.records.get("stopsms.complaints.v1", [])
    ]


async def test_a_complaint_is_filed_once_sealed_and_acknowledged_with_its_reference(
    intake,
) -> None:
    stub, publisher = intake
    md = ((PARTY_HEADER, "iam"),)
    answer = await stub.SubmitComplaint(complaint(), metadata=md)
    again = await stub.SubmitComplaint(complaint(), metadata=md)
    assert answer == again, "a retry with the same request id was not given the first answer"
    assert answer.status == intake_pb2.SUBMISSION_STATUS_ACCEPTED
    assert answer.reference.startswith("SPAM-") and answer.sender_id == "JUMIA"
    [record] = filed(publisher)
    assert (record.complaint_id, record.reference) == (answer.complaint_id, answer.reference)
    assert record.channel == events_pb2.CHANNEL_SMS and not record.origin_unknown
    assert PSEUDONYMISER.unseal_text(record.sealed_text) == (
        "Soldes -70% chez Jumia! https://jumia.ma/x"
    )
    [(key, value, _)] = publisher.records["stopsms.complaints.v1"]
    assert key == record.subject.encode()
    assert b"612345678" not in key + value and b"Soldes" not in value
    [ack] = [
        m
        for _, v, _ in publisher.records["stopsms.outbound.v1"]
        if (m := events_pb2.OutboundMessage.FromString(v)).purpose
        == events_pb2.OUTBOUND_PURPOSE_COMPLAINT_RECEIVED
    ]
    assert answer.reference in ack.text and ack.subject == record.subject


async def test_a_phone_number_origin_is_sealed_and_an_unknown_one_is_asked_for(intake) -> None:
    stub, publisher = intake
    md = ((PARTY_HEADER, "iam"),)
    informal = await stub.SubmitComplaint(
        complaint(request_id="c-2", from_address="+212 6 99 88 77 66"), metadata=md
    )
    foreign = await stub.SubmitComplaint(
        complaint(request_id="c-3", from_address="0033612345678"), metadata=md
    )
    unknown = await stub.SubmitComplaint(complaint(request_id="c-4", from_address=""), metadata=md)
    assert informal.undeclared_sender and foreign.undeclared_sender and informal.sender_id == ""
    assert unknown.origin_unknown and not unknown.undeclared_sender
    by_id = {record.complaint_id: record for record in filed(publisher)}
    number = by_id[informal.complaint_id]
    assert number.origin_subject and PSEUDONYMISER.unseal(number.origin_sealed_msisdn) == (
        "+212699887766"
    )
    assert b"699887766" not in number.SerializeToString()
    asked = [
        events_pb2.OutboundMessage.FromString(v).text
        for _, v, _ in publisher.records["stopsms.outbound.v1"]
    ]
    assert any(unknown.reference in text and "nom ou du numero" in text for text in asked)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"request_id": ""}, "request_id"),
        ({"msisdn": "0522000000"}, "msisdn"),
        ({"from_address": "<script>"}, "from_address"),
        ({"text": "x" * 1601}, "text"),
        ({"received_time": Timestamp(seconds=4_000_000_000)}, "received_time"),
        # found by the fuzzers: published, it stopped the console's assessor
        ({"received_time": Timestamp(seconds=1_700_000_000, nanos=-500_564_001)}, "received_time"),
        ({"received_time": Timestamp(seconds=1_700_000_000, nanos=1_000_000_000)}, "received_time"),
    ],
)
async def test_bad_input_names_the_field_and_files_nothing(intake, overrides, field) -> None:
    stub, publisher = intake
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.SubmitComplaint(complaint(**overrides), metadata=((PARTY_HEADER, "iam"),))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details().startswith(field)
    assert not filed(publisher)


async def test_only_operators_forward_complaints_and_kafka_silence_is_unavailable(
    intake,
) -> None:
    stub, publisher = intake
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.SubmitComplaint(complaint(), metadata=((PARTY_HEADER, "atlas-sms"),))
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    publisher.failing = True
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.SubmitComplaint(complaint(), metadata=((PARTY_HEADER, "iam"),))
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    publisher.failing = False
    answer = await stub.SubmitComplaint(complaint(), metadata=((PARTY_HEADER, "iam"),))
    assert answer.status == intake_pb2.SUBMISSION_STATUS_ACCEPTED


# The assessment's rule, on plain data.

MINUTE = 60_000
RECEIVED = 1_800_000_000_000
SITE = LinkSite("https://stopsms.ma/")


def filed_complaint(sender_id: str = "JUMIA") -> events_pb2.ComplaintFiled:
    record = events_pb2.ComplaintFiled(
        complaint_id="cid", reference="SPAM-CID", subject="pk1:aa", sender_id=sender_id
    )
    record.received_time.FromMilliseconds(RECEIVED)
    return record


def jumia(status: int = ACTIVE) -> senders_pb2.Sender:
    return senders_pb2.Sender(
        sender_id="JUMIA",
        sending_party_ids=["atlas-sms"],
        status=status,  # type: ignore[arg-type]
    )


def proof(done: bool, *applied_minutes_before: int) -> events_pb2.PropagationRecord:
    record = events_pb2.PropagationRecord(event_id="opt-out-1", done=done)
    for party, minutes in zip(("iam", "atlas-sms"), applied_minutes_before, strict=False):
        delivery = record.deliveries.add(party_id=party, status=events_pb2.DELIVERY_STATUS_APPLIED)
        delivery.applied_time.FromMilliseconds(RECEIVED - minutes * MINUTE)
    return record


WITH_MENTION = "Soldes chez Jumia. STOP au 1313"
WITHOUT = "Soldes chez Jumia, -70% sur tout"


def evidence(**overrides) -> c.Evidence:
    fields = dict(
        complaint=filed_complaint(),
        sender=jumia(),
        reading=read_text(WITH_MENTION, SITE),
        link_valid=False,
        history=(),
        proof=None,
    )
    fields.update(overrides)
    return c.Evidence(**fields)  # type: ignore[arg-type]


def opted_out(scope: str = "JUMIA", minutes_before: int = 60) -> c.Decision:
    return c.Decision(scope, events_pb2.STATE_SUPPRESSED, RECEIVED - minutes_before * MINUTE, "e1")


def test_a_message_after_the_opt_out_names_it_and_each_partys_applied_time() -> None:
    assessed = c.assess(
        evidence(history=[opted_out()], proof=proof(True, 59, 58)), now_ms=RECEIVED + MINUTE
    )
    assert assessed.finding == c.SENT_AFTER_OPT_OUT and assessed.final
    assert (assessed.opt_out_event_id, assessed.opt_out_scope) == ("e1", "JUMIA")
    assert assessed.decided_before_message_ms == 60 * MINUTE
    assert [(a.party_id, a.applied_before_message_ms) for a in assessed.applied] == [
        ("iam", 59 * MINUTE),
        ("atlas-sms", 58 * MINUTE),
    ]


def test_a_global_opt_out_covers_every_sender_and_a_later_opt_in_ends_it() -> None:
    everything = [opted_out("*", 120)]
    assert c.assess(evidence(history=everything), RECEIVED).finding == c.SENT_AFTER_OPT_OUT
    back_in = [
        *everything,
        c.Decision("*", events_pb2.STATE_ALLOWED, RECEIVED - 30 * MINUTE, "e2"),
    ]
    assert c.assess(evidence(history=back_in), RECEIVED).finding == c.NO_FINDING


def test_an_opt_out_decided_after_the_message_is_no_finding() -> None:
    later = [c.Decision("JUMIA", events_pb2.STATE_SUPPRESSED, RECEIVED + MINUTE, "e3")]
    assert c.assess(evidence(history=later), RECEIVED).finding == c.NO_FINDING


def test_an_assessment_waits_for_the_proof_to_be_final() -> None:
    pending = c.assess(evidence(history=[opted_out()], proof=proof(False, 59)), RECEIVED)
    assert pending.finding == c.SENT_AFTER_OPT_OUT and not pending.final
    assert not c.assess(evidence(history=[opted_out()], proof=None), RECEIVED).final


def test_undeclared_suspended_and_unmentioned_senders_are_found_most_serious_first() -> None:
    informal = c.assess(
        evidence(sender=None, reading=read_text(WITHOUT, SITE), complaint=filed_complaint("X1")),
        RECEIVED,
    )
    assert list(informal.findings) == [c.UNDECLARED_SENDER, c.NO_STOPSMS_MENTION]
    suspended = c.assess(evidence(sender=jumia(SUSPENDED)), RECEIVED)
    assert suspended.finding == c.SENDER_SUSPENDED and suspended.sender_declared
    assert c.assess(evidence(reading=read_text(WITHOUT, SITE)), RECEIVED).finding == (
        c.NO_STOPSMS_MENTION
    )
    assert (
        c.assess(evidence(reading=read_text(WITHOUT, SITE), link_valid=True), RECEIVED).finding
        == c.NO_FINDING
    )


def test_a_valid_message_from_an_active_sender_before_any_opt_out_is_no_finding() -> None:
    assessed = c.assess(evidence(), RECEIVED)
    assert list(assessed.findings) == [c.NO_FINDING]
    assert assessed.sender_party_ids == ["atlas-sms"] and assessed.mention_present


async def test_the_citizens_answer_naming_the_sender_completes_the_complaint(intake) -> None:
    stub, publisher = intake
    md = ((PARTY_HEADER, "iam"),)
    asked = await stub.SubmitComplaint(complaint(request_id="c-u", from_address=""), metadata=md)
    assert asked.origin_unknown
    # The citizen answers the SMS that asked: the reference, then the name their phone showed.
    answer = complaint(
        request_id="c-u-answer", from_address="", text=f"{asked.reference.lower()} jumia"
    )
    completed = await stub.SubmitComplaint(answer, metadata=md)
    assert completed == await stub.SubmitComplaint(answer, metadata=md)  # a retry: the same
    assert (completed.complaint_id, completed.reference) == (asked.complaint_id, asked.reference)
    assert completed.sender_id == "JUMIA" and not completed.origin_unknown
    first, again = filed(publisher)
    assert first.complaint_id == again.complaint_id and first.origin_unknown
    assert again.sender_id == "JUMIA" and not again.origin_unknown
    assert again.sealed_text == first.sealed_text and again.received_time == first.received_time
    # Another number's reference is no answer: it is a complaint of its own.
    other = complaint(
        request_id="c-other", msisdn="0612000000", from_address="", text=f"{asked.reference} X"
    )
    stranger = await stub.SubmitComplaint(other, metadata=md)
    assert stranger.complaint_id != asked.complaint_id and stranger.origin_unknown


def test_a_complaint_whose_sender_is_unknown_is_not_called_undeclared_and_waits() -> None:
    unknown = filed_complaint(sender_id="")
    unknown.origin_unknown = True
    assessed = c.assess(evidence(complaint=unknown, sender=None), RECEIVED)
    assert c.UNDECLARED_SENDER not in assessed.findings
    assert not assessed.final  # made again once the citizen names the sender
    # an opt-out of everything still holds against whoever sent it
    after_all = c.assess(
        evidence(complaint=unknown, sender=None, history=(opted_out("*"),)), RECEIVED
    )
    assert after_all.finding == c.SENT_AFTER_OPT_OUT


def test_a_filed_complaint_whose_received_time_is_not_a_time_is_assessed_as_of_its_filing() -> None:
    record = filed_complaint()
    record.filed_time.FromMilliseconds(RECEIVED + 60_000)
    record.received_time.nanos = -500_564_001  # filed before intake refused such times
    assert not received_time_readable(record)
    assert record.received_time.ToMilliseconds() == RECEIVED + 60_000
    assert received_time_readable(record)
