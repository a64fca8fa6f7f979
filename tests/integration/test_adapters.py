"""The Kafka and Redis adapters against the real broker and redis-server."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from stopsms.core.infra import LocalInfrastructure
from stopsms.core.kafka import (
    CompactedTopicIndex,
    GroupOffsets,
    KafkaPublisher,
    RangeReader,
    TopicReader,
)
from stopsms.core.topics import Topics
from stopsms.core.view import RedisSuppressionView, ScopeEntry, ViewUpdate

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
        infra.kafka.bootstrap, topics.links, bytes
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


async def test_the_view_never_moves_backwards_and_keeps_offsets_with_entries(
    infra: LocalInfrastructure, namespace: str
) -> None:
    view = RedisSuppressionView(aioredis.from_url(infra.redis.url), namespace)
    try:
        await view.apply(
            [
                ViewUpdate("pk1:aa", "JUMIA", ScopeEntry(1, 2, 100)),
                ViewUpdate("pk1:aa", "", ScopeEntry(1, 3, 200)),
            ],
            {4: 10},
        )
        # A replay of an older record, from an older position, changes nothing.
        await view.apply([ViewUpdate("pk1:aa", "JUMIA", ScopeEntry(2, 1, 50))], {4: 7})
        entries, offsets = await view.lookup(["pk1:aa", "pk1:bb"], "JUMIA")
        assert entries == [(ScopeEntry(1, 2, 100), ScopeEntry(1, 3, 200)), (None, None)]
        assert offsets == {4: 10}
        entries, _ = await view.lookup(["pk1:aa"], "")
        assert entries == [(None, ScopeEntry(1, 3, 200))]
        await asyncio.gather(
            *(
                view.apply([ViewUpdate("pk1:cc", "X", ScopeEntry(1, v, v))], {1: v})
                for v in range(1, 30)
            )
        )
        entries, offsets = await view.lookup(["pk1:cc"], "X")
        assert entries[0][0].version == 29 and offsets[1] == 29
    finally:
        await view.close()
