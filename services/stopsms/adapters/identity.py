"""Who is calling: the caller's party, mapped through the parties directory, and its audit.

The party is the one named in the caller's client certificate (mutual TLS), mapped through
the parties directory; a request field never decides it. The development mode takes it from
the ``x-stopsms-party`` header instead, and says so at start and on every call. Every refusal is
``PERMISSION_DENIED`` plus an :class:`AuditEntry`; permitted calls on personal data are audited
too, in batches.
"""

from __future__ import annotations

import asyncio
import logging
from typing import NoReturn

import grpc

from stopsms.adapters.kafka import Publisher, PublishFailed, message_headers
from stopsms.adapters.tls import party_from_sans
from stopsms.domain.parties import PartiesDirectory, Party
from stopsms.domain.ratelimit import RateLimiter
from stopsms.v1 import events_pb2

PARTY_HEADER = "x-stopsms-party"
log = logging.getLogger(__name__)


#: The calls each of the platform's own identities makes, and nothing more: the link page
#: (intake's identity) checks the link's number and reads the proofs of link clicks; the
#: registry and the notifier call no service. A platform identity not listed calls nothing.
PLATFORM_CALLS: dict[str, frozenset[str]] = {
    "stopsms-intake": frozenset(
        {"/stopsms.v1.RegistryService/Check", "/stopsms.v1.NotifierService/GetPropagation"}
    ),
}

#: Subjects listed in one audit entry (about 40 bytes each: ~400 KB per record).
SUBJECTS_PER_ENTRY = 10_000


class AuditTrail:
    """Publishes audit entries to ``stopsms.audit.v1`` in batches, off the hot path.

    A refusal is one entry of its own. Permitted calls are gathered per party and method and
    published every ``flush_seconds`` as one entry naming all the subjects of the window, so a
    party scrubbing thousands of numbers a second costs a few records, not thousands. Recording
    only appends to memory; Kafka is never waited for on a call.
    """

    def __init__(
        self,
        publisher: Publisher | None,
        topic: str,
        *,
        flush_seconds: float = 0.05,
        capacity: int = 1_000_000,
    ) -> None:
        self._publisher = publisher
        self._topic = topic
        self._flush_seconds = flush_seconds
        self._capacity = capacity
        self._entries: list[events_pb2.AuditEntry] = []
        self._permitted: dict[tuple[str, int, str], tuple[int, list[str]]] = {}
        self._buffered = 0
        self._flusher: asyncio.Task[None] | None = None
        self.dropped = 0

    def _room(self, size: int) -> bool:
        if self._publisher is None:
            return False
        if self._buffered + size > self._capacity:
            self.dropped += 1
            if self.dropped % 1000 == 1:
                log.error("audit buffer full: %d records dropped so far", self.dropped)
            return False
        self._buffered += size
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_soon())
        return True

    def record(
        self,
        party_id: str,
        party_kind: int,
        method: str,
        decision: int,
        detail: str,
        subjects: list[str] | None = None,
    ) -> None:
        """Queue one entry of its own (a refusal)."""
        if not self._room(1 + len(subjects or ())):
            return
        entry = events_pb2.AuditEntry(
            party_id=party_id,
            party_kind=party_kind,
            method=method,
            subjects=subjects or [],
            decision=decision,
            detail=detail,
        )
        entry.time.GetCurrentTime()
        self._entries.append(entry)

    def record_permitted(
        self, party_id: str, party_kind: int, method: str, subjects: list[str]
    ) -> None:
        """Count one permitted call into the current window's entry for its party and method."""
        if not self._room(len(subjects)):
            return
        key = (party_id, party_kind, method)
        calls, gathered = self._permitted.get(key, (0, []))
        gathered.extend(subjects)
        self._permitted[key] = (calls + 1, gathered)

    async def _flush_soon(self) -> None:
        await asyncio.sleep(self._flush_seconds)
        await self.flush()

    async def flush(self) -> None:
        """Publish everything buffered now (also called on shutdown)."""
        entries, self._entries = self._entries, []
        permitted, self._permitted = self._permitted, {}
        self._buffered = 0
        for (party_id, party_kind, method), (calls, subjects) in permitted.items():
            # A scrub lists hundreds of thousands of subjects a second: one entry per piece
            # keeps each record well under Kafka's message size limit (1 MiB by default).
            pieces = range(0, max(len(subjects), 1), SUBJECTS_PER_ENTRY)
            for part, start in enumerate(pieces, start=1):
                entry = events_pb2.AuditEntry(
                    party_id=party_id,
                    party_kind=party_kind,
                    method=method,
                    subjects=subjects[start : start + SUBJECTS_PER_ENTRY],
                    decision=events_pb2.AUDIT_DECISION_PERMITTED,
                    detail=f"{calls} permitted calls"
                    + (f" (part {part} of {len(pieces)})" if len(pieces) > 1 else ""),
                )
                entry.time.GetCurrentTime()
                entries.append(entry)
        if not entries or self._publisher is None:
            return
        results = await asyncio.gather(
            *(
                self._publisher.publish(
                    self._topic,
                    entry.party_id.encode(),
                    entry.SerializeToString(),
                    headers=message_headers("stopsms.v1.AuditEntry"),
                )
                for entry in entries
            ),
            return_exceptions=True,
        )
        failed = sum(isinstance(r, PublishFailed) for r in results)
        if failed:
            log.error("%d audit entries not published", failed)


