"""Intake in-process against the real broker: requests land on Kafka, links survive a restart."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import grpc
import pytest

from stopsms.core.identity import PARTY_HEADER
from stopsms.core.infra import free_port
from stopsms.core.kafka import TopicReader
from stopsms.core.settings import IntakeSettings
from stopsms.core.topics import Topics
from stopsms.intake.service import IntakeProcess
from stopsms.v1 import events_pb2, intake_pb2, intake_pb2_grpc

pytestmark = pytest.mark.integration


def settings_for(env: dict[str, str]) -> IntakeSettings:
    http = free_port()
    return IntakeSettings.from_env(
        env,
        intake_grpc_address=f"127.0.0.1:{free_port()}",
        intake_http_address=f"127.0.0.1:{http}",
        intake_health_address=f"127.0.0.1:{free_port()}",
        public_base_url=f"http://127.0.0.1:{http}/",
        registry_grpc_address=f"127.0.0.1:{free_port()}",  # no registry: the page still works
    )


async def read_requests(
    settings: IntakeSettings, count: int
) -> list[events_pb2.PreferenceRequested]:
    reader = TopicReader(settings.kafka_bootstrap, Topics(settings.topic_namespace).requests)
    await reader.start()
    records = []
    async with asyncio.timeout(20):
        while len(records) < count:
            records += await reader.read(timeout_ms=300)
    await reader.stop()
    return [events_pb2.PreferenceRequested.FromString(r.value) for r in records]


async def test_requests_are_on_kafka_when_answered_and_links_survive_a_restart(
    service_env: dict[str, str], tmp_path: Path
) -> None:
    settings = settings_for(service_env)
    first = IntakeProcess(settings)
    await first.start()
    try:
        async with grpc.aio.insecure_channel(settings.intake_grpc_address) as channel:
            stub = intake_pb2_grpc.IntakeServiceStub(channel)
            reply = await stub.SubmitOptOut(
                intake_pb2.SubmitOptOutRequest(
                    request_id="sms-1",
                    msisdn="0612345678",
                    sender_id="JUMIA",
                    channel=events_pb2.CHANNEL_APP,
                ),
                metadata=((PARTY_HEADER, "iam"),),
            )
            link = await stub.IssueStopLink(
                intake_pb2.IssueStopLinkRequest(msisdn="0612345678", sender_id="JUMIA"),
                metadata=((PARTY_HEADER, "atlas-sms"),),
            )
    finally:
        await first.stop()
    [request] = await read_requests(settings, 1)
    assert request.event_id == reply.event_id and request.channel == events_pb2.CHANNEL_APP

    restarted_settings = settings_for(service_env)
    second = IntakeProcess(restarted_settings)
    await second.start()
    try:
        url = restarted_settings.public_base_url + link.code
        async with aiohttp.ClientSession() as web:
            async with web.get(url) as page:
                assert page.status == 200 and "JUMIA" in await page.text()
            async with web.post(url, data={"action": "opt_out"}) as page:
                assert page.status == 200
            async with web.post(url, data={"action": "delete_everything"}) as page:
                assert page.status == 400
            async with web.post(url, data={"action": "x" * 10_000}) as page:
                assert page.status == 413
    finally:
        await second.stop()
    requests = await read_requests(settings, 2)
    clicked = requests[-1] if requests[-1].party_id == "link" else requests[0]
    assert clicked.party_id == "link" and clicked.request_id == f"{link.code}:opt_out"
    assert clicked.channel == events_pb2.CHANNEL_LINK and clicked.subject == request.subject
