"""End to end: the three services as separate processes, driven only through their public
gRPC, HTTP and Kafka interfaces, as a citizen, an operator and a PSVA would."""

from __future__ import annotations

import asyncio
import re
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import grpc
import pytest
from kafka import KafkaConsumer

from stopsms.adapters.clients import STUBS, Metadata
from stopsms.adapters.settings import Settings
from stopsms.domain import ids
from stopsms.domain.topics import Topics
from stopsms.tools.certificates import create_tls_folder
from stopsms.tools.launcher import LocalInfrastructure, kafka_user_acls
from stopsms.tools.local_platform import DEFAULT_PORTS, LocalPlatform
from stopsms.tools.operator_feed import follow
from stopsms.tools.operator_outbox import deliver_messages
from stopsms.v1 import (
    events_pb2,
    intake_pb2,
    notifier_pb2,
    notifier_pb2_grpc,
    registry_pb2,
)

from ..conftest import E2E_PARTIES, until
from ..otlp_receiver import OtlpReceiver
from .conftest import KAFKA_USERS

pytestmark = pytest.mark.e2e
NUMBER_A, NUMBER_B = "06 61 23 45 67", "0770112233"


@pytest.fixture
def otlp() -> Iterator[OtlpReceiver]:
    """Where the three services export their spans, as they would to a collector."""
    receiver = OtlpReceiver().start()
    try:
        yield receiver
    finally:
        receiver.stop()


@pytest.fixture
def platform(
    infra: LocalInfrastructure, namespace: str, tmp_path: Path, otlp: OtlpReceiver
) -> Iterator[LocalPlatform]:
    local = LocalPlatform(
        tmp_path / "platform",
        namespace=namespace,
        shared_infra=infra,
        parties_file=E2E_PARTIES,
        senders_seed=None,  # the directory lists its own senders
        preferred_ports={name: 0 for name in DEFAULT_PORTS},
        kafka_users=KAFKA_USERS,
        extra_env={"OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100"},
    )
    local.start()
    try:
        yield local
    finally:
        local.stop()


class Operator:
    """The reference operator consumer, in a thread: records when each change was applied.

    It connects as an operator does: its own certificate, with the ACLs of its KafkaUser in
    k8s/base/kafka-users.yaml (read the list, commit its own group, nothing else).
    """

    def __init__(self, platform: LocalPlatform) -> None:
        self.applied: dict[str, tuple[float, str, events_pb2.SuppressionChanged]] = {}
        self._stop = threading.Event()
        pseudonymiser = Settings.from_env(
            {"STOPSMS_DATA_DIR": str(platform.data_dir)}
        ).pseudonymiser()
        assert platform.infra is not None
        broker = platform.infra.kafka
        broker.grant(
            "operator-iam", kafka_user_acls(KAFKA_USERS)["operator-iam"], platform.namespace
        )
        kafka = broker.client_access("operator-iam")
        #: The SMS it delivered for the platform: (number, message, text).
        self.delivered: list[tuple[str, events_pb2.OutboundMessage, str]] = []
        self._threads = [
            threading.Thread(
                target=follow,
                args=(kafka, "iam", pseudonymiser, platform.namespace),
                kwargs={"apply": self._apply, "stop": self._stop},
                daemon=True,
            ),
            threading.Thread(
                target=deliver_messages,
                args=(kafka, "iam", pseudonymiser, platform.namespace),
                kwargs={"deliver": self._deliver, "stop": self._stop},
                daemon=True,
            ),
        ]

    def _apply(self, msisdn: str, change: events_pb2.SuppressionChanged) -> None:
        self.applied.setdefault(change.event_id, (time.time(), msisdn, change))

    def _deliver(self, msisdn: str, message: events_pb2.OutboundMessage, text: str) -> None:
        self.delivered.append((msisdn, message, text))

    def __enter__(self) -> Operator:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(10)


