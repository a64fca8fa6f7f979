"""Intake while its Kafka broker is down: UNAVAILABLE, never a false success; the retry is safe."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from stopsms.adapters.identity import PARTY_HEADER
from stopsms.adapters.kafka import TopicReader
from stopsms.adapters.settings import IntakeSettings
from stopsms.domain.topics import Topics
from stopsms.intake.service import IntakeProcess
from stopsms.tools.launcher import LocalInfrastructure, LocalKafka, create_topics, free_port
from stopsms.v1 import events_pb2, intake_pb2, intake_pb2_grpc

pytestmark = pytest.mark.integration


async def test_a_request_kafka_did_not_acknowledge_is_unavailable_and_retried_safely(
    infra: LocalInfrastructure, service_env: dict[str, str], tmp_path: Path
) -> None:
    kafka = LocalKafka(tmp_path / "own-broker")  # this test stops its broker: not the shared one
    await asyncio.to_thread(kafka.start)
    try:
        await asyncio.to_thread(create_topics, kafka.bootstrap, Topics(), 12)
        settings = IntakeSettings.from_env(
            {**service_env, "STOPSMS_TOPIC_NAMESPACE": ""},
            kafka_bootstrap=kafka.bootstrap,
            intake_grpc_address=f"127.0.0.1:{free_port()}",
            intake_http_address=f"127.0.0.1:{free_port()}",
            intake_health_address=f"127.0.0.1:{free_port()}",
            publish_timeout_seconds=3.0,
        )
        intake = IntakeProcess(settings)
        await intake.start()
        try:
            async with grpc.aio.insecure_channel(settings.intake_grpc_address) as channel:
                stub = intake_pb2_grpc.IntakeServiceStub(channel)

                async def submit(request_id: str) -> intake_pb2.SubmitOptOutResponse:
                    return await stub.SubmitOptOut(
                        intake_pb2.SubmitOptOutRequest(
                            request_id=request_id,
                            msisdn="0612345678",
                            sender_id="JUMIA",
                            channel=events_pb2.CHANNEL_SMS,
                        ),
                        metadata=((PARTY_HEADER, "iam"),),
                        timeout=30,
                    )

                before = await submit("before-outage")
                await asyncio.to_thread(kafka.stop)
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await submit("during-outage")
                assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
                assert "request_id" in caught.value.details()

                await asyncio.to_thread(kafka.start)
                async with asyncio.timeout(60):
                    while True:  # the client retries, with the same request id
                        try:
                            retried = await submit("during-outage")
                            break
                        except grpc.aio.AioRpcError as exc:
                            assert exc.code() == grpc.StatusCode.UNAVAILABLE
                            await asyncio.sleep(1)
        finally:
            await intake.stop()

        reader = TopicReader(kafka.bootstrap, Topics().requests)
        await reader.start()
        records = []
        async with asyncio.timeout(20):
            while len(records) < 2:
                records += await reader.read(timeout_ms=500)
        await asyncio.sleep(1)
        records += await reader.read(timeout_ms=500)
        await reader.stop()
        event_ids = {events_pb2.PreferenceRequested.FromString(r.value).event_id for r in records}
        # Every acknowledged request is there; a late copy of the failed attempt, if Kafka kept
        # it, carries the same event id and is deduplicated by the registry.
        assert event_ids == {before.event_id, retried.event_id}
    finally:
        await asyncio.to_thread(kafka.stop)
