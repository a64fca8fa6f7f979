"""Followers of a busy topic take a batch at most once per window; idle or behind, at once."""

from __future__ import annotations

import asyncio

import pytest

from stopsms.adapters import kafka
from stopsms.adapters.kafka import BatchWindow


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The waits the window asks for (recorded, not slept)."""
    asked: list[float] = []

    async def record(seconds: float) -> None:
        asked.append(seconds)

    monkeypatch.setattr(kafka.asyncio, "sleep", record)
    return asked


@pytest.mark.parametrize(
    ("seconds", "full", "handed"),
    [
        pytest.param(0.02, 100, None, id="the first batch is taken at once"),
        pytest.param(0.02, 3, [1, 2, 3], id="a full batch means behind: the next at once"),
        pytest.param(0.02, 100, [], id="an empty read opens no window"),
        pytest.param(0.0, 100, [1], id="without a window nothing waits"),
    ],
)
def test_nothing_waits(
    waits: list[float], seconds: float, full: int, handed: list[int] | None
) -> None:
    async def scenario() -> None:
        window = BatchWindow(seconds, full=full)
        if handed is not None:
            window.handed(handed)
        await window.gather()

    asyncio.run(scenario())
    assert waits == []


def test_after_a_partial_batch_the_next_waits_for_the_rest_of_the_window(
    waits: list[float],
) -> None:
    async def scenario() -> None:
        window = BatchWindow(0.02, full=100)
        window.handed([1, 2, 3])
        await window.gather()

    asyncio.run(scenario())
    assert len(waits) == 1 and 0 < waits[0] <= 0.02


def test_a_reader_stopped_while_its_window_passes_returns_nothing() -> None:
    """Its owner's loop sees the stop; before, the read raised ConsumerStoppedError."""

    async def scenario() -> list[object]:
        reader = kafka.TopicReader("127.0.0.1:1", "stopsms.test", batch_window_s=0.05)
        reader._resumed = True  # as after a first read (nothing is assigned here)
        reader._window.handed([object()])  # a partial batch was just handed over
        reads = [asyncio.ensure_future(reader.read()), asyncio.ensure_future(reader.read_grouped())]
        await reader.stop()
        return list(await asyncio.wait_for(asyncio.gather(*reads), timeout=5.0))

    assert asyncio.run(scenario()) == [[], {}]
