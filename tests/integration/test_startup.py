"""A service refuses to start, with a clear message, when its keys, TLS material or Kafka are wrong."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from stopsms.tools.launcher import free_port

pytestmark = pytest.mark.integration
#: Without TLS, so that the Kafka checks are what stops the service.
DEV = {"STOPSMS_INSECURE_IDENTITY": "true"}


@pytest.mark.parametrize(
    ("service", "setting", "message"),
    [
        (
            "registry",
            {"STOPSMS_PSEUDONYM_KEY_FILE": "{tmp}/missing.key"},
            "missing.key does not exist",
        ),
        (
            "intake",
            {"STOPSMS_DATA_KEY_FILE": "{tmp}/bad.key"},
            "bad.key: the secret is not hexadecimal",
        ),
        ("notifier", {"STOPSMS_TLS_DIR": "{tmp}/no-tls"}, "is missing: run `stopsms certs`"),
        ("intake", {"STOPSMS_PARTITIONS": "many"}, "STOPSMS_PARTITIONS='many' is malformed"),
        (
            "intake",
            {"STOPSMS_TOPIC_NAMESPACE": "absent.", **DEV},
            "topic absent.stopsms.requests.v1 does not exist",
        ),
        (
            "registry",
            {"STOPSMS_PARTITIONS": "6", **DEV},
            "partitions; the platform's are frozen at 6",
        ),
        (
            "notifier",
            {"STOPSMS_PROFILE": "production", **DEV},
            "has replication factor 1; production needs at least 3",
        ),
        (
            "registry",
            {"STOPSMS_PROFILE": "production", **DEV},
            "the production profile needs Kafka authentication",
        ),
    ],
)
def test_a_service_without_valid_keys_or_certificates_stops_with_a_clear_message(
    service_env: dict[str, str], tmp_path: Path, service: str, setting: dict[str, str], message: str
) -> None:
    (tmp_path / "bad.key").write_text("dk1:not-hex\n")
    env = {
        **service_env,
        "STOPSMS_GENERATE_KEYS": "false",
        "STOPSMS_INSECURE_IDENTITY": "false",
        # Ports of its own: a platform running beside the tests holds the default ones.
        f"STOPSMS_{service.upper()}_GRPC_ADDRESS": f"127.0.0.1:{free_port()}",
        f"STOPSMS_{service.upper()}_HEALTH_ADDRESS": f"127.0.0.1:{free_port()}",
        **{k: v.format(tmp=tmp_path) for k, v in setting.items()},
    }
    for name in ("pseudonym", "data"):  # valid keys, unless the case replaces one
        path = tmp_path / f"{name}.key"
        path.write_text(f"{name[0]}k1:{'ab' * 32}\n")
        env.setdefault(f"STOPSMS_{name.upper()}_KEY_FILE", str(path))
    result = subprocess.run(
        [sys.executable, "-m", f"stopsms.{service}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert f"stopsms {service} cannot start" in result.stderr and message in result.stderr
    assert "Traceback" not in result.stderr
