"""Security with mutual TLS on: entitlements, handshakes, rate limits, and no number at rest."""

from __future__ import annotations

import asyncio
import datetime
import re
import time

import aiohttp
import grpc
import pytest
import redis.asyncio as aioredis
from kafka import KafkaAdminClient, KafkaConsumer

from stopsms.adapters.clients import STUBS
from stopsms.adapters.kafka import TopicReader, read_topic
from stopsms.adapters.tls import party_san
from stopsms.domain.ids import LINK_PARTY_ID, event_id, link_request_id
from stopsms.domain.topics import Topics
from stopsms.tools.certificates import CertificateAuthority, ca_key_folder
from stopsms.tools.local_platform import LocalPlatform
from stopsms.v1 import (
    events_pb2,
    intake_pb2,
    notifier_pb2,
    registry_pb2,
    registry_pb2_grpc,
    regulator_pb2,
)

from ..conftest import until

pytestmark = pytest.mark.e2e


def stub(platform: LocalPlatform, service: str, party: str):
    channel, metadata = platform.channel(service, party)
    return channel, STUBS[service](channel), metadata


async def test_a_psva_cannot_reach_another_psvas_sender_and_each_refusal_is_audited(
    secure_platform: LocalPlatform,
) -> None:
    checks = []
    channels = []
    for service in ("registry", "intake", "notifier"):
        channel, s, md = stub(secure_platform, service, "atlas-sms")
        channels.append(channel)
        checks.append((service, s, md))
    (_, registry, md), (_, intake, _), (_, notifier, _) = checks
    refusals = {
        "Check": registry.Check(
            registry_pb2.CheckRequest(msisdn="0612345678", sender_id="KITEA"), metadata=md
        ),
        "IssueStopLink": intake.IssueStopLink(
            intake_pb2.IssueStopLinkRequest(msisdn="0612345678", sender_id="KITEA"), metadata=md
        ),
        "SubmitKeyword": intake.SubmitKeyword(
            intake_pb2.SubmitKeywordRequest(
                request_id="sms-1", msisdn="0612345678", sender_id="JUMIA", text="STOP"
            ),
            metadata=md,
        ),
    }
    for name, call in refusals.items():
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED, name
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in notifier.WatchChanges(
            notifier_pb2.WatchChangesRequest(sender_ids=["KITEA"]), metadata=md
        ):
            pass
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    for channel in channels:
        await channel.close()

    reader = TopicReader(
        secure_platform.endpoints["kafka"], Topics(secure_platform.namespace).audit
    )
    await reader.start()
    denied: set[str] = set()
    async with asyncio.timeout(15):
        while not {"Check", "IssueStopLink", "SubmitKeyword", "WatchChanges"} <= denied:
            for record in await reader.read(500):
                entry = events_pb2.AuditEntry.FromString(record.value)
                if (
                    entry.party_id == "atlas-sms"
                    and entry.decision == events_pb2.AUDIT_DECISION_DENIED
                ):
                    denied.add(entry.method.rsplit("/", 1)[-1])
    await reader.stop()


def _credentials(ca_pem: bytes, cert: bytes | None = None, key: bytes | None = None):
    return grpc.ssl_channel_credentials(
        root_certificates=ca_pem, private_key=key, certificate_chain=cert
    )


@pytest.mark.parametrize("case", ["no certificate", "expired", "another CA"])
async def test_the_handshake_refuses_callers_without_a_valid_certificate(
    secure_platform: LocalPlatform, case: str
) -> None:
    folder = secure_platform.data_dir / "tls"
    ca_pem = (folder / "ca.pem").read_bytes()
    if case == "no certificate":
        credentials = _credentials(ca_pem)
    elif case == "expired":
        ca = CertificateAuthority.load(folder)
        long_ago = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=30)
        cert, key = ca.issue(
            "atlas-sms", [party_san("atlas-sms")], server=False, days=1, not_before=long_ago
        )
        credentials = _credentials(ca_pem, cert, key)
    else:
        stranger = CertificateAuthority.create("someone else's CA")
        cert, key = stranger.issue("atlas-sms", [party_san("atlas-sms")], server=False)
        credentials = _credentials(ca_pem, cert, key)
    async with grpc.aio.secure_channel(
        secure_platform.endpoints["registry_grpc"], credentials
    ) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await registry_pb2_grpc.RegistryServiceStub(channel).Check(
                registry_pb2.CheckRequest(msisdn="0612345678", sender_id="JUMIA"), timeout=10
            )
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE  # refused at the handshake


