"""The notifier's live feed: every stream gets what it wants once; a slow one waits alone."""

from __future__ import annotations

import asyncio

from stopsms.adapters.bus import InMemoryBus
from stopsms.adapters.kafka import Record
from stopsms.notifier import feed as feed_module
from stopsms.notifier.feed import FeedBatch, LiveFeed
from stopsms.v1 import events_pb2, notifier_pb2


def everything(sender_id: str) -> bool:
    return True


def records(partition: int, first: int, count: int, sender: str = "") -> list[Record]:
    value = events_pb2.SuppressionChanged(event_id="e", sender_id=sender).SerializeToString()
    return [Record("t", partition, o, b"k", value, 0) for o in range(first, first + count)]


def offsets(batch: FeedBatch) -> list[tuple[int, int]]:
    return [(i.partition, i.offset) for i in batch.items]


async def test_streams_get_each_record_once_and_a_slow_one_is_dropped(monkeypatch) -> None:
    monkeypatch.setattr(feed_module, "QUEUE_BATCHES", 3)
    feed = LiveFeed(InMemoryBus(), "t")
    feed.positions = {0: 10, 1: 5}
    fast = feed.follow({0: 10, 1: 5}, everything, idle_s=0.05)
    slow = feed.follow({0: 10, 1: 5}, everything, idle_s=0.05)
    assert not (await anext(fast)).items and not (await anext(slow)).items  # both subscribed
    got: list[tuple[int, int]] = []
    for i in range(10):
        feed.publish(records(i % 2, 10 + i if i % 2 == 0 else 5 + i, 1))
        got += offsets(await anext(fast))
    assert got == [(i % 2, 10 + i if i % 2 == 0 else 5 + i) for i in range(10)]
    assert feed.slow_streams == 1 and feed.streams == 1  # the slow one left; the fast one stays
    feed.publish(records(0, 30, 2))
    assert offsets(await anext(fast)) == [(0, 30), (0, 31)]
    await fast.aclose()
    await slow.aclose()
    assert feed.streams == 0


async def test_records_before_a_streams_position_are_not_repeated() -> None:
    feed = LiveFeed(InMemoryBus(), "t")
    feed.positions = {0: 10}
    stream = feed.follow({0: 10}, everything, idle_s=0.05)
    assert not (await anext(stream)).items
    feed.publish(records(0, 8, 5))  # 8 and 9 were before the stream's position
    assert [i.offset for i in (await anext(stream)).items] == [10, 11, 12]
    await stream.aclose()
    await asyncio.sleep(0)


async def test_a_stream_is_woken_only_for_what_it_wants_and_its_position_still_moves() -> None:
    feed = LiveFeed(InMemoryBus(), "t")
    feed.positions = {0: 0, 1: 0}
    kitea = feed.follow({0: 0, 1: 0}, lambda sender: sender == "KITEA", idle_s=0.05)
    assert not (await anext(kitea)).items
    feed.publish(records(0, 0, 3, sender="JUMIA"))  # not its sender: not queued for it
    feed.publish(records(1, 0, 1, sender="KITEA") + records(0, 3, 1, sender="JUMIA"))
    feed.publish(records(1, 1, 1))  # a global change reaches every stream
    first = await anext(kitea)
    # Its change, with the position past the JUMIA records of the same batch.
    assert offsets(first) == [(1, 0)] and first.through == {0: 4, 1: 1}
    assert offsets(await anext(kitea)) == [(1, 1)]
    feed.publish(records(0, 4, 2, sender="JUMIA"))
    idle = await anext(kitea)  # nothing for it, and its position past what it skipped
    assert not idle.items and idle.through == {0: 6, 1: 2}
    await kitea.aclose()


async def test_each_change_is_decoded_once_for_every_stream() -> None:
    feed = LiveFeed(InMemoryBus(), "t")
    feed.positions = {0: 0}
    one = feed.follow({0: 0}, everything, idle_s=0.05)
    two = feed.follow({0: 0}, everything, idle_s=0.05)
    assert not (await anext(one)).items and not (await anext(two)).items
    feed.publish(records(0, 0, 1))
    (a,), (b,) = (await anext(one)).items, (await anext(two)).items
    assert a is b
    converted: list[str] = []

    def convert(change: events_pb2.SuppressionChanged) -> notifier_pb2.Change:
        converted.append(change.event_id)
        return notifier_pb2.Change(event_id=change.event_id)

    assert a.outgoing(convert) is b.outgoing(convert)
    assert converted == ["e"]  # unsealed once, for both streams
    await one.aclose()
    await two.aclose()
