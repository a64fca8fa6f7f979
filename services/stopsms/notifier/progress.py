"""Every party's progress: PSVAs' acknowledgements and operators' commits, recorded in batches.

The proof needs to know how far each party has applied the list, and since when. That is
recorded on ``stopsms.receipts.v1`` as *progress receipts* — one record naming every party that
advanced since the last one, with its positions and the time — so the records grow with parties
and rounds, not with changes, and an idle platform writes none.

* :class:`Acknowledgements` receives PSVAs' acknowledgements (streams and webhooks). They are
  merged in memory and written together every ``flush_seconds``: an ``Acknowledge`` is answered
  once its progress receipt is acknowledged by Kafka, which is what makes it durable. The
  consumer group ``stopsms.psva.<id>`` (what operations tools and autoscalers read) follows at
  most once per ``commit_seconds``, for the PSVAs that moved.
* :class:`ProgressFollower` reads the progress receipts of every replica into the process's
  :class:`~stopsms.domain.proof.ProgressLog`: on start, those of the last
  ``replay_seconds`` (so a proof published again after a restart has the same applied times),
  then the parties' committed groups for what is older, then live.
* :class:`OperatorPoller` reads the operators' groups, together, and writes the progress of the
  partitions this replica proves: often while some of its changes wait, rarely when none does.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import Protocol

import mode

from stopsms.adapters.bus import Bus, TopicReading, read_up_to
from stopsms.adapters.kafka import ConsumerGroups, Headers, message_headers, partition_of
from stopsms.domain.parties import PartiesDirectory, Party
from stopsms.domain.proof import ProgressLog, progress_receipt
from stopsms.domain.topics import Topics
from stopsms.v1 import events_pb2

log = logging.getLogger(__name__)

#: The key of every progress receipt (they are few; one partition keeps them in order).
PROGRESS_KEY = b"progress"
RECEIPT_HEADERS = message_headers("stopsms.v1.DeliveryReceipt")


def now_ms() -> int:
    """Wall-clock milliseconds: what applied times are measured in."""
    return int(time.time() * 1000)


def party_group(topics: Topics, party: Party) -> str:
    """The consumer group whose commits are this party's confirmations."""
    return topics.operator_group(party.id) if party.is_operator else topics.psva_group(party.id)


class Producer(Protocol):
    """What the progress publisher needs of a producer (:class:`KafkaPublisher`, or its fake)."""

    async def start(self) -> None:
        """Connect."""
        ...

    async def stop(self) -> None:
        """Flush and disconnect."""
        ...

    async def publish(
        self,
        topic: str,
        key: bytes,
        value: bytes | None,
        *,
        partition: int | None = None,
        headers: Headers | None = None,
    ) -> tuple[int, int]:
        """Publish one record; returns (partition, offset) once acknowledged."""
        ...

    def send(
        self, topic: str, key: bytes, value: bytes | None, *, headers: Headers | None = None
    ) -> asyncio.Future[tuple[int, int]]:
        """Queue one record now, in call order; the future is its acknowledgement."""
        ...


class ProgressPublisher(mode.Service):
    """The idempotent producer of progress receipts and proofs (one per notifier process).

    ``connect`` makes the producer when the service starts (aiokafka clients are made inside
    the running loop): a :class:`KafkaPublisher` in production, the in-memory one in tests.
    """

    def __init__(self, connect: Callable[[], Producer], **kwargs: object) -> None:
        self._connect = connect
        self.producer: Producer | None = None
        self._connected = asyncio.Event()
        super().__init__(**kwargs)  # type: ignore[arg-type]

    async def on_start(self) -> None:
        """Connect."""
        self.producer = self._connect()
        await self.producer.start()
        self._connected.set()

    async def on_stop(self) -> None:
        """Flush and disconnect."""
        if self.producer is not None:
            await self.producer.stop()

    def send(
        self, topic: str, key: bytes, value: bytes, type_name: str
    ) -> asyncio.Future[tuple[int, int]]:
        """Queue one record now (in call order); the result is its acknowledgement.

        Before the producer is connected (the stream agent may start first), records wait for
        it, still in call order.
        """
        if self.producer is not None:
            return self.producer.send(topic, key, value, headers=message_headers(type_name))
        return asyncio.ensure_future(self._send_when_started(topic, key, value, type_name))

    async def _send_when_started(
        self, topic: str, key: bytes, value: bytes, type_name: str
    ) -> tuple[int, int]:
        await self._connected.wait()
        assert self.producer is not None
        return await self.producer.publish(topic, key, value, headers=message_headers(type_name))


