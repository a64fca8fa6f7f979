"""The sender register's rules: who declares, updates and reviews, and how aliases resolve."""

from __future__ import annotations

import pytest

from stopsms.domain.parties import PartiesDirectory, Party
from stopsms.domain.senders import (
    ACTIVE,
    PENDING,
    REVOKED,
    SUSPENDED,
    SenderRefused,
    SenderRegister,
    declare,
    migrated_from,
    review,
    update,
)
from stopsms.v1 import events_pb2, senders_pb2

OP, PSVA = events_pb2.PARTY_KIND_OPERATOR, events_pb2.PARTY_KIND_PSVA
ATLAS = Party("atlas", PSVA, "Atlas SMS")
SAHARA = Party("sahara", PSVA, "Sahara SMS")
IAM = Party("iam", OP, "IAM", frozenset({"IAM"}))
CNDP = Party("cndp", events_pb2.PARTY_KIND_REGULATOR, "CNDP")
PARTIES = {p.id: p for p in (ATLAS, SAHARA, IAM, CNDP)}
ALPHA = senders_pb2.SENDER_KIND_ALPHANUMERIC


def proposed(sender_id: str = " jumia ", **fields: object) -> senders_pb2.Sender:
    values: dict[str, object] = {
        "kind": ALPHA,
        "aliases": ["3030", "Jumia Maroc"],
        "legal_entity": "Jumia Morocco SARL",
        "cndp_declaration": "D-2024-123",
        "sending_party_ids": ["atlas"],
    }
    values.update(fields)
    return senders_pb2.Sender(sender_id=sender_id, **values)  # type: ignore[arg-type]


def registered(*senders: senders_pb2.Sender) -> SenderRegister:
    return SenderRegister.of(senders)


def test_a_psva_declares_its_own_sender_pending_with_canonical_ids() -> None:
    sender = declare(proposed(), ATLAS, SenderRegister.empty(), PARTIES)
    assert sender.sender_id == "JUMIA" and sender.status == PENDING
    assert list(sender.aliases) == ["3030", "JUMIA MAROC"]
    assert sender.updated_by == "atlas" and sender.display_name == "JUMIA"


@pytest.mark.parametrize(
    ("caller", "sender", "field"),
    [
        (CNDP, proposed(), "caller"),
        (SAHARA, proposed(), "sender.sending_party_ids"),  # not among its sending parties
        (ATLAS, proposed(sending_party_ids=["atlas", "ghost"]), "sender.sending_party_ids"),
        (ATLAS, proposed(sending_party_ids=["atlas", "cndp"]), "sender.sending_party_ids"),
        (ATLAS, proposed(legal_entity=""), "sender.legal_entity"),
        (ATLAS, proposed(kind=0), "sender.kind"),
        (ATLAS, proposed("<script>"), "sender.sender_id"),
        (ATLAS, proposed(aliases=["ok", "bad/alias"]), "sender.aliases"),
    ],
)
def test_a_declaration_the_rules_refuse_names_the_field(
    caller: Party, sender: senders_pb2.Sender, field: str
) -> None:
    with pytest.raises(SenderRefused) as refused:
        declare(sender, caller, SenderRegister.empty(), PARTIES)
    assert refused.value.field == field


def test_an_id_or_alias_another_sender_holds_cannot_be_taken() -> None:
    jumia = declare(proposed(), ATLAS, SenderRegister.empty(), PARTIES)
    register = registered(jumia)
    with pytest.raises(SenderRefused, match="already declared"):
        declare(proposed("JUMIA"), ATLAS, register, PARTIES)
    with pytest.raises(SenderRefused, match="already sender JUMIA's"):
        declare(proposed("3030", aliases=[]), ATLAS, register, PARTIES)
    with pytest.raises(SenderRefused, match="already sender JUMIA's"):
        declare(proposed("MARJANE", aliases=["Jumia Maroc"]), ATLAS, register, PARTIES)


def test_an_alias_resolves_to_its_sender_and_an_id_always_means_itself() -> None:
    jumia = declare(proposed(), ATLAS, SenderRegister.empty(), PARTIES)
    register = registered(jumia)
    assert register.resolve("3030") == "JUMIA" and register.resolve("JUMIA MAROC") == "JUMIA"
    assert register.get("3030") == jumia and register.resolve("MARJANE") == "MARJANE"
    assert register.get("MARJANE") is None


