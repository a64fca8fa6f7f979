"""Channels to the platform's gRPC APIs as a given party: mutual TLS, or the development header.

The services (intake calling the registry), the ``stopsms`` command, the benchmarks and the
tests all connect through here, so switching between TLS and the development mode is one
setting, not a change at every call site.
"""

from __future__ import annotations

from pathlib import Path

import grpc

from stopsms.adapters.identity import PARTY_HEADER
from stopsms.adapters.tls import channel_credentials
from stopsms.v1 import intake_pb2_grpc, notifier_pb2_grpc, registry_pb2_grpc, regulator_pb2_grpc

Metadata = tuple[tuple[str, str], ...]


def party_channel(
    address: str, party_id: str, tls_folder: Path | None
) -> tuple[grpc.aio.Channel, Metadata]:
    """An asyncio channel for ``party_id`` and the metadata to send on each call.

    With a TLS folder the party is proven by its client certificate and no metadata is needed;
    without one (development mode) the party is named in the ``x-stopsms-party`` header.
    """
    if tls_folder is None:
        return grpc.aio.insecure_channel(address), ((PARTY_HEADER, party_id),)
    return grpc.aio.secure_channel(address, channel_credentials(tls_folder, party_id)), ()


def party_channel_sync(
    address: str, party_id: str, tls_folder: Path | None
) -> tuple[grpc.Channel, Metadata]:
    """The blocking twin of :func:`party_channel`, for command-line tools."""
    if tls_folder is None:
        return grpc.insecure_channel(address), ((PARTY_HEADER, party_id),)
    return grpc.secure_channel(address, channel_credentials(tls_folder, party_id)), ()


#: The client stub of each service, by the name the platform gives it.
STUBS = {
    "intake": intake_pb2_grpc.IntakeServiceStub,
    "registry": registry_pb2_grpc.RegistryServiceStub,
    "notifier": notifier_pb2_grpc.NotifierServiceStub,
    "console": regulator_pb2_grpc.RegulatorServiceStub,
}
