"""Readers grouped in a Together start in the order given and stop at once."""

from __future__ import annotations

import asyncio

import mode

from stopsms.adapters.streams import Together


class Reader(mode.Service):
    """A reader whose stop waits until every member of its group is stopping too."""

    def __init__(self, name: str, journal: list[str], all_stopping: asyncio.Barrier) -> None:
        self.name = name
        self.journal = journal
        self.all_stopping = all_stopping
        super().__init__()

    async def on_start(self) -> None:
        self.journal.append(f"start {self.name}")

    async def on_stop(self) -> None:
        # One after the other, the first stop would wait here until the deadline.
        try:
            await asyncio.wait_for(self.all_stopping.wait(), timeout=5)
        except TimeoutError:
            self.journal.append(f"stopped {self.name} alone")
        else:
            self.journal.append(f"stopped {self.name}")


class Broken(Reader):
    async def on_stop(self) -> None:
        await asyncio.wait_for(self.all_stopping.wait(), timeout=5)
        raise RuntimeError("a reader that fails to close")


async def test_members_start_in_order_and_stop_at_once() -> None:
    journal: list[str] = []
    barrier = asyncio.Barrier(3)
    group = Together(*(Reader(name, journal, barrier) for name in ("senders", "proofs", "cases")))
    await group.start()
    assert journal == ["start senders", "start proofs", "start cases"]
    await asyncio.wait_for(group.stop(), timeout=30)
    assert sorted(journal[3:]) == ["stopped cases", "stopped proofs", "stopped senders"], (
        f"the members never were all stopping at once: {journal}"
    )


async def test_one_member_failing_to_stop_does_not_keep_the_others_up() -> None:
    journal: list[str] = []
    barrier = asyncio.Barrier(2)
    group = Together(Broken("links", journal, barrier), Reader("cases", journal, barrier))
    await group.start()
    await asyncio.wait_for(group.stop(), timeout=30)
    assert "stopped cases" in journal, f"the other member did not stop: {journal}"
