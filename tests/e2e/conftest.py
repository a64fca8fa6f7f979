"""The platform the security and fuzzing tests share: all three services, mutual TLS on."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from stopsms.tools.launcher import LocalInfrastructure
from stopsms.tools.local_platform import DEFAULT_PORTS, LocalPlatform

SECURITY_PARTIES = Path(__file__).parent / "security_parties.yaml"
KAFKA_USERS = Path(__file__).parents[2] / "k8s" / "base" / "kafka-users.yaml"


@pytest.fixture(scope="session")
def secure_platform(
    infra: LocalInfrastructure, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalPlatform]:
    """One TLS platform for every security and fuzzing test of the session.

    Each service is its own Kafka principal with the ACLs of k8s/base/kafka-users.yaml, so
    these tests also show that the rights the cluster grants are enough, on a real broker.
    """
    local = LocalPlatform(
        tmp_path_factory.mktemp("secure-platform"),
        namespace=f"s{uuid.uuid4().hex[:10]}.",
        shared_infra=infra,
        parties_file=SECURITY_PARTIES,
        senders_seed=None,  # the directory lists its own senders
        kafka_users=KAFKA_USERS,
        preferred_ports={name: 0 for name in DEFAULT_PORTS},
        # The fuzzers try thousands of bad link codes from 127.0.0.1, like the browser test's
        # address: the per-address limit is tested on its own (tests/integration/test_intake.py).
        extra_env={"STOPSMS_LINK_MISSES_PER_MINUTE": "1000000"},
    )
    local.start()
    try:
        yield local
    finally:
        local.stop()
