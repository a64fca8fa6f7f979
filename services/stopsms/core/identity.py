"""Who is calling: the caller's party, mapped through the parties directory, and its audit.

In this first version the identity comes from the ``x-stopsms-party`` metadata header, without
TLS (development mode). That is only safe on a developer's machine, so it is logged loudly at
start. Mutual TLS, with the party taken from the client certificate, replaces it for real
deployments. Every refusal is ``PERMISSION_DENIED`` plus an :class:`AuditEntry`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import NoReturn

import grpc

from stopsms.core.kafka import Publisher, PublishFailed, message_headers
from stopsms.core.parties import PartiesDirectory, Party
from stopsms.v1 import events_pb2

PARTY_HEADER = "x-stopsms-party"
log = logging.getLogger(__name__)


class AuditTrail:
    """Publishes audit entries to ``stopsms.audit.v1`` without holding up the call."""

    def __init__(self, publisher: Publisher | None, topic: str) -> None:
        self._publisher = publisher
        self._topic = topic
        self._pending: set[asyncio.Task[None]] = set()

    def record(
        self,
        party_id: str,
        party_kind: int,
        method: str,
        decision: int,
        detail: str,
        subjects: list[str] | None = None,
    ) -> None:
        """Queue one entry for publication."""
        if self._publisher is None:
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
        task = asyncio.get_running_loop().create_task(self._publish(entry))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _publish(self, entry: events_pb2.AuditEntry) -> None:
        assert self._publisher is not None
        try:
            await self._publisher.publish(
                self._topic,
                entry.party_id.encode(),
                entry.SerializeToString(),
                headers=message_headers("stopsms.v1.AuditEntry"),
            )
        except PublishFailed:
            log.error("audit entry for %s on %s not published", entry.party_id, entry.method)


class Authenticator:
    """Resolves the calling party of a gRPC call and refuses what it may not do."""

    def __init__(
        self, directory: PartiesDirectory, *, insecure: bool, audit: AuditTrail | None = None
    ) -> None:
        self.directory = directory
        self.insecure = insecure
        self.audit = audit or AuditTrail(None, "")
        if insecure:
            log.warning(
                "INSECURE development identity: callers are identified by the %r header, "
                "without TLS. Never run this way outside a developer's machine.",
                PARTY_HEADER,
            )

    async def caller(self, context: grpc.aio.ServicerContext, method: str) -> Party:
        """Return the calling party, or end the call with UNAUTHENTICATED/PERMISSION_DENIED."""
        metadata = dict(context.invocation_metadata() or ())
        party_id = metadata.get(PARTY_HEADER)
        if not isinstance(party_id, str) or not party_id:
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED, f"no party identity: set the {PARTY_HEADER} header"
            )
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
        return party

    async def deny(
        self, context: grpc.aio.ServicerContext, party: Party, method: str, detail: str
    ) -> NoReturn:
        """Refuse the call with PERMISSION_DENIED and audit the refusal."""
        self.audit.record(party.id, party.kind, method, events_pb2.AUDIT_DECISION_DENIED, detail)
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, detail)
        raise AssertionError("unreachable")  # abort always raises
