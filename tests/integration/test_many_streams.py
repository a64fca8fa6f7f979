"""Two hundred PSVA streams on one notifier replica, all fed by one live reader."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import pytest

from stopsms.adapters.identity import PARTY_HEADER
from stopsms.adapters.settings import Settings
from stopsms.domain.topics import Topics
from stopsms.v1 import notifier_pb2, notifier_pb2_grpc

from ..conftest import running_service
from .test_notifier import publish
from .test_notifier_replicas import changes

pytestmark = pytest.mark.integration
STREAMS = 200


async def test_two_hundred_streams_each_get_the_change(
    service_env: dict[str, str], namespace: str, tmp_path: Path
) -> None:
    settings = Settings.from_env(service_env)
    topics = Topics(namespace)
    with running_service("notifier", service_env, tmp_path) as notifier:
        address = notifier.address
        async with grpc.aio.insecure_channel(address) as channel:
            stub = notifier_pb2_grpc.NotifierServiceStub(channel)
            connected = 0
            received: list[float] = []

            async def psva_stream() -> None:
                nonlocal connected
                call = stub.WatchChanges(
                    notifier_pb2.WatchChangesRequest(),
                    metadata=((PARTY_HEADER, "atlas-sms"),),
                )
                first = True
                async for response in call:
                    if first:
                        connected += 1
                        first = False
                    if response.HasField("change"):
                        received.append(time.monotonic())
                        break
                call.cancel()

            # Heartbeats come every 5 s; a stream counts as connected at its first message.
            streams = [asyncio.create_task(psva_stream()) for _ in range(STREAMS)]
            async with asyncio.timeout(60):
                while connected < STREAMS:
                    await asyncio.sleep(0.2)
            published = time.monotonic()
            await publish(settings, topics.suppressions, changes(settings, 1, "many"))
            async with asyncio.timeout(30):
                await asyncio.gather(*streams)
    assert len(received) == STREAMS
    print(f"{STREAMS} streams: last received {max(received) - published:.2f} s after publishing")
