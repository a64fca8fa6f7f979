"""Stand-ins for the operators and PSVAs of the directory, for the local platform.

On a developer's machine no operator consumes the list and no PSVA acknowledges, so a click
would never be proven applied. ``stopsms up`` runs these stand-ins (unless told not to): each
operator follows the list with the reference consumer and commits; each PSVA watches its
changes and acknowledges them, exactly as real parties do through the public interfaces.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

import grpc

from stopsms.core.clients import party_channel_sync
from stopsms.core.parties import PartiesDirectory
from stopsms.core.privacy import Pseudonymiser
from stopsms.core.settings import Settings
from stopsms.operator_feed import follow
from stopsms.v1 import events_pb2, notifier_pb2, notifier_pb2_grpc

if TYPE_CHECKING:
    from stopsms.local_platform import LocalPlatform


def acknowledge_everything(
    address: str, party_id: str, tls_folder: Path | None, stop: threading.Event
) -> None:
    """A PSVA that applies and acknowledges every change it is sent, until ``stop``."""
    channel, metadata = party_channel_sync(address, party_id, tls_folder)
    stub = notifier_pb2_grpc.NotifierServiceStub(channel)
    try:
        while not stop.is_set():
            try:
                for response in stub.WatchChanges(
                    notifier_pb2.WatchChangesRequest(), metadata=metadata, timeout=2
                ):
                    stub.Acknowledge(
                        notifier_pb2.AcknowledgeRequest(cursor=response.cursor), metadata=metadata
                    )
            except grpc.RpcError:
                stop.wait(0.2)  # the deadline, or a restart: resume from the acknowledged cursor
    finally:
        channel.close()


def _ignore(msisdn: str, change: events_pb2.SuppressionChanged) -> None:
    """A stand-in operator applies a change by doing nothing with it."""


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
        self._threads = [
            threading.Thread(
                target=follow,
                args=(kafka, party.id, pseudonymiser, namespace),
                kwargs={"apply": _ignore, "stop": self._stop},
                daemon=True,
                name=f"operator-{party.id}",
            )
            for party in directory
            if party.is_operator
        ] + [
            threading.Thread(
                target=acknowledge_everything,
                args=(notifier, party.id, tls_folder, self._stop),
                daemon=True,
                name=f"psva-{party.id}",
            )
            for party in directory
            if party.is_psva
        ]

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
