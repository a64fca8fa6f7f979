"""`stopsms senders migrate` and `stopsms senders import` on the real broker, run as an SRE would.

The migration of a directory that still lists senders publishes one ACTIVE record per sender
and a MIGRATED change in the history, writes the directory without its lists, and a second run
imports nothing; a seed file imports its records once, and a broken one is refused by line.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from stopsms.adapters.bus import KafkaBus
from stopsms.adapters.settings import Settings
from stopsms.domain.parties import PartiesDirectory
from stopsms.domain.senders import ACTIVE
from stopsms.domain.topics import Topics
from stopsms.tools.senders import current_register
from stopsms.v1 import senders_pb2

pytestmark = pytest.mark.integration

OLD_DIRECTORY = Path(__file__).parents[1] / "data" / "parties_before_migration.yaml"


def stopsms(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stopsms.tools.cli", "senders", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def history(bootstrap: str, topics: Topics) -> list[senders_pb2.SenderChanged]:
    """Every SenderChanged on the history topic, read from the beginning to its end."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        parts = [
            TopicPartition(topics.sender_changes, p)
            for p in consumer.partitions_for_topic(topics.sender_changes) or ()
        ]
        consumer.assign(parts)
        consumer.seek_to_beginning()
        ends = consumer.end_offsets(parts)
        changes: list[senders_pb2.SenderChanged] = []
        while any(consumer.position(p) < ends[p] for p in parts):
            for records in consumer.poll(timeout_ms=1000).values():
                changes.extend(senders_pb2.SenderChanged.FromString(r.value) for r in records)
        return changes
    finally:
        consumer.close()


async def test_migration_imports_the_directory_once_and_strips_it(
    service_env: dict[str, str], namespace: str, tmp_path: Path
) -> None:
    stripped = tmp_path / "parties.yaml"
    first = stopsms(
        service_env, "migrate", "--parties", str(OLD_DIRECTORY), "--write-parties", str(stripped)
    )
    assert first.returncode == 0, first.stderr
    old = PartiesDirectory.load(OLD_DIRECTORY)
    listed = {sender for party in old for sender in party.senders}
    assert f"imported {len(listed)} sender(s)" in first.stdout, first.stdout

    settings = Settings.from_env(service_env)
    topics = Topics(namespace)
    register = await current_register(KafkaBus(settings.kafka_bootstrap), topics)
    assert set(register) == listed
    assert all(record.status == ACTIVE for record in register.values())
    for party in old:
        for sender in party.senders:
            assert party.id in register[sender].sending_party_ids, (party.id, sender)
    migrated = [c for c in history(settings.kafka_bootstrap, topics)]
    assert {c.sender.sender_id for c in migrated} == listed
    assert {c.change for c in migrated} == {senders_pb2.SENDER_CHANGE_MIGRATED}

    assert "senders:" not in stripped.read_text()
    assert [p.id for p in PartiesDirectory.load(stripped)] == [p.id for p in old]

    again = stopsms(service_env, "migrate", "--parties", str(OLD_DIRECTORY))
    assert again.returncode == 0, again.stderr
    assert "imported 0 sender(s)" in again.stdout, again.stdout
    assert len(history(settings.kafka_bootstrap, topics)) == len(listed), "a rerun wrote again"


async def test_a_seed_file_is_imported_once_and_a_broken_one_refused(
    service_env: dict[str, str], namespace: str, tmp_path: Path
) -> None:
    seed = tmp_path / "senders.yaml"
    seed.write_text(
        "senders:\n"
        "  - {sender_id: BIM, kind: SENDER_KIND_ALPHANUMERIC, display_name: BIM Stores,\n"
        "     aliases: ['3030'], sending_party_ids: [atlas-sms]}\n"
        "  - {sender_id: ACIMA, kind: SENDER_KIND_ALPHANUMERIC, status: SENDER_STATUS_PENDING,\n"
        "     sending_party_ids: [sahara-push]}\n"
    )
    done = stopsms(service_env, "import", str(seed))
    assert done.returncode == 0, done.stderr
    assert "imported 2 sender(s): BIM, ACIMA" in done.stdout, done.stdout
    again = stopsms(service_env, "import", str(seed))
    assert "imported 0 sender(s)" in again.stdout and "BIM, ACIMA" in again.stdout, again.stdout

    settings = Settings.from_env(service_env)
    register = await current_register(KafkaBus(settings.kafka_bootstrap), Topics(namespace))
    assert register["BIM"].status == ACTIVE and list(register["BIM"].aliases) == ["3030"]
    assert register["ACIMA"].status == senders_pb2.SENDER_STATUS_PENDING

    broken = tmp_path / "broken.yaml"
    broken.write_text("senders:\n  - {sender_id: jumia, kind: SENDER_KIND_ALPHANUMERIC}\n")
    refused = stopsms(service_env, "import", str(broken))
    assert refused.returncode == 2
    assert "senders[0]" in refused.stderr, refused.stderr
