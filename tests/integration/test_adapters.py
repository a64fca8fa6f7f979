"""The Kafka and Redis adapters against the real broker and redis-server."""

from __future__ import annotations

import asyncio
import hashlib
import random

import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError

from stopsms.adapters.bus import CompactedTopicIndex, KafkaBus
from stopsms.adapters.kafka import (
    GroupOffsets,
    KafkaPublisher,
    RangeReader,
    RecordBatchReader,
    TopicReader,
)
from stopsms.adapters.view import RedisSuppressionView, ViewLost
from stopsms.domain.topics import Topics
from stopsms.domain.viewcodec import (
    BUCKET_RUN_MAX,
    ERASED,
    BucketWindow,
    CensusCounter,
    ChangeBatch,
    ScopeEntry,
    ViewLayout,
    ViewUpdate,
    pack_update,
)
from stopsms.tools.launcher import LocalInfrastructure

pytestmark = pytest.mark.integration


async def test_published_records_are_read_back_indexed_and_ranged(
    infra: LocalInfrastructure, namespace: str
) -> None:
    topics = Topics(namespace)
    publisher = KafkaPublisher(infra.kafka.bootstrap)
    await publisher.start()
    try:
        positions = [
            await publisher.publish(
                topics.links, f"code{i}".encode(), f"v{i}".encode(), partition=3
            )
            for i in range(5)
        ]
        assert [offset for _, offset in positions] == [0, 1, 2, 3, 4]
        await publisher.publish(topics.links, b"code0", b"v0-new", partition=3)
    finally:
        await publisher.stop()

    reader = TopicReader(infra.kafka.bootstrap, topics.links)
    await reader.start()
    try:
        seen = []
        while len(seen) < 6:
            seen += await reader.read(timeout_ms=500)
        assert [r.value for r in seen] == [b"v0", b"v1", b"v2", b"v3", b"v4", b"v0-new"]
        assert (await reader.end_offsets())[3] == 6
    finally:
        await reader.stop()

    index: CompactedTopicIndex[bytes] = CompactedTopicIndex(
        KafkaBus(infra.kafka.bootstrap), topics.links, bytes
    )
    await index.start()
    try:
        assert await index.get("code0") == b"v0-new"
        assert await index.get("absent", wait_seconds=1) is None
    finally:
        await index.stop()

    ranges = RangeReader(infra.kafka.bootstrap, topics.links)
    await ranges.start()
    try:
        assert [r.offset for r in await ranges.read(3, 1, 4)] == [1, 2, 3]
    finally:
        await ranges.stop()


async def test_a_rebuilds_batch_reader_reads_what_the_consumer_reads(
    infra: LocalInfrastructure, namespace: str
) -> None:
    """Straight from the record batches, from a position inside a batch, erasures included."""
    topics = Topics(namespace)
    publisher = KafkaPublisher(infra.kafka.bootstrap)
    await publisher.start()
    try:
        for partition in (0, 5):
            await asyncio.gather(
                *(
                    publisher.publish(
                        topics.suppressions,
                        f"k{partition}-{i}".encode(),
                        None if i % 7 == 3 else f"v{i}".encode() * 40,
                        partition=partition,
                    )
                    for i in range(3000)
                )
            )
    finally:
        await publisher.stop()
    starts = {0: 1234, 5: 0, 7: 0}  # partition 7 is empty

    consumer = TopicReader(
        infra.kafka.bootstrap,
        topics.suppressions,
        start_offsets=starts,
        only_partitions=list(starts),
        max_records=500,
    )
    await consumer.start()
    expected: dict[int, list[tuple[int, bytes | None, bytes | None]]] = {0: [], 5: []}
    try:
        async with asyncio.timeout(60):
            while len(expected[0]) < 3000 - 1234 or len(expected[5]) < 3000:
                for p, records in (await consumer.read_grouped(timeout_ms=500)).items():
                    expected[p] += [(r.offset, r.key, r.value) for r in records]
    finally:
        await consumer.stop()

    reader = RecordBatchReader(infra.kafka.bootstrap, topics.suppressions, starts)
    await reader.start()
    read: dict[int, list[tuple[int, bytes | None, bytes | None]]] = {0: [], 5: []}
    try:
        async with asyncio.timeout(60):
            while len(read[0]) < 3000 - 1234 or len(read[5]) < 3000:
                for p, records in (await reader.read_grouped()).items():
                    read[p] += [(r.offset, r.key, r.value) for r in records]
        assert await reader.positions() == {0: 3000, 5: 3000, 7: 0}
    finally:
        await reader.stop()
    assert read == expected
    assert read[0][0][0] == 1234 and any(value is None for _, _, value in read[0])


