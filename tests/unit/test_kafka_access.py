"""Kafka credentials: one description, the same security for every client library."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from stopsms.adapters.kafka_access import KafkaAccess
from stopsms.adapters.settings import Settings, SettingsError
from stopsms.tools.certificates import CertificateAuthority, write_pem


@pytest.fixture
def tls_files(tmp_path: Path) -> dict[str, Path]:
    ca = CertificateAuthority.create()
    ca.save(tmp_path)
    cert, key = ca.issue("stopsms-registry", ["stopsms-registry"], server=False)
    write_pem(tmp_path / "user.crt", cert)
    write_pem(tmp_path / "user.key", key, private=True)
    (tmp_path / "password").write_text("s3cret\n")
    return {
        "ca": tmp_path / "ca.pem",
        "cert": tmp_path / "user.crt",
        "key": tmp_path / "user.key",
        "password": tmp_path / "password",
    }


def test_a_bare_address_means_plaintext_and_nothing_else() -> None:
    access = KafkaAccess.of("kafka:9092")
    assert access.problems() == []
    assert access.client_options() == {
        "bootstrap_servers": "kafka:9092",
        "security_protocol": "PLAINTEXT",
    }


def test_mutual_tls_gives_every_library_the_same_certificate(tls_files: dict[str, Path]) -> None:
    access = KafkaAccess(
        "kafka:9093",
        "SSL",
        ca_file=tls_files["ca"],
        cert_file=tls_files["cert"],
        key_file=tls_files["key"],
    )
    assert access.problems() == []
    options = access.client_options()
    assert options["security_protocol"] == "SSL"
    context = options["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


def test_scram_over_tls_reads_the_password_from_its_file(tls_files: dict[str, Path]) -> None:
    access = KafkaAccess(
        "kafka:9094",
        "SASL_SSL",
        ca_file=tls_files["ca"],
        sasl_username="stopsms-notifier",
        sasl_password_file=tls_files["password"],
    )
    assert access.problems() == []
    options = access.client_options()
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert options["sasl_plain_username"] == "stopsms-notifier"
    assert options["sasl_plain_password"] == "s3cret"
    assert options["ssl_context"].verify_mode == ssl.CERT_REQUIRED


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"STOPSMS_KAFKA_SECURITY_PROTOCOL": "TLS"}, "must be one of PLAINTEXT, SSL, SASL_SSL"),
        (
            {"STOPSMS_KAFKA_SECURITY_PROTOCOL": "SSL", "STOPSMS_KAFKA_CERT_FILE": "{cert}"},
            "STOPSMS_KAFKA_CERT_FILE and STOPSMS_KAFKA_KEY_FILE go together",
        ),
        ({"STOPSMS_KAFKA_CA_FILE": "{ca}"}, "set it to SSL or SASL_SSL"),
        (
            {"STOPSMS_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"},
            "SASL_SSL needs STOPSMS_KAFKA_SASL_USERNAME and STOPSMS_KAFKA_SASL_PASSWORD_FILE",
        ),
        (
            {"STOPSMS_KAFKA_SECURITY_PROTOCOL": "SSL", "STOPSMS_KAFKA_CA_FILE": "/nowhere/ca.crt"},
            "STOPSMS_KAFKA_CA_FILE: /nowhere/ca.crt is not a readable file",
        ),
    ],
)
def test_inconsistent_kafka_security_stops_the_service_naming_the_variable(
    tls_files: dict[str, Path], env: dict[str, str], message: str
) -> None:
    paths = {name: str(path) for name, path in tls_files.items()}
    with pytest.raises(SettingsError, match=message.replace("(", r"\(")):
        Settings.from_env({k: v.format(**paths) for k, v in env.items()})


def test_the_settings_describe_the_access_every_client_uses(tls_files: dict[str, Path]) -> None:
    settings = Settings.from_env(
        {
            "STOPSMS_KAFKA_BOOTSTRAP": "stopsms-kafka-bootstrap:9093",
            "STOPSMS_KAFKA_SECURITY_PROTOCOL": "SSL",
            "STOPSMS_KAFKA_CA_FILE": str(tls_files["ca"]),
            "STOPSMS_KAFKA_CERT_FILE": str(tls_files["cert"]),
            "STOPSMS_KAFKA_KEY_FILE": str(tls_files["key"]),
        }
    )
    assert settings.kafka == KafkaAccess(
        "stopsms-kafka-bootstrap:9093",
        "SSL",
        ca_file=tls_files["ca"],
        cert_file=tls_files["cert"],
        key_file=tls_files["key"],
    )
    assert str(settings.kafka) == "stopsms-kafka-bootstrap:9093 (SSL)"


def test_partition_of_places_keys_where_the_producer_does() -> None:
    """The progress follower reads one partition: the one the producer puts its key on."""
    from aiokafka.partitioner import DefaultPartitioner

    from stopsms.adapters.kafka import partition_of
    from stopsms.notifier.progress import PROGRESS_KEY

    for count in (1, 3, 12, 48):
        everything = list(range(count))
        for key in (PROGRESS_KEY, b"evt-1", b"+212600000000", "é".encode()):
            assert partition_of(key, count) == DefaultPartitioner()(key, everything, everything)
