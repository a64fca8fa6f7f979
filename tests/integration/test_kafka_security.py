"""Every Kafka client of the platform over mutual TLS, on the real broker's secured listener.

The session's broker has a listener like the national cluster's: clients present a
certificate, the broker names them by its common name, and ACLs decide what they may do.
"""

from __future__ import annotations

import uuid

import pytest
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    KafkaConnectionError,
    TopicAuthorizationFailedError,
)

from stopsms.adapters.kafka import GroupOffsets, KafkaPublisher, PublishFailed, read_topic
from stopsms.adapters.kafka_access import KafkaAccess
from stopsms.adapters.selfcheck import describe_topics
from stopsms.domain.topics import Topics
from stopsms.tools.launcher import LocalInfrastructure

#: Everything under the test's namespace, as a principal that owns its namespace would have.
OWN_NAMESPACE = [
    {"resource": {"type": kind, "name": "", "patternType": "prefix"}, "operations": ["All"]}
    for kind in ("topic", "group")
]


def principal_allowed(
    infra: LocalInfrastructure, namespace: str, role: str, topic: str, *operations: str
) -> KafkaAccess:
    """A new principal that may do ``operations`` on one topic, and its access."""
    principal = f"{role}-{uuid.uuid4().hex[:6]}"
    rule = {"resource": {"type": "topic", "name": topic}, "operations": list(operations)}
    infra.kafka.grant(principal, [rule], namespace)
    return infra.kafka.client_access(principal)


async def test_the_platforms_clients_publish_read_commit_and_describe_over_mutual_tls(
    infra: LocalInfrastructure, namespace: str
) -> None:
    principal = f"service-{uuid.uuid4().hex[:6]}"
    infra.kafka.grant(principal, OWN_NAMESPACE, namespace)
    access = infra.kafka.client_access(principal)
    topics = Topics(namespace)

    publisher = KafkaPublisher(access)
    await publisher.start()
    try:
        await publisher.publish(topics.requests, b"subject", b"opt-out")
    finally:
        await publisher.stop()
    records = await read_topic(access, topics.requests)
    assert [(r.key, r.value) for r in records] == [(b"subject", b"opt-out")]

    offsets = GroupOffsets(access)
    await offsets.start()
    try:
        group = topics.psva_group("atlas-sms")
        partition = records[0].partition
        await offsets.commit(group, topics.requests, {partition: records[0].offset + 1})
        assert await offsets.committed(group, topics.requests) == {partition: records[0].offset + 1}
    finally:
        await offsets.stop()

    described = describe_topics(access, [topics.requests, topics.suppressions], 10)
    assert described[topics.suppressions].configs["cleanup.policy"] == "compact"


async def test_a_principal_reaches_only_what_its_acls_allow(
    infra: LocalInfrastructure, namespace: str
) -> None:
    """Like intake: it may write requests, and nothing lets it forge a suppression."""
    topics = Topics(namespace)
    access = principal_allowed(
        infra, namespace, "writer", "stopsms.requests.v1", "Write", "Describe"
    )
    publisher = KafkaPublisher(access, timeout_seconds=5)
    await publisher.start()
    try:
        await publisher.publish(topics.requests, b"subject", b"opt-out")
        with pytest.raises(PublishFailed, match="TopicAuthorizationFailed"):
            await publisher.publish(topics.suppressions, b"subject|*", b"forged")
    finally:
        await publisher.stop()
    with pytest.raises(TopicAuthorizationFailedError):
        await read_topic(access, topics.requests)


async def test_a_principal_that_may_only_read_cannot_start_a_producer(
    infra: LocalInfrastructure, namespace: str
) -> None:
    access = principal_allowed(
        infra, namespace, "reader", "stopsms.suppressions.v1", "Read", "Describe"
    )
    assert await read_topic(access, Topics(namespace).suppressions) == []
    publisher = KafkaPublisher(access, timeout_seconds=5)
    with pytest.raises(ClusterAuthorizationFailedError):
        await publisher.start()
    await publisher.stop()


async def test_a_client_without_a_certificate_is_refused(infra: LocalInfrastructure) -> None:
    with_certificate = infra.kafka.client_access(f"someone-{uuid.uuid4().hex[:6]}")
    anonymous = KafkaAccess(with_certificate.bootstrap, "SSL", ca_file=with_certificate.ca_file)
    publisher = KafkaPublisher(anonymous, timeout_seconds=5)
    with pytest.raises(KafkaConnectionError):
        await publisher.start()
    await publisher.stop()
