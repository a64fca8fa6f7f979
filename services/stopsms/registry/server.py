"""The registry's gRPC API: ``Check`` and ``CheckBatch``, answered from the Redis view."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator

import grpc

from stopsms.adapters.identity import Authenticator
from stopsms.domain.numbers import InvalidNumber, normalise_msisdn
from stopsms.domain.parties import InvalidSender, Party, check_sender_id
from stopsms.domain.rules import Verdict, combine
from stopsms.registry.lookup import BatchChecker, ChunkAnswer
from stopsms.v1 import registry_pb2, registry_pb2_grpc

#: Most numbers one CheckBatch chunk may carry (AIP-231: a documented maximum).
MAX_BATCH_CHUNK = 10_000
SERVICE_NAME = "stopsms.v1.RegistryService"


def may_check(party: Party, sender_id: str) -> bool:
    """Operators and the regulator check any sender; a PSVA its own senders and global."""
    if party.is_operator or party.is_regulator or party.is_platform:
        return True
    return party.is_psva and (not sender_id or party.sends_for(sender_id))


def _as_of(offsets: dict[int, int]) -> list[registry_pb2.PartitionOffset]:
    return [registry_pb2.PartitionOffset(partition=p, offset=o) for p, o in sorted(offsets.items())]


def _fill(result: registry_pb2.CheckResponse | registry_pb2.CheckResult, verdict: Verdict) -> None:
    result.verdict = verdict.verdict
    result.matched_scope = verdict.matched_scope
    if verdict.record is not None:
        result.since.FromMilliseconds(verdict.record.action_time_ms)


class RegistryServicer(registry_pb2_grpc.RegistryServiceServicer):
    """Answers whether a sender may message a number."""

    def __init__(self, *, lookups: BatchChecker, auth: Authenticator) -> None:
        """``lookups`` reads the view (Redis in production, the in-memory view in unit tests)."""
        self._auth = auth
        self._batch = lookups
        self._as_of_cache: tuple[tuple[tuple[int, int], ...], bytes] | None = None

    async def _authorised_sender(
        self, context: grpc.aio.ServicerContext, party: Party, sender_id: str, method: str
    ) -> str:
        try:
            sender_id = self._auth.directory.resolve_sender(check_sender_id(sender_id))
        except InvalidSender as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"sender_id: {exc}")
        if not may_check(party, sender_id):
            await self._auth.deny(
                context, party, method, f"party {party.id} may not check sender {sender_id!r}"
            )
        return sender_id

    async def Check(  # noqa: N802 - gRPC method name
        self, request: registry_pb2.CheckRequest, context: grpc.aio.ServicerContext
    ) -> bytes:
        """Answer for one number and one sender (empty sender: the global scope only)."""
        method = "/stopsms.v1.RegistryService/Check"
        party = await self._auth.caller(context, method)
        sender_id = await self._authorised_sender(context, party, request.sender_id, method)
        try:
            e164 = normalise_msisdn(request.msisdn)
        except InvalidNumber as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"msisdn: {exc}")
        # the subject filter first, then one Redis round trip shared by concurrent calls
        digest = self._batch.hasher.digest(e164)
        self._auth.permitted(party, method, [f"{self._batch.key_id}:{digest.hex()}"])
        answer = await self._batch.check_one(e164, sender_id)
        verdict, offsets = combine(answer.sender, answer.global_), answer.as_of
        response = registry_pb2.CheckResponse()
        _fill(response, verdict)
        if verdict.record is not None:
            response.version = verdict.record.version
        # The offsets change far less often than calls arrive: their serialised form is kept,
        # and appended to the rest (concatenated protobuf messages merge).
        return response.SerializeToString() + self._as_of_bytes(offsets)

    def _as_of_bytes(self, offsets: dict[int, int]) -> bytes:
        key = tuple(sorted(offsets.items()))
        cached = self._as_of_cache
        if cached is None or cached[0] != key:
            as_of = registry_pb2.CheckResponse(as_of=_as_of(offsets)).SerializeToString()
            self._as_of_cache = cached = (key, as_of)
        return cached[1]

    async def CheckBatch(  # noqa: N802 - gRPC method name
        self,
        request_iterator: AsyncIterator[registry_pb2.CheckBatchRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[registry_pb2.CheckBatchResponse | bytes]:
        """Scrub a list chunk by chunk; each chunk gets its verdicts, in order.

        Up to two chunks are worked on at once — one hashing while the other waits for
        Redis — and answered in order.
        """
        method = "/stopsms.v1.RegistryService/CheckBatch"
        party = await self._auth.caller(context, method)
        pending: deque[asyncio.Task[ChunkAnswer]] = deque()
        try:
            chunk_index = 0
            async for chunk in request_iterator:
                await self._admit_chunk(context, chunk, chunk_index)
                sender_id = await self._authorised_sender(context, party, chunk.sender_id, method)
                pending.append(
                    asyncio.create_task(
                        self._batch.check(list(chunk.msisdns), sender_id, chunk_index)
                    )
                )
                chunk_index += 1
                if len(pending) >= 2:
                    yield self._answered(party, method, await pending.popleft())
            while pending:
                yield self._answered(party, method, await pending.popleft())
        finally:
            for task in pending:
                task.cancel()

    def _answered(self, party: Party, method: str, answer: ChunkAnswer) -> bytes:
        self._auth.permitted(party, method, answer.subjects)
        return answer.response

    @staticmethod
    async def _admit_chunk(
        context: grpc.aio.ServicerContext, chunk: registry_pb2.CheckBatchRequest, index: int
    ) -> None:
        if len(chunk.msisdns) > MAX_BATCH_CHUNK:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"msisdns: at most {MAX_BATCH_CHUNK} numbers per chunk "
                f"(chunk {index} has {len(chunk.msisdns)})",
            )
