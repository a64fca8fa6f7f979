"""The processors that follow a topic, run in this process on the adapters' fakes.

The view materialiser, intake's link directory, and the notifier's live feed, webhook delivery
and receipts each take a bus (and the materialiser a view, the receipts consumer groups and a
producer) from their composition root: here the in-memory ones shipped beside the real ones,
so their behaviour is tested without a broker or Redis. The decision stage and the proof are
plain handlers (test_stream_handlers.py). The same processors run on Kafka and Redis in
tests/integration and tests/e2e.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mode
import pytest
import yaml
from aiohttp import web

from stopsms.adapters import proof_store, store_fill
from stopsms.adapters.bus import InMemoryBus, InMemoryConsumerGroups, InMemoryPublisher
from stopsms.adapters.kafka_access import KafkaAccess
from stopsms.adapters.link_store import InMemoryLinkStore, LiveLink
from stopsms.adapters.proof_store import InMemoryProofStore, PropagationIndex
from stopsms.adapters.sender_register import SenderRegisterFollower
from stopsms.adapters.settings import NotifierSettings
from stopsms.adapters.view import InMemorySuppressionView
from stopsms.domain.parties import PartiesDirectory, Party
from stopsms.domain.privacy import Key, Pseudonymiser
from stopsms.domain.proof import ProgressLog
from stopsms.domain.rules import combine
from stopsms.domain.topics import Topics, partition_for_key, suppression_key
from stopsms.intake.links import LinkDirectory
from stopsms.notifier.feed import LiveFeed
from stopsms.notifier.progress import (
    Acknowledgements,
    OperatorPoller,
    ProgressFollower,
    ProgressPublisher,
)
from stopsms.notifier.webhooks import SIGNATURE_HEADER, WebhookSender, verify
from stopsms.registry.materialiser import ViewMaterialiser
from stopsms.registry.subject_filter import SubjectFilter
from stopsms.v1 import events_pb2, senders_pb2

from ..conftest import until

PARTITIONS = 4
TOPICS = Topics()
PSEUDONYMS = Pseudonymiser(Key("pk1", bytes(32)), [Key("dk1", bytes(range(32)))])
SECRET = b"oasis-webhook-secret-0123456789"


def publish_change(
    bus: InMemoryBus, e164: str, sender: str, state: int, version: int, event_id: str
) -> None:
    """A SuppressionChanged as the registry publishes it: keyed and partitioned by subject."""
    change = events_pb2.SuppressionChanged(
        event_id=event_id,
        request_id=event_id,
        subject=PSEUDONYMS.subject(e164),
        sealed_msisdn=PSEUDONYMS.seal(e164),
        sender_id=sender,
        state=state,
        version=version,
        changed=True,
    )
    change.action_time.FromMilliseconds(1_000 * version)
    key = suppression_key(change.subject, sender).encode()
    bus.append(
        TOPICS.suppressions,
        key,
        change.SerializeToString(),
        partition=partition_for_key(key, PARTITIONS),
    )


async def suppressed(view: InMemorySuppressionView, e164: str, sender: str) -> bool:
    (entries,), _ = await view.lookup([PSEUDONYMS.subject(e164)], sender)
    return combine(*entries).suppressed


async def test_the_materialiser_fills_the_view_verifies_it_and_rebuilds_it_after_a_flush() -> None:
    bus, view = InMemoryBus(PARTITIONS), InMemorySuppressionView()
    publish_change(bus, "+212611111111", "", events_pb2.STATE_SUPPRESSED, 1, "e1")
    publish_change(bus, "+212622222222", "JUMIA", events_pb2.STATE_SUPPRESSED, 1, "e2")
    publish_change(bus, "+212622222222", "JUMIA", events_pb2.STATE_ALLOWED, 2, "e3")
    serving: list[bool] = []

    async def caught_up() -> None:
        serving.append(True)

    async def behind() -> None:
        serving.append(False)

    subject_filter = SubjectFilter(1 << 12)
    materialiser = ViewMaterialiser(
        bus,
        TOPICS.suppressions,
        view,
        on_caught_up=caught_up,
        on_behind=behind,
        subject_filter=subject_filter,
    )
    await materialiser.start()
    try:
        await until(lambda: _true(serving == [True]), "the view's first catch-up")
        assert materialiser.progress.verified is not None  # rebuilt from 0 and verified
        assert materialiser.progress.verified.count == 2  # the latest entry per scope
        assert await suppressed(view, "+212611111111", "KITEA")  # global: every sender
        assert not await suppressed(view, "+212622222222", "JUMIA")  # opted back in
        assert subject_filter.added >= 2 and sum(subject_filter.offsets.values()) == 3

        publish_change(bus, "+212633333333", "KITEA", events_pb2.STATE_SUPPRESSED, 1, "e4")

        async def followed() -> bool:
            return await suppressed(view, "+212633333333", "KITEA")

        await until(followed, "a new change applied to the view")

        await view.flush()  # Redis lost everything
        await until(lambda: _true(serving == [True, False, True]), "NOT_SERVING, then rebuilt")
        assert materialiser.progress.verified is not None
        assert materialiser.progress.verified.count == 3
        assert await suppressed(view, "+212633333333", "KITEA")
        assert await suppressed(view, "+212611111111", "")
        assert sum((await view.applied_offsets()).values()) == 4
    finally:
        await materialiser.stop()


async def _true(value: bool) -> bool:
    return value


async def test_the_live_feed_catches_a_stream_up_then_hands_it_what_arrives() -> None:
    bus = InMemoryBus(1)
    for n in range(3):
        bus.append("changes", b"k", _change(f"old-{n}", "JUMIA"), partition=0)
    feed = LiveFeed(bus, "changes")
    await feed.start()
    try:
        assert feed.positions == {0: 3}
        stream = feed.follow({0: 1}, lambda sender: sender == "JUMIA", idle_s=0.05)
        seen: list[str] = []

        async def read_until(count: int) -> bool:
            batch = await anext(stream)
            seen.extend(item.change.event_id for item in batch.items)
            return len(seen) >= count

        await until(lambda: read_until(2), "the stream caught up from its cursor")
        assert seen == ["old-1", "old-2"]  # from the stream's own position, not the start
        bus.append("changes", b"k", _change("kitea", "KITEA"), partition=0)
        bus.append("changes", b"k", _change("live", "JUMIA"), partition=0)
        await until(lambda: read_until(3), "the live change reached the stream")
        assert seen == ["old-1", "old-2", "live"]  # KITEA's change is not this stream's
        await stream.aclose()
    finally:
        await feed.stop()


def _change(event_id: str, sender: str) -> bytes:
    return events_pb2.SuppressionChanged(event_id=event_id, sender_id=sender).SerializeToString()


class RecordedAcknowledgements:
    """The acknowledgements the webhook sender records: each party's cursor, in memory."""

    def __init__(self) -> None:
        self.cursors: dict[str, dict[int, int]] = {}

    async def durable(self, party_id: str) -> dict[int, int]:
        return dict(self.cursors.get(party_id, {}))

    async def acknowledge(self, party: object, positions: dict[int, int]) -> None:
        self.cursors[party.id] = dict(positions)  # type: ignore[attr-defined]


