"""The notifier process against the real broker: PSVA streams, receipts, the proof."""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path

import grpc
import pytest
from kafka import KafkaConsumer

from stopsms.adapters.identity import PARTY_HEADER
from stopsms.adapters.kafka import KafkaPublisher
from stopsms.adapters.settings import Settings
from stopsms.domain.ids import event_id
from stopsms.domain.topics import Topics, partition_for_key, suppression_key
from stopsms.v1 import events_pb2, notifier_pb2, notifier_pb2_grpc

from ..conftest import running_service, until

pytestmark = pytest.mark.integration
EVENT = {name: event_id("iam", name) for name in ("e-jumia", "e-kitea", "e-global")}
NAME = {v: k for k, v in EVENT.items()}


def opt_out(
    settings: Settings, msisdn: str, *, event_id: str, request_id: str, sender: str
) -> events_pb2.SuppressionChanged:
    """An opt-out as the registry publishes it."""
    p = settings.pseudonymiser()
    c = events_pb2.SuppressionChanged(
        event_id=event_id,
        request_id=request_id,
        party_id="iam",
        action=events_pb2.ACTION_OPT_OUT,
        sender_id=sender,
        subject=p.subject(msisdn),
        state=events_pb2.STATE_SUPPRESSED,
        version=1,
        changed=True,
    )
    c.sealed_msisdn.CopyFrom(p.seal(msisdn))
    c.action_time.GetCurrentTime()
    return c


def change(
    settings: Settings, msisdn: str, event: str, sender: str
) -> events_pb2.SuppressionChanged:
    """An opt-out named, as these tests name events, by its request id (see ``EVENT``)."""
    return opt_out(settings, msisdn, event_id=EVENT[event], request_id=event, sender=sender)


async def publish(
    settings: Settings, topic: str, items: list[events_pb2.SuppressionChanged]
) -> None:
    """Publish changes as the registry does: keyed by subject and scope, placed by subject."""
    publisher = KafkaPublisher(settings.kafka_bootstrap)
    await publisher.start()
    for c in items:
        key = suppression_key(c.subject, c.sender_id).encode()
        await publisher.publish(
            topic, key, c.SerializeToString(), partition=partition_for_key(key, 12)
        )
    await publisher.stop()


