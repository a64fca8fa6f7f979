"""Two notifier replicas: any serves any PSVA, webhooks are delivered once, resumption is exact."""

from __future__ import annotations

import asyncio
import json
from contextlib import ExitStack
from pathlib import Path

import grpc
import pytest
import yaml
from aiohttp import web

from stopsms.adapters.identity import PARTY_HEADER
from stopsms.adapters.settings import Settings
from stopsms.domain.topics import Topics, partition_for_key, suppression_key
from stopsms.notifier.webhooks import SIGNATURE_HEADER, verify
from stopsms.tools.launcher import free_port
from stopsms.v1 import events_pb2, notifier_pb2, notifier_pb2_grpc

from ..conftest import E2E_PARTIES, running_service
from .test_notifier import opt_out, publish

pytestmark = pytest.mark.integration
SECRET = b"replica-webhook-secret-0123456789"
SENDERS = ["JUMIA", "KITEA", "", "MARJANE"]  # atlas: JUMIA, MARJANE; sahara: KITEA
ATLAS = ((PARTY_HEADER, "atlas-sms"),)


def changes(settings: Settings, count: int, prefix: str) -> list[events_pb2.SuppressionChanged]:
    """``count`` opt-outs of distinct numbers, spread over the senders."""
    return [
        opt_out(
            settings,
            f"+2126{i:08d}",
            event_id=f"{prefix}-{i}",
            request_id=f"{prefix}-{i}",
            sender=SENDERS[i % len(SENDERS)],
        )
        for i in range(count)
    ]


async def watch(
    address: str, count: int, cursor: str = ""
) -> list[notifier_pb2.WatchChangesResponse]:
    """Read ``count`` changes as atlas-sms from one replica, then disconnect."""
    got: list[notifier_pb2.WatchChangesResponse] = []
    async with grpc.aio.insecure_channel(address) as channel:
        stub = notifier_pb2_grpc.NotifierServiceStub(channel)
        call = stub.WatchChanges(notifier_pb2.WatchChangesRequest(cursor=cursor), metadata=ATLAS)
        async with asyncio.timeout(40):
            async for response in call:
                if response.HasField("change"):
                    got.append(response)
                    if len(got) == count:
                        break
        call.cancel()
    return got


async def acknowledge(address: str, cursor: str) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        await notifier_pb2_grpc.NotifierServiceStub(channel).Acknowledge(
            notifier_pb2.AcknowledgeRequest(cursor=cursor), metadata=ATLAS
        )


def entitled_in_order(items: list[events_pb2.SuppressionChanged]) -> dict[int, list[str]]:
    """atlas-sms's changes per partition, in publication order."""
    out: dict[int, list[str]] = {}
    for c in items:
        if c.sender_id in ("", "JUMIA", "MARJANE"):
            key = suppression_key(c.subject, c.sender_id).encode()
            out.setdefault(partition_for_key(key, 12), []).append(c.event_id)
    return out


async def test_two_replicas_serve_any_psva_and_deliver_each_webhook_once(
    service_env: dict[str, str], namespace: str, tmp_path: Path
) -> None:
    settings = Settings.from_env(service_env)
    topics = Topics(namespace)
    accepted: list[str] = []

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        verify(SECRET, request.headers[SIGNATURE_HEADER], body)
        accepted.extend(c["eventId"] for c in json.loads(body)["changes"])
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    hook_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", hook_port).start()
    (tmp_path / "hook.secret").write_bytes(SECRET)
    directory = yaml.safe_load(E2E_PARTIES.read_text())
    directory["parties"].append(
        {
            "id": "oasis-hooks",
            "kind": "psva",
            "senders": ["KITEA"],
            "webhook": {
                "url": f"http://127.0.0.1:{hook_port}/hook",
                "secret_file": str(tmp_path / "hook.secret"),
            },
        }
    )
    (tmp_path / "parties.yaml").write_text(yaml.safe_dump(directory))
    env = {**service_env, "STOPSMS_PARTIES_FILE": str(tmp_path / "parties.yaml")}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    before = changes(settings, 40, "before")
    after = changes(settings, 100, "after")
    try:
        with ExitStack() as stack:
            first = stack.enter_context(running_service("notifier", env, tmp_path / "a")).address
            second = stack.enter_context(running_service("notifier", env, tmp_path / "b")).address
            await publish(settings, topics.suppressions, before)
            expected_before = entitled_in_order(before)
            # From the first replica, everything so far; acknowledge it and disconnect.
            seen = await watch(first, sum(map(len, expected_before.values())))
            await acknowledge(first, seen[-1].cursor)
            # 100 changes happen while atlas-sms is away...
            await publish(settings, topics.suppressions, after)
            expected_after = entitled_in_order(after)
            # ...and it comes back to the other replica without a cursor: exactly those,
            # in order per partition, none from before its acknowledgement, none of KITEA.
            resumed = await watch(second, sum(map(len, expected_after.values())))
            async with asyncio.timeout(30):
                while len(accepted) < 35:  # oasis-hooks: KITEA and global, 10 + 25
                    await asyncio.sleep(0.2)
            await asyncio.sleep(2)  # no second delivery may follow
    finally:
        await runner.cleanup()

    def by_partition(responses) -> dict[int, list[str]]:  # type: ignore[no-untyped-def]
        out: dict[int, list[str]] = {}
        for r in responses:
            key = suppression_key(r.change.subject, r.change.sender_id).encode()
            out.setdefault(partition_for_key(key, 12), []).append(r.change.event_id)
        return out

    assert by_partition(seen) == expected_before
    assert by_partition(resumed) == expected_after
    assert all(r.change.sender_id != "KITEA" for r in [*seen, *resumed])
    hooked = [c.event_id for c in [*before, *after] if c.sender_id in ("", "KITEA")]
    assert sorted(accepted) == sorted(hooked)  # each once, across both replicas
