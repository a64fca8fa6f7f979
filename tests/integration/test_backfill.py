"""A PSVA newly authorised for a sender first gets that sender's list, then live changes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
import yaml

from stopsms.adapters.identity import PARTY_HEADER
from stopsms.adapters.settings import Settings
from stopsms.domain.cursor import decode_cursor, encode_backfill_cursor
from stopsms.domain.topics import Topics
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


async def read_through(stub, count: int, records: int, partitions: int) -> tuple[list[str], str]:  # type: ignore[no-untyped-def]
    """A fresh stream read until ``count`` changes came and a cursor covers the first
    ``records`` records of the topic (a heartbeat carries the position past records the
    PSVA is not entitled to): the senders received and that cursor."""
    senders: list[str] = []
    last = ""
    call = stub.WatchChanges(notifier_pb2.WatchChangesRequest(), metadata=SAHARA)
    try:
        async with asyncio.timeout(30):
            async for response in call:
                if response.HasField("change"):
                    senders.append(response.change.sender_id)
                last = response.cursor
                covered = sum(decode_cursor(last, partitions).values())
                if len(senders) >= count and covered >= records:
                    break
    except TimeoutError:
        raise AssertionError(
            f"the stream never reached {count} changes and {records} records: "
            f"{len(senders)} changes, cursor {last!r}"
        ) from None
    finally:
        call.cancel()
    return senders, last


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
        "STOPSMS_HEARTBEAT_SECONDS": "0.3",
    }
    early = changes(settings, 8, "early")  # JUMIA, KITEA, global, MARJANE, twice
    with running_service("notifier", env, tmp_path) as notifier:
        address = notifier.address
        await publish(settings, topics.suppressions, early)
        async with grpc.aio.insecure_channel(address) as channel:
            stub = notifier_pb2_grpc.NotifierServiceStub(channel)
            senders, cursor = await read_through(
                stub, 4, len(early), settings.partitions
            )  # KITEA and global
            assert sorted(senders) == ["", "", "KITEA", "KITEA"]
            await stub.Acknowledge(notifier_pb2.AcknowledgeRequest(cursor=cursor), metadata=SAHARA)
            # One JUMIA change after sahara's acknowledgement, before the grant.
            await publish(settings, topics.suppressions, changes(settings, 1, "ahead"))

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

            second = await read(stub, 4)
            # The JUMIA changes behind sahara's acknowledgement come as a backfill (b1.), first;
            # the one ahead of it comes live, like the new one (c2., naming the backfill).
            assert [(r.cursor[:3], r.change.event_id) for r in second[:2]] in (
                [("b1.", "early-0"), ("b1.", "early-4")],
                [("b1.", "early-4"), ("b1.", "early-0")],  # two partitions: either order
            )
            assert [(r.cursor[:3], r.change.event_id) for r in second[2:]] == [
                ("c2.", "ahead-0"),
                ("c2.", "late-0"),  # the same number as ahead-0: the same partition, after it
            ]
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
