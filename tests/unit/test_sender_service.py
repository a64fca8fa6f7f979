"""SenderRegistryService and the link rule on an in-memory bus: who may change what, the
history and the audit of every change, paging, and the message check's problems in order."""

import base64

import grpc
import pytest

from stopsms.adapters.bus import InMemoryBus, InMemoryPublisher
from stopsms.adapters.identity import PARTY_HEADER, AuditTrail, Authenticator
from stopsms.adapters.link_store import InMemoryLinkStore
from stopsms.adapters.sender_register import SenderRegisterFollower
from stopsms.adapters.serving import GrpcEndpoint, servicer_registration
from stopsms.adapters.settings import IntakeSettings
from stopsms.domain.message_check import LinkSite
from stopsms.domain.privacy import Key, Pseudonymiser
from stopsms.domain.topics import Topics
from stopsms.intake.answers import InMemoryAnswerStore
from stopsms.intake.citizen_messages import CitizenMessages
from stopsms.intake.links import LinkDirectory
from stopsms.intake.senders import SenderRegistryServicer
from stopsms.intake.server import IntakeServicer
from stopsms.intake.submission import InMemoryRequestReferences, RequestSubmitter
from stopsms.tools.senders import import_senders, load_seed, local_directory
from stopsms.v1 import (
    events_pb2,
    intake_pb2,
    intake_pb2_grpc,
    senders_pb2,
    senders_pb2_grpc,
)

S = senders_pb2
P = S.MessageProblemCode
TOPICS = Topics()


@pytest.fixture
async def platform():
    bus = InMemoryBus()
    publisher = InMemoryPublisher(bus)
    settings = IntakeSettings(public_base_url="https://stopsms.ma/")
    directory = local_directory()
    # the register as `stopsms up` seeds it, written apart from what the tests inspect
    await import_senders(load_seed(), bus, InMemoryPublisher(bus), TOPICS)
    pseudonymiser = Pseudonymiser(Key("pk1", bytes(32)), [Key("dk1", bytes(range(32)))])
    submitter = RequestSubmitter(
        publisher, pseudonymiser, directory, TOPICS, 12, InMemoryRequestReferences()
    )
    register = SenderRegisterFollower(bus, TOPICS.senders, directory)
    links = LinkDirectory(bus, TOPICS.links, InMemoryLinkStore(), pseudonymiser)
    auth = Authenticator(
        directory, insecure=True, audit=AuditTrail(publisher, TOPICS.audit, flush_seconds=0)
    )
    answers = InMemoryAnswerStore()
    intake = IntakeServicer(
        settings,
        submitter=submitter,
        citizens=CitizenMessages(publisher, pseudonymiser, TOPICS, 12),
        publisher=publisher,
        auth=auth,
        answers=answers,
        sender_register=register,
    )
    senders = SenderRegistryServicer(
        register=register,
        links=links,
        publisher=publisher,
        auth=auth,
        answers=answers,
        topics=TOPICS,
        link_site=LinkSite(settings.public_base_url),
    )
    await register.start()
    await links.start()
    endpoint = GrpcEndpoint(
        "127.0.0.1:0",
        [
            servicer_registration(intake, intake_pb2.DESCRIPTOR.services_by_name["IntakeService"]),
            servicer_registration(senders, S.DESCRIPTOR.services_by_name["SenderRegistryService"]),
        ],
        ["stopsms.v1.IntakeService", "stopsms.v1.SenderRegistryService"],
    )
    await endpoint.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{endpoint.port}")
    yield (
        senders_pb2_grpc.SenderRegistryServiceStub(channel),
        intake_pb2_grpc.IntakeServiceStub(channel),
        publisher,
        auth,
    )
    await channel.close()
    await endpoint.stop(0)
    await links.stop()
    await register.stop()


def as_party(party: str):
    return ((PARTY_HEADER, party),)


def hanout(**overrides) -> S.Sender:
    fields = dict(
        sender_id="HANOUT",
        kind=S.SENDER_KIND_ALPHANUMERIC,
        display_name="Hanout Market",
        aliases=["4040"],
        legal_entity="Hanout SARL",
        cndp_declaration="D-2026-0042",
        sending_party_ids=["sahara-push"],
    )
    fields.update(overrides)
    return S.Sender(**fields)


