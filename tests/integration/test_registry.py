"""The registry process against the real broker and Redis: decisions, dedup, the view, checks."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from stopsms.adapters.identity import PARTY_HEADER
from stopsms.adapters.kafka import KafkaPublisher, TopicReader
from stopsms.adapters.settings import Settings
from stopsms.domain.ids import event_id
from stopsms.domain.topics import Topics, partition_for_key, suppression_key
from stopsms.registry.server import MAX_BATCH_CHUNK
from stopsms.v1 import events_pb2, registry_pb2, registry_pb2_grpc

from ..conftest import running_service

pytestmark = pytest.mark.integration


def preference(
    settings: Settings, msisdn: str, request_id: str, action: int, sender: str
) -> events_pb2.PreferenceRequested:
    p = settings.pseudonymiser()
    r = events_pb2.PreferenceRequested(
        event_id=event_id("iam", request_id),
        request_id=request_id,
        party_id="iam",
        action=action,
        sender_id=sender,
        channel=events_pb2.CHANNEL_API,
        subject=p.subject(msisdn),
    )
    r.sealed_msisdn.CopyFrom(p.seal(msisdn))
    r.action_time.GetCurrentTime()
    r.accepted_time.GetCurrentTime()
    return r


async def test_each_request_is_decided_once_published_and_answered(
    service_env: dict[str, str], namespace: str, tmp_path: Path
) -> None:
    settings = Settings.from_env(service_env)
    topics = Topics(namespace)
    requests = [
        preference(settings, "+212612345678", "r1", events_pb2.ACTION_OPT_OUT, "JUMIA"),
        preference(settings, "+212612345678", "r1", events_pb2.ACTION_OPT_OUT, "JUMIA"),  # a retry
        preference(settings, "+212612345678", "r2", events_pb2.ACTION_OPT_OUT, ""),
        preference(settings, "+212700000001", "r3", events_pb2.ACTION_OPT_OUT, "KITEA"),
    ]
    with running_service("registry", service_env, tmp_path) as registry:
        address = registry.address
        publisher = KafkaPublisher(settings.kafka_bootstrap)
        await publisher.start()
        for r in requests:
            key = r.subject.encode()
            await publisher.publish(
                topics.requests, key, r.SerializeToString(), partition=partition_for_key(key, 12)
            )
        await publisher.publish(topics.requests, b"pk1:bad", b"\xff not a protobuf", partition=0)
        await publisher.stop()

        reader = TopicReader(settings.kafka_bootstrap, topics.suppressions)
        await reader.start()
        records = []

        def decided() -> set[str]:
            return {events_pb2.SuppressionChanged.FromString(r.value).request_id for r in records}

        # The retry of r1 shares r1's subject, so its partition, where r2 comes after it: once
        # r2 (and r3) are decided, a change for the retry could only have come before them.
        async with asyncio.timeout(30):
            while not {"r2", "r3"} <= decided():
                records += await reader.read(timeout_ms=500)
        await reader.stop()
        changes = [events_pb2.SuppressionChanged.FromString(r.value) for r in records]
        assert sorted(c.request_id for c in changes) == ["r1", "r2", "r3"]
        for record, change in zip(records, changes, strict=True):
            assert record.key == suppression_key(change.subject, change.sender_id).encode()
            assert record.partition == partition_for_key(change.subject, 12)
        by_request = {c.request_id: c for c in changes}
        assert (by_request["r1"].version, by_request["r2"].version) == (1, 2)

        letters = TopicReader(settings.kafka_bootstrap, topics.dlq)
        await letters.start()
        async with asyncio.timeout(10):
            dead = []
            while not dead:
                dead = await letters.read(timeout_ms=500)
        await letters.stop()
        assert "unreadable request" in events_pb2.DeadLetter.FromString(dead[0].value).reason

        async with grpc.aio.insecure_channel(address) as channel:
            stub = registry_pb2_grpc.RegistryServiceStub(channel)
            iam, atlas = ((PARTY_HEADER, "iam"),), ((PARTY_HEADER, "atlas-sms"),)

            async def check(number: str, sender: str) -> registry_pb2.CheckResponse:
                return await stub.Check(
                    registry_pb2.CheckRequest(msisdn=number, sender_id=sender), metadata=iam
                )

            async with asyncio.timeout(20):
                while (
                    await check("0612345678", "MARJANE")
                ).verdict != registry_pb2.VERDICT_SUPPRESSED:
                    await asyncio.sleep(0.1)
            health = health_pb2_grpc.HealthStub(channel)
            service = health_pb2.HealthCheckRequest(service="stopsms.v1.RegistryService")
            async with asyncio.timeout(20):  # SERVING once the view caught up with the topic
                while (
                    await health.Check(service)
                ).status != health_pb2.HealthCheckResponse.SERVING:
                    await asyncio.sleep(0.1)
            answer = await check("0612345678", "JUMIA")
            assert answer.matched_scope == registry_pb2.MATCHED_SCOPE_SENDER and answer.as_of
            assert (
                await check("0612345678", "MARJANE")
            ).matched_scope == registry_pb2.MATCHED_SCOPE_GLOBAL
            assert (await check("0700000001", "JUMIA")).verdict == registry_pb2.VERDICT_ALLOWED

            async def chunks():
                yield registry_pb2.CheckBatchRequest(
                    sender_id="KITEA", msisdns=["0700000001", "0612345678", "0699999999", "garbage"]
                )
                yield registry_pb2.CheckBatchRequest(sender_id="", msisdns=["0612345678"])

            replies = [r async for r in stub.CheckBatch(chunks(), metadata=iam)]
            assert [[x.verdict for x in r.results] for r in replies] == [
                [
                    registry_pb2.VERDICT_SUPPRESSED,
                    registry_pb2.VERDICT_SUPPRESSED,
                    registry_pb2.VERDICT_ALLOWED,
                    registry_pb2.VERDICT_INVALID_NUMBER,
                ],
                [registry_pb2.VERDICT_SUPPRESSED],
            ]

            async def too_big():
                yield registry_pb2.CheckBatchRequest(
                    sender_id="JUMIA", msisdns=["0612345678"] * (MAX_BATCH_CHUNK + 1)
                )

            with pytest.raises(grpc.aio.AioRpcError) as caught:
                _ = [r async for r in stub.CheckBatch(too_big(), metadata=atlas)]
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Check(
                    registry_pb2.CheckRequest(msisdn="0612345678", sender_id="KITEA"),
                    metadata=atlas,
                )
            assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Check(
                    registry_pb2.CheckRequest(msisdn="+33612345678", sender_id="JUMIA"),
                    metadata=atlas,
                )
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert caught.value.details().startswith("msisdn")

        audit = TopicReader(settings.kafka_bootstrap, topics.audit)
        await audit.start()
        entries: list[events_pb2.AuditEntry] = []
        async with asyncio.timeout(10):
            while not any(e.decision == events_pb2.AUDIT_DECISION_DENIED for e in entries):
                entries += [
                    events_pb2.AuditEntry.FromString(r.value) for r in await audit.read(500)
                ]
        await audit.stop()
        denied = [e for e in entries if e.decision == events_pb2.AUDIT_DECISION_DENIED]
        assert denied[0].party_id == "atlas-sms" and denied[0].method.endswith("/Check")