async def test_a_party_over_its_rate_is_refused_while_another_is_served(
    secure_platform: LocalPlatform,
) -> None:
    flood_channel, flood, flood_md = stub(secure_platform, "registry", "flood-sms")
    calm_channel, calm, calm_md = stub(secure_platform, "registry", "atlas-sms")

    async def flood_call():
        try:
            await flood.Check(
                registry_pb2.CheckRequest(msisdn="0612345678", sender_id="FLOODCO"),
                metadata=flood_md,
            )
            return "ok", None
        except grpc.aio.AioRpcError as exc:
            return exc.code(), dict(exc.trailing_metadata() or ())

    async def calm_call() -> float:
        started = time.perf_counter()
        await calm.Check(
            registry_pb2.CheckRequest(msisdn="0612345678", sender_id="JUMIA"), metadata=calm_md
        )
        return time.perf_counter() - started

    results = await asyncio.gather(
        *(flood_call() for _ in range(40)), *(calm_call() for _ in range(20))
    )
    floods, calms = results[:40], results[40:]
    refused = [meta for code, meta in floods if code == grpc.StatusCode.RESOURCE_EXHAUSTED]
    assert 0 < len(refused) < 40 and all(
        code in ("ok", grpc.StatusCode.RESOURCE_EXHAUSTED) for code, _ in floods
    )
    assert all(int(meta["retry-after-ms"]) > 0 for meta in refused)
    assert len(calms) == 20  # every call of the other party succeeded
    await flood_channel.close()
    await calm_channel.close()


async def proofs_exist(notifier, metadata, events: list[str]) -> bool:  # type: ignore[no-untyped-def]
    """Whether the notifier holds a propagation record of every one of ``events``."""
    for event in events:
        try:
            await notifier.GetPropagation(
                notifier_pb2.GetPropagationRequest(event_id=event), metadata=metadata
            )
        except grpc.aio.AioRpcError:
            return False
    return True


def written_forms(e164: str) -> list[bytes]:
    """Every way the number could have been written down."""
    national = e164[4:]  # 9 digits: every unseparated form contains them
    pairs = f"0{national[0]} {national[1:3]} {national[3:5]} {national[5:7]} {national[7:9]}"
    return [
        national.encode(),
        pairs.encode(),
        pairs.replace(" ", ".").encode(),
        pairs.replace(" ", "-").encode(),
        ("+212 " + pairs[1:]).encode(),
    ]