async def declare(stub, request_id="d1", party="sahara-push", **overrides) -> S.Sender:
    reply = await stub.DeclareSender(
        S.DeclareSenderRequest(request_id=request_id, sender=hanout(**overrides)),
        metadata=as_party(party),
    )
    return reply.sender


async def review(stub, status, reason="", request_id="r1") -> S.Sender:
    reply = await stub.ReviewSender(
        S.ReviewSenderRequest(
            request_id=request_id, sender_id="4040", status=status, reason=reason
        ),
        metadata=as_party("cndp"),
    )
    return reply.sender


async def issue_link(intake, sender="HANOUT"):
    return await intake.IssueStopLink(
        intake_pb2.IssueStopLinkRequest(msisdn="0612345678", sender_id=sender),
        metadata=as_party("sahara-push"),
    )


async def test_a_declared_sender_is_pending_and_gets_links_only_once_active(platform) -> None:
    stub, intake, publisher, auth = platform
    sender = await declare(stub)
    assert (sender.status, sender.updated_by) == (S.SENDER_STATUS_PENDING, "sahara-push")
    assert sender.updated_time.seconds > 0
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await issue_link(intake)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "sender_id: sender HANOUT is PENDING" in caught.value.details()
    active = await review(stub, S.SENDER_STATUS_ACTIVE)
    assert active.status == S.SENDER_STATUS_ACTIVE and active.updated_by == "cndp"
    link = await issue_link(intake, sender="4040")  # the alias names the same sender
    assert link.code
    await review(stub, S.SENDER_STATUS_SUSPENDED, "complaints under review", request_id="r2")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await issue_link(intake)
    assert "SUSPENDED (complaints under review)" in caught.value.details()
    # the history: one SenderChanged per change, with the status before it
    history = [
        S.SenderChanged.FromString(value)
        for _, value, _ in publisher.records[TOPICS.sender_changes]
    ]
    assert [(h.change, h.previous_status, h.sender.status) for h in history] == [
        (S.SENDER_CHANGE_DECLARED, 0, S.SENDER_STATUS_PENDING),
        (S.SENDER_CHANGE_REVIEWED, S.SENDER_STATUS_PENDING, S.SENDER_STATUS_ACTIVE),
        (S.SENDER_CHANGE_REVIEWED, S.SENDER_STATUS_ACTIVE, S.SENDER_STATUS_SUSPENDED),
    ]
    # and the audit trail: the declaration and both reviews, by whom
    await auth.audit.flush()
    audited = [
        events_pb2.AuditEntry.FromString(value)
        for _, value, _ in publisher.records[TOPICS.audit]
        if b"SenderRegistryService" in value
    ]
    assert [(a.party_id, a.method.rsplit("/", 1)[1]) for a in audited] == [
        ("sahara-push", "DeclareSender"),
        ("cndp", "ReviewSender"),
        ("cndp", "ReviewSender"),
    ]
    assert "SUSPENDED (complaints under review)" in audited[-1].detail


async def test_a_retry_answers_the_same_and_writes_nothing_more(platform) -> None:
    stub, _, publisher, _ = platform
    first = await declare(stub)
    again = await declare(stub)
    assert first == again
    assert len(publisher.records[TOPICS.senders]) == 1


async def test_a_change_kafka_did_not_take_is_unavailable_and_a_retry_lands_it(platform) -> None:
    stub, intake, publisher, _ = platform
    publisher.failing = True
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await declare(stub)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "retry with the same request_id" in caught.value.details()
    # nothing was answered or remembered: the sender is not held, not even by this replica
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await stub.GetSender(S.GetSenderRequest(sender_id="HANOUT"), metadata=as_party("cndp"))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    publisher.failing = False
    sender = await declare(stub)
    assert sender.status == S.SENDER_STATUS_PENDING
    assert len(publisher.records[TOPICS.senders]) == 1