@pytest.fixture
async def receiver():
    """A PSVA's webhook endpoint on a port the kernel chose; it refuses the first request."""
    received: list[dict] = []  # type: ignore[type-arg]
    attempts = []

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        verify(SECRET, request.headers[SIGNATURE_HEADER], body)
        attempts.append(1)
        if len(attempts) == 1:
            return web.Response(status=503)
        received.append(json.loads(body))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/hook", received
    finally:
        await runner.cleanup()


async def test_webhooks_deliver_each_entitled_change_signed_then_acknowledge_it(
    receiver, tmp_path: Path
) -> None:
    url, received = receiver
    (tmp_path / "oasis.secret").write_bytes(SECRET + b"\n")
    parties = tmp_path / "parties.yaml"
    parties.write_text(
        yaml.safe_dump(
            {
                "parties": [
                    {"id": "iam", "kind": "operator", "name": "IAM", "senders": ["IAM"]},
                    {
                        "id": "oasis-hooks",
                        "kind": "psva",
                        "name": "Oasis Hooks",
                        "senders": ["JUMIA"],
                        "webhook": {"url": url, "secret_file": str(tmp_path / "oasis.secret")},
                    },
                ]
            }
        )
    )
    settings = NotifierSettings.from_env(
        {
            "STOPSMS_PARTIES_FILE": str(parties),
            "STOPSMS_DATA_DIR": str(tmp_path / "data"),
            "STOPSMS_PARTITIONS": str(PARTITIONS),
            "STOPSMS_WEBHOOK_RETRY_BASE_SECONDS": "0.05",
        }
    )
    bus, acks = InMemoryBus(PARTITIONS), RecordedAcknowledgements()
    publish_change(bus, "+212611111111", "JUMIA", events_pb2.STATE_SUPPRESSED, 1, "e-jumia")
    publish_change(bus, "+212622222222", "KITEA", events_pb2.STATE_SUPPRESSED, 1, "e-kitea")
    publish_change(bus, "+212633333333", "", events_pb2.STATE_SUPPRESSED, 1, "e-global")
    sender = WebhookSender(
        lambda: set(range(PARTITIONS)),
        settings,
        PartiesDirectory.load(parties),
        acks,  # type: ignore[arg-type]
        PSEUDONYMS,
        bus=bus,
    )
    await sender.start()
    try:

        async def past_all_three() -> bool:
            return sum(acks.cursors.get("oasis-hooks", {}).values()) == 3

        await until(past_all_three, "the party's cursor past the three changes")
    finally:
        await sender.stop()
    delivered = [c for batch in received for c in batch["changes"]]
    assert sorted(c["eventId"] for c in delivered) == ["e-global", "e-jumia"]
    assert {c["msisdn"] for c in delivered} == {"+212611111111", "+212633333333"}
    assert all(batch["partyId"] == "oasis-hooks" and batch["cursor"] for batch in received)


