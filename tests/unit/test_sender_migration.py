"""The migration of the shipped directory's senders lists: the same entitlements as before.

``tests/data/parties_before_migration.yaml`` is the local platform's directory as it was
shipped with its ``senders:`` lists; the package now ships it without them, and the register's
seed (``config/senders.yaml``) in their place.
"""

from pathlib import Path

import yaml

from stopsms.adapters.bus import InMemoryBus, InMemoryPublisher
from stopsms.adapters.settings import IntakeSettings
from stopsms.domain.parties import PartiesDirectory
from stopsms.domain.senders import ACTIVE, SenderRegister
from stopsms.domain.topics import Topics
from stopsms.tools.senders import (
    current_register,
    local_directory,
    local_register,
    migrate_directory,
    parties_only,
)
from stopsms.v1 import senders_pb2

TOPICS = Topics()
SHIPPED = IntakeSettings().parties_file
BEFORE = Path(__file__).resolve().parents[1] / "data" / "parties_before_migration.yaml"
K8S = Path(__file__).resolve().parents[2] / "k8s" / "base" / "parties.yaml"


def entitlements(directory: PartiesDirectory) -> dict[str, object]:
    """Everything a service reads of who sends for what."""
    senders = directory.declared_senders()
    return {
        "parties": {p.id: (p.kind, sorted(p.senders)) for p in directory},
        "declared": senders,
        "concerned": {s: [p.id for p in directory.concerned_by(s)] for s in senders + [""]},
        "sends_for": {(p.id, s): p.sends_for(s) for p in directory for s in senders + ["UNKNOWN"]},
    }


async def test_the_shipped_directory_migrates_to_the_same_entitlements(tmp_path) -> None:
    bus = InMemoryBus()
    publisher = InMemoryPublisher(bus)
    before = PartiesDirectory.load(BEFORE)
    done = await migrate_directory(before, bus, publisher, TOPICS)
    assert sorted(done.imported) == before.declared_senders() and not done.already
    history = [
        senders_pb2.SenderChanged.FromString(v)
        for _, v, _ in publisher.records[TOPICS.sender_changes]
    ]
    assert {h.change for h in history} == {senders_pb2.SENDER_CHANGE_MIGRATED}

    stripped = tmp_path / "parties.yaml"
    stripped.write_text(parties_only(BEFORE.read_text()))
    assert "senders" not in yaml.safe_load(stripped.read_text())["parties"][0]
    register = SenderRegister.of((await current_register(bus, TOPICS)).values())
    assert {s.status for s in register.by_id.values()} == {ACTIVE}
    after = PartiesDirectory.load(stripped)
    assert all(not p.senders for p in after)  # the file holds parties only
    after.replace(after.with_senders(register))
    assert entitlements(after) == entitlements(before)

    # a second run imports nothing
    again = await migrate_directory(before, bus, publisher, TOPICS)
    assert not again.imported and sorted(again.already) == before.declared_senders()


def test_parties_only_drops_both_forms_of_a_list_and_keeps_the_rest() -> None:
    text = (
        "# who may call\n"
        "parties:\n"
        "  - id: iam\n"
        "    kind: operator\n"
        '    senders: [IAM, "1313"]\n'
        "    rate_limit: 50\n"
        "  - id: atlas-sms\n"
        "    kind: psva\n"
        "    senders:\n"
        "      - JUMIA\n"
        "      - MARJANE\n"
        "    name: Atlas SMS\n"
        "  - id: cndp\n"
        "    kind: regulator\n"
    )
    assert parties_only(text) == (
        "# who may call\n"
        "parties:\n"
        "  - id: iam\n"
        "    kind: operator\n"
        "    rate_limit: 50\n"
        "  - id: atlas-sms\n"
        "    kind: psva\n"
        "    name: Atlas SMS\n"
        "  - id: cndp\n"
        "    kind: regulator\n"
    )


def test_the_deployments_directory_strips_to_a_valid_directory(tmp_path) -> None:
    stripped = tmp_path / "parties.yaml"
    stripped.write_text(parties_only(K8S.read_text()))
    parties = PartiesDirectory.load(stripped)
    assert {p.id for p in parties} == {p.id for p in PartiesDirectory.load(K8S)}


def test_the_shipped_directory_and_the_seed_hold_what_the_lists_held() -> None:
    assert all(not p.senders for p in PartiesDirectory.load(SHIPPED))
    assert entitlements(local_directory()) == entitlements(PartiesDirectory.load(BEFORE))
    assert {s.status for s in local_register().by_id.values()} == {ACTIVE}
