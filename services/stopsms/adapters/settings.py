"""Typed settings, read once from ``STOPSMS_*`` environment variables.

Defaults run the local platform (``stopsms up``) with no variable set. A malformed value stops
the service at start with a message naming the variable, rather than failing later mid-request.
Each service has its own settings class; the fields they share live in :class:`Settings`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc

from stopsms.adapters.kafka_access import KafkaAccess
from stopsms.adapters.tls import server_credentials
from stopsms.domain.privacy import Pseudonymiser, ensure_key, load_key
from stopsms.domain.topics import Retention, Topics

PACKAGE_CONFIG = Path(__file__).resolve().parent.parent / "config"


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the environment variable."""


def _env(name: str, default: Any, kind: type = str) -> Any:
    """Describe one field read from ``STOPSMS_<NAME>`` with a default."""
    return field(default=default, metadata={"env": "STOPSMS_" + name, "kind": kind})


_S = TypeVar("_S", bound="Settings")


@dataclass(frozen=True)
class Settings:
    """What every StopSMS process needs: where Kafka and Redis are, topics, keys, parties."""

    kafka_bootstrap: str = _env("KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    #: PLAINTEXT (a local broker), SSL (mutual TLS) or SASL_SSL (SCRAM-SHA-512 over TLS): how
    #: this service authenticates to Kafka, whose ACLs then limit it to what it needs.
    kafka_security_protocol: str = _env("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT")
    kafka_ca_file: Path | None = _env("KAFKA_CA_FILE", None, Path)
    kafka_cert_file: Path | None = _env("KAFKA_CERT_FILE", None, Path)
    kafka_key_file: Path | None = _env("KAFKA_KEY_FILE", None, Path)
    kafka_sasl_username: str = _env("KAFKA_SASL_USERNAME", "")
    kafka_sasl_password_file: Path | None = _env("KAFKA_SASL_PASSWORD_FILE", None, Path)
    redis_url: str = _env("REDIS_URL", "redis://127.0.0.1:6379/0")
    #: Prefix for every topic and consumer group name; empty in production. Tests use a unique
    #: one so that runs on a shared broker never see each other's records.
    topic_namespace: str = _env("TOPIC_NAMESPACE", "")
    partitions: int = _env("PARTITIONS", 12, int)
    #: Replication of the topics faust creates (changelogs); 3 on a real cluster.
    replication_factor: int = _env("REPLICATION_FACTOR", 1, int)
    data_dir: Path = _env("DATA_DIR", Path(".stopsms"), Path)
    pseudonym_key_file: Path | None = _env("PSEUDONYM_KEY_FILE", None, Path)
    data_key_file: Path | None = _env("DATA_KEY_FILE", None, Path)
    #: Data keys that sealed older records (comma-separated files): after a rotation they
    #: still unseal what the compacted list holds under them; only the current key seals.
    previous_data_key_files: tuple[str, ...] = _env("PREVIOUS_DATA_KEY_FILES", (), tuple)
    #: The pseudonym key subjects move away from, held only while a re-keying runs (the
    #: registry re-derives every subject; docs/operations.md, "Rotate the pseudonym key").
    previous_pseudonym_key_file: Path | None = _env("PREVIOUS_PSEUDONYM_KEY_FILE", None, Path)
    #: Create missing key files with random keys. Only for local runs (``stopsms up`` and the
    #: tests ask for it): in a deployment keys come from Secrets, and a missing one must stop
    #: the service at start.
    generate_keys: bool = _env("GENERATE_KEYS", False, bool)
    parties_file: Path = _env("PARTIES_FILE", PACKAGE_CONFIG / "parties.yaml", Path)
    #: How often the parties directory's file is checked for changes (seconds).
    parties_reload_seconds: float = _env("PARTIES_RELOAD_SECONDS", 2.0, float)
    #: Development identity: the caller's party comes from the ``x-stopsms-party`` header,
    #: without TLS. Only when asked for; logged as a warning at start and on every call.
    insecure_identity: bool = _env("INSECURE_IDENTITY", False, bool)
    #: The TLS folder (CA, server and party certificates); ``<data dir>/tls`` when unset.
    tls_dir: Path | None = _env("TLS_DIR", None, Path)
    intake_grpc_address: str = _env("INTAKE_GRPC_ADDRESS", "127.0.0.1:50051")
    intake_http_address: str = _env("INTAKE_HTTP_ADDRESS", "127.0.0.1:8080")
    registry_grpc_address: str = _env("REGISTRY_GRPC_ADDRESS", "127.0.0.1:50052")
    notifier_grpc_address: str = _env("NOTIFIER_GRPC_ADDRESS", "127.0.0.1:50053")
    console_grpc_address: str = _env("CONSOLE_GRPC_ADDRESS", "127.0.0.1:50054")
    #: Plaintext ports serving only gRPC health, for Kubernetes probes (which cannot present a
    #: client certificate).
    intake_health_address: str = _env("INTAKE_HEALTH_ADDRESS", "127.0.0.1:50061")
    registry_health_address: str = _env("REGISTRY_HEALTH_ADDRESS", "127.0.0.1:50062")
    notifier_health_address: str = _env("NOTIFIER_HEALTH_ADDRESS", "127.0.0.1:50063")
    console_health_address: str = _env("CONSOLE_HEALTH_ADDRESS", "127.0.0.1:50064")
    log_level: str = _env("LOG_LEVEL", "INFO")
    #: ``text`` (one readable line) or ``json`` (one object per line, for log collectors).
    log_format: str = _env("LOG_FORMAT", "text")
    grace_seconds: float = _env("GRACE_SECONDS", 5.0, float)
    #: How long a stream processor may be silent before its partitions go to another replica:
    #: the failover time after a crash (heartbeats go every tenth of it).
    kafka_session_timeout_seconds: float = _env("KAFKA_SESSION_TIMEOUT_SECONDS", 30.0, float)
    #: A stream processor that commits nothing this long while records wait exits, so that
    #: it is restarted (0: never). Its state is in Kafka: nothing is lost.
    stall_exit_seconds: float = _env("STALL_EXIT_SECONDS", 120.0, float)
    #: ``production`` adds the durability checks at start (replication 3, min.insync.replicas
    #: 2, no unclean leader election); ``development`` runs on a single local broker.
    profile: str = _env("PROFILE", "development")
    #: How long a starting service waits for Kafka before it gives up with a clear message.
    startup_wait_seconds: float = _env("STARTUP_WAIT_SECONDS", 60.0, float)
    #: How long each topic keeps its records, in days (docs/operations.md, Retention): the
    #: topics are created with these, the self-check compares them, and the registry erases a
    #: subject whose legal record (requests) has ended with no opt-out in force.
    retention_requests_days: float = _env("RETENTION_REQUESTS_DAYS", Retention.requests_days, float)
    retention_audit_days: float = _env("RETENTION_AUDIT_DAYS", Retention.audit_days, float)
    retention_complaints_days: float = _env(
        "RETENTION_COMPLAINTS_DAYS", Retention.complaints_days, float
    )
    retention_receipts_days: float = _env("RETENTION_RECEIPTS_DAYS", Retention.receipts_days, float)
    retention_outbound_days: float = _env("RETENTION_OUTBOUND_DAYS", Retention.outbound_days, float)
    retention_dead_letters_days: float = _env(
        "RETENTION_DEAD_LETTERS_DAYS", Retention.dead_letters_days, float
    )
    retention_links_days: float = _env("RETENTION_LINKS_DAYS", Retention.links_days, float)
    retention_tombstone_days: float = _env(
        "RETENTION_TOMBSTONE_DAYS", Retention.tombstone_days, float
    )

    @classmethod
    def from_env(cls: type[_S], environ: Mapping[str, str] | None = None, **overrides: Any) -> _S:
        """Build the settings from the environment (or ``environ``), then apply overrides."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            name = f.metadata.get("env")
            if name is None or name not in env:
                continue
            values[f.name] = _parse(name, env[name], f.metadata["kind"])
        values.update(overrides)
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        """Check cross-field rules; raise :class:`SettingsError` naming the variable."""
        if self.partitions < 1:
            raise SettingsError("STOPSMS_PARTITIONS must be at least 1")
        for name in (
            "intake_grpc_address",
            "registry_grpc_address",
            "notifier_grpc_address",
            "console_grpc_address",
            "intake_health_address",
            "registry_health_address",
            "notifier_health_address",
            "console_health_address",
        ):
            host, _, port = getattr(self, name).rpartition(":")
            if not host or not port.isdigit():
                raise SettingsError(f"STOPSMS_{name.upper()} must be host:port")
        if not self.parties_file.exists():
            raise SettingsError(f"STOPSMS_PARTIES_FILE: {self.parties_file} does not exist")
        if self.log_format not in ("text", "json"):
            raise SettingsError("STOPSMS_LOG_FORMAT must be text or json")
        if self.profile not in ("development", "production"):
            raise SettingsError("STOPSMS_PROFILE must be development or production")
        for f in dataclasses.fields(self):
            if f.name.startswith("retention_") and not getattr(self, f.name) > 0:
                raise SettingsError(f"{f.metadata['env']} must be more than 0 (days)")
        kafka_problems = self.kafka.problems()
        if kafka_problems:
            raise SettingsError("; ".join(kafka_problems))

    @property
    def kafka(self) -> KafkaAccess:
        """Where Kafka is and how every Kafka client of this process authenticates to it."""
        return KafkaAccess(
            bootstrap=self.kafka_bootstrap,
            security_protocol=self.kafka_security_protocol,
            ca_file=self.kafka_ca_file,
            cert_file=self.kafka_cert_file,
            key_file=self.kafka_key_file,
            sasl_username=self.kafka_sasl_username,
            sasl_password_file=self.kafka_sasl_password_file,
        )

    @property
    def retention(self) -> Retention:
        """How long each topic keeps its records (the ``STOPSMS_RETENTION_*_DAYS`` settings)."""
        prefix = "retention_"
        return Retention(
            **{
                f.name.removeprefix(prefix): getattr(self, f.name)
                for f in dataclasses.fields(self)
                if f.name.startswith(prefix)
            }
        )

    def topics(self) -> Topics:
        """The deployment's topic names, with their configured retention."""
        return Topics(self.topic_namespace, self.retention)

    @property
    def tls_folder(self) -> Path:
        """Where the CA, server and party certificates are."""
        return self.tls_dir or self.data_dir / "tls"

    @property
    def client_tls_folder(self) -> Path | None:
        """The TLS folder clients use, or None in the development mode."""
        return None if self.insecure_identity else self.tls_folder

    def server_credentials(self) -> grpc.ServerCredentials | None:
        """Mutual-TLS credentials of the gRPC servers; None in the insecure development mode."""
        return None if self.insecure_identity else server_credentials(self.tls_folder)

    @property
    def key_dir(self) -> Path:
        """Where development keys are kept when no key file is configured."""
        return self.data_dir / "keys"

    def pseudonymiser(self) -> Pseudonymiser:
        """Load the pseudonym and data keys (creating development keys when allowed)."""
        pseudonym_path = self.pseudonym_key_file or self.key_dir / "pseudonym.key"
        data_path = self.data_key_file or self.key_dir / "data.key"
        previous = [load_key(Path(path)) for path in self.previous_data_key_files]
        if self.generate_keys:
            pseudonym_key, data_key = (
                ensure_key(pseudonym_path, "pk1"),
                ensure_key(data_path, "dk1"),
            )
        else:
            pseudonym_key, data_key = load_key(pseudonym_path), load_key(data_path)
        previous_pseudonym = (
            load_key(self.previous_pseudonym_key_file) if self.previous_pseudonym_key_file else None
        )
        return Pseudonymiser(pseudonym_key, [data_key, *previous], previous_pseudonym)


@dataclass(frozen=True)
class IntakeSettings(Settings):
    """Intake: where links point, how long they live, which short code is the platform's."""

    public_base_url: str = _env("PUBLIC_BASE_URL", "http://127.0.0.1:8080/")
    #: Where Prometheus scrapes intake's metrics (host:port; empty: not served).
    intake_metrics_address: str = _env("INTAKE_METRICS_ADDRESS", "")
    #: How long a link works when its issuer does not say (days)...
    link_ttl_days: int = _env("LINK_TTL_DAYS", 90, int)
    #: ...and the most an issuer may ask for (``lifetime_days``); the links topic keeps a
    #: link longer than that (``STOPSMS_RETENTION_LINKS_DAYS``).
    link_max_ttl_days: int = _env("LINK_MAX_TTL_DAYS", 180, int)
    #: How long the browser that opted out on the link page may undo it (intake.undo).
    link_undo_seconds: int = _env("LINK_UNDO_SECONDS", 900, int)
    #: Short codes of the platform itself: STOP sent there is global (DOMAIN.md).
    platform_short_codes: tuple[str, ...] = _env("PLATFORM_SHORT_CODES", ("STOPSMS",), tuple)
    #: Requests accepted per number and minute (all channels); more is RESOURCE_EXHAUSTED / 429.
    number_requests_per_minute: int = _env("NUMBER_REQUESTS_PER_MINUTE", 20, int)
    #: Unknown link codes one client address may try per minute before getting 429.
    link_misses_per_minute: int = _env("LINK_MISSES_PER_MINUTE", 30, int)
    #: Where the screenshots of web complaints are kept (a volume every replica shares);
    #: ``<data dir>/screenshots`` when unset.
    screenshot_dir: Path | None = _env("SCREENSHOT_DIR", None, Path)
    #: How long intake waits for Kafka's acknowledgement before answering UNAVAILABLE.
    publish_timeout_seconds: float = _env("PUBLISH_TIMEOUT_SECONDS", 10.0, float)

    @property
    def screenshot_folder(self) -> Path:
        """Where the screenshots of web complaints are kept."""
        return self.screenshot_dir or self.data_dir / "screenshots"

    def validate(self) -> None:
        """Check intake's own settings as well as the shared ones."""
        super().validate()
        if not self.public_base_url.startswith(("http://", "https://")):
            raise SettingsError("STOPSMS_PUBLIC_BASE_URL must start with http:// or https://")
        if not self.public_base_url.endswith("/"):
            raise SettingsError("STOPSMS_PUBLIC_BASE_URL must end with /")
        if not 1 <= self.link_ttl_days <= self.link_max_ttl_days:
            raise SettingsError(
                "STOPSMS_LINK_TTL_DAYS must be from 1 to STOPSMS_LINK_MAX_TTL_DAYS "
                f"({self.link_max_ttl_days})"
            )
        if self.link_max_ttl_days >= self.retention_links_days:
            raise SettingsError(
                "STOPSMS_LINK_MAX_TTL_DAYS must be less than STOPSMS_RETENTION_LINKS_DAYS "
                f"({self.retention_links_days:g}): the links topic must keep a link while it works"
            )
        if not 0 <= self.link_undo_seconds <= 86_400:
            raise SettingsError("STOPSMS_LINK_UNDO_SECONDS must be from 0 (no undo) to 86400")


@dataclass(frozen=True)
class RegistrySettings(Settings):
    """Registry: the view's layout and how lookups use the machine."""

    #: Where Prometheus scrapes the registry's metrics (host:port; empty: not served).
    registry_metrics_address: str = _env("REGISTRY_METRICS_ADDRESS", "")
    #: The view's buckets are 2^bits Redis hashes; size it so a bucket holds ~50–3,000
    #: entries (14 fits 1–50 million). Changing it rebuilds the view.
    view_bucket_bits: int = _env("VIEW_BUCKET_BITS", 14, int)
    #: Processes that hash CheckBatch numbers beside the serving one (0: hash in-process).
    hash_workers: int = _env("HASH_WORKERS", 1, int)
    #: Processes that rebuild an empty view from the topic, each taking some partitions.
    rebuild_workers: int = _env("REBUILD_WORKERS", 2, int)
    #: A smaller topic is rebuilt in the registry's own process (workers take a while to start).
    parallel_rebuild_from: int = _env("PARALLEL_REBUILD_FROM", 50_000, int)
    #: Size of the in-process filter of subjects with a record (bits; 0 turns it off). The
    #: default, 64 MiB, keeps false "maybe"s under 1 % up to 50 million subjects.
    subject_filter_bits: int = _env("SUBJECT_FILTER_BITS", 1 << 29, int)
    #: An erasure pass (subjects whose retention ended: registry/erasure.py) starts at most
    #: this often; the first shortly after start.
    erasure_pass_seconds: float = _env("ERASURE_PASS_SECONDS", 86_400.0, float)
    #: While previous data keys are held, a re-sealing pass (decisions in force sealed under
    #: them, published again under the current key: registry/resealing.py) starts this often.
    reseal_pass_seconds: float = _env("RESEAL_PASS_SECONDS", 3_600.0, float)
    #: While a previous pseudonym key is held, a re-keying pass (subjects moved to the current
    #: key: registry/rekeying.py) starts this often.
    rekey_pass_seconds: float = _env("REKEY_PASS_SECONDS", 3_600.0, float)
    #: How long a moved subject's old records stay on the list beside the new ones before they
    #: are tombstoned: every reader (view, operators, PSVAs) must have taken the new ones.
    rekey_grace_seconds: float = _env("REKEY_GRACE_SECONDS", 86_400.0, float)

    def validate(self) -> None:
        """Check the registry's own settings as well as the shared ones."""
        super().validate()
        if not self.erasure_pass_seconds > 0:
            raise SettingsError("STOPSMS_ERASURE_PASS_SECONDS must be more than 0")
        if not self.reseal_pass_seconds > 0:
            raise SettingsError("STOPSMS_RESEAL_PASS_SECONDS must be more than 0")
        if not self.rekey_pass_seconds > 0:
            raise SettingsError("STOPSMS_REKEY_PASS_SECONDS must be more than 0")
        if not self.rekey_grace_seconds >= 0:
            raise SettingsError("STOPSMS_REKEY_GRACE_SECONDS must be 0 or more")
        if not 1 <= self.view_bucket_bits <= 24:
            raise SettingsError("STOPSMS_VIEW_BUCKET_BITS must be between 1 and 24")
        if not 1 <= self.rebuild_workers <= 64:
            raise SettingsError("STOPSMS_REBUILD_WORKERS must be between 1 and 64")
        if not 0 <= self.hash_workers <= 64:
            raise SettingsError("STOPSMS_HASH_WORKERS must be between 0 and 64")
        if self.subject_filter_bits and (
            self.subject_filter_bits < 1024 or self.subject_filter_bits % 8
        ):
            raise SettingsError(
                "STOPSMS_SUBJECT_FILTER_BITS must be 0 or a multiple of 8 of at least 1024"
            )


@dataclass(frozen=True)
class NotifierSettings(Settings):
    """Notifier: how parties' progress is read and recorded for the proof."""

    #: How often operators' committed offsets are read while a change waits for them...
    receipt_poll_seconds: float = _env("RECEIPT_POLL_SECONDS", 0.1, float)
    #: ...and when none does (a new change wakes the poller at once).
    receipt_idle_poll_seconds: float = _env("RECEIPT_IDLE_POLL_SECONDS", 5.0, float)
    #: PSVAs' acknowledgements arriving within this window are made durable together.
    ack_flush_seconds: float = _env("ACK_FLUSH_SECONDS", 0.05, float)
    #: How often each PSVA's consumer group is moved to its acknowledged cursor (a mirror for
    #: tools and for seeding: the receipts are what the proof and a resuming stream read).
    ack_group_commit_seconds: float = _env("ACK_GROUP_COMMIT_SECONDS", 5.0, float)
    #: On start, the progress receipts of this long ago are read again (the applied times of
    #: proofs still open).
    progress_replay_seconds: float = _env("PROGRESS_REPLAY_SECONDS", 900.0, float)
    heartbeat_seconds: float = _env("HEARTBEAT_SECONDS", 5.0, float)
    #: A party that has not applied a change this long after the citizen's action is late.
    propagation_slo_seconds: float = _env("PROPAGATION_SLO_SECONDS", 5.0, float)
    #: Webhook retries wait a random time up to base × 2^attempt, at most the cap.
    webhook_retry_base_seconds: float = _env("WEBHOOK_RETRY_BASE_SECONDS", 0.5, float)
    webhook_retry_cap_seconds: float = _env("WEBHOOK_RETRY_CAP_SECONDS", 60.0, float)
    #: Consecutive failures after which a receiver is marked degraded (and alerted on).
    webhook_degraded_after: int = _env("WEBHOOK_DEGRADED_AFTER", 5, int)
    #: Where Prometheus scrapes the notifier's metrics (host:port; empty: not served).
    notifier_metrics_address: str = _env("NOTIFIER_METRICS_ADDRESS", "")


@dataclass(frozen=True)
class ConsoleSettings(Settings):
    """The console: the complaint assessor, the cases, and the regulator's service."""

    #: Where Prometheus scrapes the console's metrics (host:port; empty: not served).
    console_metrics_address: str = _env("CONSOLE_METRICS_ADDRESS", "")
    #: Where the CNDP's staff open the console's pages (HTTPS with their client certificate).
    console_http_address: str = _env("CONSOLE_HTTP_ADDRESS", "127.0.0.1:8443")
    #: Intake's public address: a StopSMS link in a complained-of text is the platform's when
    #: it points there (the same variable as intake's).
    public_base_url: str = _env("PUBLIC_BASE_URL", "http://127.0.0.1:8080/")
    #: A group of complaints with a finding opens a case when this many arrived within...
    case_complaints: int = _env("CASE_COMPLAINTS", 5, int)
    #: ...this many days of each other (docs/complaints.md, Cases).
    case_window_days: float = _env("CASE_WINDOW_DAYS", 10.0, float)
    #: The Ed25519 key (PEM) that signs evidence packs; ``<data dir>/keys/export.pem`` when
    #: unset (made there only with STOPSMS_GENERATE_KEYS, for local runs).
    export_signing_key_file: Path | None = _env("EXPORT_SIGNING_KEY_FILE", None, Path)
    #: The propagation objective a party's LATE count is measured against (as the notifier's).
    propagation_slo_seconds: float = _env("PROPAGATION_SLO_SECONDS", 5.0, float)

    def validate(self) -> None:
        """Check the console's own settings as well as the shared ones."""
        super().validate()
        host, _, port = self.console_http_address.rpartition(":")
        if not host or not port.isdigit():
            raise SettingsError("STOPSMS_CONSOLE_HTTP_ADDRESS must be host:port")
        if self.case_complaints < 1:
            raise SettingsError("STOPSMS_CASE_COMPLAINTS must be at least 1")
        if not 0 < self.case_window_days <= 366:
            raise SettingsError("STOPSMS_CASE_WINDOW_DAYS must be more than 0 and at most 366")

    @property
    def export_key_path(self) -> Path:
        """Where the export signing key is."""
        return self.export_signing_key_file or self.key_dir / "export.pem"


def _parse(name: str, raw: str, kind: type) -> Any:
    """Convert one environment value, naming the variable when it is malformed."""
    try:
        if kind is bool:
            lowered = raw.strip().lower()
            if lowered in {"1", "true", "yes", "on"}:
                return True
            if lowered in {"0", "false", "no", "off"}:
                return False
            raise ValueError("expected true or false")
        if kind is tuple:
            return tuple(part.strip() for part in raw.split(",") if part.strip())
        return kind(raw)
    except ValueError as exc:
        raise SettingsError(f"{name}={raw!r} is malformed: {exc}") from exc