async def test_group_offsets_are_committed_and_read_without_joining(
    infra: LocalInfrastructure, namespace: str
) -> None:
    topics = Topics(namespace)
    offsets = GroupOffsets(infra.kafka.bootstrap)
    await offsets.start()
    try:
        group = topics.psva_group("atlas-sms")
        assert await offsets.committed(group, topics.suppressions) == {}
        await offsets.commit(group, topics.suppressions, {0: 0, 5: 0})
        assert await offsets.committed(group, topics.suppressions) == {0: 0, 5: 0}
    finally:
        await offsets.stop()


async def test_many_groups_commit_together_and_a_group_with_members_refuses(
    infra: LocalInfrastructure, namespace: str
) -> None:
    """Fifty PSVAs' groups commit at once over one client; a joined group is not overwritten."""
    topics = Topics(namespace)
    offsets = GroupOffsets(infra.kafka.bootstrap)
    await offsets.start()
    member = AIOKafkaConsumer(
        topics.suppressions,
        bootstrap_servers=infra.kafka.bootstrap,
        group_id=topics.operator_group("joined"),
        enable_auto_commit=False,
    )
    try:
        groups = [topics.psva_group(f"psva-{i}") for i in range(50)]
        await asyncio.gather(
            *(offsets.commit(g, topics.suppressions, {i % 12: i + 1}) for i, g in enumerate(groups))
        )
        for i, group in enumerate(groups):
            assert await offsets.committed(group, topics.suppressions) == {i % 12: i + 1}, group
        # Later commits of one group land in call order.
        await asyncio.gather(
            *(offsets.commit(groups[0], topics.suppressions, {0: n}) for n in (7, 8, 9))
        )
        assert await offsets.committed(groups[0], topics.suppressions) == {0: 9}

        await member.start()
        async with asyncio.timeout(30):  # joined once it has its partitions
            while not member.assignment():
                await member.getmany(timeout_ms=200)
        with pytest.raises(KafkaError) as refused:
            await offsets.commit(topics.operator_group("joined"), topics.suppressions, {0: 1})
        assert not refused.value.retriable, refused.value
    finally:
        await member.stop()
        await offsets.stop()


def subject(n: int) -> str:
    """A subject shaped like the pseudonymiser's: key id and 16 digest bytes."""
    return "pk1:" + hashlib.sha256(str(n).encode()).hexdigest()[:32]


AA, BB, CC = subject(1), subject(2), subject(3)


async def test_a_window_written_bucket_by_bucket_leaves_redis_as_record_by_record(
    infra: LocalInfrastructure, namespace: str
) -> None:
    """The rebuild's bucket-wise script keeps the apply script's rules, on a real redis-server.

    Records in read order, with entries held before (older and newer), erasures, versions
    that go back, new senders, and one bucket longer than a script's run: one view takes them
    one by one, the other a window at a time; both hold the same.
    """
    rng = random.Random(20)
    layout = ViewLayout(bucket_bits=3)  # eight buckets: runs of hundreds, one over the maximum
    senders = ["", "JUMIA", "ORANGE", "INWI-PROMO"]
    addresses = [(subject(n), senders[n % 4]) for n in range(1500)]
    crowded = [(s, "") for s in (subject(n) for n in range(5000, 30_000)) if layout.locate(s)[0]
               == layout.locate(subject(0))[0]][: BUCKET_RUN_MAX + 300]  # fmt: skip
    assert len(crowded) > BUCKET_RUN_MAX

    def update(address: tuple[str, str], version: int, erased: bool) -> bytes:
        subject_, sender = address
        value = ERASED if erased else ScopeEntry(1, version, 10 * version).pack()
        return pack_update(layout.located(subject_), sender, value)

    held = [update(a, rng.randint(1, 5), False) for a in addresses[::3]]
    records = [
        update(rng.choice(addresses), rng.randint(1, 6), rng.random() < 0.1) for _ in range(6000)
    ] + [update(a, 1, False) for a in crowded]
    rng.shuffle(records)
    window = BucketWindow()
    for start in range(0, len(records), 700):
        window.add(ChangeBatch(entries=records[start : start + 700], offsets={2: start + 700}))
    one_by_one = RedisSuppressionView(aioredis.from_url(infra.redis.url), namespace + "a:", layout)
    by_bucket = RedisSuppressionView(aioredis.from_url(infra.redis.url), namespace + "b:", layout)
    try:
        for view in (one_by_one, by_bucket):
            await view.write_meta()
            await view.apply_packed(b"".join(held), {})
        await one_by_one.apply_packed(b"".join(records), window.offsets)
        chunks = list(window.chunks(2500))
        for n, chunk in enumerate(chunks, 1):
            await by_bucket.apply_by_bucket(chunk, window.offsets if n == len(chunks) else {})
        expected, offsets = await one_by_one.census()
        assert await by_bucket.census() == (expected, offsets) and expected.count > 1000
        probe = [s for s, _ in addresses[:200]]
        for sender in senders:
            assert await by_bucket.lookup(probe, sender) == await one_by_one.lookup(probe, sender)
        await by_bucket.redis.delete(f"{namespace}b:view:meta")
        with pytest.raises(ViewLost):  # flushed under it: nothing is written
            await by_bucket.apply_by_bucket(chunks[0], {})
    finally:
        await one_by_one.close()
        await by_bucket.close()


