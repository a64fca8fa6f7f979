"""Mutual TLS: credentials for servers and parties, and the party a certificate names.

Every gRPC API requires a client certificate signed by the platform's CA; the caller's party is
the one named in the certificate's subject alternative name (``<party id>.party.stopsms``), so
no request field can claim to be someone else. The certificates come from Secrets in a
deployment (cert-manager or the operators' own PKI) and from ``stopsms certs``
(:mod:`stopsms.tools.certificates`) on a development machine.

Layout of a TLS folder (what is handed to services and parties)::

    ca.pem                   the certificate authority's certificate
    server.pem server.key    the services' certificate (localhost, 127.0.0.1 and given names)
    parties/<id>.pem .key    one client certificate per party

The CA's private key never sits there: it lives beside, in ``<folder>-ca/ca.key``
(:func:`ca_key_folder`), with whoever issues certificates. A folder made before that rule
has its key moved out the next time it is completed.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import grpc

#: Client certificates name their party as a DNS SAN ``<party id>.party.stopsms``.
PARTY_SAN_SUFFIX = ".party.stopsms"
SERVER_NAMES = ("localhost", "127.0.0.1")


class TlsError(ValueError):
    """TLS material is missing or unusable; the message names the file."""


def party_san(party_id: str) -> str:
    """The subject alternative name that identifies a party."""
    return f"{party_id}{PARTY_SAN_SUFFIX}"


def party_from_sans(sans: Iterable[bytes | str]) -> str | None:
    """The party id named by a peer certificate's SANs, or None."""
    for raw in sans:
        name = raw.decode() if isinstance(raw, bytes) else raw
        if name.endswith(PARTY_SAN_SUFFIX) and len(name) > len(PARTY_SAN_SUFFIX):
            return name[: -len(PARTY_SAN_SUFFIX)]
    return None


def read_material(path: Path) -> bytes:
    """A certificate or key file, or a :class:`TlsError` saying how to make it."""
    try:
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise TlsError(f"{path} is missing: run `stopsms certs` (or mount the TLS Secret)") from exc


def server_credentials(folder: Path) -> grpc.ServerCredentials:
    """Server credentials that require a client certificate signed by the CA."""
    return grpc.ssl_server_credentials(
        [(read_material(folder / "server.key"), read_material(folder / "server.pem"))],
        root_certificates=read_material(folder / "ca.pem"),
        require_client_auth=True,
    )


def channel_credentials(folder: Path, party_id: str) -> grpc.ChannelCredentials:
    """Client credentials of one party."""
    return grpc.ssl_channel_credentials(
        root_certificates=read_material(folder / "ca.pem"),
        private_key=read_material(folder / "parties" / f"{party_id}.key"),
        certificate_chain=read_material(folder / "parties" / f"{party_id}.pem"),
    )
