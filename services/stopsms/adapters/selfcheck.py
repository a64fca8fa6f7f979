"""What each service verifies before it serves: Kafka is set up as the platform's promises need.

"Acknowledged means recorded" holds only when records are written with acks=all by an
idempotent producer, to topics that exist with their frozen partition counts (a subject's
records must stay in one partition) and their cleanup policies (a compacted list, a deleted
request log), and — in production — survive a broker: replication factor at least 3,
``min.insync.replicas`` at least 2 and no unclean leader election. A service that finds any of
this wrong refuses to start, naming every problem, rather than serve promises it cannot keep.

The decisions are pure (:func:`topic_problems`, :func:`producer_problems`); :func:`check_kafka`
reads the broker's view of the topics.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from stopsms.adapters.kafka_access import KafkaAccess
    from stopsms.adapters.settings import Settings
    from stopsms.domain.topics import Topics

log = logging.getLogger(__name__)

#: The production profile's floor for durability.
MIN_REPLICATION = 3
MIN_INSYNC = 2
#: How long missing topics are waited for (a deployment may create them just before).
MISSING_TOPIC_WAIT_S = 10.0


class SelfCheckError(RuntimeError):
    """The service's dependencies are not what it needs; the message lists every problem."""


@dataclass(frozen=True)
class TopicState:
    """A topic as the broker describes it."""

    partitions: int
    replication: int
    configs: Mapping[str, str]


def topic_problems(
    expected: Iterable[tuple[str, Mapping[str, str]]],
    found: Mapping[str, TopicState],
    partitions: int,
    production: bool,
) -> list[str]:
    """Every way the topics differ from what the platform needs."""
    problems = []
    for name, configs in expected:
        state = found.get(name)
        if state is None:
            problems.append(f"topic {name} does not exist (docs/reliability.md: topics)")
            continue
        if state.partitions != partitions:
            problems.append(
                f"topic {name} has {state.partitions} partitions; the platform's are frozen "
                f"at {partitions} (STOPSMS_PARTITIONS)"
            )
        policy = configs.get("cleanup.policy")
        if policy and _policies(state.configs.get("cleanup.policy")) != _policies(policy):
            problems.append(
                f"topic {name} has cleanup.policy={state.configs.get('cleanup.policy')}; "
                f"it must be {policy}"
            )
        if production:
            if state.replication < MIN_REPLICATION:
                problems.append(
                    f"topic {name} has replication factor {state.replication}; "
                    f"production needs at least {MIN_REPLICATION}"
                )
            insync = int(state.configs.get("min.insync.replicas", "1"))
            if insync < MIN_INSYNC:
                problems.append(
                    f"topic {name} has min.insync.replicas={insync}; "
                    f"production needs at least {MIN_INSYNC}"
                )
            if state.configs.get("unclean.leader.election.enable", "false") == "true":
                problems.append(
                    f"topic {name} allows unclean leader election: an acknowledged record "
                    "could be lost"
                )
    return problems


def _policies(policy: str | None) -> set[str]:
    """``compact,delete`` and ``delete,compact`` are the same policy."""
    return {part.strip() for part in (policy or "").split(",") if part.strip()}


#: The configs that say how long a topic keeps records and tombstones.
RETENTION_CONFIGS = ("retention.ms", "delete.retention.ms")


def retention_differences(
    expected: Iterable[tuple[str, Mapping[str, str]]], found: Mapping[str, TopicState]
) -> list[str]:
    """Topics that keep records for another time than the settings say.

    Said at start, not refused: the topic's own config is what Kafka applies, and changing it
    is the operations' step that comes with changing a ``STOPSMS_RETENTION_*_DAYS`` setting
    (docs/operations.md, Retention).
    """
    notes = []
    for name, configs in expected:
        state = found.get(name)
        for key in RETENTION_CONFIGS:
            want = configs.get(key)
            if state is not None and want is not None and state.configs.get(key) != want:
                notes.append(
                    f"topic {name} has {key}={state.configs.get(key)}, the settings say {want} "
                    "(docs/operations.md, Retention)"
                )
    return notes


