"""The stand-in operator delivers even when it joined its group before the topic was known.

A group whose leader had no partitions for the topic when it joined is assigned nothing until
the client next refreshes its metadata (5 minutes by default); the stand-ins refresh every 2 s.
Seen once on CI: the first one-time code of the citizen's page test was never printed, while
the log said "No partition metadata for topic …outbound.v1".
"""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from kafka import KafkaProducer

from stopsms.adapters.settings import Settings
from stopsms.domain.topics import Topics
from stopsms.tools.launcher import LocalInfrastructure, create_topics
from stopsms.tools.operator_outbox import deliver_messages
from stopsms.v1 import events_pb2

pytestmark = pytest.mark.integration


def test_a_message_published_after_the_topic_appears_is_delivered(
    infra: LocalInfrastructure, service_env: dict[str, str]
) -> None:
    namespace = f"late{uuid.uuid4().hex[:8]}."  # no topic exists yet in this namespace
    keys = Settings.from_env(service_env).pseudonymiser()
    delivered: list[str] = []
    stop = threading.Event()
    worker = threading.Thread(
        target=deliver_messages,
        args=(infra.kafka.bootstrap, "iam", keys, namespace),
        kwargs={"deliver": lambda msisdn, message, text: delivered.append(text), "stop": stop},
        daemon=True,
    )
    worker.start()
    try:
        time.sleep(1.0)  # the consumer joins its group while the topic does not exist
        create_topics(infra.kafka.bootstrap, Topics(namespace), infra.partitions)
        message = events_pb2.OutboundMessage(
            message_id="m1",
            subject=keys.subject("+212611111111"),
            sealed_msisdn=keys.seal("+212611111111"),
            purpose=events_pb2.OUTBOUND_PURPOSE_HELP,
            text="StopSMS: help",
            operator_id="iam",
        )
        producer = KafkaProducer(bootstrap_servers=infra.kafka.bootstrap, acks="all")
        producer.send(Topics(namespace).outbound, key=b"k", value=message.SerializeToString()).get(
            timeout=10
        )
        producer.close()
        deadline = time.monotonic() + 30
        while not delivered:
            assert time.monotonic() < deadline, "the message was never delivered"
            time.sleep(0.2)
        assert delivered == ["StopSMS: help"]
    finally:
        stop.set()
        worker.join(10)
