"""Per-party rate limits: one token bucket per party, refilled continuously.

A party that exhausts its budget is refused at once with ``RESOURCE_EXHAUSTED`` and a retry
hint; nothing is queued, so its excess never adds latency to another party's calls.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field


@dataclass
class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up."""

    rate: float
    burst: float
    tokens: float = field(init=False)
    updated: float = field(init=False, default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.tokens = self.burst

    def take(self, cost: float = 1.0) -> float:
        """Take ``cost`` tokens; return 0.0 on success, else the seconds to wait before retrying."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= cost:
            self.tokens -= cost
            return 0.0
        return (cost - self.tokens) / self.rate


class RateLimiter:
    """The buckets of every party with a ``rate_limit`` in the directory (calls per second)."""

    def __init__(self, limits: dict[str, float], burst_seconds: float = 1.0) -> None:
        self._buckets = {
            party: TokenBucket(rate, max(1.0, rate * burst_seconds))
            for party, rate in limits.items()
        }

    def update(self, limits: dict[str, float], burst_seconds: float = 1.0) -> None:
        """Follow a reloaded directory: new and changed limits, removed ones gone."""
        for party in set(self._buckets) - set(limits):
            del self._buckets[party]
        for party, rate in limits.items():
            bucket = self._buckets.get(party)
            if bucket is None or bucket.rate != rate:
                self._buckets[party] = TokenBucket(rate, max(1.0, rate * burst_seconds))

    def retry_after(self, party_id: str, cost: float = 1.0) -> float:
        """0.0 when the call may proceed, else how long the party should wait."""
        bucket = self._buckets.get(party_id)
        return 0.0 if bucket is None else bucket.take(cost)


class KeyedRateLimiter:
    """Token buckets per key (a number's subject, a client address), bounded in memory.

    The least recently used keys are forgotten beyond ``max_keys``: a forgotten key starts
    again with a full bucket, which errs on the side of serving.
    """

    def __init__(self, rate: float, burst: float, max_keys: int = 100_000) -> None:
        self.rate = rate
        self.burst = burst
        self._max_keys = max_keys
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def _bucket(self, key: str) -> TokenBucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(self.rate, self.burst)
            if len(self._buckets) > self._max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        return bucket

    def retry_after(self, key: str, cost: float = 1.0) -> float:
        """Take ``cost`` from ``key``'s bucket: 0.0 when allowed, else seconds to wait."""
        return self._bucket(key).take(cost)

    def exhausted(self, key: str) -> float:
        """Seconds until ``key`` has a token again (0.0 when it has one), taking nothing."""
        bucket = self._buckets.get(key)
        if bucket is None:
            return 0.0
        waited = bucket.take(0.0)  # refreshes the level without spending
        return (
            waited if waited else (0.0 if bucket.tokens >= 1 else (1 - bucket.tokens) / self.rate)
        )
