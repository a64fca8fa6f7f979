"""The link store and the proof store on the real broker and redis-server.

Both are filled from their topic by a consumer group, with their offsets in Redis beside the
entries: a lost Redis is filled again from the topic, with nothing done by hand.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest
import redis.asyncio as aioredis

from stopsms.adapters import proof_store
from stopsms.adapters.bus import KafkaBus
from stopsms.adapters.decision_store import RedisDecisionStore
from stopsms.adapters.kafka import KafkaPublisher
from stopsms.adapters.link_store import EXPIRED_KEPT_DAYS, LiveLink, RedisLinkStore, sweep
from stopsms.adapters.proof_store import PropagationIndex, RedisProofStore
from stopsms.adapters.request_log_store import RedisRequestLogStore
from stopsms.console.assessor import ProofIndex as ConsoleProofs
from stopsms.console.history import DecisionHistory, RequestHistory
from stopsms.domain.privacy import Key, Pseudonymiser
from stopsms.domain.topics import Topics
from stopsms.intake.links import LinkDirectory, new_codes
from stopsms.tools.launcher import LocalInfrastructure
from stopsms.v1 import events_pb2

pytestmark = pytest.mark.integration

PSEUDONYMS = Pseudonymiser(Key("pk1", bytes(32)), [Key("dk1", bytes(range(32)))])


async def eventually(check: Callable[[], Awaitable[bool]], what: str, seconds: float = 60) -> None:
    """Wait until ``check`` holds; fail naming ``what`` never happened."""
    deadline = time.monotonic() + seconds
    while not await check():
        assert time.monotonic() < deadline, f"{what} within {seconds:.0f} s"
        await asyncio.sleep(0.1)


async def flush(client: aioredis.Redis, pattern: str) -> None:
    """Lose every key of ``pattern``, as a Redis restarted without its data would."""
    async for key in client.scan_iter(match=pattern, count=1000):
        await client.unlink(key)


def link(code: str, e164: str, expire: int) -> events_pb2.StopLink:
    issued = events_pb2.StopLink(
        code=code,
        subject=PSEUDONYMS.subject(e164),
        sealed_msisdn=PSEUDONYMS.seal(e164),
        sender_id="JUMIA",
        issuer_party_id="atlas-sms",
    )
    issued.expire_time.seconds = expire
    return issued


async def test_links_fill_the_store_from_the_topic_and_fill_it_again_after_redis_is_lost(
    infra: LocalInfrastructure, namespace: str
) -> None:
    topics = Topics(namespace)
    client = aioredis.Redis.from_url(infra.redis.url)
    now = int(time.time())
    live, expired, old = new_codes(3)
    publisher = KafkaPublisher(infra.kafka.bootstrap)
    await publisher.start()
    try:
        await publisher.publish_many(
            topics.links,
            [
                (live.encode(), link(live, "+212612345678", now + 3600).SerializeToString()),
                (expired.encode(), link(expired, "+212612345679", now - 60).SerializeToString()),
                (
                    old.encode(),
                    link(
                        old, "+212612345670", now - (EXPIRED_KEPT_DAYS + 1) * 86_400
                    ).SerializeToString(),
                ),
            ],
        )

        async def directory() -> LinkDirectory:
            started = LinkDirectory(
                KafkaBus(infra.kafka.bootstrap),
                topics.links,
                RedisLinkStore(client, namespace),
                PSEUDONYMS,
                group=topics.processor_group("intake-links"),
            )
            await started.start()
            return started

        links = await directory()
        try:
            found = await links.get(live, wait_seconds=30)  # the group joins, the store fills
            assert found == LiveLink(live, "JUMIA", now + 3600, "+212612345678")
            found_expired = await links.get(expired)
            assert found_expired is not None and found_expired.expired()
            assert await links.get("NotIssued00", wait_seconds=1) is None
            assert await links.caught_up(30), "the store never applied the topic to its end"
            # Today's sweep may have run at start already (one replica a day): sweep again.
            await sweep(RedisLinkStore(client, namespace), time.time())
            assert await links.get(old, wait_seconds=1) is None  # expired 31 days ago: swept
            assert await links.get(expired) is not None  # expired a minute ago: kept
            # A later link drawn with a live link's code: the first keeps it.
            await publisher.publish(topics.links, live.encode(),
                                    link(live, "+212699999999", now + 7200).SerializeToString())  # fmt: skip
            assert await links.caught_up(30), "the store never applied the later link"
            kept = await links.get(live)
            assert kept is not None and kept.e164 == "+212612345678", "a code changed hands"
        finally:
            await links.stop()

        await flush(client, f"{namespace}links:*")  # Redis lost everything
        links = await directory()
        try:
            found = await links.get(live, wait_seconds=30)
            assert found is not None and found.e164 == "+212612345678"  # filled again
            await publisher.publish(topics.links, live.encode(), None)  # a tombstone

            async def forgotten() -> bool:
                return await links.get(live, wait_seconds=0.1) is None

            await eventually(forgotten, "the store forgot a link whose tombstone it read")
        finally:
            await links.stop()
    finally:
        await publisher.stop()
        await client.aclose()


async def test_done_proofs_leave_the_notifiers_memory_for_the_store_and_come_back_after_a_loss(
    infra: LocalInfrastructure, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(proof_store, "STORE_FOLLOW_S", 0.05)
    topics = Topics(namespace)
    client = aioredis.Redis.from_url(infra.redis.url)
    done = events_pb2.PropagationRecord(event_id="iam:r-1", origin_party_id="iam", done=True)
    done.done_time.FromSeconds(int(time.time()) - 3600)  # an old proof
    opened = events_pb2.PropagationRecord(event_id="iam:r-2", origin_party_id="iam")
    publisher = KafkaPublisher(infra.kafka.bootstrap)
    await publisher.start()

    async def index() -> PropagationIndex:
        started = PropagationIndex(
            KafkaBus(infra.kafka.bootstrap),
            topics.propagation,
            RedisProofStore(aioredis.Redis.from_url(infra.redis.url), namespace, 86_400),
            group=topics.processor_group("notifier-proofs"),
        )
        await started.start()
        return started

    try:
        await publisher.publish_many(
            topics.propagation,
            [(b"iam:r-1", done.SerializeToString()), (b"iam:r-2", opened.SerializeToString())],
        )
        proofs = await index()
        try:
            assert await proofs.caught_up(30), "the index never read the topic to its end"

            async def let_go() -> bool:
                return proofs.peek("iam:r-1") is None

            await eventually(let_go, "the index let go of a done proof the store holds")
            assert [r.event_id for r in proofs.open_records()] == ["iam:r-2"]
            found = await proofs.find("iam:r-1", 5.0, lambda record: True)
            assert found is not None and found.done  # from the store
            assert await client.ttl(f"{namespace}proofs:iam:r-1") > 86_000
        finally:
            await proofs.stop()

        await flush(client, f"{namespace}proofs:*")  # Redis lost everything
        proofs = await index()
        try:

            async def stored_again() -> bool:
                return bool(await proofs.stored(["iam:r-1"]))

            await eventually(stored_again, "the proof store filled again from the topic")
            found = await proofs.find("iam:r-1", 5.0, lambda record: True)
            assert found is not None and found.done
        finally:
            await proofs.stop()
    finally:
        await publisher.stop()
        await client.aclose()


async def test_the_console_holds_open_proofs_and_reads_done_ones_from_the_notifiers_store(
    infra: LocalInfrastructure, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The console's proof index fills nothing: it reads the store the notifier fills."""
    monkeypatch.setattr(proof_store, "STORE_FOLLOW_S", 0.05)
    topics = Topics(namespace)
    done = events_pb2.PropagationRecord(event_id="iam:r-1", origin_party_id="iam", done=True)
    done.done_time.FromSeconds(int(time.time()) - 3600)
    opened = events_pb2.PropagationRecord(event_id="iam:r-2", origin_party_id="iam")
    publisher = KafkaPublisher(infra.kafka.bootstrap)
    await publisher.start()
    notifier = PropagationIndex(
        KafkaBus(infra.kafka.bootstrap),
        topics.propagation,
        RedisProofStore(aioredis.Redis.from_url(infra.redis.url), namespace, 86_400),
        group=topics.processor_group("notifier-proofs"),
    )
    console = ConsoleProofs(
        KafkaBus(infra.kafka.bootstrap),
        topics.propagation,
        RedisProofStore(aioredis.Redis.from_url(infra.redis.url), namespace, 86_400),
    )
    changed: list[str] = []
    console.on_change = changed.append
    try:
        await publisher.publish_many(
            topics.propagation,
            [(b"iam:r-1", done.SerializeToString()), (b"iam:r-2", opened.SerializeToString())],
        )
        await console.start()
        assert await console.caught_up(30), "the console's index never read the topic"
        assert sorted(changed) == ["iam:r-1", "iam:r-2"]  # the assessor is told of each
        assert console.peek("iam:r-1") is not None, "let go before the store held it"
        await notifier.start()

        async def let_go() -> bool:
            return console.peek("iam:r-1") is None

        await eventually(let_go, "the console let go of a done proof the notifier stored")
        found = await console.latest(["iam:r-1", "iam:r-2", "iam:never"])
        assert sorted(found) == ["iam:r-1", "iam:r-2"]
        assert found["iam:r-1"].done and not found["iam:r-2"].done
        assert console.peek("iam:r-2") is not None  # an open proof stays in memory
    finally:
        await console.stop()
        await notifier.stop()
        await publisher.stop()