class ProgressFollower(mode.Service):
    """Reads every replica's progress receipts into the log, and tells who advanced."""

    def __init__(
        self,
        bus: Bus,
        topics: Topics,
        directory: PartiesDirectory,
        offsets: ConsumerGroups,
        log_: ProgressLog,
        on_advanced: Callable[[list[tuple[str, int]]], None],
        replay_seconds: float,
        **kwargs: object,
    ) -> None:
        self.bus = bus
        self.topics = topics
        self.directory = directory
        self.offsets = offsets
        self.progress = log_
        self.on_advanced = on_advanced
        self.replay_seconds = replay_seconds
        self.ready = asyncio.Event()
        self._reader: TopicReading | None = None
        self._ends: TopicReading | None = None
        #: The partition of the receipts topic that holds the progress receipts.
        self.partition = 0
        self._read = asyncio.Condition()
        super().__init__(**kwargs)  # type: ignore[arg-type]

    async def on_start(self) -> None:
        """Connect at the progress of the last ``replay_seconds``, on the progress partition.

        Every progress receipt has one key, so one partition holds them all; the reader reads
        only that one. (A reader of every partition keeps a fetch for the idle others waiting
        at the broker while its last records are handed over, and the next fetch of the
        progress partition waits behind it: up to the whole fetch wait, under load.)
        """
        # End offsets on a connection of their own (not behind the reader's long-poll fetch).
        self._ends = self.bus.reader(
            self.topics.receipts, client_id="stopsms-progress-ends", fetching=False
        )
        await self._ends.start()
        self.partition = partition_of(PROGRESS_KEY, len(await self._ends.end_offsets()))
        self._reader = self.bus.reader(
            self.topics.receipts,
            start_time_ms=now_ms() - int(self.replay_seconds * 1000),
            client_id="stopsms-progress",
            only_partitions=[self.partition],
        )
        await self._reader.start()

    async def on_stop(self) -> None:
        """Disconnect."""
        if self._reader is not None:
            await self._reader.stop()
        if self._ends is not None:
            await self._ends.stop()

    def _apply(self, records: Iterable[object]) -> None:
        moved: list[tuple[str, int]] = []
        for record in records:
            value = getattr(record, "value", None)
            if not value:
                continue
            try:
                receipt = events_pb2.DeliveryReceipt.FromString(value)
            except Exception:  # noqa: BLE001 - one bad record must not stop the proof
                log.exception("unreadable receipt at offset %s", getattr(record, "offset", "?"))
                continue
            if receipt.progress:  # receipts about one change (written before) are history
                moved.extend(self.progress.apply(receipt.progress))
        if moved:
            self.on_advanced(moved)

    async def _seed_from_groups(self) -> None:
        """What no replayed receipt says: each party's committed group, as of now."""
        parties = [p for p in self.directory if p.is_operator or p.is_psva]
        committed = await asyncio.gather(
            *(
                self.offsets.committed(party_group(self.topics, p), self.topics.suppressions)
                for p in parties
            ),  # fmt: skip
            return_exceptions=True,
        )
        at = now_ms()
        moved = []
        for party, positions in zip(parties, committed, strict=True):
            if isinstance(positions, BaseException):
                log.warning("could not read the committed offsets of %s: %r", party.id, positions)
                continue
            for partition, offset in positions.items():
                if self.progress.advance(party.id, party.kind, partition, offset, at):
                    moved.append((party.id, partition))
        if moved:
            self.on_advanced(moved)

    async def record(
        self, publisher: ProgressPublisher, entries: list[tuple[str, int, dict[int, int], int]]
    ) -> None:
        """Publish one progress receipt (acknowledged by Kafka), then apply it here at once."""
        receipt = progress_receipt(entries)
        await publisher.send(
            self.topics.receipts,
            PROGRESS_KEY,
            receipt.SerializeToString(),
            "stopsms.v1.DeliveryReceipt",
        )
        moved = self.progress.apply(receipt.progress)
        if moved:
            self.on_advanced(moved)

    async def caught_up(self, timeout: float = 5.0) -> bool:
        """Wait until what was written before the call is in the log (False: timed out)."""
        assert self._reader is not None and self._ends is not None
        await self.ready.wait()
        ends = {self.partition: (await self._ends.end_offsets())[self.partition]}
        try:
            await asyncio.wait_for(read_up_to(self._reader, ends, self._read), timeout)
            return True
        except TimeoutError:
            return False

    @mode.Service.task
    async def _follow(self) -> None:
        assert self._reader is not None
        async for batch in self._reader.read_to_end():
            self._apply(batch)
        await self._seed_from_groups()
        self.ready.set()
        log.info("parties' progress read; following it")
        while not self.should_stop:
            self._apply(await self._reader.read(timeout_ms=500))
            async with self._read:
                self._read.notify_all()