async def test_the_link_directory_finds_what_another_replica_published_and_forgets_tombstones() -> (
    None
):
    bus = InMemoryBus(2)
    pseudonymiser = Pseudonymiser(Key("pk1", bytes(32)), [Key("dk1", bytes(range(32)))])
    store = InMemoryLinkStore()
    links = LinkDirectory(bus, TOPICS.links, store, pseudonymiser)
    await links.start()
    try:
        link = events_pb2.StopLink(
            code="AbCdEfGhIjK",
            sender_id="JUMIA",
            subject=pseudonymiser.subject("+212612345678"),
            sealed_msisdn=pseudonymiser.seal("+212612345678"),
        )
        link.expire_time.seconds = 2_000_000_000
        bus.append(TOPICS.links, link.code.encode(), link.SerializeToString(), partition=1)
        found = await links.get("AbCdEfGhIjK")  # published elsewhere: the store catches up
        assert found == LiveLink("AbCdEfGhIjK", "JUMIA", 2_000_000_000, "+212612345678")
        assert await links.get("NotIssued00", wait_seconds=1) is None
        bus.append(TOPICS.links, link.code.encode(), None, partition=1)  # a tombstone
        assert await links.caught_up()
        assert await links.get("AbCdEfGhIjK", wait_seconds=1) is None
        assert store.offsets == {1: 2}
    finally:
        await links.stop()


class _GroupBus(InMemoryBus):
    """The in-memory topics, but saying there is a Kafka: the store fills join groups."""

    kafka = KafkaAccess.of("127.0.0.1:9")