class Connections:
    """gRPC stubs as each party: its own client certificate (mutual TLS)."""

    def __init__(self, platform: LocalPlatform) -> None:
        self.platform = platform
        self.channels: list[grpc.aio.Channel] = []

    def stub(self, service: str, party: str):
        channel, metadata = self.platform.channel(service, party)
        self.channels.append(channel)
        return STUBS[service](channel), metadata

    async def __aenter__(self) -> Connections:
        return self

    async def __aexit__(self, *exc: object) -> None:
        for channel in self.channels:
            await channel.close()


class Psva:
    """A PSVA that watches its changes and acknowledges each once applied."""

    def __init__(self, stub: notifier_pb2_grpc.NotifierServiceStub, metadata: Metadata) -> None:
        self.stub, self.metadata = stub, metadata
        self.received: dict[str, notifier_pb2.Change] = {}
        self._call = stub.WatchChanges(notifier_pb2.WatchChangesRequest(), metadata=self.metadata)
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        async for response in self._call:
            if response.HasField("change"):
                self.received.setdefault(response.change.event_id, response.change)
                await self.stub.Acknowledge(
                    notifier_pb2.AcknowledgeRequest(cursor=response.cursor), metadata=self.metadata
                )

    async def close(self) -> None:
        self._call.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass


async def eventually(probe, timeout: float = 30.0):  # type: ignore[no-untyped-def]
    """Poll ``probe`` until true; the failure names the probe (a sentence of this test)."""
    return await until(probe, probe.__name__, timeout)