def expected_topics(topics: Topics, service: str) -> list[tuple[str, Mapping[str, str]]]:
    """The topics a service checks: every v1 topic, and its own faust changelogs."""
    own = topics.processor_group(service) + "-"
    return [
        *topics.all_specs(),
        *(spec for spec in topics.internal_specs() if spec[0].startswith(own)),
    ]


def producer_problems(name: str, acks: object, idempotent: bool) -> list[str]:
    """A producer of acknowledged records must wait for every in-sync replica, once."""
    problems = []
    if acks not in (-1, "all"):
        problems.append(f"the {name} producer uses acks={acks}; it must be all (-1)")
    if not idempotent:
        problems.append(f"the {name} producer is not idempotent")
    return problems


def describe_topics(
    kafka: KafkaAccess, names: list[str], wait_seconds: float
) -> dict[str, TopicState]:
    """Partitions, replication and effective configs of the named topics that exist.

    Waits up to ``wait_seconds`` for the broker (a service may start before Kafka does).
    """
    from kafka import KafkaAdminClient
    from kafka.admin import ConfigResource, ConfigResourceType  # type: ignore[import-untyped]
    from kafka.errors import KafkaError  # type: ignore[import-untyped]

    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            admin = KafkaAdminClient(**kafka.client_options(), client_id="stopsms-selfcheck")
            break
        except KafkaError as exc:
            if time.monotonic() > deadline:
                raise SelfCheckError(
                    f"Kafka at {kafka} did not answer within {wait_seconds:.0f} s: {exc!r}"
                ) from exc
            time.sleep(1)
    try:
        existing = set(admin.list_topics())
        present = [n for n in names if n in existing]
        if not present:
            return {}
        described = admin.describe_topics(present)
        resources = [ConfigResource(ConfigResourceType.TOPIC, n) for n in present]
        described_configs = admin.describe_configs(resources, config_filter="all")
        configs: dict[str, dict[str, str]] = {}
        for by_name in described_configs.values():
            for topic, entries in by_name.items():
                configs[topic] = {
                    key: str(data.get("value") if isinstance(data, dict) else data)
                    for key, data in entries.items()
                }
        return {
            t["name"]: TopicState(
                partitions=len(t["partitions"]),
                replication=min((len(p["replica_nodes"]) for p in t["partitions"]), default=0),
                configs=configs.get(t["name"], {}),
            )
            for t in described
        }
    finally:
        admin.close()


def check_kafka(
    settings: Settings,
    expected: list[tuple[str, Mapping[str, str]]],
    producers: Iterable[tuple[str, object, bool]] = (),
) -> None:
    """Raise :class:`SelfCheckError` listing every problem with Kafka or the producers."""
    problems = [p for name, acks, idem in producers for p in producer_problems(name, acks, idem)]
    names = [name for name, _ in expected]
    deadline = time.monotonic() + MISSING_TOPIC_WAIT_S
    while True:
        found = describe_topics(settings.kafka, names, settings.startup_wait_seconds)
        if len(found) == len(names) or time.monotonic() > deadline:
            break
        time.sleep(0.5)  # topics created a moment ago take a while to appear in the metadata
    for note in retention_differences(expected, found):
        log.warning("%s", note)
    production = settings.profile == "production"
    problems += topic_problems(expected, found, settings.partitions, production)
    if production and settings.kafka.security_protocol == "PLAINTEXT":
        problems.append(
            "the production profile needs Kafka authentication (its ACLs limit each service): "
            "set STOPSMS_KAFKA_SECURITY_PROTOCOL to SSL or SASL_SSL"
        )
    if problems:
        raise SelfCheckError(
            f"{len(problems)} problem(s) with Kafka:\n  - " + "\n  - ".join(problems)
        )
