"""Shared fixtures: one real Kafka broker and one real redis-server for the whole session.

They are started by the project's own launcher. When either cannot start, every test that
needs them fails with the launcher's message: nothing is ever skipped.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from stopsms.domain.topics import Topics
from stopsms.tools.health import is_serving
from stopsms.tools.launcher import (
    LocalInfrastructure,
    create_topics,
    failed_to_bind,
    free_port,
    start_process,
    stop_process,
)

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


@dataclass(frozen=True)
class RunningService:
    """Where a service started by :func:`running_service` listens."""

    address: str
    metrics: str


@contextmanager
def running_service(
    service: str,
    env: dict[str, str],
    log_dir: Path,
    python: str = sys.executable,
    cwd: Path | None = None,
) -> Iterator[RunningService]:
    """Run one service as its own process (as in production) until the block ends.

    ``python`` is the interpreter to run it with (another virtual environment's), from ``cwd``.

    Its ports are drawn here, outside the ephemeral range; should another listener take one
    before the service binds it, the service starts again on new ports.
    """
    log = log_dir / f"{service}.log"
    prefix = f"STOPSMS_{service.upper()}"
    for attempt in range(1, 4):
        address, metrics = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
        process = start_process(
            [python, "-m", f"stopsms.{service}"],
            log,
            {
                **env,
                f"{prefix}_GRPC_ADDRESS": address,
                f"{prefix}_HEALTH_ADDRESS": f"127.0.0.1:{free_port()}",
                f"{prefix}_METRICS_ADDRESS": metrics,
            },
            cwd,
        )
        try:
            deadline = time.monotonic() + 90
            while not is_serving(address):
                if process.poll() is not None or time.monotonic() > deadline:
                    tail = log.read_text(errors="replace")[-3000:]
                    if process.poll() is not None and failed_to_bind(tail) and attempt < 3:
                        break  # a port was taken before the bind: again, on new ports
                    raise AssertionError(f"{service} did not start:\n{tail}")
                time.sleep(0.2)
            else:
                yield RunningService(address, f"http://{metrics}/metrics")
                return
        finally:
            stop_process(process)


async def until(
    probe: Callable[[], Awaitable[object]], what: str, timeout: float = 60.0, every: float = 0.1
) -> object:
    """Poll ``probe`` until it returns a true value, and return it.

    Past ``timeout`` the test fails saying that ``what`` never happened, instead of a bare
    timeout or a fixed sleep that is too short on a slow machine and wasted on a fast one.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not seen within {timeout:.0f} s")
        await asyncio.sleep(every)


def end_offsets(records: Iterable[object]) -> dict[int, int]:
    """The next offset of each partition after ``records`` (Kafka records read to the end)."""
    ends: dict[int, int] = {}
    for record in records:
        partition, offset = record.partition, record.offset  # type: ignore[attr-defined]
        ends[partition] = max(ends.get(partition, 0), offset + 1)
    return ends


async def view_applied(view: object, records: Iterable[object], timeout: float = 60.0) -> None:
    """Wait until the Redis view has applied the suppression list up to ``records``' end."""
    wanted = end_offsets(records)

    async def caught_up() -> bool:
        applied = await view.applied_offsets()  # type: ignore[attr-defined]
        return all(applied.get(p, 0) >= end for p, end in wanted.items())

    await until(caught_up, "the view applying every change of the suppression list", timeout)
