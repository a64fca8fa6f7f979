"""A PSVA newly authorised for a sender first gets that sender's list, then live changes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
import yaml

from stopsms.core.identity import PARTY_HEADER
from stopsms.core.settings import Settings
from stopsms.core.topics import Topics
from stopsms.notifier.cursor import encode_backfill_cursor
from stopsms.v1 import notifier_pb2, notifier_pb2_grpc

from ..conftest import E2E_PARTIES, running_service
from .test_notifier import publish
from .test_notifier_replicas import changes

pytestmark = pytest.mark.integration
SAHARA = ((PARTY_HEADER, "sahara-push"),)


async def read(stub, count: int, idle_s: float = 2.0) -> list[notifier_pb2.WatchChangesResponse]:  # type: ignore[no-untyped-def]
    """Changes from a fresh stream (no cursor): ``count`` of them, then whatever else comes
    within ``idle_s``."""
    got: list[notifier_pb2.WatchChangesResponse] = []
    call = stub.WatchChanges(notifier_pb2.WatchChangesRequest(), metadata=SAHARA)

    async def consume() -> None:
        async for response in call:
            if response.HasField("change"):
                got.append(response)

    task = asyncio.create_task(consume())
    async with asyncio.timeout(30):
        while len(got) < count:
            await asyncio.sleep(0.1)
    await asyncio.sleep(idle_s)
    call.cancel()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return got


async def test_a_newly_granted_sender_is_backfilled_then_live_and_acknowledged(
    service_env: dict[str, str], namespace: str, tmp_path: Path
) -> None:
    settings = Settings.from_env(service_env)
    topics = Topics(namespace)
    directory = yaml.safe_load(E2E_PARTIES.read_text())
    parties = tmp_path / "parties.yaml"
    parties.write_text(yaml.safe_dump(directory))
    env = {
        **service_env,
        "STOPSMS_PARTIES_FILE": str(parties),
        "STOPSMS_PARTIES_RELOAD_SECONDS": "0.3",
    }
    early = changes(settings, 8, "early")  # JUMIA, KITEA, global, MARJANE, twice
    with running_service("notifier", env, tmp_path) as notifier:
        address = notifier.address
        await publish(settings, topics.suppressions, early)
        async with grpc.aio.insecure_channel(address) as channel:
            stub = notifier_pb2_grpc.NotifierServiceStub(channel)
            first = await read(stub, 4)  # sahara-push: KITEA and global
            assert sorted(r.change.sender_id for r in first) == ["", "", "KITEA", "KITEA"]
            await stub.Acknowledge(
                notifier_pb2.AcknowledgeRequest(cursor=first[-1].cursor), metadata=SAHARA
            )

            for party in directory["parties"]:  # the ConfigMap changes: JUMIA granted too
                if party["id"] == "sahara-push":
                    party["senders"] = ["KITEA", "JUMIA"]
            parties.write_text(yaml.safe_dump(directory))
            log = tmp_path / "notifier.log"
            async with asyncio.timeout(20):
                while "backfill of JUMIA opened for sahara-push" not in log.read_text():
                    await asyncio.sleep(0.2)
            late = changes(settings, 1, "late")  # one live JUMIA change after the grant
            await publish(settings, topics.suppressions, late)

            second = await read(stub, 3)
            # The JUMIA changes behind sahara's acknowledgement come as a backfill (b1.), first;
            # one that was ahead of it in its partition comes live, like the new one (c2.).
            # Across partitions there is no order; each comes exactly once.
            assert sorted(r.change.event_id for r in second) == ["early-0", "early-4", "late-0"]
            kinds = [r.cursor[:3] for r in second]
            assert kinds[0] == "b1." and kinds == sorted(kinds)  # backfill before live
            late_cursor = next(r.cursor for r in second if r.change.event_id == "late-0")
            assert late_cursor.startswith("c2.")
            await stub.Acknowledge(
                notifier_pb2.AcknowledgeRequest(cursor=second[-1].cursor), metadata=SAHARA
            )
            # Acknowledged: nothing comes again, neither the backfill nor the live change.
            assert await read(stub, 0) == []
            kitea = encode_backfill_cursor("KITEA", {0: 1})
            with pytest.raises(grpc.aio.AioRpcError) as caught:  # not a sender of atlas-sms
                await stub.Acknowledge(
                    notifier_pb2.AcknowledgeRequest(cursor=kitea),
                    metadata=((PARTY_HEADER, "atlas-sms"),),
                )
            assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
