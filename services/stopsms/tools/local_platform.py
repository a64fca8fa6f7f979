"""The whole platform on one machine: Kafka, Redis and the four services as processes.

``stopsms up`` and the end-to-end tests both run it, so what a newcomer clicks is what the
tests prove. Each service is a separate OS process (``python -m stopsms.<service>``) configured
only through ``STOPSMS_*`` variables, exactly as in a container.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from stopsms.adapters.bus import KafkaBus
from stopsms.adapters.clients import Metadata, party_channel
from stopsms.adapters.deadlines import deadline
from stopsms.adapters.kafka import KafkaPublisher
from stopsms.adapters.kafka_access import KafkaAccess
from stopsms.adapters.settings import Settings
from stopsms.domain.parties import PartiesDirectory
from stopsms.domain.topics import Topics
from stopsms.tools.certificates import create_tls_folder
from stopsms.tools.health import is_serving
from stopsms.tools.launcher import (
    InfrastructureError,
    LocalInfrastructure,
    create_topics,
    failed_to_bind,
    free_port,
    kafka_user_acls,
    kill_process,
    port_is_free,
    start_process,
    stop_process,
    stop_processes,
)
from stopsms.tools.senders import LOCAL_SEED, Migration, import_senders, load_seed

SERVICES = ("registry", "notifier", "intake", "console")
DEFAULT_PORTS = {
    "intake_grpc": 50051,
    "registry_grpc": 50052,
    "notifier_grpc": 50053,
    "console_grpc": 50054,
    "intake_http": 8080,
    "console_http": 8443,
    "intake_health": 50061,
    "registry_health": 50062,
    "notifier_health": 50063,
    "console_health": 50064,
    "intake_metrics": 9101,
    "registry_metrics": 9102,
    "notifier_metrics": 9103,
    "console_metrics": 9104,
}


class PortTaken(InfrastructureError):
    """A service could not bind a port it was given: another listener took it first."""


def _port(preferred: int | None) -> int:
    return preferred if preferred and port_is_free(preferred) else free_port()


@dataclass
class LocalPlatform:
    """Kafka, Redis and the services; ``start()`` returns once every service is SERVING."""

    data_dir: Path
    namespace: str = ""
    preferred_ports: dict[str, int] = field(default_factory=dict)
    kafka_port: int | None = None
    redis_port: int | None = None
    parties_file: Path | None = None
    #: The development mode (party from a header, no TLS); mutual TLS otherwise.
    insecure: bool = False
    extra_env: dict[str, str] = field(default_factory=dict)
    #: The services to run (a benchmark of one service runs only that one).
    services: tuple[str, ...] = SERVICES
    #: A Kafka and Redis already running (the test session's); not stopped with the platform.
    shared_infra: LocalInfrastructure | None = None
    infra: LocalInfrastructure | None = None
    #: Run each service as the ``KafkaUser`` named ``stopsms-<service>`` in this manifest
    #: (k8s/base/kafka-users.yaml): its own certificate on the broker's mutual-TLS listener,
    #: with exactly the ACLs the cluster gives it. Needs a secured broker.
    kafka_users: Path | None = None
    #: Each service's Kafka credentials (STOPSMS_KAFKA_*), when it runs as a KafkaUser.
    kafka_env: dict[str, dict[str, str]] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    #: The gRPC address of each replica started by :meth:`start_replica`, by name.
    replica_grpc: dict[str, str] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    #: The plaintext health address of each running process, by name.
    health: dict[str, str] = field(default_factory=dict)
    #: Sender records the register is seeded with before the services start (once each; the
    #: local platform's by default). None for a directory that still lists its own senders.
    senders_seed: Path | None = LOCAL_SEED

    @property
    def endpoints(self) -> dict[str, str]:
        """Every endpoint, by name."""
        assert self.infra is not None
        return {
            "kafka": self.infra.kafka.bootstrap,
            "redis": self.infra.redis.url,
            "intake_grpc": f"127.0.0.1:{self.ports['intake_grpc']}",
            "intake_http": f"http://127.0.0.1:{self.ports['intake_http']}/",
            "registry_grpc": f"127.0.0.1:{self.ports['registry_grpc']}",
            "notifier_grpc": f"127.0.0.1:{self.ports['notifier_grpc']}",
            "console_grpc": f"127.0.0.1:{self.ports['console_grpc']}",
            "console_http": (
                f"{'http' if self.insecure else 'https'}://127.0.0.1:{self.ports['console_http']}/"
            ),
            **{
                f"{service}_metrics": f"http://127.0.0.1:{self.ports[f'{service}_metrics']}/metrics"
                for service in SERVICES
            },
        }

    def environment(self) -> dict[str, str]:
        """The STOPSMS_* variables every service of this platform runs with."""
        assert self.infra is not None
        env = {
            "STOPSMS_KAFKA_BOOTSTRAP": self.infra.kafka.bootstrap,
            "STOPSMS_REDIS_URL": self.infra.redis.url,
            "STOPSMS_TOPIC_NAMESPACE": self.namespace,
            "STOPSMS_DATA_DIR": str(self.data_dir),
            "STOPSMS_INTAKE_GRPC_ADDRESS": self.endpoints["intake_grpc"],
            "STOPSMS_INTAKE_HTTP_ADDRESS": f"127.0.0.1:{self.ports['intake_http']}",
            "STOPSMS_PUBLIC_BASE_URL": self.endpoints["intake_http"],
            "STOPSMS_REGISTRY_GRPC_ADDRESS": self.endpoints["registry_grpc"],
            "STOPSMS_NOTIFIER_GRPC_ADDRESS": self.endpoints["notifier_grpc"],
            "STOPSMS_CONSOLE_GRPC_ADDRESS": self.endpoints["console_grpc"],
            "STOPSMS_CONSOLE_HTTP_ADDRESS": f"127.0.0.1:{self.ports['console_http']}",
            "STOPSMS_INTAKE_HEALTH_ADDRESS": f"127.0.0.1:{self.ports['intake_health']}",
            "STOPSMS_REGISTRY_HEALTH_ADDRESS": f"127.0.0.1:{self.ports['registry_health']}",
            "STOPSMS_NOTIFIER_HEALTH_ADDRESS": f"127.0.0.1:{self.ports['notifier_health']}",
            "STOPSMS_CONSOLE_HEALTH_ADDRESS": f"127.0.0.1:{self.ports['console_health']}",
            "STOPSMS_INTAKE_METRICS_ADDRESS": f"127.0.0.1:{self.ports['intake_metrics']}",
            "STOPSMS_REGISTRY_METRICS_ADDRESS": f"127.0.0.1:{self.ports['registry_metrics']}",
            "STOPSMS_NOTIFIER_METRICS_ADDRESS": f"127.0.0.1:{self.ports['notifier_metrics']}",
            "STOPSMS_CONSOLE_METRICS_ADDRESS": f"127.0.0.1:{self.ports['console_metrics']}",
            "STOPSMS_INSECURE_IDENTITY": "true" if self.insecure else "false",
            "STOPSMS_GENERATE_KEYS": "true",
        }
        if self.parties_file is not None:
            env["STOPSMS_PARTIES_FILE"] = str(self.parties_file)
        env.update(self.extra_env)
        return env

    def environment_for_keys(self) -> dict[str, str]:
        """Enough of the environment to find (or make) the platform's keys and certificates."""
        env = {"STOPSMS_DATA_DIR": str(self.data_dir), "STOPSMS_GENERATE_KEYS": "true"}
        if self.parties_file is not None:
            env["STOPSMS_PARTIES_FILE"] = str(self.parties_file)
        return {**env, **self.extra_env}

    @property
    def tls_folder(self) -> Path | None:
        """The certificates clients use, or None in the development mode."""
        return None if self.insecure else self.data_dir / "tls"

    def channel(self, service: str, party_id: str) -> tuple[grpc.aio.Channel, Metadata]:
        """An asyncio channel to ``service`` (intake, registry, notifier, console) as a party."""
        return party_channel(self.endpoints[f"{service}_grpc"], party_id, self.tls_folder)

    def prepare_secrets(self) -> None:
        """Make the development keys and, with TLS, the CA and every party's certificate."""
        settings = Settings.from_env(self.environment_for_keys())
        settings.pseudonymiser()
        if not self.insecure:
            parties = PartiesDirectory.load(settings.parties_file)
            create_tls_folder(self.data_dir / "tls", [p.id for p in parties])

    def start(self, timeout: float = 120.0) -> LocalPlatform:
        """Start the infrastructure, then each service, and wait until all are SERVING."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            if self.shared_infra is not None:
                self.infra = self.shared_infra
                create_topics(
                    self.infra.kafka.bootstrap, Topics(self.namespace), self.infra.partitions
                )
            else:
                self.infra = LocalInfrastructure(
                    self.data_dir / "infra",
                    kafka_port=self.kafka_port,
                    redis_port=self.redis_port,
                    topics=Topics(self.namespace),
                )
                self.infra.start()
            self.prepare_secrets()  # before the services, which only load them
            if self.kafka_users is not None:
                self.prepare_kafka_users(self.kafka_users)
            if self.senders_seed is not None:
                self.seed_senders(self.senders_seed)
            with deadline("the services' start", timeout + 60):
                self._start_services(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def seed_senders(self, seed: Path) -> Migration:
        """Publish the seed's sender records the register does not hold yet."""
        assert self.infra is not None
        kafka = KafkaAccess(self.infra.kafka.bootstrap)
        topics = Topics(self.namespace)

        async def seed_them() -> Migration:
            publisher = KafkaPublisher(kafka, client_id="stopsms-senders-seed")
            await publisher.start()
            try:
                return await import_senders(load_seed(seed), KafkaBus(kafka), publisher, topics)
            finally:
                await publisher.stop()

        done: list[Migration] = []
        failed: list[BaseException] = []

        def run() -> None:
            try:
                done.append(asyncio.run(seed_them()))
            except BaseException as exc:  # noqa: BLE001 - reported in the caller's thread
                failed.append(exc)

        # start() may be called from a thread that already runs an event loop: seed in another
        worker = threading.Thread(target=run, name="stopsms-senders-seed")
        worker.start()
        worker.join()
        if failed:
            raise InfrastructureError(
                f"could not seed the sender register from {seed}: {failed[0]}"
            ) from failed[0]
        return done[0]

    def _start_services(self, timeout: float, attempts: int = 3) -> None:
        """Draw the ports, start every service, wait until all serve.

        A port drawn here can still be taken by another listener before a service binds it;
        the services then start again, all on new ports (each knows the others' addresses).
        """
        for attempt in range(1, attempts + 1):
            for name, default in DEFAULT_PORTS.items():
                self.ports[name] = _port(self.preferred_ports.get(name, default))
            for service in self.services:
                self.start_service(service)
            try:
                self.wait_until_serving(timeout)
                return
            except PortTaken:
                if attempt == attempts:
                    raise
                for name in list(self.processes):
                    self.stop_service(name)

    def prepare_kafka_users(self, manifest: Path) -> None:
        """Grant each service its KafkaUser's ACLs and issue it a client certificate."""
        assert self.infra is not None
        acls = kafka_user_acls(manifest)
        for service in self.services:
            user = f"stopsms-{service}"
            self.infra.kafka.grant(user, acls[user], self.namespace)
            access = self.infra.kafka.client_access(user)
            self.kafka_env[service] = {
                "STOPSMS_KAFKA_BOOTSTRAP": access.bootstrap,
                "STOPSMS_KAFKA_SECURITY_PROTOCOL": access.security_protocol,
                "STOPSMS_KAFKA_CA_FILE": str(access.ca_file),
                "STOPSMS_KAFKA_CERT_FILE": str(access.cert_file),
                "STOPSMS_KAFKA_KEY_FILE": str(access.key_file),
            }

    def start_service(
        self, service: str, name: str | None = None, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start (or restart) one service process; its log goes to ``<data dir>/logs``.

        ``name`` (default: the service) tells replicas apart; ``env`` adds to its settings.
        """
        name = name or service
        env = {
            **os.environ,
            **self.environment(),
            **self.kafka_env.get(service, {}),
            **(env or {}),
        }
        process = start_process(
            [sys.executable, "-m", f"stopsms.{service}"],
            self.data_dir / "logs" / f"{name}.log",
            env,
        )
        self.processes[name] = process
        self.health[name] = env[f"STOPSMS_{service.upper()}_HEALTH_ADDRESS"]
        return process

    def start_replica(self, service: str, name: str) -> subprocess.Popen[bytes]:
        """Another process of ``service``: its own ports; the same keys, topics and groups."""
        prefix = f"STOPSMS_{service.upper()}"
        ports = {
            f"{prefix}_GRPC_ADDRESS": f"127.0.0.1:{free_port()}",
            f"{prefix}_HEALTH_ADDRESS": f"127.0.0.1:{free_port()}",
            f"{prefix}_METRICS_ADDRESS": f"127.0.0.1:{free_port()}",
        }
        if service in ("intake", "console"):  # the services that also serve web pages
            ports[f"{prefix}_HTTP_ADDRESS"] = f"127.0.0.1:{free_port()}"
        self.replica_grpc[name] = ports[f"{prefix}_GRPC_ADDRESS"]
        return self.start_service(service, name, ports)

    def serve_replica(self, service: str, name: str, timeout: float) -> None:
        """Start a replica and wait until it serves; again on new ports if one was taken."""
        for attempt in range(1, 4):
            self.start_replica(service, name)
            try:
                self.wait_until_serving(timeout, [name])
                return
            except PortTaken:
                if attempt == 3:
                    raise

    def kill(self, name: str, sig: signal.Signals = signal.SIGKILL) -> None:
        """Send ``sig`` to a service's process group; after SIGKILL, reap it (a crash)."""
        process = self.processes[name]
        if sig == signal.SIGKILL:
            kill_process(process)
        else:
            os.killpg(process.pid, sig)

    def wait_until_serving(self, timeout: float, names: Sequence[str] | None = None) -> None:
        """Poll each service's gRPC health until it says SERVING."""
        deadline = time.monotonic() + timeout
        for name in names or self.services:
            address = self.health[name]
            while True:
                process = self.processes[name]
                if process.poll() is not None:
                    tail = self.log_tail(name)
                    error = PortTaken if failed_to_bind(tail) else InfrastructureError
                    raise error(
                        f"{name} exited at start; see {self.data_dir / 'logs' / name}.log:\n" + tail
                    )
                if is_serving(address):
                    break
                if time.monotonic() > deadline:
                    raise InfrastructureError(
                        f"{name} did not become SERVING within {timeout}s:\n" + self.log_tail(name)
                    )
                time.sleep(0.3)

    def log_tail(self, service: str, size: int = 4000) -> str:
        """The end of a service's log, for error messages."""
        path = self.data_dir / "logs" / f"{service}.log"
        return path.read_text(errors="replace")[-size:] if path.exists() else ""

    def stop_service(self, service: str) -> None:
        """Stop one service with SIGTERM (graceful), SIGKILL after a grace period."""
        stop_process(self.processes.pop(service, None), timeout=20)

    def stop(self) -> None:
        """Stop the services (all at once, each gracefully), then Redis and Kafka."""
        processes = list(self.processes.values())
        self.processes.clear()
        stop_processes(processes, timeout=20)
        if self.infra is not None and self.infra is not self.shared_infra:
            self.infra.stop()

    def write_endpoints(self, path: Path) -> None:
        """Record the endpoints so that the other ``stopsms`` commands find the platform."""
        tls = self.tls_folder
        document = {**self.endpoints, "tls_folder": str(tls) if tls else ""}
        path.write_text(json.dumps(document, indent=2) + "\n")

    def __enter__(self) -> LocalPlatform:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