async def test_the_view_never_moves_backwards_and_keeps_offsets_with_entries(
    infra: LocalInfrastructure, namespace: str
) -> None:
    view = RedisSuppressionView(aioredis.from_url(infra.redis.url), namespace)
    try:
        with pytest.raises(ViewLost):  # never built: nothing is written into it
            await view.apply([ViewUpdate(AA, "", ScopeEntry(1, 1, 100))], {4: 1})
        assert await view.applied_offsets() == {}
        await view.write_meta()  # what a rebuild does first
        await view.apply(
            [
                ViewUpdate(AA, "JUMIA", ScopeEntry(1, 2, 100)),
                ViewUpdate(AA, "", ScopeEntry(1, 3, 200)),
            ],
            {4: 10},
        )
        # A replay of an older record, from an older position, changes nothing.
        await view.apply([ViewUpdate(AA, "JUMIA", ScopeEntry(2, 1, 50))], {4: 7})
        entries, offsets = await view.lookup([AA, BB], "JUMIA")
        assert entries == [(ScopeEntry(1, 2, 100), ScopeEntry(1, 3, 200)), (None, None)]
        assert offsets == {4: 10}
        entries, _ = await view.lookup([AA], "")
        assert entries == [(None, ScopeEntry(1, 3, 200))]
        entries, _ = await view.lookup([AA], "NEVER-SEEN")
        assert entries == [(None, ScopeEntry(1, 3, 200))]
        await asyncio.gather(
            *(view.apply([ViewUpdate(CC, "X", ScopeEntry(1, v, v))], {1: v}) for v in range(1, 30))
        )
        entries, offsets = await view.lookup([CC], "X")
        assert entries[0][0].version == 29 and offsets[1] == 29
    finally:
        await view.close()


async def test_the_view_packs_entries_into_listpack_buckets_and_counts_them(
    infra: LocalInfrastructure, namespace: str
) -> None:
    client = aioredis.from_url(infra.redis.url)
    view = RedisSuppressionView(client, namespace, ViewLayout(bucket_bits=4))
    try:
        await view.write_meta()
        updates = [
            ViewUpdate(subject(n), "" if n % 3 == 0 else f"S{n % 200}", ScopeEntry(1, n, 1000 * n))
            for n in range(3000)
        ]
        await view.apply(updates, {0: 3000})
        census, offsets = await view.census()
        expected = CensusCounter()
        for u in updates:
            bucket, field = view.layout.locate(u.subject)
            expected.add(bucket + field, u.sender_id, u.entry.pack())
        assert census == expected.census() and census.count == 3000 and offsets == {0: 3000}
        bucket, _ = view.layout.locate(AA)
        assert await client.object("encoding", f"{namespace}view:b:".encode() + bucket) == (
            b"listpack"
        )
        entries, _ = await view.lookup([subject(7)], "S7")
        assert entries == [(ScopeEntry(1, 7, 7000), None)]
        # The census of a share of the buckets: the shares add up to the whole.
        halves = [await view.census(range(0, 8)), await view.census(range(8, 16))]
        assert sum(c.count for c, _ in halves) == 3000
        assert sum(c.checksum for c, _ in halves) & 0xFFFFFFFFFFFFFFFF == census.checksum
        # An older layout's buckets (2-byte numbers) go too when the view is cleared.
        await client.hset(f"{namespace}view:b:".encode() + b"\x01\x02", b"f", b"v")
        await view.clear()
        assert (await view.census())[0].count == 0
        assert not [k async for k in client.scan_iter(match=f"{namespace}view:*")]
    finally:
        await view.close()