async def test_no_phone_number_rests_in_clear_anywhere(secure_platform: LocalPlatform) -> None:
    import random

    numbers = [f"+2126{random.randrange(10**8):08d}" for _ in range(4)] + [
        f"+2127{random.randrange(10**8):08d}",
        f"+2126{random.randrange(10**8):08d}",  # a complaint's originating number
    ]
    ends = secure_platform.endpoints
    intake_channel, intake_iam, iam_md = stub(secure_platform, "intake", "iam")
    psva_channel, intake_psva, psva_md = stub(secure_platform, "intake", "atlas-sms")
    registry_channel, registry, cndp_md = stub(secure_platform, "registry", "cndp")
    optout = await intake_iam.SubmitOptOut(
        intake_pb2.SubmitOptOutRequest(
            request_id="p-1", msisdn=numbers[0], sender_id="JUMIA", channel=events_pb2.CHANNEL_WEB
        ),
        metadata=iam_md,
    )
    keyword = await intake_iam.SubmitKeyword(
        intake_pb2.SubmitKeywordRequest(
            request_id="p-2", msisdn="0" + numbers[1][4:], sender_id="IAM", text="STOP"
        ),
        metadata=iam_md,
    )
    # A complaint about a message from a phone number: both numbers are evidence, sealed.
    await intake_iam.SubmitComplaint(
        intake_pb2.SubmitComplaintRequest(
            request_id="p-3",
            msisdn=numbers[0],
            from_address=numbers[5],
            text=f"SPAM Promo! Rappelez le {numbers[5]}",
        ),
        metadata=iam_md,
    )
    link = await intake_psva.IssueStopLink(
        intake_pb2.IssueStopLinkRequest(msisdn=numbers[2], sender_id="MARJANE"), metadata=psva_md
    )
    async with aiohttp.ClientSession() as web:
        async with web.post(link.url, data={"action": "opt_out_all"}) as page:
            assert page.status == 200
    await intake_psva.IssueStopLinks(
        intake_pb2.IssueStopLinksRequest(
            requests=[
                intake_pb2.IssueStopLinkRequest(msisdn=n, sender_id="JUMIA") for n in numbers[3:]
            ]
        ),
        metadata=psva_md,
    )
    async with asyncio.timeout(30):
        while (
            await registry.Check(
                registry_pb2.CheckRequest(msisdn=numbers[2], sender_id="JUMIA"), metadata=cndp_md
            )
        ).verdict != registry_pb2.VERDICT_SUPPRESSED:
            await asyncio.sleep(0.2)
    # What the scan must cover: each request's proof, and an audit entry of every caller.
    notifier_channel, notifier, _ = stub(secure_platform, "notifier", "cndp")
    events = [
        optout.event_id,
        keyword.event_id,
        event_id(LINK_PARTY_ID, link_request_id(link.code, "opt_out_all")),
    ]

    async def audited() -> bool:
        records = await read_topic(ends["kafka"], Topics(secure_platform.namespace).audit)
        return {r.key for r in records} >= {b"iam", b"atlas-sms", b"cndp"}

    await until(
        lambda: proofs_exist(notifier, cndp_md, events),
        "a propagation record for each of the three requests",
    )
    await until(audited, "audit entries of iam, atlas-sms and cndp")

    async def assessed() -> bool:
        """The console assessed the complaint: its record is among those scanned."""
        topics = Topics(secure_platform.namespace)
        return bool(await read_topic(ends["kafka"], topics.complaint_assessments))

    await until(assessed, "the console's assessment of the complaint")
    for channel in (intake_channel, psva_channel, registry_channel, notifier_channel):
        await channel.close()

    forms = [form for n in numbers for form in written_forms(n)]
    found: list[str] = []

    def search(where: str, blob: bytes) -> None:
        for form in forms:
            if form in blob:
                found.append(f"{where}: {form.decode()}")

    admin = KafkaAdminClient(bootstrap_servers=ends["kafka"])
    topics = [t for t in admin.list_topics() if t.startswith(secure_platform.namespace)]
    admin.close()
    platform_topics = Topics(secure_platform.namespace)
    expected = {name for name, _ in platform_topics.all_specs() + platform_topics.internal_specs()}
    assert set(topics) >= expected  # the v1 topics and the registry's state changelog
    consumer = KafkaConsumer(
        bootstrap_servers=ends["kafka"], auto_offset_reset="earliest", consumer_timeout_ms=3000
    )
    consumer.subscribe(topics)
    seen = 0
    for record in consumer:
        seen += 1
        search(f"{record.topic} key", record.key or b"")
        search(f"{record.topic} value", record.value or b"")
        for name, value in record.headers or []:
            search(f"{record.topic} header {name}", name.encode() + (value or b""))
    consumer.close()
    assert seen > 10

    client = aioredis.from_url(ends["redis"])
    keys = 0
    async for key in client.scan_iter(count=1000):
        keys += 1
        search(f"redis key {key!r}", key)
        search(f"redis value of {key!r}", await client.dump(key) or b"")
    await client.aclose()
    assert keys > 0

    for log in (secure_platform.data_dir / "logs").glob("*.log"):
        search(f"log {log.name}", log.read_bytes())
    # the screenshots of web complaints (tests/e2e/test_complaint_form_browser.py puts one
    # there whose metadata named its owner's number)
    for kept in (secure_platform.data_dir / "screenshots").glob("*"):
        search(f"screenshot store {kept.name}", kept.read_bytes() + kept.name.encode())
    assert not found, "numbers in clear:\n" + "\n".join(found[:20])
    assert re.fullmatch(r"[0-9A-Za-z]{11}", link.code)


#: Every call of the four services, with a request that is otherwise valid.
EVERY_CALL = {
    ("intake", "SubmitOptOut"): intake_pb2.SubmitOptOutRequest(
        request_id="p-x", msisdn="0612345678", sender_id="JUMIA", channel=events_pb2.CHANNEL_WEB
    ),
    ("intake", "SubmitKeyword"): intake_pb2.SubmitKeywordRequest(
        request_id="p-y", msisdn="0612345678", sender_id="JUMIA", text="STOP"
    ),
    ("intake", "IssueStopLink"): intake_pb2.IssueStopLinkRequest(
        msisdn="0612345678", sender_id="JUMIA"
    ),
    ("intake", "SubmitComplaint"): intake_pb2.SubmitComplaintRequest(
        request_id="p-z", msisdn="0612345678", from_address="JUMIA", text="SPAM promo"
    ),
    ("intake", "IssueStopLinks"): intake_pb2.IssueStopLinksRequest(
        requests=[intake_pb2.IssueStopLinkRequest(msisdn="0612345678", sender_id="JUMIA")]
    ),
    ("registry", "Check"): registry_pb2.CheckRequest(msisdn="0612345678", sender_id="JUMIA"),
    ("registry", "CheckBatch"): registry_pb2.CheckBatchRequest(
        sender_id="JUMIA", msisdns=["0612345678"]
    ),
    ("notifier", "WatchChanges"): notifier_pb2.WatchChangesRequest(),
    ("notifier", "Acknowledge"): notifier_pb2.AcknowledgeRequest(cursor="x"),
    ("notifier", "AcknowledgeStream"): notifier_pb2.AcknowledgeStreamRequest(cursor="x"),
    ("notifier", "GetPropagation"): notifier_pb2.GetPropagationRequest(request_id="p-1"),
    ("notifier", "WatchCases"): notifier_pb2.WatchCasesRequest(),
    ("console", "ListCases"): regulator_pb2.ListCasesRequest(),
    ("console", "GetCase"): regulator_pb2.GetCaseRequest(case="CASE-00000000"),
    ("console", "SearchRequests"): regulator_pb2.SearchRequestsRequest(msisdn="0612345678"),
    ("console", "PartyCompliance"): regulator_pb2.PartyComplianceRequest(),
    ("console", "ExportCase"): regulator_pb2.ExportCaseRequest(case="CASE-00000000"),
}
#: What each platform identity needs: the link page checks a number and reads link proofs.
NEEDED = {
    "stopsms-intake": {("registry", "Check"), ("notifier", "GetPropagation")},
    "stopsms-registry": set(),
    "stopsms-notifier": set(),
    "link": set(),
}


