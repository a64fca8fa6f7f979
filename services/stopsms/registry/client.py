"""Client side of ``CheckBatch``: scrub any number of numbers in chunks, verdicts in order.

Used by ``stopsms scrub`` and the benchmarks; a PSVA can use it as it is. Chunks are streamed
as fast as HTTP/2 flow control lets them go, and each response is paired with the chunk it
answers (the server answers in order), so memory holds only the chunks in flight.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass

import grpc

from stopsms.registry.server import MAX_BATCH_CHUNK
from stopsms.v1 import registry_pb2, registry_pb2_grpc

SUPPRESSED = registry_pb2.VERDICT_SUPPRESSED
INVALID = registry_pb2.VERDICT_INVALID_NUMBER


@dataclass
class ScrubbedChunk:
    """One chunk's numbers (as sent, with whatever rows they came from) and their verdicts."""

    items: Sequence[object]
    numbers: list[str]
    response: registry_pb2.CheckBatchResponse

    @property
    def verdicts(self) -> list[int]:
        """One verdict per number, in order."""
        return [r.verdict for r in self.response.results]


async def scrub(
    channel: grpc.aio.Channel,
    chunks: Iterable[tuple[Sequence[object], list[str]]],
    sender_id: str,
    metadata: Sequence[tuple[str, str]] = (),
) -> AsyncIterator[ScrubbedChunk]:
    """Check chunks of (items, numbers) for ``sender_id``; yield each with its verdicts.

    ``items`` travel beside the numbers untouched (CSV rows, say), so the caller can write its
    clean and suppressed lists without keeping the whole list.
    """
    stub = registry_pb2_grpc.RegistryServiceStub(channel)
    in_flight: deque[tuple[Sequence[object], list[str]]] = deque()

    async def requests() -> AsyncIterator[registry_pb2.CheckBatchRequest]:
        for items, numbers in chunks:
            if len(numbers) > MAX_BATCH_CHUNK:
                raise ValueError(f"a chunk holds at most {MAX_BATCH_CHUNK} numbers")
            in_flight.append((items, numbers))
            yield registry_pb2.CheckBatchRequest(sender_id=sender_id, msisdns=numbers)

    call = stub.CheckBatch(requests(), metadata=tuple(metadata))
    async for response in call:
        items, numbers = in_flight.popleft()
        yield ScrubbedChunk(items, numbers, response)


def chunked(
    numbers: Iterable[str], size: int = MAX_BATCH_CHUNK
) -> Iterable[tuple[list[str], list[str]]]:
    """Split plain numbers into (numbers, numbers) chunks for :func:`scrub`."""
    chunk: list[str] = []
    for number in numbers:
        chunk.append(number)
        if len(chunk) == size:
            yield chunk, chunk
            chunk = []
    if chunk:
        yield chunk, chunk