def operator_applies_everything(bootstrap: str, topics: Topics, expected: int) -> None:
    consumer = KafkaConsumer(
        topics.suppressions,
        bootstrap_servers=bootstrap,
        group_id=topics.operator_group("iam"),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    seen = 0
    while seen < expected:
        seen += sum(len(v) for v in consumer.poll(timeout_ms=500).values())
    consumer.commit()
    consumer.close()


async def test_psvas_get_their_changes_and_every_confirmation_becomes_proof(
    service_env: dict[str, str], namespace: str, tmp_path: Path
) -> None:
    settings = Settings.from_env(service_env)
    topics = Topics(namespace)
    changes = [
        change(settings, "+212611111111", "e-jumia", "JUMIA"),
        change(settings, "+212622222222", "e-kitea", "KITEA"),
        change(settings, "+212633333333", "e-global", ""),
    ]
    with running_service("notifier", service_env, tmp_path) as notifier:
        address = notifier.address
        await publish(settings, topics.suppressions, changes)

        async with grpc.aio.insecure_channel(address) as channel:
            stub = notifier_pb2_grpc.NotifierServiceStub(channel)
            atlas = ((PARTY_HEADER, "atlas-sms"),)
            received: list[notifier_pb2.WatchChangesResponse] = []
            bad = stub.WatchChanges(
                notifier_pb2.WatchChangesRequest(sender_ids=["<JUMIA>"]), metadata=atlas
            )
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await bad.read()
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert caught.value.details().startswith("sender_ids")
            # A sender written another way is the same sender (its canonical id).
            call = stub.WatchChanges(
                notifier_pb2.WatchChangesRequest(sender_ids=[" jumia"]), metadata=atlas
            )
            async with asyncio.timeout(20):
                async for response in call:
                    if response.HasField("change"):
                        received.append(response)
                    if len(received) == 2:
                        break
            call.cancel()
            assert sorted(NAME[r.change.event_id] for r in received) == ["e-global", "e-jumia"]
            assert {r.change.msisdn for r in received} == {"+212611111111", "+212633333333"}
            for r in received:
                await stub.Acknowledge(
                    notifier_pb2.AcknowledgeRequest(cursor=r.cursor), metadata=atlas
                )

            # Resuming without a cursor starts after the acknowledged changes.
            resumed = stub.WatchChanges(notifier_pb2.WatchChangesRequest(), metadata=atlas)
            heartbeat = None
            async with asyncio.timeout(15):
                async for response in resumed:
                    assert not response.HasField("change"), "an acknowledged change came again"
                    heartbeat = response
                    break
            resumed.cancel()
            assert heartbeat is not None and heartbeat.cursor

            await asyncio.to_thread(
                operator_applies_everything, settings.kafka_bootstrap, topics, 3
            )
            sahara = ((PARTY_HEADER, "sahara-push"),)
            call = stub.WatchChanges(notifier_pb2.WatchChangesRequest(), metadata=sahara)
            sahara_seen: set[str] = set()
            async with asyncio.timeout(20):
                async for response in call:
                    if response.HasField("change"):
                        sahara_seen.add(NAME[response.change.event_id])
                        await stub.Acknowledge(
                            notifier_pb2.AcknowledgeRequest(cursor=response.cursor), metadata=sahara
                        )
                    if sahara_seen == {"e-kitea", "e-global"}:
                        break
            call.cancel()

            regulator = ((PARTY_HEADER, "cndp"),)
            for event, parties in [
                ("e-jumia", {"iam", "atlas-sms"}),
                ("e-kitea", {"iam", "sahara-push"}),
                ("e-global", {"iam", "atlas-sms", "sahara-push"}),
            ]:
                async with asyncio.timeout(20):
                    while True:
                        try:
                            reply = await stub.GetPropagation(
                                notifier_pb2.GetPropagationRequest(event_id=EVENT[event]),
                                metadata=regulator,
                            )
                            if reply.propagation.done:
                                break
                        except grpc.aio.AioRpcError as exc:
                            assert exc.code() == grpc.StatusCode.NOT_FOUND
                        await asyncio.sleep(0.2)
                assert {d.party_id for d in reply.propagation.deliveries} == parties

            # An origin sees its own requests only; the answer does not say whether others exist.
            own = await stub.GetPropagation(
                notifier_pb2.GetPropagationRequest(request_id="e-jumia"),
                metadata=((PARTY_HEADER, "iam"),),
            )
            assert own.propagation.event_id == EVENT["e-jumia"]
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.GetPropagation(
                    notifier_pb2.GetPropagationRequest(event_id=EVENT["e-jumia"]), metadata=atlas
                )
            assert caught.value.code() == grpc.StatusCode.NOT_FOUND
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Acknowledge(
                    notifier_pb2.AcknowledgeRequest(cursor="forged"), metadata=atlas
                )
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                async for _ in stub.WatchChanges(
                    notifier_pb2.WatchChangesRequest(), metadata=((PARTY_HEADER, "iam"),)
                ):
                    pass
            assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_a_strangers_probe_of_another_partys_proof_looks_exactly_like_an_absent_one(
    service_env: dict[str, str], namespace: str, tmp_path: Path
) -> None:
    # Event ids derive from a party's id and its request id under a public namespace, so a
    # stranger can compute another party's and ask. "Not yours" must look like "absent".
    settings = Settings.from_env(service_env)
    topics = Topics(namespace)
    theirs = event_id("atlas-sms", "campaign-42")
    record = events_pb2.PropagationRecord(event_id=theirs, origin_party_id="atlas-sms")
    publisher = KafkaPublisher(settings.kafka_bootstrap)
    await publisher.start()
    await publisher.publish(topics.propagation, theirs.encode(), record.SerializeToString())
    await publisher.stop()
    with running_service("notifier", service_env, tmp_path) as notifier:
        async with grpc.aio.insecure_channel(notifier.address) as channel:
            stub = notifier_pb2_grpc.NotifierServiceStub(channel)

            async def ask(party: str, event: str) -> tuple[float, str]:
                started = time.perf_counter()
                try:
                    await stub.GetPropagation(
                        notifier_pb2.GetPropagationRequest(event_id=event),
                        metadata=((PARTY_HEADER, party),),
                    )
                except grpc.aio.AioRpcError as exc:
                    return time.perf_counter() - started, f"{exc.code().name}: {exc.details()}"
                return time.perf_counter() - started, "OK"

            async def owner_sees_it() -> bool:
                return (await ask("atlas-sms", theirs))[1] == "OK"

            await until(owner_sees_it, "the proof reaching the notifier's index")
            stranger: list[float] = []
            absent: list[float] = []
            for i in range(60):  # interleaved, so the machine's noise falls on both alike
                took, said = await ask("sahara-push", theirs)
                stranger.append(took)
                assert said == "NOT_FOUND: no propagation record for this request"
                took, said = await ask("sahara-push", event_id("atlas-sms", f"never-{i}"))
                absent.append(took)
                assert said == "NOT_FOUND: no propagation record for this request"
    gap_ms = abs(statistics.median(stranger) - statistics.median(absent)) * 1000
    assert gap_ms < 3.0, (
        f"medians differ by {gap_ms:.2f} ms: not yours {statistics.median(stranger) * 1000:.2f}"
        f" ms, absent {statistics.median(absent) * 1000:.2f} ms"
    )


async def test_acknowledgements_on_one_stream_are_each_answered_durable_and_in_order(
    service_env: dict[str, str], namespace: str, tmp_path: Path
) -> None:
    settings = Settings.from_env(service_env)
    topics = Topics(namespace)
    changes = [
        change(settings, "+212611111111", "e-jumia", "JUMIA"),
        change(settings, "+212633333333", "e-global", ""),
    ]
    atlas = ((PARTY_HEADER, "atlas-sms"),)
    with running_service("notifier", service_env, tmp_path) as notifier:
        await publish(settings, topics.suppressions, changes)
        async with grpc.aio.insecure_channel(notifier.address) as channel:
            stub = notifier_pb2_grpc.NotifierServiceStub(channel)
            received: list[notifier_pb2.WatchChangesResponse] = []
            call = stub.WatchChanges(notifier_pb2.WatchChangesRequest(), metadata=atlas)
            async with asyncio.timeout(20):
                async for response in call:
                    if response.HasField("change"):
                        received.append(response)
                    if len(received) == 2:
                        break
            call.cancel()

            acks = stub.AcknowledgeStream(metadata=atlas)
            answers = []
            for r in received:  # each answered before the next is sent
                await acks.write(notifier_pb2.AcknowledgeStreamRequest(cursor=r.cursor))
                answers.append(await acks.read())
            await acks.done_writing()
            assert all(a.cursor for a in answers)
            assert await acks.read() == grpc.aio.EOF and await acks.code() == grpc.StatusCode.OK

            # Durable: a stream resumed without a cursor starts after both.
            resumed = stub.WatchChanges(notifier_pb2.WatchChangesRequest(), metadata=atlas)
            async with asyncio.timeout(15):
                first = await resumed.read()
            resumed.cancel()
            assert not first.HasField("change"), "an acknowledged change came again"

            # A bad cursor ends the call with the status Acknowledge gives, naming the field.
            bad = stub.AcknowledgeStream(metadata=atlas)
            await bad.write(notifier_pb2.AcknowledgeStreamRequest(cursor="not a cursor"))
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await bad.read()
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert caught.value.details().startswith("cursor")
            # Operators read the topic; the stream of acknowledgements is for PSVAs.
            refused = stub.AcknowledgeStream(metadata=((PARTY_HEADER, "iam"),))
            await refused.write(notifier_pb2.AcknowledgeStreamRequest(cursor=received[0].cursor))
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await refused.read()
            assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