async def test_the_request_log_fills_its_store_and_fills_it_again_after_redis_is_lost(
    infra: LocalInfrastructure, namespace: str
) -> None:
    """The console's search reads each citizen's requests from Redis, not from its memory."""
    topics = Topics(namespace)
    client = aioredis.Redis.from_url(infra.redis.url)
    number = "+212611000042"
    subject = PSEUDONYMS.subject(number)
    now = int(time.time())

    def request(event_id: str, accepted: int) -> bytes:
        asked = events_pb2.PreferenceRequested(
            event_id=event_id, subject=subject, sealed_msisdn=PSEUDONYMS.seal(number)
        )
        asked.accepted_time.FromSeconds(accepted)
        return asked.SerializeToString()

    publisher = KafkaPublisher(infra.kafka.bootstrap)
    await publisher.start()
    written = [
        (b"r-old", request("r-old", now - 3 * 86_400)),  # past the store's retention (2 days)
        (b"r-1", request("r-1", now - 60)),
        (b"r-1", request("r-1", now - 60)),  # retried: kept once
        (b"r-2", request("r-2", now)),
    ]

    async def history() -> RequestHistory:
        started = RequestHistory(
            KafkaBus(infra.kafka.bootstrap),
            topics.requests,
            RedisRequestLogStore(aioredis.Redis.from_url(infra.redis.url), namespace, 2 * 86_400),
        )
        await started.start()
        await asyncio.wait_for(started.read_to_end.wait(), 30)  # else: the log never stored
        return started

    try:
        await publisher.publish_many(topics.requests, written)
        requests = await history()
        try:
            found = await requests.of(subject)
            assert [r.event_id for r in found] == ["r-1", "r-2"]
            assert not found[0].HasField("sealed_msisdn")  # no number at rest
            assert await requests.subject_of("r-2") == subject
            assert await client.ttl(f"{namespace}requests:s:{subject}") > 86_000
        finally:
            await requests.stop()

        await flush(client, f"{namespace}requests:*")  # Redis lost everything
        requests = await history()
        try:
            assert [r.event_id for r in await requests.of(subject)] == ["r-1", "r-2"]
        finally:
            await requests.stop()
    finally:
        await publisher.stop()
        await client.aclose()


