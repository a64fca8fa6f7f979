"""How a StopSMS process reaches Kafka: where the brokers are and how it proves who it is.

On a laptop and in the tests the broker listens in plaintext. On the national cluster every
client authenticates, so that each one's ACLs (a ``KafkaUser`` per service and per operator)
limit it to the topics and groups it needs:

- ``SSL``: mutual TLS. The client presents its certificate (Strimzi's ``KafkaUser`` with
  ``authentication: tls`` writes ``user.crt`` and ``user.key``) and trusts the cluster's CA.
- ``SASL_SSL``: SCRAM-SHA-512 over TLS, a user name and a password file (``authentication:
  scram-sha-512``), for clients that cannot hold a certificate.

One :class:`KafkaAccess` describes this once; the three Kafka libraries the platform uses
(aiokafka, kafka-python) take it from here, so that a
process never connects one client securely and another in plaintext.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_SSL")
SASL_MECHANISM = "SCRAM-SHA-512"


class KafkaAccessError(ValueError):
    """The Kafka security settings are inconsistent or name files that cannot be read."""


@dataclass(frozen=True)
class KafkaAccess:
    """The bootstrap servers and the credentials every Kafka client of a process uses."""

    bootstrap: str
    security_protocol: str = "PLAINTEXT"
    #: The CA that signed the brokers' certificates (Strimzi: ``<cluster>-cluster-ca-cert``).
    ca_file: Path | None = None
    #: The client's certificate and key, for mutual TLS.
    cert_file: Path | None = None
    key_file: Path | None = None
    sasl_username: str = ""
    sasl_password_file: Path | None = None

    @classmethod
    def of(cls, target: KafkaAccess | str) -> KafkaAccess:
        """``target`` itself, or a plaintext access to the bootstrap address it names."""
        return target if isinstance(target, KafkaAccess) else cls(bootstrap=target)

    def __str__(self) -> str:
        return (
            self.bootstrap
            if self.security_protocol == "PLAINTEXT"
            else (f"{self.bootstrap} ({self.security_protocol})")
        )

    def problems(self) -> list[str]:
        """What is wrong with these settings, each naming the variable to fix (empty: fine)."""
        found = []
        if self.security_protocol not in PROTOCOLS:
            found.append(f"STOPSMS_KAFKA_SECURITY_PROTOCOL must be one of {', '.join(PROTOCOLS)}")
            return found
        if (self.cert_file is None) != (self.key_file is None):
            found.append("STOPSMS_KAFKA_CERT_FILE and STOPSMS_KAFKA_KEY_FILE go together")
        if self.security_protocol == "PLAINTEXT" and (
            self.ca_file or self.cert_file or self.sasl_username
        ):
            found.append(
                "Kafka certificates or a SASL user are set but STOPSMS_KAFKA_SECURITY_PROTOCOL "
                "is PLAINTEXT: set it to SSL or SASL_SSL"
            )
        if self.security_protocol == "SASL_SSL" and not (
            self.sasl_username and self.sasl_password_file
        ):
            found.append(
                "SASL_SSL needs STOPSMS_KAFKA_SASL_USERNAME and STOPSMS_KAFKA_SASL_PASSWORD_FILE"
            )
        for variable, path in (
            ("STOPSMS_KAFKA_CA_FILE", self.ca_file),
            ("STOPSMS_KAFKA_CERT_FILE", self.cert_file),
            ("STOPSMS_KAFKA_KEY_FILE", self.key_file),
            ("STOPSMS_KAFKA_SASL_PASSWORD_FILE", self.sasl_password_file),
        ):
            if path is not None and not path.is_file():
                found.append(f"{variable}: {path} is not a readable file")
        return found

    def ssl_context(self) -> ssl.SSLContext | None:
        """The client TLS context (verifying the brokers' names), or None in plaintext."""
        if self.security_protocol == "PLAINTEXT":
            return None
        context = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.cert_file is not None and self.key_file is not None:
            context.load_cert_chain(str(self.cert_file), str(self.key_file))
        return context

    def _password(self) -> str:
        assert self.sasl_password_file is not None  # checked by problems()
        return self.sasl_password_file.read_text().strip()

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for a Kafka client: aiokafka's and kafka-python's share the names."""
        options: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap,
            "security_protocol": self.security_protocol,
        }
        if self.security_protocol != "PLAINTEXT":
            options["ssl_context"] = self.ssl_context()
        if self.security_protocol == "SASL_SSL":
            options.update(
                sasl_mechanism=SASL_MECHANISM,
                sasl_plain_username=self.sasl_username,
                sasl_plain_password=self._password(),
            )
        return options
