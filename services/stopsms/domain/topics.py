"""The Kafka topics of v1: names, partition counts and configs, frozen by ARCHITECTURE.md.

Records of the requests and suppressions topics are placed by *subject* alone
(:func:`partition_for_key`), so one person's records stay in one partition and in order, and the
registry's decision table is co-partitioned with the requests it decides.
"""

from __future__ import annotations

from dataclasses import dataclass

from kafka.partitioner.default import murmur2  # type: ignore[import-untyped]

DAY_MS = 24 * 60 * 60 * 1000
#: Three years, the default legal record of requests.
REQUESTS_RETENTION_MS = 3 * 365 * DAY_MS
#: How long messages to citizens stay on their topic.
OUTBOUND_RETENTION_MS = 7 * DAY_MS
SCOPE_SEPARATOR = "|"
GLOBAL_SCOPE = "*"


@dataclass(frozen=True)
class TopicSpec:
    """One topic: its name (without namespace), policy and configs."""

    name: str
    configs: dict[str, str]


TOPIC_SPECS: tuple[TopicSpec, ...] = (
    TopicSpec(
        "stopsms.requests.v1",
        {"cleanup.policy": "delete", "retention.ms": str(REQUESTS_RETENTION_MS)},
    ),
    TopicSpec(
        "stopsms.suppressions.v1",
        {"cleanup.policy": "compact", "min.compaction.lag.ms": str(7 * DAY_MS)},
    ),
    TopicSpec("stopsms.receipts.v1", {"cleanup.policy": "delete"}),
    TopicSpec("stopsms.propagation.v1", {"cleanup.policy": "compact"}),
    TopicSpec("stopsms.links.v1", {"cleanup.policy": "compact"}),
    TopicSpec("stopsms.dlq.v1", {"cleanup.policy": "delete"}),
    TopicSpec("stopsms.audit.v1", {"cleanup.policy": "delete", "retention.ms": str(-1)}),
    # Messages to citizens are worth nothing once delivered or expired: a week covers an
    # operator's consumer that was down for days.
    TopicSpec(
        "stopsms.outbound.v1",
        {"cleanup.policy": "delete", "retention.ms": str(OUTBOUND_RETENTION_MS)},
    ),
    # The register of declared senders (compacted: each sender's current record) and its
    # history (every declaration, update and review), kept as long as the legal record.
    TopicSpec("stopsms.senders.v1", {"cleanup.policy": "compact"}),
    TopicSpec(
        "stopsms.sender-changes.v1",
        {"cleanup.policy": "delete", "retention.ms": str(REQUESTS_RETENTION_MS)},
    ),
    # Citizens' complaints are evidence for the regulator and the prosecutor: kept as long as
    # the legal record. Their assessments are compacted: a late proof replaces an assessment.
    TopicSpec(
        "stopsms.complaints.v1",
        {"cleanup.policy": "delete", "retention.ms": str(REQUESTS_RETENTION_MS)},
    ),
    TopicSpec("stopsms.complaint-assessments.v1", {"cleanup.policy": "compact"}),
    # The cases complaints opened (compacted: each case's latest record); operators read it.
    TopicSpec("stopsms.cases.v1", {"cleanup.policy": "compact"}),
)


#: The stream processors' state (service, table): their changelogs are compacted topics that
#: deployments create up front, with the same partition count as the topics the state follows.
STATE_TABLES: tuple[tuple[str, str], ...] = (("registry", "decisions"),)


