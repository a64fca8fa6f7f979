"""The Kafka topics of v1: names, partition counts and configs, frozen by ARCHITECTURE.md.

Records of the requests and suppressions topics are placed by *subject* alone
(:func:`partition_for_key`), so one person's records stay in one partition and in order, and the
registry's decision table is co-partitioned with the requests it decides.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

DAY_MS = 24 * 60 * 60 * 1000
SCOPE_SEPARATOR = "|"
GLOBAL_SCOPE = "*"
#: The list's superseded records are compacted away at most this long after they were
#: superseded (``max.compaction.lag.ms`` of ``stopsms.suppressions.v1``): after a re-sealing,
#: the records under the retired data key are gone within it.
SUPERSEDED_GONE_MS = 14 * DAY_MS
#: The subject of the list's key-change record (docs/operators.md): never a pseudonym, which is
#: ``<key id>:<hex>``, so every reader tells it apart by its first character.
KEY_CHANGE_SUBJECT = "#key-change"


@dataclass(frozen=True)
class TopicSpec:
    """One topic: its name (without namespace), policy and configs."""

    name: str
    configs: dict[str, str]


@dataclass(frozen=True)
class Retention:
    """How long each kind of record is kept, in days: what the law and the work need.

    docs/operations.md (Retention) gives the reason for each figure. Every one is configurable
    (``STOPSMS_RETENTION_*_DAYS``); the topics are created with them, and the registry erases a
    subject once its legal record (``requests_days``) has ended with no opt-out in force.
    """

    #: The legal record of requests (3 years by default), the proofs of their propagation,
    #: and the register's history.
    requests_days: float = 3 * 365
    #: Who called what: as long as the legal record by default, never for ever.
    audit_days: float = 3 * 365
    #: Complaints, their assessments and the cases they opened: as the regulator requires.
    complaints_days: float = 3 * 365
    #: Delivery receipts (the proof is derived from them within seconds).
    receipts_days: float = 7
    #: Messages to citizens: worth nothing once delivered; a week covers an operator's consumer
    #: that was down for days.
    outbound_days: float = 7
    #: Records that could not be processed, kept long enough to be looked at and replayed.
    dead_letters_days: float = 30
    #: Issued links, beyond their expiry: at least the longest link lifetime.
    links_days: float = 365
    #: How long a tombstone (an erasure) stays readable on a compacted topic before compaction
    #: removes it: a consumer away for less than this still sees it and forgets the subject.
    tombstone_days: float = 30

    def __post_init__(self) -> None:
        for name, days in self.__dict__.items():
            if not days > 0:
                raise ValueError(f"retention {name} must be more than 0 days")

    @staticmethod
    def ms(days: float) -> str:
        """A number of days as Kafka's ``retention.ms`` (a string, as topic configs are)."""
        return str(round(days * DAY_MS))

    def deleted(self, days: float) -> dict[str, str]:
        """The configs of a topic that keeps each record ``days``."""
        return {"cleanup.policy": "delete", "retention.ms": self.ms(days)}

    def compacted(self, days: float | None = None) -> dict[str, str]:
        """The configs of a compacted topic; its tombstones stay readable ``tombstone_days``.

        With ``days``, it also drops a key whose latest record is older than that.
        """
        tombstones = {"delete.retention.ms": self.ms(self.tombstone_days)}
        if days is None:
            return {"cleanup.policy": "compact", **tombstones}
        return {"cleanup.policy": "compact,delete", "retention.ms": self.ms(days), **tombstones}


def topic_specs(retention: Retention) -> tuple[TopicSpec, ...]:
    """Every v1 topic with its cleanup policy and retention (docs/operations.md, Retention).

    ``delete`` topics keep a record for their retention. Compacted topics keep each key's latest
    record; ``compact,delete`` ones also drop a key whose latest record is older than the
    retention (a proof whose legal record ended, an expired link, a closed case). Every compacted
    topic keeps tombstones ``tombstone_days``, so that consumers see erasures.
    """
    r = retention
    deleted, compacted = r.deleted, r.compacted
    return (
        TopicSpec("stopsms.requests.v1", deleted(r.requests_days)),
        # The list in force is kept while it is in force: deleting an opt-out by age would
        # expose the person to marketing again. Only erasure (a tombstone) removes an entry.
        # A superseded record goes within SUPERSEDED_GONE_MS (a re-sealed key can then retire).
        TopicSpec(
            "stopsms.suppressions.v1",
            {
                **compacted(),
                "min.compaction.lag.ms": str(7 * DAY_MS),
                "max.compaction.lag.ms": str(SUPERSEDED_GONE_MS),
            },
        ),
        TopicSpec("stopsms.receipts.v1", deleted(r.receipts_days)),
        TopicSpec("stopsms.propagation.v1", compacted(r.requests_days)),
        TopicSpec("stopsms.links.v1", compacted(r.links_days)),
        TopicSpec("stopsms.dlq.v1", deleted(r.dead_letters_days)),
        TopicSpec("stopsms.audit.v1", deleted(r.audit_days)),
        TopicSpec("stopsms.outbound.v1", deleted(r.outbound_days)),
        # The register of declared senders (compacted: each sender's current record) and its
        # history (every declaration, update and review), kept as long as the legal record.
        TopicSpec("stopsms.senders.v1", compacted()),
        TopicSpec("stopsms.sender-changes.v1", deleted(r.requests_days)),
        # Citizens' complaints are evidence for the regulator and the prosecutor. Their
        # assessments are compacted (a late proof replaces an assessment), and so are the cases
        # (each case's latest record; operators read it): a case still worked on is written
        # again, so only one left alone for the whole period goes.
        TopicSpec("stopsms.complaints.v1", deleted(r.complaints_days)),
        TopicSpec("stopsms.complaint-assessments.v1", compacted(r.complaints_days)),
        TopicSpec("stopsms.cases.v1", compacted(r.complaints_days)),
    )