class Acknowledgements(mode.Service):
    """PSVAs' acknowledgements, made durable together as progress receipts."""

    def __init__(
        self,
        publisher: ProgressPublisher,
        follower: ProgressFollower,
        offsets: ConsumerGroups,
        topics: Topics,
        directory: PartiesDirectory,
        *,
        flush_seconds: float,
        commit_seconds: float,
        **kwargs: object,
    ) -> None:
        self.publisher = publisher
        self.follower = follower
        self.offsets = offsets
        self.topics = topics
        self.directory = directory
        self.flush_seconds = flush_seconds
        self.commit_seconds = commit_seconds
        #: party -> (merged positions, time of the latest acknowledgement) not yet written
        self._pending: dict[str, tuple[dict[int, int], int]] = {}
        self._waiters: list[asyncio.Future[None]] = []
        self._to_commit: dict[str, dict[int, int]] = {}
        self._wake = asyncio.Event()
        super().__init__(**kwargs)  # type: ignore[arg-type]

    @property
    def progress(self) -> ProgressLog:
        """The process's progress log (every replica's receipts, and this one's)."""
        return self.follower.progress

    async def durable(self, party_id: str) -> dict[int, int]:
        """Where a PSVA resumes: everything acknowledged before the call, on any replica."""
        if not await self.follower.caught_up():
            log.warning("progress receipts still behind; resuming %s from what is read", party_id)
        return self.progress.positions(party_id)

    async def acknowledge(self, party: Party, positions: dict[int, int]) -> dict[int, int]:
        """Record that ``party`` applied everything before ``positions``; return its cursor.

        Answers once the progress is durable (its receipt acknowledged by Kafka); never moves a
        position back. Raises when Kafka does not take it (the PSVA retries).
        """
        await self.follower.ready.wait()
        known = self.progress.positions(party.id)
        merged, _ = self._pending.get(party.id, ({}, 0))
        forward = {
            p: o for p, o in positions.items() if o > max(known.get(p, -1), merged.get(p, -1))
        }
        if forward or party.id in self._pending:
            self._pending[party.id] = ({**merged, **forward}, now_ms())
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            self._wake.set()
            await waiter
        return self.progress.positions(party.id)

    @mode.Service.task
    async def _flush_forever(self) -> None:
        while not self.should_stop:
            await self._wake.wait()
            await self.sleep(self.flush_seconds)  # what arrives meanwhile joins the batch
            self._wake.clear()
            pending, self._pending = self._pending, {}
            waiters, self._waiters = self._waiters, []
            if not pending:
                continue
            entries = []
            for party_id, (positions, at) in pending.items():
                party = self.directory.get(party_id)
                entries.append((party_id, party.kind if party else 0, positions, at))
            try:
                await self.follower.record(self.publisher, entries)
            except Exception as exc:  # noqa: BLE001 - each waiting PSVA is told, and retries
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_exception(exc)
                continue
            for party_id, (positions, _) in pending.items():
                self._to_commit.setdefault(party_id, {}).update(positions)
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    @mode.Service.task
    async def _commit_forever(self) -> None:
        """Keep each PSVA's group where its acknowledgements are, once a round for all."""
        while not self.should_stop:
            await self.sleep(self.commit_seconds)
            batch, self._to_commit = self._to_commit, {}
            results = await asyncio.gather(
                *(
                    self.offsets.commit(self.topics.psva_group(p), self.topics.suppressions, o)
                    for p, o in batch.items()
                ),
                return_exceptions=True,
            )
            for (party_id, positions), result in zip(batch.items(), results, strict=True):
                if isinstance(result, BaseException):
                    log.warning("group of %s not committed (%r); next round", party_id, result)
                    merged = self._to_commit.setdefault(party_id, {})
                    for p, o in positions.items():
                        merged[p] = max(o, merged.get(p, 0))


