"""A party that does not apply a change within the SLO shows as late, everywhere."""

from __future__ import annotations

import asyncio
import urllib.request
from pathlib import Path

import grpc
import pytest

from stopsms.adapters.identity import PARTY_HEADER
from stopsms.adapters.settings import Settings
from stopsms.domain.topics import Topics
from stopsms.v1 import events_pb2, notifier_pb2, notifier_pb2_grpc

from ..conftest import running_service, until
from .test_notifier import EVENT, change, publish

pytestmark = pytest.mark.integration

LATE_GAUGE = 'stopsms_party_late_changes{party="atlas-sms"} 1.0'
PENDING_GAUGE = 'stopsms_party_pending_changes{party="iam"} 1.0'


async def test_a_party_that_does_not_apply_in_time_is_late_in_the_proof_metrics_and_log(
    service_env: dict[str, str], namespace: str, tmp_path: Path
) -> None:
    settings = Settings.from_env(service_env)
    topics = Topics(namespace)
    env = {
        **service_env,
        "STOPSMS_PROPAGATION_SLO_SECONDS": "1",
    }
    with running_service("notifier", env, tmp_path) as notifier:
        address = notifier.address
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

        async def counted() -> str | None:  # the watcher's next round counts them
            text = await asyncio.to_thread(
                lambda: urllib.request.urlopen(notifier.metrics).read().decode()
            )
            return text if LATE_GAUGE in text and PENDING_GAUGE in text else None

        metrics = str(await until(counted, "the lateness gauges counting the late change", 30))
    assert LATE_GAUGE in metrics and PENDING_GAUGE in metrics
    log = (tmp_path / "notifier.log").read_text()
    assert "atlas-sms is late: request e-jumia" in log
