"""The faust conventions shared by the registry and the notifier: the app and its worker."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import faust
import mode
from faust.transport.drivers.aiokafka import Producer as AIOKafkaProducerDriver
from prometheus_client import Gauge

from stopsms.core.kafka import GroupOffsets, RangeReader, Record, TopicReader
from stopsms.core.kafka_access import KafkaAccess
from stopsms.core.settings import Settings
from stopsms.core.topics import Topics

log = logging.getLogger(__name__)


class IdempotentProducer(AIOKafkaProducerDriver):  # type: ignore[misc]
    """faust's producer with idempotence on (faust turns it on only in transactions).

    A batch retried after a lost acknowledgement is then written once, not twice.
    """

    def _settings_extra(self) -> dict[str, object]:
        return {**super()._settings_extra(), "acks": "all", "enable_idempotence": True}


class StreamApp(faust.App):  # type: ignore[misc]
    """A faust app whose producer is idempotent.

    ``stopsms_services`` are the services its agents need beside it (run by the same worker).
    """

    stopsms_services: list[mode.ServiceT]

    def _new_producer(self) -> IdempotentProducer:
        return IdempotentProducer(self.transport, loop=self.loop, beacon=self.beacon)


def producer_guarantees(app: faust.types.AppT) -> tuple[str, object, bool]:
    """(name, acks, idempotent) of a stream app's producer, as the self-check reads them."""
    producer: Any = app.producer
    effective = {**producer._settings_default(), **producer._settings_extra()}
    return "faust", effective["acks"], bool(effective.get("enable_idempotence"))


