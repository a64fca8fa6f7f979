"""The local infrastructure: a real Kafka broker and a real redis-server, started by us.

One launcher serves ``stopsms up`` and the test fixtures alike. Kafka comes from Maven Central
jars (fetched once into a cache with the package's ``tools/kafka/pom.xml``) and runs as a
single-node KRaft broker on the machine's Java; Redis is Debian's ``redis-server``. Children
are started in their own session and are told to die with us (``PR_SET_PDEATHSIG``, set by
``setpriv`` after the fork), and :meth:`LocalInfrastructure.stop` ends them cleanly: no orphan
process whatever way we exit. Servers listen on ports drawn outside the kernel's ephemeral
range (:func:`free_port`), so no outgoing connection can take one before it is bound.

Run ``python -m stopsms.tools.launcher fetch`` to fetch the jars ahead of time.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stopsms.adapters.kafka_access import KafkaAccess
from stopsms.domain.topics import Topics
from stopsms.domain.viewcodec import LISTPACK_ENTRIES

log = logging.getLogger(__name__)

#: The broker's build (pom.xml), configuration template and logging configuration: package data,
#: so an installed ``stopsms`` starts Kafka without a checkout.
KAFKA_DEPLOY_DIR = Path(
    os.environ.get("STOPSMS_KAFKA_DEPLOY_DIR", Path(__file__).resolve().parent / "kafka")
)
CACHE_DIR = Path(os.environ.get("STOPSMS_CACHE_DIR", Path.home() / ".cache" / "stopsms"))


class InfrastructureError(RuntimeError):
    """Kafka or Redis could not be fetched or started; the message says what to do."""


#: What a server's log says when the port it was given is taken (gRPC, aiohttp, the metrics
#: server, Kafka, Redis): the launchers then retry on other ports.
BIND_FAILURE_MARKERS = ("Address already in use", "Failed to bind", "cannot listen on")

#: Ports this process has handed out: two servers it starts never get the same one.
_HANDED_OUT: set[int] = set()


def ephemeral_port_range() -> tuple[int, int]:
    """The kernel's range for outgoing connections' local ports (``ip_local_port_range``)."""
    try:
        text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text()
        low, high = (int(part) for part in text.split())
    except (OSError, ValueError):
        low, high = 32768, 60999  # Linux's default
    return low, high


def listening_port_ranges() -> list[range]:
    """Where :func:`free_port` draws from: below and above the ephemeral range.

    Ports below 10240 are left to the machine's own services (and ``stopsms up``'s defaults).
    """
    low, high = ephemeral_port_range()
    ranges = [range(10240, low), range(high + 1, 65536)]
    usable = [r for r in ranges if len(r) >= 1000]
    return usable or [range(1024, low)]


def free_port() -> int:
    """A port for a server to listen on that no outgoing connection can take meanwhile.

    Probing port 0 returns a port of the ephemeral range, which any client connection (Kafka
    clients open many) may take between the probe and the server's bind. A port drawn outside
    that range can only be taken by another listener; the launchers retry on another port
    when that happens (:func:`failed_to_bind`). No port is handed out twice by one process.
    """
    ranges = listening_port_ranges()
    weights = [len(r) for r in ranges]
    for _ in range(1000):
        port = random.choice(random.choices(ranges, weights)[0])
        if port not in _HANDED_OUT and port_is_free(port):
            _HANDED_OUT.add(port)
            return port
    raise InfrastructureError("no free port outside the ephemeral range after 1000 draws")


def failed_to_bind(log_text: str) -> bool:
    """True when a server's log says it could not bind a port it was given."""
    return any(marker in log_text for marker in BIND_FAILURE_MARKERS)


def port_is_free(port: int) -> bool:
    """True when nothing listens on ``port`` on the loopback interface.

    Binds the way servers do (SO_REUSEADDR), so a port whose last connections linger in
    TIME_WAIT after a restart still counts as free.
    """
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


#: The process groups started by :func:`start_process` and not yet reaped.
_STARTED: dict[int, subprocess.Popen[bytes]] = {}


def _end_started_groups() -> None:
    """At exit, end every group still running: no child outlives a launcher that forgot one."""
    for process in list(_STARTED.values()):
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)


atexit.register(_end_started_groups)


#: Run after the death signal is set: a parent that died before that (it was killed the moment
#: after the fork) sent no signal, and the child, adopted by another process, stops here.
_STILL_OURS = '[ "$PPID" = "$0" ] || exit 1; exec "$@"'


