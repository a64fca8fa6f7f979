"""A Bloom filter of every subject the view holds: "no record" for most numbers, without Redis.

Fed by the same materialiser that writes the view, it never forgets a subject, so it may say
"maybe" for a number with no record (then Redis answers), but never "no" for one the view
holds — for the offsets it says it has covered. Answers are as of the smaller of those offsets
and the view's own.
"""

from __future__ import annotations

import numpy as np

from stopsms.domain.viewcodec import BUCKET_BYTES, DIGEST_FIELD_BYTES, LOCATED_BYTES

#: Bloom filter size and hash count: 2^29 bits (64 MiB) and 5 probes keep false "maybe"s
#: under 1 % up to 50 million subjects.
DEFAULT_FILTER_BITS = 1 << 29
FILTER_PROBES = 5


def _probe_positions(located: np.ndarray, bits: int) -> np.ndarray:
    """Bloom probe positions (n × probes) from the located digests (n × 13 bytes).

    The field bytes are independent keyed-hash bits: two 40-bit halves drive double hashing.
    """
    field = located[:, BUCKET_BYTES : BUCKET_BYTES + DIGEST_FIELD_BYTES].astype(np.uint64)
    weights = (np.uint64(1) << (np.arange(4, -1, -1, dtype=np.uint64) * np.uint64(8))).astype(
        np.uint64
    )
    h1 = field[:, :5] @ weights
    h2 = (field[:, 5:] @ weights) | np.uint64(1)
    probes = np.arange(FILTER_PROBES, dtype=np.uint64)
    return (h1[:, None] + probes[None, :] * h2[:, None]) % np.uint64(bits)


class SubjectFilter:
    """A Bloom filter of located subjects (bucket + field), with the offsets it covers."""

    def __init__(self, bits: int = DEFAULT_FILTER_BITS) -> None:
        if bits < 1024 or bits % 8:
            raise ValueError("the filter needs at least 1024 bits, a multiple of 8")
        self.bits = bits
        self._array = np.zeros(bits // 8, dtype=np.uint8)
        #: Next offset per partition up to which every subject of the topic has been added.
        self.offsets: dict[int, int] = {}
        self.ready = False
        self.added = 0

    def add(self, located: bytes) -> None:
        """Add subjects given as 13-byte located digests, joined."""
        if not located:
            return
        positions = _probe_positions(_as_rows(located), self.bits).ravel()
        np.bitwise_or.at(
            self._array,
            (positions >> np.uint64(3)).astype(np.intp),
            (np.uint8(1) << (positions & np.uint64(7)).astype(np.uint8)),
        )
        self.added += len(located) // LOCATED_BYTES

    def might_hold(self, located: np.ndarray) -> np.ndarray:
        """For each located digest (rows of 13 bytes): False when surely absent."""
        positions = _probe_positions(located, self.bits)
        bytes_ = self._array[(positions >> np.uint64(3)).astype(np.intp)]
        present = (bytes_ >> (positions & np.uint64(7)).astype(np.uint8)) & np.uint8(1)
        return np.asarray(present.all(axis=1))

    def might_hold_one(self, located: bytes) -> bool:
        """:meth:`might_hold` for one subject, without numpy's per-call overhead (``Check``)."""
        field = located[BUCKET_BYTES : BUCKET_BYTES + DIGEST_FIELD_BYTES]
        h1 = int.from_bytes(field[:5], "big")
        h2 = int.from_bytes(field[5:], "big") | 1
        array, bits = self._array, self.bits
        for probe in range(FILTER_PROBES):
            position = (h1 + probe * h2) % bits
            if not array[position >> 3] >> (position & 7) & 1:
                return False
        return True

    def covered(self, partition_offsets: dict[int, int]) -> None:
        """Record that every subject up to these offsets has been added."""
        for p, o in partition_offsets.items():
            if o > self.offsets.get(p, 0):
                self.offsets[p] = o


def _as_rows(located: bytes) -> np.ndarray:
    return np.frombuffer(located, dtype=np.uint8).reshape(-1, LOCATED_BYTES)