def faust_app(settings: Settings, service: str, data_dir: Path | None = None) -> StreamApp:
    """A faust app with the platform's conventions: raw bytes, acks=all, no web server."""
    topics = Topics(settings.topic_namespace)
    app = StreamApp(
        topics.faust_app_id(service),
        **settings.kafka.faust(),
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
    app.stopsms_services = []
    return app


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


#: How long the guard waits for Kafka (committed offsets, a skipped range) before giving up.
GUARD_TIMEOUT_S = 30.0


class OffsetGuard(mode.Service):
    """Hands an agent the records of its partition that faust skipped, so none goes unprocessed.

    faust-streaming's consumer stops handing out a fetched batch when a rebalance begins (the
    group's generation changes, or the flow is suspended), while the Kafka consumer's position
    has already moved past that batch. The skipped records are never given to the agent, and
    faust counts the hole as done, so the offsets acknowledged after it move the committed
    position past records nobody processed. The fault tests found it: after a kill -9 of the
    notifier, changes decided while it was down got no PENDING receipt.

    The agent asks, for each record, what it missed in that partition since the last record
    it saw (or, first after an assignment, since the group's committed offset) and processes
    those first, read from the topic. A record seen again (a redelivery) is simply processed
    again, as every agent already tolerates. On a compacted topic a hole left by compaction
    reads as nothing.
    """

    def __init__(
        self, app: faust.App, bootstrap: KafkaAccess | str, topic: str, **kwargs: Any
    ) -> None:
        self.app = app
        self.topic = topic
        self.group = app.conf.id
        self.ranges = RangeReader(bootstrap, topic)
        self.offsets = GroupOffsets(bootstrap)
        self._last: dict[int, int] = {}
        self._connected = False
        super().__init__(**kwargs)
        app.on_partitions_revoked.connect(self._on_revoked)  # type: ignore[arg-type]

    async def _on_revoked(self, sender: Any, *args: Any, **kwargs: Any) -> None:
        self._last.clear()  # the next owner of each partition starts from the committed offset

    async def _connect(self) -> None:
        if not self._connected:
            await self.ranges.start()
            await self.offsets.start()
            self._connected = True

    async def on_stop(self) -> None:
        """Disconnect (only when a gap ever made it connect)."""
        if self._connected:
            await self.ranges.stop()
            await self.offsets.stop()

    async def missed(self, partition: int, offset: int) -> list[Record]:
        """The records of ``partition`` before ``offset`` that the agent was never given."""
        last = self._last.get(partition)
        self._last[partition] = offset
        try:
            async with asyncio.timeout(GUARD_TIMEOUT_S):
                if last is None:
                    await self._connect()
                    committed = await self.offsets.committed(self.group, self.topic)
                    start = committed.get(partition, offset)
                else:
                    start = last + 1
                if start >= offset:
                    return []
                await self._connect()
                records = await self.ranges.read(partition, start, offset)
        except TimeoutError as exc:
            # Better a crash and a restart from the committed offsets than an agent that waits
            # for ever: the orchestrator restarts the process, which loses nothing.
            raise RuntimeError(
                f"{self.topic}[{partition}]: no answer from Kafka within {GUARD_TIMEOUT_S:.0f} s "
                "while checking for skipped records"
            ) from exc
        if records:
            log.warning(
                "%s[%d]: %d record(s) between offsets %d and %d were skipped by the consumer; "
                "processing them now",
                self.topic,
                partition,
                len(records),
                start,
                offset - 1,
            )
        return records


class SkippedMessage:
    """A record read back by :class:`OffsetGuard`, shaped like the faust message it missed."""

    def __init__(self, record: Record) -> None:
        self.topic = record.topic
        self.partition = record.partition
        self.offset = record.offset
        self.key = record.key
        self.value = record.value
        self.timestamp = record.timestamp_ms / 1000
        self.headers = list(record.headers)


CONSUMER_LAG = Gauge(
    "stopsms_consumer_lag",
    "Records a stream processor's consumer group has not processed yet, by group and topic.",
    ["group", "topic"],
)


class ConsumerLag(mode.Service):
    """Publishes the lag of a stream processor's group on its topics, every ``interval`` s.

    The lag is the topic's end offset minus the group's committed offset, summed over the
    partitions: what a replica still has to process, and what autoscaling on lag reads.
    """

    def __init__(
        self,
        bootstrap: KafkaAccess | str,
        group: str,
        topics: list[str],
        interval: float = 10.0,
        stall_exit_seconds: float = 0.0,
        **kwargs: Any,
    ) -> None:
        self.group = group
        self.stall_exit_seconds = stall_exit_seconds
        self._progress: tuple[int, float] | None = None  # (committed total, when it last moved)
        self.bootstrap = bootstrap
        self.topics = topics
        self.readers: list[TopicReader] = []  # made in on_start (aiokafka needs the loop)
        self.offsets = GroupOffsets(bootstrap)
        self.interval = interval
        super().__init__(**kwargs)

    def on_init_dependencies(self) -> list[mode.ServiceT]:
        """The group offsets reader starts and stops with this service."""
        return [self.offsets]

    async def on_start(self) -> None:
        """Connect the readers (they only ask for end offsets)."""
        for topic in self.topics:
            reader = TopicReader(self.bootstrap, topic, client_id="stopsms-lag", fetching=False)
            await reader.start()
            self.readers.append(reader)

    async def on_stop(self) -> None:
        """Disconnect."""
        for reader in self.readers:
            await reader.stop()

    async def measure(self) -> dict[str, int]:
        """The lag per topic now (also set on the gauge)."""
        lags = {}
        total = 0
        for reader in self.readers:
            ends = await reader.end_offsets()
            committed = await self.offsets.committed(self.group, reader.topic)
            lag = sum(max(0, end - committed.get(p, 0)) for p, end in ends.items())
            CONSUMER_LAG.labels(self.group, reader.topic).set(lag)
            lags[reader.topic] = lag
            total += sum(committed.values())
        self._watch_for_stall(total, sum(lags.values()))
        return lags

    def _watch_for_stall(self, committed_total: int, lag: int, now: float | None = None) -> bool:
        """Exit the process when work waits and nothing was committed for too long.

        A stream processor that stopped consuming (the fault tests saw one after a long pause)
        would otherwise wait for ever while every party's changes pile up. Its state is in
        Kafka, so exiting loses nothing: the orchestrator restarts it from the committed
        offsets. Returns True when it would exit (for the tests: ``exit`` is then not called).
        """
        now = time.monotonic() if now is None else now
        if self._progress is None or committed_total != self._progress[0] or lag == 0:
            self._progress = (committed_total, now)
            return False
        stalled = now - self._progress[1]
        if not self.stall_exit_seconds or stalled < self.stall_exit_seconds:
            return False
        log.critical(
            "%s has committed nothing for %.0f s while %d records wait: exiting so that the "
            "orchestrator restarts it from the committed offsets",
            self.group,
            stalled,
            lag,
        )
        self._exit()
        return True

    def _exit(self) -> None:
        logging.shutdown()
        os._exit(70)

    @mode.Service.task
    async def _measure_forever(self) -> None:
        while not self.should_stop:
            try:
                await self.measure()
            except Exception:  # noqa: BLE001 - a metric must never stop the processor
                log.warning("could not measure the consumer lag of %s", self.group, exc_info=True)
            await self.sleep(self.interval)
