"""Turning a citizen's request into a ``PreferenceRequested`` on the requests topic.

Every channel (API, SMS reply, link page) ends here, so the record is built one way: the
deterministic event id, the subject as key and partition, the sealed number, and an answer
only once Kafka acknowledged with acks=all.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Protocol

import redis.asyncio as aioredis
from google.protobuf.timestamp_pb2 import Timestamp
from redis.exceptions import RedisError

from stopsms.adapters.kafka import Publisher, message_headers
from stopsms.domain.ids import event_id
from stopsms.domain.parties import PartiesDirectory
from stopsms.domain.privacy import Pseudonymiser
from stopsms.domain.topics import Topics, partition_for_key
from stopsms.v1 import events_pb2

log = logging.getLogger(__name__)


class RequestReferences(Protocol):
    """Each subject's latest request per scope: the reference the citizen's page shows."""

    async def remember(self, subject: str, sender_id: str, event_id: str) -> None:
        """``event_id`` is the subject's latest accepted request for that scope."""
        ...

    async def latest(self, subject: str) -> dict[str, str]:
        """Scope ("" for global) to the latest request's event id."""
        ...


class RedisRequestReferences:
    """The references in one Redis hash per subject (keyed by pseudonym, never a number).

    A nicety, not a record: the request log is the record, so Redis being away costs only the
    reference on the page (logged), never the request.
    """

    def __init__(self, client: aioredis.Redis, namespace: str = "") -> None:
        self._redis = client
        self._prefix = f"{namespace}intake:latest:"

    async def remember(self, subject: str, sender_id: str, event_id: str) -> None:
        """Keep the event id for the scope."""
        try:
            await self._redis.hset(self._prefix + subject, sender_id, event_id)
        except RedisError as exc:
            log.warning("request references unavailable: %s", exc)

    async def latest(self, subject: str) -> dict[str, str]:
        """Every scope's latest event id (empty when Redis is away)."""
        try:
            raw: dict[Any, Any] = await self._redis.hgetall(self._prefix + subject)
        except RedisError as exc:
            log.warning("request references unavailable: %s", exc)
            return {}
        return {k.decode(): v.decode() for k, v in raw.items()}


class InMemoryRequestReferences:
    """The references in a dict: :class:`RedisRequestReferences`' fake."""

    def __init__(self) -> None:
        self.kept: dict[str, dict[str, str]] = {}

    async def remember(self, subject: str, sender_id: str, event_id: str) -> None:
        """Keep the event id for the scope."""
        self.kept.setdefault(subject, {})[sender_id] = event_id

    async def latest(self, subject: str) -> dict[str, str]:
        """Every scope's latest event id."""
        return dict(self.kept.get(subject, {}))


@dataclass(frozen=True)
class Subject:
    """A number as the platform carries it: pseudonym and sealed copy, never in clear."""

    subject: str
    sealed: events_pb2.SealedMsisdn


class RequestSubmitter:
    """Builds and publishes preference requests."""

    def __init__(
        self,
        publisher: Publisher,
        pseudonymiser: Pseudonymiser,
        directory: PartiesDirectory,
        topics: Topics,
        partitions: int,
        references: RequestReferences,
    ) -> None:
        self._publisher = publisher
        self.references = references
        self._pseudonymiser = pseudonymiser
        self._directory = directory
        self._topics = topics
        self._partitions = partitions

    def protect(self, e164: str) -> Subject:
        """Pseudonymise and seal a normalised number."""
        return Subject(self._pseudonymiser.subject(e164), self._pseudonymiser.seal(e164))

    def protect_many(self, numbers: list[str]) -> list[Subject]:
        """:meth:`protect` for a campaign's numbers (one draw of randomness for every seal)."""
        sealed = self._pseudonymiser.seal_many(numbers)
        subject = self._pseudonymiser.subject
        return [Subject(subject(e164), seal) for e164, seal in zip(numbers, sealed, strict=True)]

    def resolve_sender(self, sender_id: str) -> str:
        """The sender a canonical id or alias stands for (the register's aliases)."""
        return self._directory.resolve_sender(sender_id)

    def declared_senders(self) -> list[str]:
        """Every declared sender, as the directory holds them now."""
        return self._directory.declared_senders()

    def is_undeclared(self, sender_id: str) -> bool:
        """True for a named sender that no party declared (evidence of the informal sector)."""
        return bool(sender_id) and not self._directory.is_declared(sender_id)

    async def submit(
        self,
        *,
        party_id: str,
        request_id: str,
        subject: Subject,
        action: int,
        sender_id: str,
        channel: int,
        action_time: Timestamp | None,
    ) -> events_pb2.PreferenceRequested:
        """Publish one request and return it once Kafka acknowledged it.

        Raises :class:`stopsms.adapters.kafka.PublishFailed` when Kafka did not acknowledge; the
        caller may retry with the same request id, which yields the same event id.
        """
        request = events_pb2.PreferenceRequested(
            event_id=event_id(party_id, request_id),
            request_id=request_id,
            party_id=party_id,
            action=action,
            sender_id=sender_id,
            channel=channel,
            subject=subject.subject,
            undeclared_sender=self.is_undeclared(sender_id),
        )
        request.accepted_time.GetCurrentTime()
        if action_time is not None and (action_time.seconds or action_time.nanos):
            request.action_time.CopyFrom(action_time)
        else:
            request.action_time.CopyFrom(request.accepted_time)
        request.sealed_msisdn.CopyFrom(subject.sealed)
        key = subject.subject.encode()
        await self._publisher.publish(
            self._topics.requests,
            key,
            request.SerializeToString(),
            partition=partition_for_key(key, self._partitions),
            headers=message_headers("stopsms.v1.PreferenceRequested"),
        )
        await self.references.remember(subject.subject, sender_id, request.event_id)
        return request