def _with_parent_death_signal(args: list[str]) -> list[str]:
    """``args`` run through ``setpriv --pdeathsig TERM`` when the machine has it (util-linux).

    The death signal is set after the fork, in the child's own program, then kept across the
    ``exec`` of ``args``; so the child is told to stop when its parent dies, however it dies,
    without running Python between fork and exec (``preexec_fn``), which can deadlock a parent
    that has threads. A parent that dies before the signal is set sends none: a shell between
    the two checks that its parent is still this process, else exits (:data:`_STILL_OURS`).
    """
    setpriv, sh = shutil.which("setpriv"), shutil.which("sh")
    if not setpriv:
        return args
    if not sh:
        return [setpriv, "--pdeathsig", "TERM", "--", *args]
    return [setpriv, "--pdeathsig", "TERM", "--", sh, "-c", _STILL_OURS, str(os.getpid()), *args]


def start_process(
    args: list[str], log_file: Path, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start a child in a session of its own that dies with this process; output to ``log_file``.

    Safe from a parent with threads: nothing runs between fork and exec (no ``preexec_fn``).
    The child dies with us through its parent-death signal (:func:`_with_parent_death_signal`),
    and at a normal exit every group still running is ended.
    """
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as out:
        process = subprocess.Popen(  # noqa: S603 - our own fixed command lines
            _with_parent_death_signal(args),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
            cwd=cwd,
        )
    for pid in [pid for pid, started in _STARTED.items() if started.poll() is not None]:
        del _STARTED[pid]
    _STARTED[process.pid] = process
    return process


def stop_process(process: subprocess.Popen[bytes] | None, timeout: float = 20.0) -> None:
    """SIGTERM the child's process group, then SIGKILL it if it outlives ``timeout``."""
    stop_processes([process], timeout)


def stop_processes(
    processes: Sequence[subprocess.Popen[bytes] | None], timeout: float = 20.0
) -> None:
    """SIGTERM every child's process group at once, then SIGKILL those alive ``timeout`` later.

    A service takes seconds to stop gracefully (its readers close, its groups are left): one
    after the other, a platform of four took about 25 s to stop; together, as Kubernetes stops
    the pods of a deployment, it takes as long as the slowest.
    """
    running = [p for p in processes if p is not None and _signal_group(p, signal.SIGTERM)]
    deadline = time.monotonic() + timeout
    for process in running:
        try:
            process.wait(max(deadline - time.monotonic(), 0.0))
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop within %.0f s of SIGTERM: killed", process.args, timeout)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)


def kill_process(process: subprocess.Popen[bytes] | None) -> None:
    """SIGKILL the child's process group and reap it: a crash, with no chance to clean up."""
    if process is not None and _signal_group(process, signal.SIGKILL):
        process.wait(timeout=30)


def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> bool:
    """Send ``sig`` to a running child's process group; False when it has already ended."""
    if process.poll() is not None:
        return False
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        return False
    return True


def fetch_kafka(cache_dir: Path = CACHE_DIR) -> Path:
    """Return the folder of broker jars, fetching them with Maven the first time."""
    pom = KAFKA_DEPLOY_DIR / "pom.xml"
    if not pom.exists():
        raise InfrastructureError(f"{pom} is missing: run from a clone of the repository")
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()[:12]
    libs = cache_dir / f"kafka-{digest}" / "libs"
    if (libs.parent / ".complete").exists():
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise InfrastructureError(
            "Maven (mvn) is needed to fetch the Kafka jars: apt-get install -y maven"
        )
    print(f"fetching the Kafka broker jars into {libs} (once)...", file=sys.stderr, flush=True)
    libs.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(  # noqa: S603
        [
            mvn,
            "-q",
            "-B",
            "-f",
            str(pom),
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={libs}",
        ],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise InfrastructureError(
            f"fetching the Kafka jars failed:\n{result.stdout}{result.stderr}"
        )
    (libs.parent / ".complete").write_text("ok\n")
    return libs


def new_cluster_id() -> str:
    """A random KRaft cluster id, as Kafka makes them: never starting with "-".

    One id in 64 would otherwise begin with "-", which the storage tool reads as an option.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _another_free_port(taken: set[int]) -> int:
    """A free port that is none of ``taken``."""
    while True:
        candidate = free_port()
        if candidate not in taken:
            return candidate


def _constant(strimzi_name: str) -> str:
    """Strimzi's spelling of an ACL operation or resource type as kafka-python's constant.

    ``DescribeConfigs`` -> ``DESCRIBE_CONFIGS``, ``transactionalId`` -> ``TRANSACTIONAL_ID``.
    """
    return re.sub(r"(?<!^)(?=[A-Z])", "_", strimzi_name).upper()


@dataclass
class LocalKafka:
    """A single-node KRaft broker whose data lives in ``workdir``."""

    workdir: Path
    port: int | None = None
    heap: str = "768m"
    #: Add a mutual-TLS listener with ACLs, as the national cluster has (the plaintext
    #: listener stays, unrestricted, for the local platform and the tests' own setup).
    secured: bool = False
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)
    secured_port: int | None = field(default=None, init=False)

    @property
    def bootstrap(self) -> str:
        """host:port of the broker."""
        return f"127.0.0.1:{self.port}"

    @property
    def tls_folder(self) -> Path:
        """The secured listener's CA (``ca.pem``) and the clients' certificates."""
        return self.workdir / "tls"

    def _ports(self) -> tuple[int, int, int]:
        """Reuse the ports a data folder was formatted with (KRaft stores the controller's)."""
        state = self.workdir / "ports.json"
        saved = json.loads(state.read_text()) if state.exists() else {}
        if saved.get("secured_port"):
            return int(saved["port"]), int(saved["controller_port"]), int(saved["secured_port"])
        if saved:  # a folder formatted before the secured listener existed: keep its ports
            port, controller = int(saved["port"]), int(saved["controller_port"])
            secured = _another_free_port({port, controller})
        else:
            port = self.port if self.port and port_is_free(self.port) else free_port()
            controller = _another_free_port({port})
            secured = _another_free_port({port, controller})
        self.workdir.mkdir(parents=True, exist_ok=True)
        state.write_text(
            json.dumps({"port": port, "controller_port": controller, "secured_port": secured})
        )
        return port, controller, secured

    def _security_config(self) -> tuple[str, str]:
        """(the secured listener, its settings): mutual TLS, ACLs, principals by common name.

        Certificates are PEM files, which Kafka reads directly; the key is PKCS#8, unencrypted,
        readable by the broker's user only.
        """
        from stopsms.tools.certificates import CertificateAuthority, move_ca_key_out, write_pem

        if not self.secured:
            return "", ""
        folder = self.tls_folder
        move_ca_key_out(folder)
        if (folder / "ca.pem").exists():
            ca = CertificateAuthority.load(folder)
        else:
            ca = CertificateAuthority.create("StopSMS local Kafka CA")
            ca.save(folder)
        keystore = folder / "broker-keystore.pem"
        if not keystore.exists():
            cert, key = ca.issue("kafka", ["127.0.0.1", "localhost"], server=True)
            write_pem(keystore, key + cert, private=True)
        settings = f"""
# The secured listener: clients present a certificate; each principal is the certificate's
# common name, limited by ACLs. ANONYMOUS (the plaintext and controller listeners) is a
# super user so that local setup needs no credentials.
ssl.keystore.type=PEM
ssl.keystore.location={keystore}
ssl.truststore.type=PEM
ssl.truststore.location={folder / "ca.pem"}
ssl.client.auth=required
ssl.principal.mapping.rules=RULE:^CN=([^,]+).*$/$1/,DEFAULT
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users=User:ANONYMOUS
"""
        return f",SECURED://127.0.0.1:{self.secured_port}", settings

    def grant(self, principal: str, acls: list[dict[str, Any]], namespace: str = "") -> None:
        """Allow ``principal`` what Strimzi ACL rules (a ``KafkaUser``'s ``acls``) allow.

        The rules are spelled as in k8s/ so that the local platform and the tests run each
        service and operator with exactly the rights the cluster gives it; topic and group
        names get the ``namespace`` prefix (a test's isolation), as the services add it.
        """
        from kafka import KafkaAdminClient
        from kafka.admin import (  # type: ignore[import-untyped]
            ACL,
            ACLFilter,
            ACLOperation,
            ACLPermissionType,
            ACLResourcePatternType,
            ResourcePattern,
            ResourcePatternFilter,
            ResourceType,
        )

        bindings = []
        for rule in acls:
            resource = rule["resource"]
            kind = ResourceType[_constant(resource["type"])]
            name = resource.get("name", "kafka-cluster")
            if kind in (ResourceType.TOPIC, ResourceType.GROUP, ResourceType.TRANSACTIONAL_ID):
                name = namespace + name
            pattern = ResourcePattern(
                kind,
                name,
                ACLResourcePatternType.PREFIXED
                if resource.get("patternType") == "prefix"
                else ACLResourcePatternType.LITERAL,
            )
            for operation in rule["operations"]:
                bindings.append(
                    ACL(
                        f"User:{principal}",
                        rule.get("host", "*"),
                        ACLOperation[_constant(operation)],
                        ACLPermissionType[rule.get("type", "allow").upper()],
                        pattern,
                    )
                )
        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, client_id="stopsms-acls")
        try:
            result = admin.create_acls(bindings)
            if result["failed"]:
                raise InfrastructureError(f"ACLs refused by the broker: {result['failed']}")
            # The broker applies ACLs from its metadata log a moment later; a client that
            # connects before that is refused, so wait until the broker lists them all.
            everything = ACLFilter(
                f"User:{principal}",
                None,
                ACLOperation.ANY,
                ACLPermissionType.ANY,
                ResourcePatternFilter(ResourceType.ANY, None, ACLResourcePatternType.ANY),
            )
            deadline = time.monotonic() + 10
            while len(admin.describe_acls(everything)[0]) < len({str(b) for b in bindings}):
                if time.monotonic() > deadline:
                    raise InfrastructureError(f"the ACLs of {principal} did not take effect")
                time.sleep(0.05)
        finally:
            admin.close()

    def client_access(self, name: str) -> KafkaAccess:
        """A client certificate for principal ``name`` and the access that presents it."""
        from stopsms.tools.certificates import CertificateAuthority, write_pem

        if not self.secured or self.secured_port is None:
            raise InfrastructureError("the broker has no secured listener (secured=False)")
        cert, key = CertificateAuthority.load(self.tls_folder).issue(name, [name], server=False)
        cert_file = self.tls_folder / "clients" / f"{name}.pem"
        key_file = cert_file.with_suffix(".key")
        write_pem(cert_file, cert)
        write_pem(key_file, key, private=True)
        return KafkaAccess(
            bootstrap=f"127.0.0.1:{self.secured_port}",
            security_protocol="SSL",
            ca_file=self.tls_folder / "ca.pem",
            cert_file=cert_file,
            key_file=key_file,
        )

    def start(self, timeout: float = 90.0) -> str:
        """Format storage when new, start the broker, wait until it answers.

        A new broker whose port another listener took at the bind starts again on other ports
        (its storage is formatted anew: KRaft records the controller's port); a broker on an
        existing folder keeps its ports, which its clients know.
        """
        fresh = not (self.workdir / "ports.json").exists()
        for attempt in range(1, 4):
            try:
                return self._start_once(timeout)
            except InfrastructureError as exc:
                if not (fresh and attempt < 3 and failed_to_bind(str(exc))):
                    raise
                log.warning("a port of the new broker was taken at its bind; other ports now")
                shutil.rmtree(self.workdir / "data", ignore_errors=True)
                (self.workdir / "ports.json").unlink(missing_ok=True)
                self.port = None
        raise AssertionError("unreachable")

    def _start_once(self, timeout: float) -> str:
        java = shutil.which("java")
        if java is None:
            raise InfrastructureError(
                "Java 17+ is needed to run Kafka: apt-get install -y openjdk-17-jre-headless"
            )
        libs = fetch_kafka()
        self.port, controller_port, self.secured_port = self._ports()
        ports = (self.port, controller_port, self.secured_port)
        if not all(port_is_free(p) for p in ports):
            raise InfrastructureError(
                f"one of the ports {ports} is taken: is another broker running on {self.workdir}?"
            )
        secured_listener, security = self._security_config()
        log_dir = self.workdir / "data"
        config = self.workdir / "server.properties"
        template = (KAFKA_DEPLOY_DIR / "server.properties.template").read_text()
        config.write_text(
            template.format(
                port=self.port,
                controller_port=controller_port,
                log_dir=log_dir,
                secured_listener=secured_listener,
                security=security,
            )
        )
        classpath = f"{libs}/*"
        jvm = [
            java,
            f"-Xmx{self.heap}",
            "-Xms128m",
            "-XX:+UseG1GC",
            f"-Dlog4j2.configurationFile={KAFKA_DEPLOY_DIR / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.workdir}",
            "-cp",
            classpath,
        ]
        if not (log_dir / "meta.properties").exists():
            result = subprocess.run(  # noqa: S603
                [
                    *jvm,
                    "kafka.tools.StorageTool",
                    "format",
                    "--standalone",
                    "-t",
                    new_cluster_id(),
                    "-c",
                    str(config),
                ],
                capture_output=True,
                text=True,
            )
            if result.returncode != 0:
                shutil.rmtree(log_dir, ignore_errors=True)
                raise InfrastructureError(
                    f"formatting Kafka storage failed:\n{result.stdout}{result.stderr}"
                )
        self.process = start_process([*jvm, "kafka.Kafka", str(config)], self.workdir / "kafka.out")
        self._wait_until_ready(timeout)
        return self.bootstrap

    def _wait_until_ready(self, timeout: float) -> None:
        from kafka import KafkaAdminClient  # type: ignore[import-untyped]

        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                # The broker logs to broker.log (log4j2.properties): a port taken at its bind
                # is said there, and only the JVM's own failures reach kafka.out.
                tails = [
                    (self.workdir / name).read_text(errors="replace")[-3000:]
                    for name in ("kafka.out", "broker.log")
                    if (self.workdir / name).exists()
                ]
                raise InfrastructureError(
                    f"the Kafka broker exited at start (status {self.process.returncode}):\n"
                    + "\n".join(tails)
                )
            try:
                # TCP first: a client that meets a refused connection leaks its socket.
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            except OSError as exc:
                last_error = exc
                time.sleep(0.3)
                continue
            try:
                admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=3000)
                try:
                    admin.describe_cluster()
                    return
                finally:
                    admin.close()
            except Exception as exc:  # noqa: BLE001 - any failure means "not yet"
                last_error = exc
                time.sleep(0.5)
        raise InfrastructureError(f"Kafka did not answer within {timeout}s: {last_error!r}")

    def stop(self) -> None:
        """Stop the broker cleanly (SIGTERM, then SIGKILL after a grace period)."""
        stop_process(self.process, timeout=30)
        self.process = None

    def kill(self) -> None:
        """SIGKILL, as a crash (the fault tests); ``start`` brings it back on its data."""
        kill_process(self.process)
        self.process = None


@dataclass
class LocalRedis:
    """A redis-server with no persistence, on ``port``: the view is rebuildable from Kafka."""

    workdir: Path
    port: int | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def url(self) -> str:
        """The redis:// URL of the server."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 20.0) -> str:
        """Start redis-server and wait until it answers PING."""
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not Path(binary).exists():
            raise InfrastructureError("redis-server is needed: apt-get install -y redis-server")
        drawn = self.port is None or not port_is_free(self.port)
        for attempt in range(1, 4):
            if drawn:
                self.port = free_port()
            try:
                return self._start_once(binary, timeout)
            except InfrastructureError as exc:
                # Another listener took the drawn port before redis-server bound it.
                if not (drawn and attempt < 3 and failed_to_bind(str(exc))):
                    raise
        raise AssertionError("unreachable")

    def _start_once(self, binary: str, timeout: float) -> str:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.process = start_process(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                # the registry's view packs entries into listpack buckets (core.view)
                "--hash-max-listpack-entries",
                str(LISTPACK_ENTRIES),
                "--dir",
                str(self.workdir),
                "--daemonize",
                "no",
            ],
            self.workdir / "redis.out",
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = (self.workdir / "redis.out").read_text(errors="replace")[-2000:]
                raise InfrastructureError(f"redis-server exited at start:\n{tail}")
            try:
                assert self.port is not None
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return self.url
            except OSError:
                time.sleep(0.1)
        raise InfrastructureError(f"redis-server did not answer within {timeout}s")

    def stop(self) -> None:
        """Stop redis-server."""
        stop_process(self.process, timeout=10)
        self.process = None

    def kill(self) -> None:
        """SIGKILL: without persistence, ``start`` brings it back empty, on the same port."""
        kill_process(self.process)
        self.process = None


def create_topics(
    bootstrap: KafkaAccess | str,
    topics: Topics,
    partitions: int,
    replication: int = 1,
    wait_seconds: float = 0,
) -> list[str]:
    """Create every v1 topic and faust changelog of ``topics`` that does not exist yet.

    With ``replication`` 3 or more, ``min.insync.replicas`` is 2 and unclean leader election
    off, as the production profile's self-check demands. ``wait_seconds``: how long to wait
    for the broker to answer (a one-shot job may start before it).
    """
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic  # type: ignore[import-untyped]
    from kafka.errors import KafkaError, TopicAlreadyExistsError  # type: ignore[import-untyped]

    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            admin = KafkaAdminClient(
                **KafkaAccess.of(bootstrap).client_options(), client_id="stopsms-topics"
            )
            break
        except KafkaError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)
    durable = (
        {"min.insync.replicas": "2", "unclean.leader.election.enable": "false"}
        if replication >= 3
        else {}
    )
    try:
        existing = set(admin.list_topics())
        missing = [
            NewTopic(name, partitions, replication, topic_configs={**configs, **durable})
            for name, configs in [*topics.all_specs(), *topics.internal_specs()]
            if name not in existing
        ]
        if missing:
            try:
                admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass
            _wait_for_leaders(admin, [t.name for t in missing], seconds=30.0)
        return [t.name for t in missing]
    finally:
        admin.close()


def _wait_for_leaders(admin: Any, names: list[str], seconds: float) -> None:  # noqa: ANN401
    """Return once every partition of ``names`` has a leader (or after ``seconds``).

    A topic is answered as created before its partitions have leaders; the first reader of a
    fresh topic would otherwise log NotLeaderForPartition errors while the broker settles.
    """
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        described = admin.describe_topics(names)
        if len(described) == len(names) and all(
            topic.get("error_code", 0) == 0
            and topic["partitions"]
            and all(_leader_of(part) >= 0 for part in topic["partitions"])
            for topic in described
        ):
            return
        time.sleep(0.2)
    log.warning("partitions of %s still without a leader after %.0f s", names, seconds)


def _leader_of(partition: dict[str, Any]) -> int:
    """The leader's broker id in kafka-python's description of a partition (-1: none yet).

    kafka-python names it ``leader_id`` (the protocol's name); older releases said ``leader``.
    """
    return int(partition.get("leader_id", partition.get("leader", -1)))


def kafka_user_acls(manifest: Path) -> dict[str, list[dict[str, Any]]]:
    """The ACL rules of every ``KafkaUser`` in a Kubernetes manifest, by user name."""
    import yaml

    return {
        document["metadata"]["name"]: document["spec"]["authorization"]["acls"]
        for document in yaml.safe_load_all(manifest.read_text())
        if document and document.get("kind") == "KafkaUser"
    }


@dataclass
class LocalInfrastructure:
    """Kafka and Redis together, with the v1 topics created; a context manager."""

    workdir: Path
    kafka_port: int | None = None
    redis_port: int | None = None
    topics: Topics = field(default_factory=Topics)
    partitions: int = 12
    #: Give the broker a mutual-TLS listener with ACLs beside the plaintext one.
    secured: bool = False

    def __post_init__(self) -> None:
        self.kafka = LocalKafka(self.workdir / "kafka", port=self.kafka_port, secured=self.secured)
        self.redis = LocalRedis(self.workdir / "redis", port=self.redis_port)

    def start(self) -> LocalInfrastructure:
        """Start both and create the topics; on any failure stop what was started."""
        try:
            self.kafka.start()
            create_topics(self.kafka.bootstrap, self.topics, self.partitions)
            self.redis.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop Redis and Kafka."""
        self.redis.stop()
        self.kafka.stop()

    def __enter__(self) -> LocalInfrastructure:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    """``fetch``: the broker jars now (CI does it before the tests); ``topics``: create them.

    python -m stopsms.tools.launcher fetch
    python -m stopsms.tools.launcher topics --bootstrap HOST:PORT [--partitions 12]
        [--replication 1] [--namespace PREFIX]
    """
    import argparse

    parser = argparse.ArgumentParser(prog="python -m stopsms.tools.launcher")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("fetch", help="fetch the Kafka broker jars into the local cache")
    topics = sub.add_parser("topics", help="create the v1 topics and faust's changelogs")
    topics.add_argument("--bootstrap", required=True)
    topics.add_argument("--partitions", type=int, default=12)
    topics.add_argument("--replication", type=int, default=1)
    topics.add_argument("--namespace", default="")
    topics.add_argument("--wait", type=float, default=120.0, help="seconds to wait for Kafka")
    args = parser.parse_args(argv)
    if args.command == "fetch":
        print(fetch_kafka())
        return 0
    from stopsms.adapters.settings import Settings

    # The one-shot job of a secured cluster authenticates as the services do (STOPSMS_KAFKA_*),
    # and creates the topics with the retention the settings give (STOPSMS_RETENTION_*_DAYS).
    settings = Settings.from_env()
    kafka = dataclasses.replace(settings.kafka, bootstrap=args.bootstrap)
    created = create_topics(
        kafka,
        Topics(args.namespace, settings.retention),
        args.partitions,
        args.replication,
        wait_seconds=args.wait,
    )
    print(f"created {len(created)} topics" + (f": {', '.join(created)}" if created else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
