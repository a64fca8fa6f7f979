"""The notifier's live feed: every stream gets every record once; a slow one waits alone."""

from __future__ import annotations

import asyncio

from stopsms.core.kafka import Record
from stopsms.notifier import feed as feed_module
from stopsms.notifier.feed import LiveFeed


def records(partition: int, first: int, count: int) -> list[Record]:
    return [Record("t", partition, o, b"k", b"v", 0) for o in range(first, first + count)]


async def test_streams_get_each_record_once_and_a_slow_one_is_dropped(monkeypatch) -> None:
    monkeypatch.setattr(feed_module, "QUEUE_BATCHES", 3)
    feed = LiveFeed("unused:9092", "t")
    feed.positions = {0: 10, 1: 5}
    fast = feed.follow({0: 10, 1: 5}, idle_s=0.05)
    slow = feed.follow({0: 10, 1: 5}, idle_s=0.05)
    assert await anext(fast) == [] and await anext(slow) == []  # idle: both subscribed
    got: list[tuple[int, int]] = []
    for i in range(10):
        feed.publish(records(i % 2, 10 + i if i % 2 == 0 else 5 + i, 1))
        got += [(r.partition, r.offset) for r in await anext(fast)]
    assert got == [(i % 2, 10 + i if i % 2 == 0 else 5 + i) for i in range(10)]
    assert feed.slow_streams == 1 and feed.streams == 1  # the slow one left; the fast one stays
    feed.publish(records(0, 30, 2))
    assert [r.offset for r in await anext(fast)] == [30, 31]
    await fast.aclose()
    await slow.aclose()
    assert feed.streams == 0


async def test_records_before_a_streams_position_are_not_repeated() -> None:
    feed = LiveFeed("unused:9092", "t")
    feed.positions = {0: 10}
    stream = feed.follow({0: 10}, idle_s=0.05)
    assert await anext(stream) == []
    feed.publish(records(0, 8, 5))  # 8 and 9 were before the stream's position
    assert [r.offset for r in await anext(stream)] == [10, 11, 12]
    await stream.aclose()
    await asyncio.sleep(0)