class OperatorPoller(mode.Service):
    """Operators' committed offsets, as progress receipts for the partitions this replica proves."""

    def __init__(
        self,
        publisher: ProgressPublisher,
        follower: ProgressFollower,
        offsets: ConsumerGroups,
        topics: Topics,
        directory: PartiesDirectory,
        mine: Callable[[], set[int]],
        waiting: Callable[[], bool],
        *,
        busy_seconds: float,
        idle_seconds: float,
        wake: asyncio.Event | None = None,
        **kwargs: object,
    ) -> None:
        self.publisher = publisher
        self.follower = follower
        self.offsets = offsets
        self.topics = topics
        self.directory = directory
        self.mine = mine
        self.waiting = waiting
        self.busy_seconds = busy_seconds
        self.idle_seconds = idle_seconds
        #: Set when a change starts waiting for its parties.
        self.wake = wake or asyncio.Event()
        super().__init__(**kwargs)  # type: ignore[arg-type]

    async def poll_once(self) -> int:
        """One round: the operators that advanced on my partitions, in one receipt."""
        mine = self.mine()
        operators = [p for p in self.directory if p.is_operator]
        if not mine or not operators:
            return 0
        committed = await asyncio.gather(
            *(
                self.offsets.committed(party_group(self.topics, p), self.topics.suppressions)
                for p in operators
            )  # fmt: skip
        )
        at = now_ms()
        entries = []
        for party, positions in zip(operators, committed, strict=True):
            forward = {
                p: o
                for p, o in positions.items()
                if p in mine and o > self.follower.progress.position(party.id, p)
            }
            if forward:
                entries.append((party.id, party.kind, forward, at))
        if not entries:
            return 0
        await self.follower.record(self.publisher, entries)
        return len(entries)

    @mode.Service.task
    async def _poll_forever(self) -> None:
        await self.follower.ready.wait()
        while not self.should_stop:
            if self.waiting():
                await self.sleep(self.busy_seconds)
            else:  # nothing to prove: poll rarely, but at once when a change arrives
                self.wake.clear()
                try:
                    await asyncio.wait_for(self.wake.wait(), self.idle_seconds)
                    await self.sleep(self.busy_seconds)  # operators take a moment to commit
                except TimeoutError:
                    pass
            try:
                await self.poll_once()
            except Exception:  # noqa: BLE001 - keep polling; the next round retries
                log.exception("reading operators' offsets failed; retrying")