@dataclass(frozen=True)
class Topics:
    """Topic and group names, with the deployment's namespace (empty in production)."""

    namespace: str = ""

    def name(self, base: str) -> str:
        """Return the full name of a topic or group."""
        return f"{self.namespace}{base}"

    @property
    def requests(self) -> str:
        """The legal record of accepted requests."""
        return self.name("stopsms.requests.v1")

    @property
    def suppressions(self) -> str:
        """The compacted suppression list: operators read it, the registry alone writes it."""
        return self.name("stopsms.suppressions.v1")

    @property
    def receipts(self) -> str:
        """Per-party delivery receipts."""
        return self.name("stopsms.receipts.v1")

    @property
    def propagation(self) -> str:
        """The proof of propagation, one record per request."""
        return self.name("stopsms.propagation.v1")

    @property
    def links(self) -> str:
        """Issued StopSMS links."""
        return self.name("stopsms.links.v1")

    @property
    def dlq(self) -> str:
        """Records that could not be processed."""
        return self.name("stopsms.dlq.v1")

    @property
    def audit(self) -> str:
        """Who called what."""
        return self.name("stopsms.audit.v1")

    @property
    def outbound(self) -> str:
        """Messages to citizens (confirmations, codes, help), delivered by their operator."""
        return self.name("stopsms.outbound.v1")

    @property
    def senders(self) -> str:
        """The register of declared senders: each sender's current record, by canonical id."""
        return self.name("stopsms.senders.v1")

    @property
    def sender_changes(self) -> str:
        """Every change of the register: its history and the regulator's reviews."""
        return self.name("stopsms.sender-changes.v1")

    @property
    def complaints(self) -> str:
        """Citizens' complaints about marketing SMS, keyed by the complainant's subject."""
        return self.name("stopsms.complaints.v1")

    @property
    def complaint_assessments(self) -> str:
        """Each complaint's latest assessment, keyed by complaint id."""
        return self.name("stopsms.complaint-assessments.v1")

    @property
    def cases(self) -> str:
        """The cases complaints opened, keyed by case id: the parties concerned read them."""
        return self.name("stopsms.cases.v1")

    def operator_outbound_group(self, party_id: str) -> str:
        """The consumer group an operator delivers messages to its subscribers with."""
        return self.name(f"stopsms.operator.{party_id}.outbound")

    def operator_group(self, party_id: str) -> str:
        """The consumer group whose committed offsets are an operator's receipts."""
        return self.name(f"stopsms.operator.{party_id}")

    def psva_group(self, party_id: str) -> str:
        """The group holding a PSVA's durable acknowledged cursor."""
        return self.name(f"stopsms.psva.{party_id}")

    def receipted_group(self, party_id: str) -> str:
        """The notifier's durable mark of how far it has turned a party's commits into receipts."""
        return self.name(f"stopsms.notifier.receipted.{party_id}")

    def all_specs(self) -> list[tuple[str, dict[str, str]]]:
        """Every v1 topic with its full name and configs."""
        return [(self.name(spec.name), dict(spec.configs)) for spec in TOPIC_SPECS]

    def processor_group(self, service: str) -> str:
        """The consumer group of a service's stream processor."""
        return self.name(f"stopsms-{service}")

    def changelog(self, service: str, table: str) -> str:
        """The compacted changelog of a processor's state (the name faust gave it before)."""
        return f"{self.processor_group(service)}-{table}-changelog"

    def internal_specs(self) -> list[tuple[str, dict[str, str]]]:
        """The processors' state changelogs, created before the processors start."""
        return [
            (self.changelog(service, table), {"cleanup.policy": "compact"})
            for service, table in STATE_TABLES
        ]


def suppression_key(subject: str, sender_id: str) -> str:
    """Return ``<subject>|<sender id, or * for global>``."""
    return f"{subject}{SCOPE_SEPARATOR}{sender_id or GLOBAL_SCOPE}"


def subject_of_key(key: bytes | str) -> bytes:
    """Return the subject part of a requests or suppressions key."""
    raw = key.encode() if isinstance(key, str) else key
    return raw.split(SCOPE_SEPARATOR.encode(), 1)[0]


def partition_for_key(key: bytes | str, partitions: int) -> int:
    """Place a record by its subject alone, with Kafka's default (murmur2) hash.

    For a requests key (the subject itself) this is exactly where Kafka's default partitioner
    puts it, so any client that publishes a request lands in the same partition as its
    suppression records.
    """
    return (murmur2(subject_of_key(key)) & 0x7FFFFFFF) % partitions