#: The stream processors' state (service, table): their changelogs are compacted topics that
#: deployments create up front, with the same partition count as the topics the state follows.
STATE_TABLES: tuple[tuple[str, str], ...] = (("registry", "decisions"),)


@dataclass(frozen=True)
class Topics:
    """Topic and group names, with the deployment's namespace (empty in production)."""

    namespace: str = ""
    #: How long each topic keeps its records; used where topics are created and checked.
    retention: Retention = Retention()

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
        return [(self.name(spec.name), dict(spec.configs)) for spec in topic_specs(self.retention)]

    def processor_group(self, service: str) -> str:
        """The consumer group of a service's stream processor."""
        return self.name(f"stopsms-{service}")

    def changelog(self, service: str, table: str) -> str:
        """The compacted changelog of a processor's state (the name faust gave it before)."""
        return f"{self.processor_group(service)}-{table}-changelog"

    def internal_specs(self) -> list[tuple[str, dict[str, str]]]:
        """The processors' state changelogs, created before the processors start."""
        return [
            (self.changelog(service, table), self.retention.compacted())
            for service, table in STATE_TABLES
        ]


def suppression_key(subject: str, sender_id: str) -> str:
    """Return ``<subject>|<sender id, or * for global>``."""
    return f"{subject}{SCOPE_SEPARATOR}{sender_id or GLOBAL_SCOPE}"


def subject_of_key(key: bytes | str) -> bytes:
    """Return the subject part of a requests or suppressions key."""
    raw = key.encode() if isinstance(key, str) else key
    return raw.split(SCOPE_SEPARATOR.encode(), 1)[0]


_MURMUR_M = 0x5BD1E995
_WORD = 0xFFFFFFFF
#: A reader of a key's whole little-endian 32-bit words, by the key's length.
_WORDS_OF_LENGTH: dict[int, Callable[[bytes], tuple[int, ...]]] = {}


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 hash (``org.apache.kafka.common.utils.Utils.murmur2``), as producers use.

    The same function as kafka-python's, which works byte by byte; this one reads the key's
    words with one ``struct`` call and folds the masks, 2.3 times faster on a subject. Every
    request and decision is placed with it, and a re-keying places every subject anew.
    """
    length = len(data)
    words = _WORDS_OF_LENGTH.get(length)
    if words is None:
        words = _WORDS_OF_LENGTH[length] = struct.Struct(f"<{length >> 2}I").unpack_from
    m, word = _MURMUR_M, _WORD
    h = 0x9747B28C ^ length
    for k in words(data):
        k = (k * m) & word
        h = ((h * m) ^ (((k ^ (k >> 24)) * m) & word)) & word
    extra = length & 3
    if extra:
        whole = length - extra
        if extra == 3:
            h ^= data[whole + 2] << 16
        if extra >= 2:
            h ^= data[whole + 1] << 8
        h = ((h ^ data[whole]) * m) & word
    h ^= h >> 13
    h = (h * m) & word
    return h ^ (h >> 15)


def partition_for_key(key: bytes | str, partitions: int) -> int:
    """Place a record by its subject alone, with Kafka's default (murmur2) hash.

    For a requests key (the subject itself) this is exactly where Kafka's default partitioner
    puts it, so any client that publishes a request lands in the same partition as its
    suppression records.
    """
    return (murmur2(subject_of_key(key)) & 0x7FFFFFFF) % partitions


def key_change_key(retired_key_id: str) -> str:
    """The list key of the record saying no decision in force is sealed under a retired key."""
    return suppression_key(KEY_CHANGE_SUBJECT, retired_key_id)


def is_key_change(subject: str) -> bool:
    """Whether a record of the list with this subject is the key-change record, not a decision."""
    return subject.startswith("#")