def test_only_a_sending_party_updates_and_the_status_stays_the_regulators() -> None:
    jumia = review(
        "JUMIA",
        ACTIVE,
        "",
        CNDP,
        registered(declare(proposed(), ATLAS, SenderRegister.empty(), PARTIES)),
    )
    register = registered(jumia)
    changed = update(
        proposed("3030", sending_party_ids=["atlas", "sahara"], status=REVOKED),
        ATLAS,
        register,
        PARTIES,
    )
    assert changed.sender_id == "JUMIA" and changed.status == ACTIVE
    assert list(changed.sending_party_ids) == ["atlas", "sahara"]
    with pytest.raises(SenderRefused) as refused:
        update(proposed(), SAHARA, register, PARTIES)
    assert refused.value.permission


def test_the_regulator_reviews_and_a_suspension_needs_a_reason() -> None:
    register = registered(declare(proposed(), ATLAS, SenderRegister.empty(), PARTIES))
    assert not register.may_issue_links("JUMIA")  # pending
    with pytest.raises(SenderRefused) as refused:
        review("JUMIA", SUSPENDED, "  ", CNDP, register)
    assert refused.value.field == "reason"
    with pytest.raises(SenderRefused) as refused:
        review("JUMIA", ACTIVE, "", ATLAS, register)
    assert refused.value.permission
    active = review("3030", ACTIVE, "ignored", CNDP, register)
    assert active.status == ACTIVE and active.status_reason == ""
    assert registered(active).may_issue_links("3030")
    suspended = review("JUMIA", SUSPENDED, "complaints", CNDP, registered(active))
    assert suspended.status_reason == "complaints"
    assert not registered(suspended).may_issue_links("JUMIA")


def test_the_directory_lists_migrate_as_one_active_record_per_sender() -> None:
    parties = [
        Party("iam", OP, "IAM", frozenset({"IAM", "JUMIA"})),
        Party("atlas", PSVA, "Atlas", frozenset({"JUMIA", "3030"})),
        Party("orange", OP, "Orange"),
    ]
    senders = migrated_from(parties)
    assert [s.sender_id for s in senders] == ["3030", "IAM", "JUMIA"]
    assert all(s.status == ACTIVE for s in senders)
    register = registered(*senders)
    assert register.senders_of("atlas") == {"JUMIA", "3030"}
    assert register.senders_of("iam") == {"IAM", "JUMIA"}
    assert register.get("3030").kind == senders_pb2.SENDER_KIND_SHORT_CODE  # type: ignore[union-attr]


def test_the_directory_entitles_parties_from_the_register_and_a_file_reload_keeps_it() -> None:
    directory = PartiesDirectory([ATLAS, SAHARA, IAM, CNDP])
    told: list[str] = []
    directory.on_replace(lambda d: told.append("replaced"))
    pending = declare(proposed(), ATLAS, SenderRegister.empty(), PARTIES)
    changes = directory.replace(directory.with_senders(registered(pending)))
    assert changes == ["atlas: senders granted JUMIA"] and told == ["replaced"]
    assert directory.get("atlas").sends_for("JUMIA")  # type: ignore[union-attr]
    assert directory.is_declared("JUMIA") and directory.resolve_sender("3030") == "JUMIA"
    assert directory.get("iam").senders == {"IAM"}  # type: ignore[union-attr]
    # the file is read again (its parties unchanged): the register's senders stay
    directory.replace(PartiesDirectory([ATLAS, SAHARA, IAM, CNDP]))
    assert directory.get("atlas").sends_for("JUMIA")  # type: ignore[union-attr]
    # the regulator's register moves JUMIA to another PSVA: atlas loses it at once
    moved = senders_pb2.Sender()
    moved.CopyFrom(pending)
    del moved.sending_party_ids[:]
    moved.sending_party_ids.append("sahara")
    changes = directory.replace(directory.with_senders(registered(moved)))
    assert changes == ["atlas: senders withdrawn JUMIA", "sahara: senders granted JUMIA"]
