"""A party that does not apply a change within the SLO shows as late, everywhere."""

from __future__ import annotations

import asyncio
import urllib.request
from pathlib import Path

import grpc
import pytest

from stopsms.core.identity import PARTY_HEADER
from stopsms.core.infra import free_port
from stopsms.core.settings import Settings
from stopsms.core.topics import Topics
from stopsms.v1 import events_pb2, notifier_pb2, notifier_pb2_grpc

from ..conftest import running_service
from .test_notifier import EVENT, change, publish

pytestmark = pytest.mark.integration


async def test_a_party_that_does_not_apply_in_time_is_late_in_the_proof_metrics_and_log(
    service_env: dict[str, str], namespace: str, tmp_path: Path
) -> None:
    settings = Settings.from_env(service_env)
    topics = Topics(namespace)
    metrics_port = free_port()
    env = {
        **service_env,
        "STOPSMS_PROPAGATION_SLO_SECONDS": "1",
        "STOPSMS_NOTIFIER_METRICS_ADDRESS": f"127.0.0.1:{metrics_port}",
    }
    address = f"127.0.0.1:{free_port()}"
    with running_service("notifier", env, address, tmp_path):
        c = change(settings, "+212611111111", "e-jumia", "JUMIA")
        await publish(settings, topics.suppressions, [c])
        async with grpc.aio.insecure_channel(address) as channel:
            stub = notifier_pb2_grpc.NotifierServiceStub(channel)
            statuses: dict[str, int] = {}
            async with asyncio.timeout(30):  # nobody applies it: after 1 s, everyone is late
                while statuses.get("atlas-sms") != events_pb2.DELIVERY_STATUS_LATE:
                    try:
                        reply = await stub.GetPropagation(
                            notifier_pb2.GetPropagationRequest(event_id=EVENT["e-jumia"]),
                            metadata=((PARTY_HEADER, "cndp"),),
                        )
                        statuses = {d.party_id: d.status for d in reply.propagation.deliveries}
                    except grpc.aio.AioRpcError as exc:
                        assert exc.code() == grpc.StatusCode.NOT_FOUND
                    await asyncio.sleep(0.2)
        assert statuses == {
            "iam": events_pb2.DELIVERY_STATUS_LATE,
            "atlas-sms": events_pb2.DELIVERY_STATUS_LATE,
        }
        await asyncio.sleep(1.5)  # the watcher's next round
        metrics = await asyncio.to_thread(
            lambda: (
                urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics").read().decode()
            )
        )
    assert 'stopsms_party_late_changes{party="atlas-sms"} 1.0' in metrics
    assert 'stopsms_party_pending_changes{party="iam"} 1.0' in metrics
    log = (tmp_path / "notifier.log").read_text()
    assert "atlas-sms is late: request e-jumia" in log
