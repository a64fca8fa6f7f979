"""Intake in-process against the real broker: requests land on Kafka, links survive a restart."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import grpc
import pytest

from stopsms.adapters.identity import PARTY_HEADER
from stopsms.adapters.kafka import TopicReader
from stopsms.adapters.settings import IntakeSettings
from stopsms.domain.topics import Topics
from stopsms.intake.service import IntakeProcess
from stopsms.tools.launcher import free_port
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
    records += await reader.read(timeout_ms=1000)  # and nothing more than expected?
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


async def test_retries_after_a_restart_and_double_clicks_make_one_request(
    service_env: dict[str, str],
) -> None:
    settings = settings_for(service_env)
    request = intake_pb2.SubmitOptOutRequest(
        request_id="call-9",
        msisdn="0711223344",
        sender_id="",
        channel=events_pb2.CHANNEL_CALL_CENTER,
    )
    answers = []
    for _ in range(2):  # intake restarted between the two calls
        process = IntakeProcess(settings_for(service_env) if answers else settings)
        await process.start()
        try:
            async with grpc.aio.insecure_channel(process.settings.intake_grpc_address) as channel:
                stub = intake_pb2_grpc.IntakeServiceStub(channel)
                iam = ((PARTY_HEADER, "iam"),)
                answers.append(await stub.SubmitOptOut(request, metadata=iam))
                if len(answers) == 1:
                    link = await stub.IssueStopLink(
                        intake_pb2.IssueStopLinkRequest(msisdn="0711223344", sender_id="JUMIA"),
                        metadata=((PARTY_HEADER, "atlas-sms"),),
                    )
                    url = settings.public_base_url + link.code
                    async with aiohttp.ClientSession() as web:
                        for _ in range(2):  # a double click
                            async with web.post(url, data={"action": "opt_out"}) as page:
                                assert page.status == 200
                                assert f"{link.code}:opt_out" in await page.text()
                        misses = []
                        for i in range(35):  # someone trying codes
                            async with web.get(settings.public_base_url + f"Guess{i:06d}") as page:
                                misses.append(page.status)
                        assert misses[:30] == [404] * 30  # the budget, then mostly refused
                        assert misses[30:].count(429) >= 3 and set(misses) == {404, 429}
        finally:
            await process.stop()
    assert answers[0] == answers[1]  # the first answer, accepted time included
    requests = await read_requests(settings, 2)
    assert sorted(r.request_id for r in requests) == sorted(["call-9", f"{link.code}:opt_out"])
