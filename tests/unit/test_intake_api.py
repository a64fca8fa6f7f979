"""Intake's API with an in-memory broker: bad input refused whole, Kafka down is UNAVAILABLE."""

import time

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from stopsms.adapters.bus import InMemoryPublisher
from stopsms.adapters.identity import PARTY_HEADER, Authenticator
from stopsms.adapters.kafka import PublishFailed
from stopsms.adapters.serving import GrpcEndpoint, servicer_registration
from stopsms.adapters.settings import IntakeSettings
from stopsms.domain.parties import PartiesDirectory
from stopsms.domain.privacy import Key, Pseudonymiser
from stopsms.domain.senders import SenderRegister
from stopsms.domain.topics import Topics
from stopsms.intake.citizen_messages import CitizenMessages
from stopsms.intake.server import SERVICE_NAME, IntakeServicer
from stopsms.intake.submission import InMemoryRequestReferences, RequestSubmitter
from stopsms.tools.senders import local_directory
from stopsms.v1 import events_pb2, intake_pb2, intake_pb2_grpc, senders_pb2


@pytest.fixture
def directory() -> PartiesDirectory:
    return local_directory()


@pytest.fixture
async def intake(directory: PartiesDirectory):
    settings = IntakeSettings(public_base_url="https://stopsms.ma/")
    publisher = InMemoryPublisher()
    pseudonymiser = Pseudonymiser(Key("pk1", bytes(32)), [Key("dk1", bytes(range(32)))])
    submitter = RequestSubmitter(
        publisher, pseudonymiser, directory, Topics(), 12, InMemoryRequestReferences()
    )
    servicer = IntakeServicer(
        settings,
        submitter=submitter,
        citizens=CitizenMessages(publisher, pseudonymiser, Topics(), 12),
        publisher=publisher,
        auth=Authenticator(directory, insecure=True),
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


def as_party(party: str):
    return ((PARTY_HEADER, party),)


def opt_out(**overrides) -> intake_pb2.SubmitOptOutRequest:
    fields = dict(
        request_id="r-1", msisdn="06 12 34 56 78", sender_id="JUMIA", channel=events_pb2.CHANNEL_API
    )
    fields.update(overrides)
    return intake_pb2.SubmitOptOutRequest(**fields)


async def test_an_opt_out_is_published_once_acknowledged_with_no_number_in_clear(intake) -> None:
    stub, publisher = intake
    reply = await stub.SubmitOptOut(opt_out(), metadata=as_party("atlas-sms"))
    assert reply.status == intake_pb2.SUBMISSION_STATUS_ACCEPTED
    [(key, value, _)] = publisher.records["stopsms.requests.v1"]
    request = events_pb2.PreferenceRequested.FromString(value)
    assert request.event_id == reply.event_id and key == request.subject.encode()
    assert b"612345678" not in key + value


async def test_a_retry_with_the_same_request_id_is_the_same_request(intake) -> None:
    stub, _ = intake
    first = await stub.SubmitOptOut(opt_out(), metadata=as_party("iam"))
    again = await stub.SubmitOptOut(opt_out(), metadata=as_party("iam"))
    assert first.event_id == again.event_id


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (opt_out(msisdn="0522123456"), "msisdn"),
        (opt_out(msisdn="+33612345678"), "msisdn"),
        (opt_out(msisdn=""), "msisdn"),
        (opt_out(request_id=""), "request_id"),
        (opt_out(request_id="x" * 200), "request_id"),
        (opt_out(channel=events_pb2.CHANNEL_UNSPECIFIED), "channel"),
        (opt_out(channel=99), "channel"),
        (opt_out(sender_id="<script>"), "sender_id"),
        (opt_out(msisdn="0" * 5000), "msisdn"),
        (opt_out(action_time=Timestamp(seconds=1_700_000_000, nanos=-1)), "action_time"),
    ],
)
async def test_bad_input_names_the_field_and_publishes_nothing(intake, request_, field) -> None:
    stub, publisher = intake
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.SubmitOptOut(request_, metadata=as_party("iam"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details().startswith(field)
    assert not publisher.records


async def test_an_unknown_or_unentitled_party_is_denied(intake) -> None:
    stub, publisher = intake
    for party in ("someone", "cndp"):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.SubmitOptOut(opt_out(), metadata=as_party(party))
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.SubmitOptOut(opt_out())
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.IssueStopLink(
            intake_pb2.IssueStopLinkRequest(msisdn="0612345678", sender_id="KITEA"),
            metadata=as_party("atlas-sms"),
        )
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert not publisher.records


async def test_kafka_silence_is_unavailable_and_the_retry_is_safe(intake) -> None:
    stub, publisher = intake
    publisher.failing = True
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.SubmitOptOut(opt_out(), metadata=as_party("iam"))
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    publisher.failing = False
    reply = await stub.SubmitOptOut(opt_out(), metadata=as_party("iam"))
    assert reply.status == intake_pb2.SUBMISSION_STATUS_ACCEPTED


async def test_keywords_pick_the_scope_and_flag_undeclared_senders(intake) -> None:
    stub, publisher = intake
    md = as_party("iam")
    kw = intake_pb2.SubmitKeywordRequest
    to_sender = await stub.SubmitKeyword(
        kw(request_id="k1", msisdn="0612345678", sender_id="JUMIA", text="stop"), metadata=md
    )
    assert (to_sender.intent, to_sender.sender_id) == (intake_pb2.INTENT_OPT_OUT, "JUMIA")
    to_platform = await stub.SubmitKeyword(
        kw(request_id="k2", msisdn="0612345678", sender_id="STOPSMS", text="STOP"), metadata=md
    )
    assert to_platform.sender_id == ""
    all_ = await stub.SubmitKeyword(
        kw(request_id="k3", msisdn="0612345678", sender_id="JUMIA", text="stop all"), metadata=md
    )
    assert (all_.intent, all_.sender_id) == (intake_pb2.INTENT_OPT_OUT_ALL, "")
    informal = await stub.SubmitKeyword(
        kw(request_id="k4", msisdn="0612345678", sender_id="PROMO77", text="STOP"), metadata=md
    )
    assert informal.undeclared_sender
    chatter = await stub.SubmitKeyword(
        kw(request_id="k5", msisdn="0612345678", sender_id="JUMIA", text="bonjour"), metadata=md
    )
    assert chatter.status == intake_pb2.SUBMISSION_STATUS_IGNORED
    assert len(publisher.records["stopsms.requests.v1"]) == 4
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.SubmitKeyword(
            kw(request_id="k6", msisdn="0612345678", sender_id="JUMIA", text="STOP"),
            metadata=as_party("atlas-sms"),
        )
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_a_stop_to_a_senders_short_code_suppresses_the_sender_it_is_an_alias_of(
    intake, directory: PartiesDirectory
) -> None:
    stub, publisher = intake
    jumia = senders_pb2.Sender(
        sender_id="JUMIA",
        aliases=["3030"],
        sending_party_ids=["atlas-sms"],
        status=senders_pb2.SENDER_STATUS_ACTIVE,
    )
    directory.replace(directory.with_senders(SenderRegister.of([jumia])))
    kw = intake_pb2.SubmitKeywordRequest
    reply = await stub.SubmitKeyword(
        kw(request_id="a1", msisdn="0612345678", sender_id="3030", text="STOP"),
        metadata=as_party("iam"),
    )
    assert (reply.sender_id, reply.undeclared_sender) == ("JUMIA", False)
    await stub.SubmitOptOut(opt_out(request_id="a2", sender_id="3030"), metadata=as_party("iam"))
    recorded = [
        events_pb2.PreferenceRequested.FromString(value)
        for _, value, _ in publisher.records["stopsms.requests.v1"]
    ]
    assert [r.sender_id for r in recorded] == ["JUMIA", "JUMIA"]


async def test_links_are_short_and_batches_are_all_or_nothing(intake) -> None:
    stub, publisher = intake
    md = as_party("atlas-sms")
    link = await stub.IssueStopLink(
        intake_pb2.IssueStopLinkRequest(msisdn="0612345678", sender_id="JUMIA"), metadata=md
    )
    assert link.url.startswith("https://stopsms.ma/") and len(link.url) <= 30
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.IssueStopLink(intake_pb2.IssueStopLinkRequest(msisdn="0612345678"), metadata=md)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    batch = intake_pb2.IssueStopLinksRequest(
        requests=[
            intake_pb2.IssueStopLinkRequest(msisdn="0612345678", sender_id="JUMIA"),
            intake_pb2.IssueStopLinkRequest(msisdn="bad", sender_id="JUMIA"),
        ]
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.IssueStopLinks(batch, metadata=md)
    assert caught.value.details().startswith("requests[1].msisdn")
    assert len(publisher.records["stopsms.links.v1"]) == 1
    good = intake_pb2.IssueStopLinksRequest(
        requests=[
            intake_pb2.IssueStopLinkRequest(msisdn=f"06123456{i:02d}", sender_id="MARJANE")
            for i in range(50)
        ]
    )
    reply = await stub.IssueStopLinks(good, metadata=md)
    assert len({link.code for link in reply.links}) == 50


async def test_a_link_lives_the_default_or_what_its_issuer_asks_up_to_the_maximum(intake) -> None:
    stub, _ = intake
    md = as_party("atlas-sms")

    def days(link: intake_pb2.IssueStopLinkResponse, issued: float) -> float:
        return (link.expire_time.ToMilliseconds() / 1000 - issued) / 86_400

    issued = time.time()
    plain = await stub.IssueStopLink(
        intake_pb2.IssueStopLinkRequest(msisdn="0612345678", sender_id="JUMIA"), metadata=md
    )
    short = await stub.IssueStopLink(
        intake_pb2.IssueStopLinkRequest(msisdn="0612345678", sender_id="JUMIA", lifetime_days=7),
        metadata=md,
    )
    assert round(days(plain, issued)) == 90 and round(days(short, issued)) == 7
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.IssueStopLinks(
            intake_pb2.IssueStopLinksRequest(
                requests=[
                    intake_pb2.IssueStopLinkRequest(
                        msisdn="0612345678", sender_id="JUMIA", lifetime_days=181
                    )
                ]
            ),
            metadata=md,
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details().startswith("requests[0].lifetime_days: at most 180 days")


async def test_an_oversized_message_is_refused_before_anything_is_read(intake) -> None:
    stub, publisher = intake
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.SubmitOptOut(
            opt_out(request_id="x" * (5 * 1024 * 1024)), metadata=as_party("iam")
        )
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert not publisher.records


async def test_a_retry_gets_the_first_answer_and_publishes_nothing_more(intake) -> None:
    stub, publisher = intake
    first = await stub.SubmitOptOut(opt_out(request_id="again"), metadata=as_party("iam"))
    retry = await stub.SubmitOptOut(opt_out(request_id="again"), metadata=as_party("iam"))
    assert retry == first  # the same accepted time too
    assert len(publisher.records["stopsms.requests.v1"]) == 1


async def test_a_flood_of_requests_for_one_number_is_resource_exhausted(intake) -> None:
    stub, publisher = intake
    codes = []
    for i in range(25):
        try:
            await stub.SubmitOptOut(opt_out(request_id=f"flood-{i}"), metadata=as_party("iam"))
            codes.append(grpc.StatusCode.OK)
        except grpc.aio.AioRpcError as exc:
            codes.append(exc.code())
    assert codes.count(grpc.StatusCode.OK) == 20
    assert codes[20:] == [grpc.StatusCode.RESOURCE_EXHAUSTED] * 5
    other = await stub.SubmitOptOut(
        opt_out(request_id="other", msisdn="0700000001"), metadata=as_party("iam")
    )
    assert other.status == intake_pb2.SUBMISSION_STATUS_ACCEPTED


async def test_a_sender_written_any_way_is_recorded_in_its_one_canonical_form(intake) -> None:
    stub, publisher = intake
    await stub.SubmitOptOut(opt_out(sender_id=" jumia "), metadata=as_party("iam"))
    [(_, value, _)] = publisher.records["stopsms.requests.v1"]
    request = events_pb2.PreferenceRequested.FromString(value)
    assert request.sender_id == "JUMIA" and not request.undeclared_sender
    link = await stub.IssueStopLink(
        intake_pb2.IssueStopLinkRequest(msisdn="0612345678", sender_id="Jumia"),
        metadata=as_party("atlas-sms"),
    )
    [(_, recorded, _)] = publisher.records["stopsms.links.v1"]
    assert events_pb2.StopLink.FromString(recorded).sender_id == "JUMIA" and link.url
    reply = await stub.SubmitKeyword(
        intake_pb2.SubmitKeywordRequest(
            request_id="k-1", msisdn="0612345678", sender_id="stopsms", text="STOP"
        ),
        metadata=as_party("iam"),
    )
    assert reply.sender_id == ""  # the platform's own code, however written: global
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.SubmitOptOut(opt_out(sender_id="<jumia>"), metadata=as_party("iam"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details().startswith("sender_id")


def outbound(publisher) -> list[events_pb2.OutboundMessage]:
    return [
        events_pb2.OutboundMessage.FromString(value)
        for _, value, _ in publisher.records.get("stopsms.outbound.v1", [])
    ]


async def test_every_reply_that_changed_something_is_confirmed_to_the_citizen(intake) -> None:
    stub, publisher = intake
    md = as_party("iam")
    kw = intake_pb2.SubmitKeywordRequest
    stopped = await stub.SubmitKeyword(
        kw(request_id="c1", msisdn="0612345678", sender_id="JUMIA", text="Stop svp"), metadata=md
    )
    [confirmation] = outbound(publisher)
    assert confirmation.purpose == events_pb2.OUTBOUND_PURPOSE_CONFIRMATION
    assert confirmation.operator_id == "iam" and confirmation.language == "fr"
    assert confirmation.reference_event_id == stopped.event_id
    assert "JUMIA" in confirmation.text
    assert stopped.event_id.replace("-", "")[:8].upper() in confirmation.text
    assert "0612345678" not in confirmation.SerializeToString().decode(errors="replace")
    assert confirmation.sealed_msisdn.ciphertext and confirmation.subject
    assert confirmation.expires_time.seconds > 0
    # the same reply forwarded again: the same message id, so the operator delivers it once
    await stub.SubmitKeyword(
        kw(request_id="c1", msisdn="0612345678", sender_id="JUMIA", text="Stop svp"), metadata=md
    )
    assert {m.message_id for m in outbound(publisher)} == {confirmation.message_id}
    await stub.SubmitKeyword(
        kw(request_id="c2", msisdn="0612345678", sender_id="JUMIA", text="START"), metadata=md
    )
    await stub.SubmitKeyword(
        kw(request_id="c3", msisdn="0612345678", sender_id="STOPSMS", text="توقف"), metadata=md
    )
    back_in, arabic = outbound(publisher)[-2:]
    assert "STOP" in back_in.text and back_in.reference_event_id
    assert arabic.language == "ar" and "JUMIA" not in arabic.text


async def test_help_and_unreadable_replies_to_the_platform_get_the_keywords(intake) -> None:
    stub, publisher = intake
    md = as_party("iam")
    kw = intake_pb2.SubmitKeywordRequest
    asked = await stub.SubmitKeyword(
        kw(request_id="h1", msisdn="0612345678", sender_id="JUMIA", text="AIDE"), metadata=md
    )
    assert (asked.intent, asked.status) == (
        intake_pb2.INTENT_HELP,
        intake_pb2.SUBMISSION_STATUS_IGNORED,
    )
    await stub.SubmitKeyword(
        kw(request_id="h2", msisdn="0612345678", sender_id="STOPSMS", text="c'est quoi ?"),
        metadata=md,
    )
    await stub.SubmitKeyword(  # chatter to a sender's own code is the sender's business
        kw(request_id="h3", msisdn="0612345678", sender_id="JUMIA", text="merci"), metadata=md
    )
    helps = outbound(publisher)
    assert [m.purpose for m in helps] == [events_pb2.OUTBOUND_PURPOSE_HELP] * 2
    assert all("STOP" in m.text and "START" in m.text for m in helps)
    assert "stopsms.requests.v1" not in publisher.records


async def test_a_confirmation_kafka_did_not_take_makes_the_reply_unavailable(intake) -> None:
    stub, publisher = intake
    md = as_party("iam")
    request = intake_pb2.SubmitKeywordRequest(
        request_id="u1", msisdn="0612345678", sender_id="JUMIA", text="STOP"
    )
    real_publish = publisher.publish

    async def confirmation_lost(topic, key, value, **kwargs):  # type: ignore[no-untyped-def]
        if topic == "stopsms.outbound.v1":
            raise PublishFailed("the broker went away")
        return await real_publish(topic, key, value, **kwargs)

    publisher.publish = confirmation_lost
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.SubmitKeyword(request, metadata=md)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    publisher.publish = real_publish
    reply = await stub.SubmitKeyword(request, metadata=md)  # the operator retries
    assert reply.status == intake_pb2.SUBMISSION_STATUS_ACCEPTED
    [confirmation] = outbound(publisher)
    assert confirmation.reference_event_id == reply.event_id