async def test_the_decisions_fill_their_store_honour_erasures_and_fill_again_after_a_loss(
    infra: LocalInfrastructure, namespace: str
) -> None:
    """The assessor's "in force then" reads every decision of a subject from Redis."""
    topics = Topics(namespace)
    client = aioredis.Redis.from_url(infra.redis.url)
    kept, erased = PSEUDONYMS.subject("+212611000051"), PSEUDONYMS.subject("+212611000052")

    def change(subject: str, event_id: str, state: int, decided: int) -> bytes:
        decided_change = events_pb2.SuppressionChanged(
            subject=subject, event_id=event_id, sender_id="JUMIA", state=state
        )
        decided_change.decided_time.FromSeconds(decided)
        return decided_change.SerializeToString()

    now = int(time.time())
    out, back = events_pb2.STATE_SUPPRESSED, events_pb2.STATE_ALLOWED
    publisher = KafkaPublisher(infra.kafka.bootstrap)
    await publisher.start()
    told: list[tuple[str, str]] = []

    async def decisions() -> DecisionHistory:
        started = DecisionHistory(
            KafkaBus(infra.kafka.bootstrap),
            topics.suppressions,
            RedisDecisionStore(aioredis.Redis.from_url(infra.redis.url), namespace),
        )
        started.on_decision = lambda decision, subject: told.append((subject, decision.event_id))
        await started.start()
        assert await started.caught_up(30), "the list was never stored"
        return started

    try:
        await publisher.publish_many(
            topics.suppressions,
            [
                (f"{kept}|JUMIA".encode(), change(kept, "d-1", out, now - 600)),
                (f"{kept}|JUMIA".encode(), change(kept, "d-2", back, now - 60)),
                (f"{kept}|JUMIA".encode(), change(kept, "d-2", back, now - 60)),  # read again
                (f"{erased}|JUMIA".encode(), change(erased, "d-3", out, now)),
                (f"{erased}|JUMIA".encode(), None),  # the subject erased
                (f"{erased}|JUMIA".encode(), change(erased, "d-4", out, now + 1)),  # asks again
            ],
        )
        history = await decisions()
        try:
            found = await history.changes_of([kept, erased])
            assert [c.event_id for c in found[kept]] == ["d-1", "d-2"], "each decision once"
            assert [c.event_id for c in found[erased]] == ["d-4"], (
                "the erasure and the decision after it not applied in the order read"
            )
            assert not found[kept][0].HasField("sealed_msisdn")
            assert (kept, "d-1") in told
        finally:
            await history.stop()

        await flush(client, f"{namespace}decisions:*")  # Redis lost everything
        history = await decisions()
        try:
            assert [c.event_id for c in (await history.changes_of([kept]))[kept]] == ["d-1", "d-2"]
        finally:
            await history.stop()
    finally:
        await publisher.stop()
        await client.aclose()