def _limits(directory: PartiesDirectory) -> dict[str, float]:
    return {p.id: p.rate_limit for p in directory if p.rate_limit is not None}


class Authenticator:
    """Resolves the calling party of a gRPC call, limits its rate, refuses what it may not do.

    With mutual TLS the party is the one named in the client certificate's subject alternative
    name; in the development mode it is the ``x-stopsms-party`` header, logged at every call.
    """

    def __init__(
        self,
        directory: PartiesDirectory,
        *,
        insecure: bool,
        audit: AuditTrail | None = None,
        limiter: RateLimiter | None = None,
    ) -> None:
        self.directory = directory
        self.insecure = insecure
        self.audit = audit or AuditTrail(None, "")
        self.limiter = limiter or RateLimiter(_limits(directory))
        if limiter is None:
            directory.on_replace(lambda d: self.limiter.update(_limits(d)))
        if insecure:
            log.warning(
                "INSECURE development identity: callers are identified by the %r header, "
                "without TLS. Never run this way outside a developer's machine.",
                PARTY_HEADER,
            )

    def _claimed_party(self, context: grpc.aio.ServicerContext) -> str | None:
        if self.insecure:
            metadata = dict(context.invocation_metadata() or ())
            party_id = metadata.get(PARTY_HEADER)
            log.warning("insecure identity %r taken from a header", party_id)
            return party_id if isinstance(party_id, str) and party_id else None
        auth = context.auth_context() or {}
        return party_from_sans(auth.get("x509_subject_alternative_name", ()))

    def party_of(self, context: grpc.aio.ServicerContext) -> Party | None:
        """The party a call claims to come from, without any check or audit (for display)."""
        party_id = self._claimed_party(context)
        return self.directory.get(party_id) if party_id else None

    async def caller(self, context: grpc.aio.ServicerContext, method: str) -> Party:
        """Return the calling party, or end the call with the status that says why not."""
        party_id = self._claimed_party(context)
        if party_id is None:
            how = (
                f"set the {PARTY_HEADER} header" if self.insecure else "present a party certificate"
            )
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, f"no party identity: {how}")
            raise AssertionError("unreachable")  # abort always raises
        party = self.directory.get(party_id)
        if party is None:
            self.audit.record(
                party_id[:64],
                events_pb2.PARTY_KIND_UNSPECIFIED,
                method,
                events_pb2.AUDIT_DECISION_DENIED,
                "unknown party",
            )
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                "the calling party is not in the parties directory",
            )
            raise AssertionError("unreachable")
        if party.is_platform and method not in PLATFORM_CALLS.get(party.id, frozenset()):
            await self.deny(
                context, party, method, f"the platform identity {party.id} does not make this call"
            )
        wait = self.limiter.retry_after(party.id)
        if wait:
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"rate limit of {party.rate_limit:g} calls/s exceeded; retry after {wait:.2f}s",
                trailing_metadata=(("retry-after-ms", str(max(1, round(wait * 1000)))),),
            )
            raise AssertionError("unreachable")
        return party

    def permitted(self, party: Party, method: str, subjects: list[str]) -> None:
        """Audit a permitted call on personal data (batched, off the hot path)."""
        self.audit.record_permitted(party.id, party.kind, method, subjects)

    async def deny(
        self, context: grpc.aio.ServicerContext, party: Party, method: str, detail: str
    ) -> NoReturn:
        """Refuse the call with PERMISSION_DENIED and audit the refusal."""
        self.audit.record(party.id, party.kind, method, events_pb2.AUDIT_DECISION_DENIED, detail)
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, detail)
        raise AssertionError("unreachable")  # abort always raises