async def test_a_click_reaches_the_operator_and_the_psva_with_proof(
    platform: LocalPlatform, otlp: OtlpReceiver, capsys: pytest.CaptureFixture[str]
) -> None:
    ends = platform.endpoints
    async with Connections(platform) as conn, aiohttp.ClientSession() as web:
        registry, regulator_md = conn.stub("registry", "cndp")
        notifier, _ = conn.stub("notifier", "cndp")
        intake_psva, psva_md = conn.stub("intake", "atlas-sms")
        intake_iam, iam_md = conn.stub("intake", "iam")
        notifier_iam, _ = conn.stub("notifier", "iam")

        async def verdict(number: str, sender: str) -> int:
            reply = await registry.Check(
                registry_pb2.CheckRequest(msisdn=number, sender_id=sender), metadata=regulator_md
            )
            return reply.verdict

        with Operator(platform) as operator:
            psva = Psva(*conn.stub("notifier", "atlas-sms"))
            other_psva = Psva(
                *conn.stub("notifier", "sahara-push")
            )  # concerned by global opt-outs only
            try:
                # The PSVA puts a StopSMS link in its JUMIA campaign.
                link = await intake_psva.IssueStopLink(
                    intake_pb2.IssueStopLinkRequest(msisdn=NUMBER_A, sender_id="JUMIA"),
                    metadata=psva_md,
                )
                # A link preview (GET) changes nothing.
                async with web.get(link.url) as page:
                    assert page.status == 200
                    assert "JUMIA" in await page.text()
                assert await verdict(NUMBER_A, "JUMIA") == registry_pb2.VERDICT_ALLOWED

                # The citizen confirms.
                clicked = time.time()
                async with web.post(link.url, data={"action": "opt_out"}) as page:
                    assert page.status == 200
                    assert f"{link.code}:opt_out" in await page.text()  # the reference
                event_id = ids.event_id("link", f"{link.code}:opt_out")

                async def suppressed() -> bool:
                    return await verdict(NUMBER_A, "JUMIA") == registry_pb2.VERDICT_SUPPRESSED

                await eventually(suppressed)
                assert await verdict(NUMBER_A, "KITEA") == registry_pb2.VERDICT_ALLOWED

                async def proven():
                    try:
                        reply = await notifier.GetPropagation(
                            notifier_pb2.GetPropagationRequest(event_id=event_id),
                            metadata=regulator_md,
                        )
                    except grpc.aio.AioRpcError as exc:
                        assert exc.code() == grpc.StatusCode.NOT_FOUND
                        return None
                    return reply.propagation if reply.propagation.done else None

                proof = await eventually(proven)
                done = time.time()
                _, operator_msisdn, change = operator.applied[event_id]
                assert operator_msisdn == "+212661234567"
                assert change.state == events_pb2.STATE_SUPPRESSED and change.sender_id == "JUMIA"
                assert psva.received[event_id].msisdn == "+212661234567"
                assert {d.party_id for d in proof.deliveries} == {"iam", "atlas-sms"}
                assert all(d.status == events_pb2.DELIVERY_STATUS_APPLIED for d in proof.deliveries)
                assert all(
                    d.applied_time.ToMilliseconds() >= proof.action_time.ToMilliseconds()
                    for d in proof.deliveries
                )
                seconds = (
                    proof.done_time.ToMilliseconds() - proof.action_time.ToMilliseconds()
                ) / 1000
                with capsys.disabled():
                    print(
                        f"\naction-to-all-receipts: {seconds:.3f}s "
                        f"(observed by the test: {done - clicked:.3f}s)"
                    )
                assert seconds < 10

                # Each service's metrics: the proof's histogram, calls by method and code, the
                # registry's view state.
                scraped = {
                    service: await asyncio.to_thread(
                        lambda url=ends[f"{service}_metrics"]: (
                            urllib.request.urlopen(url, timeout=5).read().decode()
                        )
                    )
                    for service in ("intake", "registry", "notifier")
                }
                assert re.search(
                    r'stopsms_propagation_seconds_count\{party_kind="operator"\} [1-9]',
                    scraped["notifier"],
                )
                assert any(
                    line.startswith("stopsms_grpc_requests_total{")
                    and 'method="stopsms.v1.NotifierService.GetPropagation"' in line
                    and 'code="OK"' in line
                    for line in scraped["notifier"].splitlines()
                )
                assert "stopsms_view_behind 0.0" in scraped["registry"]
                assert "stopsms_consumer_lag{" in scraped["registry"]
                assert "stopsms_grpc_request_seconds_bucket" in scraped["intake"]

                # The same request id twice is one request, and one SuppressionChanged. The
                # caller's trace is followed across the services' logs.
                trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
                traced_md = (*iam_md, ("traceparent", f"00-{trace_id}-00f067aa0ba902b7-01"))
                twice = [
                    await intake_iam.SubmitOptOut(
                        intake_pb2.SubmitOptOutRequest(
                            request_id="call-centre-77",
                            msisdn=NUMBER_B,
                            sender_id="",
                            channel=events_pb2.CHANNEL_CALL_CENTER,
                        ),
                        metadata=traced_md,
                    )
                    for _ in range(2)
                ]
                assert twice[0].event_id == twice[1].event_id
                global_event = twice[0].event_id

                # A global opt-out suppresses every sender...
                async def globally_suppressed() -> bool:
                    verdicts = [
                        await verdict(NUMBER_B, s) for s in ("JUMIA", "MARJANE", "KITEA", "IAM", "")
                    ]
                    return all(v == registry_pb2.VERDICT_SUPPRESSED for v in verdicts)

                await eventually(globally_suppressed)

                # Holding a link proves nothing: the PSVA that issued it cannot opt back in.
                link_b = await intake_psva.IssueStopLink(
                    intake_pb2.IssueStopLinkRequest(msisdn=NUMBER_B, sender_id="JUMIA"),
                    metadata=psva_md,
                )
                async with web.get(link_b.url) as page:
                    text = await page.text()
                    assert 'value="opt_in"' not in text and "START" in text
                async with web.post(link_b.url, data={"action": "opt_in"}) as page:
                    assert page.status == 403
                assert await verdict(NUMBER_B, "JUMIA") == registry_pb2.VERDICT_SUPPRESSED

                # A STOP forwarded by the operator is confirmed to the citizen, by that operator.
                stop_reply = await intake_iam.SubmitKeyword(
                    intake_pb2.SubmitKeywordRequest(
                        request_id="stop-kitea", msisdn=NUMBER_B, sender_id="KITEA", text="Stop svp"
                    ),
                    metadata=iam_md,
                )

                async def stop_confirmed() -> bool:
                    return any(
                        message.purpose == events_pb2.OUTBOUND_PURPOSE_CONFIRMATION
                        and message.reference_event_id == stop_reply.event_id
                        and msisdn == "+212770112233"
                        and "KITEA" in text
                        for msisdn, message, text in operator.delivered
                    )

                await eventually(stop_confirmed)

                # START from the number itself, forwarded by its operator, re-allows JUMIA only.
                await intake_iam.SubmitKeyword(
                    intake_pb2.SubmitKeywordRequest(
                        request_id="start-jumia", msisdn=NUMBER_B, sender_id="JUMIA", text="START"
                    ),
                    metadata=iam_md,
                )

                async def jumia_back() -> bool:
                    return await verdict(NUMBER_B, "JUMIA") == registry_pb2.VERDICT_ALLOWED

                await eventually(jumia_back)
                assert await verdict(NUMBER_B, "MARJANE") == registry_pb2.VERDICT_SUPPRESSED
                assert await verdict(NUMBER_B, "") == registry_pb2.VERDICT_SUPPRESSED

                # The global opt-out reached the operator and the PSVA too, exactly once.
                async def global_proven() -> bool:
                    reply = await notifier_iam.GetPropagation(
                        notifier_pb2.GetPropagationRequest(request_id="call-centre-77"),
                        metadata=iam_md,
                    )
                    return reply.propagation.done

                await eventually(global_proven)
                assert global_event in operator.applied and global_event in psva.received
                assert global_event in other_psva.received and event_id not in other_psva.received
                assert _records_for(platform, global_event) == 1
                for service in ("intake", "registry", "notifier"):
                    lines = (platform.data_dir / "logs" / f"{service}.log").read_text()
                    followed = [line for line in lines.splitlines() if trace_id in line]
                    assert followed, f"trace {trace_id} not in the {service} log"
                    assert all("request=call-centre-77" in line for line in followed)

                # ... and it is one connected trace of recorded spans: the caller's span is the
                # parent of intake's, which is the parent of the registry's decision, which is
                # the parent of the notifier's proof.
                async def one_trace_from_the_call_to_the_proof() -> bool:
                    spans = otlp.trace(trace_id)
                    calls = {
                        s.span_id
                        for s in spans
                        if s.service == "stopsms-intake"
                        and s.name == "stopsms.v1.IntakeService.SubmitOptOut"
                        and s.parent_span_id == "00f067aa0ba902b7"
                    }
                    decisions = {
                        s.span_id
                        for s in spans
                        if s.service == "stopsms-registry"
                        and s.name == "registry decide"
                        and s.parent_span_id in calls
                    }
                    return any(
                        s.service == "stopsms-notifier"
                        and s.name == "notifier open proof"
                        and s.parent_span_id in decisions
                        for s in spans
                    )

                await eventually(one_trace_from_the_call_to_the_proof)

                # Bad input: an invalid link code is a 404 page; an unknown party is refused.
                async with web.get(ends["intake_http"] + "NotARealCod") as page:
                    assert page.status == 404
                # A certificate from the platform's CA for a party the directory does not know.
                create_tls_folder(platform.data_dir / "tls", ["mallory"])
                mallory, mallory_md = conn.stub("registry", "mallory")
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await mallory.Check(
                        registry_pb2.CheckRequest(msisdn=NUMBER_A), metadata=mallory_md
                    )
                assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
            finally:
                await psva.close()
                await other_psva.close()


def _records_for(platform: LocalPlatform, event_id: str) -> int:
    """How many distinct SuppressionChanged records the topic holds for an event."""
    consumer = KafkaConsumer(
        bootstrap_servers=platform.endpoints["kafka"],
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=3000,
    )
    consumer.subscribe([Topics(platform.namespace).suppressions])
    distinct = set()
    for record in consumer:
        change = events_pb2.SuppressionChanged.FromString(record.value)
        if change.event_id == event_id:
            distinct.add(record.value)
    consumer.close()
    return len(distinct)
