"""The faust conventions shared by the registry and the notifier: the app and its worker."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import faust
import mode
from faust.transport.drivers.aiokafka import Producer as AIOKafkaProducerDriver

from stopsms.core.settings import Settings
from stopsms.core.topics import Topics


class IdempotentProducer(AIOKafkaProducerDriver):  # type: ignore[misc]
    """faust's producer with idempotence on (faust turns it on only in transactions).

    A batch retried after a lost acknowledgement is then written once, not twice.
    """

    def _settings_extra(self) -> dict[str, object]:
        return {**super()._settings_extra(), "acks": "all", "enable_idempotence": True}


class StreamApp(faust.App):  # type: ignore[misc]
    """A faust app whose producer is idempotent."""

    def _new_producer(self) -> IdempotentProducer:
        return IdempotentProducer(self.transport, loop=self.loop, beacon=self.beacon)


def producer_guarantees(app: faust.types.AppT) -> tuple[str, object, bool]:
    """(name, acks, idempotent) of a stream app's producer, as the self-check reads them."""
    producer: Any = app.producer
    effective = {**producer._settings_default(), **producer._settings_extra()}
    return "faust", effective["acks"], bool(effective.get("enable_idempotence"))


def faust_app(settings: Settings, service: str, data_dir: Path | None = None) -> faust.App:
    """A faust app with the platform's conventions: raw bytes, acks=all, no web server."""
    topics = Topics(settings.topic_namespace)
    return StreamApp(
        topics.faust_app_id(service),
        broker=f"kafka://{settings.kafka_bootstrap}",
        store="memory://",
        datadir=str(data_dir or settings.data_dir / service),
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        producer_acks=-1,
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
        key_serializer="raw",
        value_serializer="raw",
        table_standby_replicas=0,
        broker_session_timeout=settings.kafka_session_timeout_seconds,
        broker_heartbeat_interval=settings.kafka_session_timeout_seconds / 10,
    )


def stream_worker(
    app: faust.App, services: list[mode.ServiceT], settings: Settings
) -> faust.Worker:
    """The worker that runs the app and the process's other services on one event loop.

    The worker owns the loop and the signals: on SIGTERM it stops every service in reverse
    order, so the gRPC server drains before Kafka clients close.
    """
    return faust.Worker(app, *services, loglevel=settings.log_level, override_logging=False)


def run_worker(worker: faust.Worker) -> None:
    """Run a worker until it is stopped (its command line options are not ours to parse)."""
    sys.argv = sys.argv[:1]
    worker.execute_from_commandline()
