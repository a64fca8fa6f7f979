"""Stand-ins for the operators and PSVAs of the directory, for the local platform.

On a developer's machine no operator consumes the list and no PSVA acknowledges, so a click
would never be proven applied. ``stopsms up`` runs these stand-ins (unless told not to): each
operator follows the list with the reference consumer and commits, and delivers the platform's
messages to citizens by printing them (a person trying the platform reads the confirmation, or
the one-time code, on the console); each PSVA watches its changes and acknowledges them,
exactly as real parties do through the public interfaces.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import grpc

from stopsms.adapters.clients import party_channel_sync
from stopsms.adapters.settings import Settings
from stopsms.domain.parties import PartiesDirectory
from stopsms.domain.privacy import Pseudonymiser
from stopsms.tools.operator_feed import follow
from stopsms.tools.operator_outbox import deliver_messages
from stopsms.v1 import events_pb2, notifier_pb2, notifier_pb2_grpc

if TYPE_CHECKING:
    from stopsms.tools.local_platform import LocalPlatform


class _LatestCursor:
    """The newest cursor a stand-in PSVA applied, handed to its acknowledgement stream.

    One acknowledgement is in flight at a time; whatever arrives meanwhile is covered by the next
    one (the latest cursor covers every change before it), so a burst costs a few writes, not
    one each, and nothing waits behind a queue of acknowledgements.
    """

    def __init__(self) -> None:
        self._ready = threading.Condition()
        self.latest = ""
        self._sent = ""
        self._in_flight = False
        self._closed = False

    def offer(self, cursor: str) -> None:
        """A change up to ``cursor`` was applied."""
        with self._ready:
            self.latest = cursor
            self._ready.notify()

    def answered(self) -> None:
        """The acknowledgement in flight is durable: the next may go."""
        with self._ready:
            self._in_flight = False
            self._ready.notify()

    def close(self) -> None:
        """End the requests of the current and every later acknowledgement stream."""
        with self._ready:
            self._closed = True
            self._ready.notify_all()

    def requests(self) -> Iterator[notifier_pb2.AcknowledgeStreamRequest]:
        """The requests of one AcknowledgeStream call (read by grpc's own thread)."""
        with self._ready:
            self._in_flight = False  # a new call: nothing of it is in flight
        while True:
            with self._ready:
                self._ready.wait_for(
                    lambda: self._closed or (not self._in_flight and self.latest != self._sent)
                )
                if self._closed:
                    return
                self._sent, self._in_flight = self.latest, True
                cursor = self._sent
            yield notifier_pb2.AcknowledgeStreamRequest(cursor=cursor)

    def resend(self) -> None:
        """A stream broke: what it had in flight may not be durable, so send it again."""
        with self._ready:
            self._sent = ""


def acknowledge_everything(
    address: str, party_id: str, tls_folder: Path | None, stop: threading.Event
) -> None:
    """A PSVA that applies and acknowledges every change it is sent, until ``stop``.

    As a real PSVA would: the change stream stays open (no deadline: a stream ended every few
    seconds delays the changes of every reconnection), a broken stream resumes from the last
    change applied, and acknowledgements go on one AcknowledgeStream call, the latest cursor
    whenever the previous one is durable.
    """
    channel, metadata = party_channel_sync(address, party_id, tls_folder)
    stub = notifier_pb2_grpc.NotifierServiceStub(channel)
    cursors = _LatestCursor()

    def watch() -> None:
        while not stop.is_set():
            try:
                request = notifier_pb2.WatchChangesRequest(cursor=cursors.latest)
                for response in stub.WatchChanges(request, metadata=metadata):
                    cursors.offer(response.cursor)
            except grpc.RpcError:
                stop.wait(0.2)  # a restart, or the stop: resume from the last change applied

    def acknowledge() -> None:
        while not stop.is_set():
            try:
                for _ in stub.AcknowledgeStream(cursors.requests(), metadata=metadata):
                    cursors.answered()
            except grpc.RpcError:
                cursors.resend()
                stop.wait(0.2)

    workers = [
        threading.Thread(target=work, daemon=True, name=f"psva-{party_id}-{work.__name__}")
        for work in (watch, acknowledge)
    ]
    for worker in workers:
        worker.start()
    stop.wait()
    cursors.close()
    channel.close()  # ends both calls (CANCELLED), so both workers see the stop
    for worker in workers:
        worker.join(10)


def _ignore(msisdn: str, change: events_pb2.SuppressionChanged) -> None:
    """A stand-in operator applies a change by doing nothing with it."""


def _serves_all(msisdn: str) -> bool:
    return True


def _serves_none(msisdn: str) -> bool:
    return False


class DemoParties:
    """Every operator and PSVA of the directory, as threads; ``stop()`` ends them."""

    def __init__(
        self,
        directory: PartiesDirectory,
        *,
        kafka: str,
        notifier: str,
        namespace: str,
        pseudonymiser: Pseudonymiser,
        tls_folder: Path | None,
    ) -> None:
        self._stop = threading.Event()
        operators = [party.id for party in directory if party.is_operator]
        self._threads = (
            [
                threading.Thread(
                    target=follow,
                    args=(kafka, party_id, pseudonymiser, namespace),
                    kwargs={"apply": _ignore, "stop": self._stop},
                    daemon=True,
                    name=f"operator-{party_id}",
                )
                for party_id in operators
            ]
            + [
                threading.Thread(
                    target=deliver_messages,
                    args=(kafka, party_id, pseudonymiser, namespace),
                    # Here the first operator serves every number: a message that names no
                    # operator (a code asked for on the web) is printed once.
                    kwargs={"serves": _serves_all if i == 0 else _serves_none, "stop": self._stop},
                    daemon=True,
                    name=f"operator-{party_id}-sms",
                )
                for i, party_id in enumerate(operators)
            ]
            + [
                threading.Thread(
                    target=acknowledge_everything,
                    args=(notifier, party.id, tls_folder, self._stop),
                    daemon=True,
                    name=f"psva-{party.id}",
                )
                for party in directory
                if party.is_psva
            ]
        )

    @classmethod
    def for_platform(cls, platform: LocalPlatform) -> DemoParties:
        """Stand-ins for every operator and PSVA of a local platform's directory."""
        settings = Settings.from_env(platform.environment_for_keys())
        return cls(
            PartiesDirectory.load(settings.parties_file),
            kafka=platform.endpoints["kafka"],
            notifier=platform.endpoints["notifier_grpc"],
            namespace=platform.namespace,
            pseudonymiser=settings.pseudonymiser(),
            tls_folder=platform.tls_folder,
        )

    def start(self) -> DemoParties:
        """Start every stand-in."""
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        """Stop every stand-in and wait for it."""
        self._stop.set()
        for thread in self._threads:
            thread.join(10)
