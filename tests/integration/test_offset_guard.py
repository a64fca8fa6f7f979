"""An agent is handed the records of its partition that the stream consumer skipped."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from stopsms.core.kafka import GroupOffsets, KafkaPublisher
from stopsms.core.settings import Settings
from stopsms.core.streams import OffsetGuard
from stopsms.core.topics import Topics

pytestmark = pytest.mark.integration


class FakeApp:
    """What the guard uses of a faust app: its group id and the revocation signal."""

    def __init__(self, group: str) -> None:
        self.conf = SimpleNamespace(id=group)
        self.receivers: list[Any] = []
        self.on_partitions_revoked = SimpleNamespace(connect=self.receivers.append)


async def test_skipped_offsets_are_read_back_from_the_committed_position_then_between_records(
    service_env: dict[str, str], namespace: str
) -> None:
    settings = Settings.from_env(service_env)
    topic = Topics(namespace).receipts
    group = f"{namespace}guard-test"
    publisher = KafkaPublisher(settings.kafka_bootstrap)
    await publisher.start()
    for i in range(10):
        await publisher.publish(topic, b"k", f"r{i}".encode(), partition=0)
    await publisher.stop()
    offsets = GroupOffsets(settings.kafka_bootstrap)
    await offsets.start()
    await offsets.commit(group, topic, {0: 3})  # the group had processed offsets 0..2
    await offsets.stop()

    app = FakeApp(group)
    guard = OffsetGuard(app, settings.kafka_bootstrap, topic)  # type: ignore[arg-type]
    await guard.start()
    try:
        # The first record after an assignment is offset 7: 3..6 were skipped.
        assert [r.value for r in await guard.missed(0, 7)] == [b"r3", b"r4", b"r5", b"r6"]
        assert await guard.missed(0, 8) == []
        assert [r.offset for r in await guard.missed(0, 10)] == [9]
        assert await guard.missed(0, 5) == []  # a redelivery is not a gap
        await app.receivers[0](app)  # a rebalance: start again from the committed offset
        assert [r.offset for r in await guard.missed(0, 4)] == [3]
    finally:
        await guard.stop()
