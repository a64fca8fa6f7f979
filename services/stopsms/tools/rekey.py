"""``stopsms keys rotate-pseudonyms``: follow a pseudonym re-keying to its end, ledger in hand.

The re-keying itself runs in the registry (registry/rekeying.py) from the moment it holds a
previous pseudonym key: it moves every subject to the current key, then, a grace period later,
tombstones the old subjects. This command reads the list as its readers do (the latest record
of every key, one partition at a time) and counts the decisions in force by the pseudonym key
of their subject, until none is left under another key than the current one. With a ledger
(``--ledger``, the acknowledged event ids a load generator wrote), it runs the ledger check
(:mod:`stopsms.tools.verify`) before following and again at the end: no opt-out lost or
doubled through the rotation.

    stopsms keys rotate-pseudonyms                           the counts, once
    stopsms keys rotate-pseudonyms --wait 172800 --ledger L  follow to the end, check before/after
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from stopsms.adapters.bus import Bus
from stopsms.domain.topics import Topics
from stopsms.tools.reseal import RECOUNT_EVERY_S, SealCount, count_seals


def left_under_other_keys(count: SealCount, current: str) -> int:
    """Decisions in force whose subject is under a pseudonym key other than ``current``."""
    return sum(n for key_id, n in count.by_pseudonym_key.items() if key_id != current)


def describe(count: SealCount) -> str:
    """One line for a person: ``pk2 1,200 · pk1 30 (1,100 moved)``."""
    keys = " · ".join(f"{k} {n:,}" for k, n in count.by_pseudonym_key.most_common()) or "empty"
    return f"decisions in force by pseudonym key: {keys} ({count.moved:,} moved)"


@dataclass
class RekeyOutcome:
    """What the command saw: the last count, whether the re-keying ended, how long it took."""

    count: SealCount
    complete: bool
    seconds: float
    #: Decisions in force at the start under another pseudonym key than the current one.
    at_start: int

    @property
    def seconds_per_million(self) -> float:
        """The time the re-keying took, per million decisions it had to move."""
        return self.seconds / self.at_start * 1e6 if self.at_start else 0.0


async def follow_rekeying(
    bus: Bus,
    topics: Topics,
    partitions: int,
    current_key_id: str,
    wait_s: float,
    show: Callable[[SealCount], None] = lambda count: None,
) -> RekeyOutcome:
    """Count until no decision in force is under another pseudonym key, or ``wait_s`` passed."""
    started = time.monotonic()
    deadline = started + wait_s
    at_start: int | None = None
    while True:
        count = await count_seals(bus, topics, partitions, client_id="stopsms-keys-rekey")
        show(count)
        left = left_under_other_keys(count, current_key_id)
        at_start = left if at_start is None else at_start
        if left == 0 or time.monotonic() >= deadline:
            break
        await asyncio.sleep(min(RECOUNT_EVERY_S, max(deadline - time.monotonic(), 0)))
    return RekeyOutcome(count, left == 0, time.monotonic() - started, at_start)
