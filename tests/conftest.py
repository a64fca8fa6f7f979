"""Shared fixtures: one real Kafka broker and one real redis-server for the whole session.

They are started by the project's own launcher. When either cannot start, every test that
needs them fails with the launcher's message: nothing is ever skipped.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from stopsms.core.infra import (
    LocalInfrastructure,
    create_topics,
    free_port,
    start_process,
    stop_process,
)
from stopsms.core.topics import Topics
from stopsms.tooling.health import is_serving

E2E_PARTIES = Path(__file__).parent / "e2e" / "parties.yaml"


@pytest.fixture(scope="session")
def infra(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalInfrastructure]:
    """The session's Kafka broker and redis-server (started here, stopped at the end)."""
    local = LocalInfrastructure(tmp_path_factory.mktemp("infra"), secured=True)
    local.start()
    try:
        yield local
    finally:
        local.stop()


@pytest.fixture
def namespace(infra: LocalInfrastructure) -> str:
    """A unique prefix for this test's topics, groups and Redis keys, with the topics made."""
    prefix = f"t{uuid.uuid4().hex[:10]}."
    create_topics(infra.kafka.bootstrap, Topics(prefix), infra.partitions)
    return prefix


@pytest.fixture
def service_env(infra: LocalInfrastructure, namespace: str, tmp_path: Path) -> dict[str, str]:
    """STOPSMS_* variables for services of this test (keys live in the test's folder)."""
    return {
        **os.environ,
        "STOPSMS_KAFKA_BOOTSTRAP": infra.kafka.bootstrap,
        "STOPSMS_REDIS_URL": infra.redis.url,
        "STOPSMS_TOPIC_NAMESPACE": namespace,
        "STOPSMS_DATA_DIR": str(tmp_path / "data"),
        "STOPSMS_PARTIES_FILE": str(E2E_PARTIES),
        # Integration tests drive one service at a time in the development mode; the
        # end-to-end and security tests run everything with mutual TLS.
        "STOPSMS_INSECURE_IDENTITY": "true",
        "STOPSMS_GENERATE_KEYS": "true",
    }


@contextmanager
def running_service(
    service: str, env: dict[str, str], address: str, log_dir: Path
) -> Iterator[None]:
    """Run one service as its own process (as in production) until the block ends."""
    env = {
        **env,
        f"STOPSMS_{service.upper()}_GRPC_ADDRESS": address,
        f"STOPSMS_{service.upper()}_HEALTH_ADDRESS": f"127.0.0.1:{free_port()}",
    }
    process = start_process(
        [sys.executable, "-m", f"stopsms.{service}"], log_dir / f"{service}.log", env
    )
    try:
        deadline = time.monotonic() + 90
        while not is_serving(address):
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"{service} did not start:\n" + (log_dir / f"{service}.log").read_text()[-3000:]
                )
            time.sleep(0.2)
        yield
    finally:
        stop_process(process)