async def test_who_may_change_what(platform) -> None:
    stub, _, publisher, _ = platform

    async def refused(call, request, party):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call(request, metadata=as_party(party))
        return caught.value.code(), caught.value.details()

    declaration = S.DeclareSenderRequest(request_id="x", sender=hanout())
    assert (await refused(stub.DeclareSender, declaration, "cndp"))[0] == (
        grpc.StatusCode.PERMISSION_DENIED
    )
    code, details = await refused(stub.DeclareSender, declaration, "atlas-sms")
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith("sender.sending_party_ids")
    code, details = await refused(
        stub.DeclareSender,
        S.DeclareSenderRequest(request_id="y", sender=hanout(aliases=["JUMIA-X", "1313"])),
        "sahara-push",
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "1313" in details
    await declare(stub)
    code, _ = await refused(
        stub.UpdateSender,
        S.UpdateSenderRequest(request_id="u", sender=hanout(display_name="Mine")),
        "atlas-sms",
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED
    code, _ = await refused(
        stub.ReviewSender,
        S.ReviewSenderRequest(request_id="r", sender_id="HANOUT", status=S.SENDER_STATUS_ACTIVE),
        "sahara-push",
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED
    code, details = await refused(
        stub.ReviewSender,
        S.ReviewSenderRequest(request_id="r", sender_id="HANOUT", status=S.SENDER_STATUS_SUSPENDED),
        "cndp",
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("reason")
    code, details = await refused(
        stub.DeclareSender, S.DeclareSenderRequest(sender=hanout()), "sahara-push"
    )
    assert details.startswith("request_id")
    updated = await stub.UpdateSender(
        S.UpdateSenderRequest(
            request_id="u2",
            sender=hanout(display_name="Hanout", sending_party_ids=["sahara-push", "inwi"]),
        ),
        metadata=as_party("sahara-push"),
    )
    assert updated.sender.status == S.SENDER_STATUS_PENDING  # the status stays the regulator's
    assert list(updated.sender.sending_party_ids) == ["inwi", "sahara-push"]


async def test_reads_show_a_party_its_own_and_the_regulator_everything(platform) -> None:
    stub, _, _, _ = platform
    await declare(stub)
    for i in range(5):
        await declare(
            stub,
            request_id=f"b{i}",
            party="atlas-sms",
            sender_id=f"BRAND{i}",
            aliases=[],
            sending_party_ids=["atlas-sms"],
        )
    got = await stub.GetSender(S.GetSenderRequest(sender_id="4040"), metadata=as_party("cndp"))
    assert got.sender.sender_id == "HANOUT"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetSender(S.GetSenderRequest(sender_id="HANOUT"), metadata=as_party("atlas-sms"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND

    async def every_page(party, size):
        ids, token, pages = [], "", 0
        while True:
            page = await stub.ListSenders(
                S.ListSendersRequest(page_size=size, page_token=token), metadata=as_party(party)
            )
            ids += [s.sender_id for s in page.senders]
            pages += 1
            token = page.next_page_token
            if not token:
                return ids, pages

    own = [f"BRAND{i}" for i in range(5)] + ["JUMIA", "LYDEC", "MARJANE"]  # and the seeded
    assert await every_page("atlas-sms", 2) == (own, 4)
    everything = (await every_page("cndp", 100))[0]
    assert [*(f"BRAND{i}" for i in range(5)), "HANOUT"] == [
        i for i in everything if i.startswith(("BRAND", "HANOUT"))
    ]
    assert "JUMIA" in everything  # the seeded register too
    assert await every_page("sahara-push", 0) == (["ELECTROPLANET", "HANOUT", "KITEA"], 1)
    bad = base64.urlsafe_b64encode(b"\xff").decode()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ListSenders(S.ListSendersRequest(page_token=bad), metadata=as_party("cndp"))
    assert caught.value.details().startswith("page_token")


async def test_the_message_check_lists_problems_in_order(platform) -> None:
    stub, intake, _, _ = platform
    md = as_party("sahara-push")
    await declare(stub)
    ok_text = "Promo -20% ce week-end chez Hanout. STOP au 4040"

    async def check(text, sender="HANOUT", party="sahara-push"):
        reply = await stub.CheckMessage(
            S.CheckMessageRequest(sender_id=sender, text=text), metadata=as_party(party)
        )
        return [p.code for p in reply.check.problems], reply.check

    assert (await check(ok_text))[0] == [P.MESSAGE_PROBLEM_CODE_SENDER_SUSPENDED]  # pending
    await review(stub, S.SENDER_STATUS_ACTIVE)
    problems, answer = await check(ok_text)
    assert problems == [] and answer.ok and answer.segments == 1
    assert answer.encoding == S.MESSAGE_ENCODING_GSM7
    assert (await check("Promo -20% ce week-end"))[0] == [
        P.MESSAGE_PROBLEM_CODE_STOPSMS_MENTION_MISSING
    ]
    assert (await check(ok_text, sender="NOBODY"))[0] == [
        P.MESSAGE_PROBLEM_CODE_SENDER_NOT_DECLARED
    ]
    assert (await check(ok_text, party="atlas-sms"))[0] == [P.MESSAGE_PROBLEM_CODE_NOT_YOUR_SENDER]
    link = await issue_link(intake)
    jumia_link = await intake.IssueStopLink(
        intake_pb2.IssueStopLinkRequest(msisdn="0612345678", sender_id="JUMIA"),
        metadata=as_party("atlas-sms"),
    )
    assert (await check(f"Soldes Hanout ! StopSMS : {link.url}"))[0] == []
    assert (await check(f"Soldes Hanout ! StopSMS : {jumia_link.url}"))[0] == [
        P.MESSAGE_PROBLEM_CODE_STOPSMS_LINK_FOREIGN
    ]
    assert (await check("Soldes ! StopSMS : https://stopsms.ma/AAAAAAAAAAA"))[0] == [
        P.MESSAGE_PROBLEM_CODE_STOPSMS_LINK_FOREIGN
    ]
    arabic = "تخفيضات كبيرة عند حانوت هذا الأسبوع على كل المنتجات، للتوقف أرسل STOP إلى 4040"
    _, answer = await check(arabic)
    assert answer.ok and answer.encoding == S.MESSAGE_ENCODING_UCS2 and answer.segments == 2
    await review(stub, S.SENDER_STATUS_SUSPENDED, "complaints", request_id="r2")
    problems, answer = await check(f"Soldes ! {link.url}", party="atlas-sms")
    assert problems == [
        P.MESSAGE_PROBLEM_CODE_NOT_YOUR_SENDER,
        P.MESSAGE_PROBLEM_CODE_SENDER_SUSPENDED,
        P.MESSAGE_PROBLEM_CODE_STOPSMS_MENTION_MISSING,
    ]
    assert "SUSPENDED: complaints" in answer.problems[1].detail
    del md


async def test_a_campaign_is_checked_from_texts_or_a_template(platform) -> None:
    stub, _, _, _ = platform
    md = as_party("atlas-sms")
    texts = [f"Bonjour {i}, -30% chez Jumia. STOP au 3030" for i in range(3)] + ["Promo"]
    reply = await stub.CheckMessages(
        S.CheckMessagesRequest(sender_id="JUMIA", texts=texts), metadata=md
    )
    assert [c.ok for c in reply.checks] == [True, True, True, False] and not reply.all_ok
    templated = S.CheckMessagesRequest(
        sender_id="JUMIA",
        template="Bonjour {name}, -30% chez Jumia. STOP au 3030",
        values=[S.TemplateValues(values={"name": n}) for n in ("Amina", "Youssef")],
    )
    reply = await stub.CheckMessages(templated, metadata=md)
    assert len(reply.checks) == 2 and reply.all_ok

    async def invalid(request):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.CheckMessages(request, metadata=md)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        return caught.value.details()

    assert (await invalid(S.CheckMessagesRequest(sender_id="JUMIA"))).startswith("texts")
    assert (
        await invalid(S.CheckMessagesRequest(sender_id="JUMIA", texts=["x"] * 10_001))
    ).startswith("texts")
    missing = S.CheckMessagesRequest(
        sender_id="JUMIA",
        template="Bonjour {name}",
        values=[S.TemplateValues(values={"name": "a"}), S.TemplateValues(values={})],
    )
    assert (await invalid(missing)).startswith("values[1]")
    assert (await invalid(S.CheckMessagesRequest(texts=["x"]))).startswith("sender_id")