async def test_the_store_fillers_join_their_groups_with_the_configured_session_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A crashed intake or notifier replica's share is taken over after the operator's timeout.

    The link and proof stores' groups once kept the stream layer's default (30 s) whatever
    ``STOPSMS_KAFKA_SESSION_TIMEOUT_SECONDS`` said: a killed intake served again after 30 s in
    the fault tests, where the registry, given the setting, did after 10.
    """
    joined: dict[str, float] = {}

    class Stage(mode.Service):
        def __init__(self, kafka: object, group: str, *args: object, **kwargs: Any) -> None:
            joined[group] = kwargs["session_timeout_s"]
            self.joined = asyncio.Event()
            self.joined.set()
            super().__init__()

    monkeypatch.setattr(store_fill, "GroupProcessor", Stage)
    bus = _GroupBus(2)
    links = LinkDirectory(
        bus, TOPICS.links, InMemoryLinkStore(), PSEUDONYMS, group="links", session_timeout_s=7.0
    )
    proofs = PropagationIndex(
        bus, TOPICS.propagation, InMemoryProofStore(), group="proofs", session_timeout_s=7.0
    )
    for service in (links, proofs):
        await service.start()
    try:
        assert joined == {"links": 7.0, "proofs": 7.0}, "a store's group kept another timeout"
    finally:
        for service in (links, proofs):
            await service.stop()


async def test_every_process_entitles_its_parties_from_the_sender_register_as_it_changes() -> None:
    bus = InMemoryBus(2)
    directory = PartiesDirectory(
        [
            Party("atlas", events_pb2.PARTY_KIND_PSVA, "Atlas"),
            Party("sahara", events_pb2.PARTY_KIND_PSVA, "Sahara"),
        ]
    )
    granted: list[frozenset[str]] = []
    directory.on_replace(lambda d: granted.append(d.get("atlas").senders))  # type: ignore[union-attr]
    follower = SenderRegisterFollower(bus, TOPICS.senders, directory)
    await follower.start()
    try:
        jumia = senders_pb2.Sender(
            sender_id="JUMIA",
            aliases=["3030"],
            sending_party_ids=["atlas"],
            status=senders_pb2.SENDER_STATUS_ACTIVE,
        )
        bus.append(TOPICS.senders, b"JUMIA", jumia.SerializeToString(), partition=0)
        await until(
            lambda: _true(directory.get("atlas").sends_for("JUMIA")),  # type: ignore[union-attr]
            "atlas entitled to JUMIA by the register",
        )
        assert directory.resolve_sender("3030") == "JUMIA" and directory.is_declared("JUMIA")
        jumia.sending_party_ids[:] = ["sahara"]  # moved by the regulator's record
        bus.append(TOPICS.senders, b"JUMIA", jumia.SerializeToString(), partition=0)
        await until(
            lambda: _true(directory.get("sahara").sends_for("JUMIA")),  # type: ignore[union-attr]
            "JUMIA moved to sahara",
        )
        assert not directory.get("atlas").sends_for("JUMIA")  # type: ignore[union-attr]
        bus.append(TOPICS.senders, b"JUMIA", None, partition=0)  # a tombstone: undeclared
        await until(lambda: _true(not directory.is_declared("JUMIA")), "JUMIA undeclared")
        assert granted[0] == {"JUMIA"}
    finally:
        await follower.stop()


async def _true(value: bool) -> bool:
    return value


async def test_receipts_make_acknowledgements_and_operator_commits_durable_for_every_replica(
    tmp_path: Path,
) -> None:
    parties = tmp_path / "parties.yaml"
    parties.write_text(
        yaml.safe_dump(
            {
                "parties": [
                    {"id": "iam", "kind": "operator", "name": "IAM", "senders": ["IAM"]},
                    {"id": "atlas-sms", "kind": "psva", "name": "Atlas", "senders": ["JUMIA"]},
                ]
            }
        )
    )
    directory = PartiesDirectory.load(parties)
    bus, groups = InMemoryBus(PARTITIONS), InMemoryConsumerGroups()
    advanced: list[tuple[str, int]] = []

    def replica(
        on_advanced: Callable[[list[tuple[str, int]]], None],
    ) -> tuple[ProgressPublisher, ProgressFollower]:
        publisher = ProgressPublisher(lambda: InMemoryPublisher(bus))
        follower = ProgressFollower(
            bus, TOPICS, directory, groups, ProgressLog(), on_advanced, replay_seconds=600
        )
        return publisher, follower

    publisher, follower = replica(advanced.extend)
    acks = Acknowledgements(
        publisher, follower, groups, TOPICS, directory, flush_seconds=0.01, commit_seconds=0.05
    )
    operators = OperatorPoller(
        publisher,
        follower,
        groups,
        TOPICS,
        directory,
        mine=lambda: set(range(PARTITIONS)),
        waiting=lambda: True,
        busy_seconds=0.05,
        idle_seconds=5,
    )
    services = [publisher, follower, acks, operators]
    for service in services:
        await service.start()
    try:
        atlas = directory.get("atlas-sms")
        assert atlas is not None
        # a PSVA's acknowledgement is answered once its progress receipt is written
        assert await acks.acknowledge(atlas, {0: 5, 2: 3}) == {0: 5, 2: 3}
        assert ("atlas-sms", 0) in advanced and ("atlas-sms", 2) in advanced
        assert bus.partitions_of(TOPICS.receipts) != [[]] * PARTITIONS
        assert await acks.acknowledge(atlas, {0: 4}) == {0: 5, 2: 3}  # never back

        async def group_follows() -> bool:
            committed = await groups.committed(TOPICS.psva_group("atlas-sms"), TOPICS.suppressions)
            return committed == {0: 5, 2: 3}

        await until(group_follows, "the PSVA's group at its acknowledged cursor")

        # an operator commits its own group; the poller turns that into a receipt
        await groups.commit(TOPICS.operator_group("iam"), TOPICS.suppressions, {3: 7})

        async def operator_advanced() -> bool:
            return follower.progress.position("iam", 3) == 7

        await until(operator_advanced, "the operator's commit read as its progress")

        # another replica, started now, reads the same progress from the receipts
        other_publisher, other = replica(lambda moved: None)
        await other_publisher.start()
        await other.start()
        try:
            await until(lambda: _true(other.ready.is_set()), "the other replica's replay")
            assert other.progress.positions("atlas-sms") == {0: 5, 2: 3}
            assert other.progress.position("iam", 3) == 7
        finally:
            await other.stop()
            await other_publisher.stop()
    finally:
        for service in reversed(services):
            await service.stop()


async def test_the_proof_index_keeps_open_proofs_in_memory_and_reads_done_ones_from_the_store(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(proof_store, "HOLD_DONE_S", 0.0)
    monkeypatch.setattr(proof_store, "STORE_FOLLOW_S", 0.01)
    bus, store = InMemoryBus(2), InMemoryProofStore()
    index = PropagationIndex(bus, TOPICS.propagation, store)
    await index.start()
    try:
        started = events_pb2.PropagationRecord(event_id="e-open", origin_party_id="iam")
        done = events_pb2.PropagationRecord(event_id="e-done", origin_party_id="iam", done=True)
        bus.append(TOPICS.propagation, b"e-open", started.SerializeToString(), partition=0)
        bus.append(TOPICS.propagation, b"e-done", done.SerializeToString(), partition=1)
        assert await index.caught_up()

        async def let_go() -> None:
            while index.peek("e-done") is not None:
                await asyncio.sleep(0.01)

        await asyncio.wait_for(let_go(), 5)  # else: the done proof never left memory
        assert [r.event_id for r in index.open_records()] == ["e-open"]
        assert index.peek("e-open") is not None and "e-done" in store.entries
        found = await index.find("e-done", 1.0, lambda record: True)
        assert found is not None and found.done
        assert await index.find("e-done", 0.1, lambda record: False) is None  # not theirs
        bus.append(TOPICS.propagation, b"e-done", None, partition=1)  # erased

        async def erased() -> None:
            while "e-done" in store.entries:
                await asyncio.sleep(0.01)

        await asyncio.wait_for(erased(), 5)  # else: the store kept an erased proof
        assert await index.find("e-done", 0.1, lambda record: True) is None
    finally:
        await index.stop()


async def test_a_reader_of_the_store_waits_for_the_proofs_it_let_go_before_the_store_had_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The console's case: it fills nothing, and the store is far behind what it read."""
    monkeypatch.setattr(proof_store, "HOLD_DONE_S", 0.0)
    monkeypatch.setattr(proof_store, "STORE_FOLLOW_S", 0.01)
    monkeypatch.setattr(proof_store, "MAX_HELD_DONE", 1)
    bus, store = InMemoryBus(1), InMemoryProofStore()
    index = PropagationIndex(bus, TOPICS.propagation, store, group=None)
    await index.start()
    try:
        done = [
            events_pb2.PropagationRecord(event_id=f"e-{n}", origin_party_id="iam", done=True)
            for n in range(3)
        ]
        for record in done:
            bus.append(TOPICS.propagation, record.event_id.encode(), record.SerializeToString())
        assert await index.caught_up()

        async def over_the_cap() -> None:
            while index.peek("e-0") is not None:
                await asyncio.sleep(0.01)

        await asyncio.wait_for(over_the_cap(), 5)  # else: the cap never let a proof go
        assert not store.entries  # nobody filled the store: this index reads it only
        with pytest.raises(proof_store.StoreUnavailable):
            await index.latest(["e-0"], wait_seconds=0.05)  # not "no proof"
        await store.apply([(r.event_id, r.SerializeToString()) for r in done], [], {0: 3})
        found = await index.latest(["e-0", "e-2", "e-none"], wait_seconds=1.0)
        assert sorted(found) == ["e-0", "e-2"] and found["e-0"].done
        assert await index.latest(["e-none"], wait_seconds=0.05) == {}  # no wait now
    finally:
        await index.stop()
