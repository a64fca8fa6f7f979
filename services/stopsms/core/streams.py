"""The faust conventions shared by the registry and the notifier."""

from __future__ import annotations

from pathlib import Path

import faust

from stopsms.core.settings import Settings
from stopsms.core.topics import Topics


def faust_app(settings: Settings, service: str, data_dir: Path | None = None) -> faust.App:
    """A faust app with the platform's conventions: raw bytes, acks=all, no web server."""
    topics = Topics(settings.topic_namespace)
    return faust.App(
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
    )
