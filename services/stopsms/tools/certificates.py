"""A development certificate authority: ``stopsms certs``, ``stopsms up`` and the tests.

It makes the CA, the services' server certificate and one client certificate per party of the
directory, in the TLS folder layout :mod:`stopsms.adapters.tls` reads. No service issues
certificates: in a deployment they come from Secrets.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from stopsms.adapters.tls import SERVER_NAMES, party_san, read_material


def write_pem(path: Path, data: bytes, private: bool = False) -> None:
    """Write a certificate or key (a key readable by its owner only), making folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "StopSMS"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class CertificateAuthority:
    """A CA that issues the platform's server and party certificates."""

    def __init__(self, certificate: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        self.certificate = certificate
        self.key = key

    @classmethod
    def create(
        cls, common_name: str = "StopSMS development CA", days: int = 3650
    ) -> CertificateAuthority:
        """A new self-signed CA."""
        key = ec.generate_private_key(ec.SECP256R1())
        name = _name(common_name)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_now() - datetime.timedelta(minutes=5))
            .not_valid_after(_now() + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(key, hashes.SHA256())
        )
        return cls(certificate, key)

    @classmethod
    def load(cls, folder: Path, key_folder: Path | None = None) -> CertificateAuthority:
        """Load ``ca.pem`` from a TLS folder and ``ca.key`` from its CA folder (default: beside)."""
        certificate = x509.load_pem_x509_certificate((folder / "ca.pem").read_bytes())
        key_file = (key_folder or ca_key_folder(folder)) / "ca.key"
        key = serialization.load_pem_private_key(read_material(key_file), None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return cls(certificate, key)

    def save(self, folder: Path, key_folder: Path | None = None) -> None:
        """Write ``ca.pem`` into the TLS folder and ``ca.key`` into its CA folder."""
        write_pem(folder / "ca.pem", self.certificate.public_bytes(serialization.Encoding.PEM))
        key_folder = key_folder or ca_key_folder(folder)
        key_folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_pem(key_folder / "ca.key", _key_pem(self.key), private=True)

    def issue(
        self,
        common_name: str,
        dns_names: Iterable[str],
        *,
        server: bool,
        days: int = 825,
        not_before: datetime.datetime | None = None,
    ) -> tuple[bytes, bytes]:
        """Issue a leaf certificate; return (certificate PEM, key PEM)."""
        key = ec.generate_private_key(ec.SECP256R1())
        names: list[x509.GeneralName] = []
        for name in dns_names:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                names.append(x509.DNSName(name))
        start = not_before or _now() - datetime.timedelta(minutes=5)
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        certificate = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + datetime.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        return certificate.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def ca_key_folder(folder: Path) -> Path:
    """Where the CA's private key of a TLS folder lives: beside it, never inside it."""
    return folder.parent / f"{folder.name}-ca"


def move_ca_key_out(folder: Path, key_folder: Path | None = None) -> None:
    """A folder made before the key was kept apart: move its key out, readable by us only."""
    inside = folder / "ca.key"
    if inside.exists():
        outside = (key_folder or ca_key_folder(folder)) / "ca.key"
        if not outside.exists():
            outside.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.replace(inside, outside)
        else:
            inside.unlink()


def create_tls_folder(
    folder: Path,
    party_ids: Iterable[str],
    server_names: Iterable[str] = (),
    ca_folder: Path | None = None,
) -> list[str]:
    """Make (or complete) a TLS folder: the CA once, the server certificate, every party's.

    The CA's key goes to ``ca_folder`` (default: beside the folder, :func:`ca_key_folder`),
    never into the folder handed to services and parties. Existing files are kept, so
    re-running after adding a party only issues what is missing. Returns the files written.
    """
    written: list[str] = []
    move_ca_key_out(folder, ca_folder)
    if (folder / "ca.pem").exists():
        ca = CertificateAuthority.load(folder, ca_folder)
    else:
        ca = CertificateAuthority.create()
        ca.save(folder, ca_folder)
        written.append("ca.pem")
    if not (folder / "server.pem").exists():
        cert, key = ca.issue("stopsms services", [*SERVER_NAMES, *server_names], server=True)
        write_pem(folder / "server.pem", cert)
        write_pem(folder / "server.key", key, private=True)
        written.append("server.pem")
    for party_id in party_ids:
        path = folder / "parties" / f"{party_id}.pem"
        if not path.exists():
            cert, key = ca.issue(party_id, [party_san(party_id)], server=False)
            write_pem(path, cert)
            write_pem(path.with_suffix(".key"), key, private=True)
            written.append(f"parties/{party_id}.pem")
    return written