async def _code_of(s, name: str, request, md) -> grpc.StatusCode:  # type: ignore[no-untyped-def]
    try:
        if name in ("CheckBatch", "AcknowledgeStream"):

            async def chunks():  # type: ignore[no-untyped-def]
                yield request

            [_ async for _ in getattr(s, name)(chunks(), metadata=md)]
        elif name in ("WatchChanges", "WatchCases"):
            call = getattr(s, name)(request, metadata=md)
            await call.read()
            call.cancel()
        else:
            await getattr(s, name)(request, metadata=md)
    except grpc.aio.AioRpcError as exc:
        if exc.code() != grpc.StatusCode.PERMISSION_DENIED:
            print(f"{name}: {exc.code().name}: {exc.details()}")
        return exc.code()
    return grpc.StatusCode.OK


@pytest.mark.parametrize("identity", sorted(NEEDED))
async def test_each_platform_identity_makes_only_the_calls_it_needs(
    secure_platform: LocalPlatform, identity: str
) -> None:
    channels, codes = [], {}
    for (service, name), request in EVERY_CALL.items():
        channel, s, md = stub(secure_platform, service, identity)
        channels.append(channel)
        codes[(service, name)] = await _code_of(s, name, request, md)
    for channel in channels:
        await channel.close()
    denied = {call for call, code in codes.items() if code == grpc.StatusCode.PERMISSION_DENIED}
    wrong = denied ^ (set(EVERY_CALL) - NEEDED[identity])
    assert not wrong, {call: codes[call].name for call in wrong}
    # What it needs is answered: the check, and "no such proof" for a request of another party.
    for call in NEEDED[identity]:
        assert codes[call] in (grpc.StatusCode.OK, grpc.StatusCode.NOT_FOUND), (call, codes[call])


async def test_the_link_pages_identity_reads_only_the_proofs_of_link_clicks(
    secure_platform: LocalPlatform,
) -> None:
    intake_channel, intake_iam, iam_md = stub(secure_platform, "intake", "iam")
    link_channel, intake_psva, psva_md = stub(secure_platform, "intake", "atlas-sms")
    cndp_channel, cndp, cndp_md = stub(secure_platform, "notifier", "cndp")
    page_channel, page, page_md = stub(secure_platform, "notifier", "stopsms-intake")
    optout = await intake_iam.SubmitOptOut(
        intake_pb2.SubmitOptOutRequest(
            request_id="operator-own-1",
            msisdn="0612345670",
            sender_id="JUMIA",
            channel=events_pb2.CHANNEL_WEB,
        ),
        metadata=iam_md,
    )
    link = await intake_psva.IssueStopLink(
        intake_pb2.IssueStopLinkRequest(msisdn="0612345671", sender_id="JUMIA"), metadata=psva_md
    )
    async with aiohttp.ClientSession() as web:
        async with web.post(link.url, data={"action": "opt_out"}) as answered:
            assert answered.status == 200
    clicked = event_id(LINK_PARTY_ID, link_request_id(link.code, "opt_out"))
    await until(
        lambda: proofs_exist(cndp, cndp_md, [optout.event_id, clicked]),
        "the proofs of the operator's opt-out and of the link click",
    )
    await page.GetPropagation(
        notifier_pb2.GetPropagationRequest(event_id=clicked), metadata=page_md
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await page.GetPropagation(
            notifier_pb2.GetPropagationRequest(event_id=optout.event_id), metadata=page_md
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    for channel in (intake_channel, link_channel, cndp_channel, page_channel):
        await channel.close()


def test_the_folder_handed_to_services_and_parties_holds_no_ca_key(
    secure_platform: LocalPlatform,
) -> None:
    folder = secure_platform.data_dir / "tls"
    assert (folder / "ca.pem").exists()
    keys = [p for p in folder.rglob("*.key") if p.name == "ca.key"]
    assert not keys, keys
    assert (ca_key_folder(folder) / "ca.key").exists()
