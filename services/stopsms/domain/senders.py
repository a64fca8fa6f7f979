"""The register of declared senders: who sends under which names, for whom, and what is allowed.

A sender is a record of its own (``Sender`` on ``stopsms.senders.v1``, keyed by its canonical
id), not a line in a party's entry: it has the parties that may send for it, its other ids
(aliases: its short code and its name resolve to it everywhere, so a STOP to the short code
suppresses the name too), and a status only the regulator sets. This module holds the rules
and the in-memory register every process builds from the topic; nothing here does I/O.

Who may do what:

- an operator or a PSVA declares a sender it sends for (it must be among the sending parties);
  a new sender is PENDING: declared (so its opt-outs are not flagged ``undeclared_sender``), but
  no StopSMS link is issued for it until the regulator makes it ACTIVE;
- a party that sends for a sender updates its names, entity, declaration and parties, never
  its status, and cannot take an id or alias another sender holds;
- the regulator reviews: ACTIVE, SUSPENDED (with a reason) or REVOKED (with a reason).

Entitlements follow the sending parties whatever the status: a PSVA keeps receiving the
opt-outs of a suspended sender of its own and may still check numbers for it, since its
duty to honour them does not stop; only new links and the message check depend on ACTIVE.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from stopsms.domain.parties import InvalidSender, Party, check_sender_id
from stopsms.v1 import senders_pb2

PENDING = senders_pb2.SENDER_STATUS_PENDING
ACTIVE = senders_pb2.SENDER_STATUS_ACTIVE
SUSPENDED = senders_pb2.SENDER_STATUS_SUSPENDED
REVOKED = senders_pb2.SENDER_STATUS_REVOKED
#: Statuses the regulator may set, and those that need a reason.
REVIEW_STATUSES = frozenset({ACTIVE, SUSPENDED, REVOKED})
NEEDS_REASON = frozenset({SUSPENDED, REVOKED})
#: Kinds a sender may be declared as.
KINDS = frozenset(
    {
        senders_pb2.SENDER_KIND_ALPHANUMERIC,
        senders_pb2.SENDER_KIND_SHORT_CODE,
        senders_pb2.SENDER_KIND_LONG_NUMBER,
    }
)
MAX_ALIASES = 8
MAX_TEXT_FIELD = 200


def status_name(status: int) -> str:
    """The status as people read it: "ACTIVE", "PENDING", "SUSPENDED", "REVOKED"."""
    return senders_pb2.SenderStatus.Name(status).removeprefix("SENDER_STATUS_")  # type: ignore[arg-type]


class SenderRefused(ValueError):
    """A declaration, update or review the rules refuse; ``field`` names what is wrong."""

    def __init__(self, field: str, message: str, *, permission: bool = False) -> None:
        super().__init__(message)
        self.field = field
        self.permission = permission


@dataclass(frozen=True)
class SenderRegister:
    """Every sender by canonical id, with its aliases resolved: an immutable snapshot."""

    by_id: Mapping[str, senders_pb2.Sender]
    by_alias: Mapping[str, str]

    @classmethod
    def of(cls, senders: Iterable[senders_pb2.Sender]) -> SenderRegister:
        """Index ``senders`` (the topic's current values); an alias maps to its sender's id."""
        by_id = {s.sender_id: s for s in senders}
        by_alias: dict[str, str] = {}
        for sender_id, sender in sorted(by_id.items()):
            for alias in sender.aliases:
                if alias not in by_id:  # an id always means its own sender
                    by_alias.setdefault(alias, sender_id)
        return cls(by_id, by_alias)

    @classmethod
    def empty(cls) -> SenderRegister:
        """No sender declared."""
        return cls({}, {})

    def resolve(self, sender_id: str) -> str:
        """The canonical id ``sender_id`` stands for (itself when it is no alias)."""
        return self.by_alias.get(sender_id, sender_id)

    def get(self, sender_id: str) -> senders_pb2.Sender | None:
        """The sender ``sender_id`` (an id or an alias) names, or None when undeclared."""
        return self.by_id.get(self.resolve(sender_id))

    def holder_of(self, sender_id: str) -> str | None:
        """The id of the sender that holds ``sender_id`` as its id or an alias."""
        if sender_id in self.by_id:
            return sender_id
        return self.by_alias.get(sender_id)

    def senders_of(self, party_id: str) -> frozenset[str]:
        """The ids of every sender ``party_id`` sends for, whatever their status."""
        return frozenset(
            s.sender_id for s in self.by_id.values() if party_id in s.sending_party_ids
        )

    def declared_ids(self) -> frozenset[str]:
        """Every declared sender's id, whatever its status."""
        return frozenset(self.by_id)

    def may_issue_links(self, sender_id: str) -> bool:
        """Whether StopSMS links may be issued for ``sender_id``: only an ACTIVE sender."""
        sender = self.get(sender_id)
        return sender is not None and sender.status == ACTIVE


def _canonical_ids(field: str, values: Iterable[str]) -> list[str]:
    ids: list[str] = []
    for value in values:
        try:
            canonical = check_sender_id(value, required=True)
        except InvalidSender as exc:
            raise SenderRefused(field, f"{field}: {exc}") from exc
        if canonical not in ids:
            ids.append(canonical)
    return ids


def _text(field: str, value: str, *, required: bool = False) -> str:
    value = " ".join(value.split())
    if required and not value:
        raise SenderRefused(field, f"{field} is required")
    if len(value) > MAX_TEXT_FIELD:
        raise SenderRefused(field, f"{field} has at most {MAX_TEXT_FIELD} characters")
    return value


def _checked_body(
    proposed: senders_pb2.Sender,
    register: SenderRegister,
    parties: Mapping[str, Party],
    listed: frozenset[str],
) -> senders_pb2.Sender:
    """The names, entity, declaration and parties of ``proposed``, checked and canonical.

    ``listed`` are the sender ids the directory file still lists (not yet migrated): taken too.
    """
    sender_id = _canonical_ids("sender.sender_id", [proposed.sender_id])[0]
    if proposed.kind not in KINDS:
        raise SenderRefused("sender.kind", "sender.kind: ALPHANUMERIC, SHORT_CODE or LONG_NUMBER")
    aliases = [a for a in _canonical_ids("sender.aliases", proposed.aliases) if a != sender_id]
    if len(aliases) > MAX_ALIASES:
        raise SenderRefused("sender.aliases", f"sender.aliases: at most {MAX_ALIASES}")
    for name in [sender_id, *aliases]:
        holder = register.holder_of(name)
        if holder is not None and holder != sender_id:
            raise SenderRefused(
                "sender.aliases" if name != sender_id else "sender.sender_id",
                f"{name} is already sender {holder}'s id or alias",
            )
        if holder is None and name in listed:
            raise SenderRefused(
                "sender.aliases" if name != sender_id else "sender.sender_id",
                f"{name} is a sender the parties directory lists: it becomes a record through "
                "the migration (stopsms senders migrate)",
            )
    party_ids = sorted(set(proposed.sending_party_ids))
    if not party_ids:
        raise SenderRefused("sender.sending_party_ids", "sender.sending_party_ids is required")
    for party_id in party_ids:
        party = parties.get(party_id)
        if party is None or not (party.is_operator or party.is_psva):
            raise SenderRefused(
                "sender.sending_party_ids",
                f"sender.sending_party_ids: {party_id} is not an operator or a PSVA",
            )
    return senders_pb2.Sender(
        sender_id=sender_id,
        kind=proposed.kind,
        display_name=_text("sender.display_name", proposed.display_name) or sender_id,
        aliases=aliases,
        legal_entity=_text("sender.legal_entity", proposed.legal_entity, required=True),
        cndp_declaration=_text("sender.cndp_declaration", proposed.cndp_declaration),
        sending_party_ids=party_ids,
    )


def declare(
    proposed: senders_pb2.Sender,
    caller: Party,
    register: SenderRegister,
    parties: Mapping[str, Party],
    listed: frozenset[str] = frozenset(),
) -> senders_pb2.Sender:
    """The new sender ``caller`` declares, PENDING; raises :class:`SenderRefused`."""
    if not (caller.is_operator or caller.is_psva):
        raise SenderRefused("caller", "only operators and PSVAs declare senders", permission=True)
    body = _checked_body(proposed, register, parties, listed)
    if body.sender_id in register.by_id:
        raise SenderRefused("sender.sender_id", f"sender {body.sender_id} is already declared")
    if caller.id not in body.sending_party_ids:
        raise SenderRefused(
            "sender.sending_party_ids",
            "sender.sending_party_ids must name the caller: a party declares its own senders",
        )
    body.status = PENDING
    body.updated_by = caller.id
    return body


def update(
    proposed: senders_pb2.Sender,
    caller: Party,
    register: SenderRegister,
    parties: Mapping[str, Party],
    listed: frozenset[str] = frozenset(),
) -> senders_pb2.Sender:
    """``proposed`` applied to the sender it names; its status stays the regulator's."""
    named = _canonical_ids("sender.sender_id", [proposed.sender_id])[0]
    current = register.get(named)
    if current is None:
        raise SenderRefused("sender.sender_id", f"sender {named} is not declared")
    if caller.id not in current.sending_party_ids:
        raise SenderRefused("sender.sender_id", "the caller does not send for it", permission=True)
    body = _checked_body(_with_id(proposed, current.sender_id), register, parties, listed)
    body.status, body.status_reason = current.status, current.status_reason
    body.updated_by = caller.id
    return body


def _with_id(sender: senders_pb2.Sender, sender_id: str) -> senders_pb2.Sender:
    renamed = senders_pb2.Sender()
    renamed.CopyFrom(sender)
    renamed.sender_id = sender_id
    return renamed


def review(
    sender_id: str, status: int, reason: str, caller: Party, register: SenderRegister
) -> senders_pb2.Sender:
    """The sender with the regulator's decision; raises :class:`SenderRefused`."""
    if not caller.is_regulator:
        raise SenderRefused("caller", "only the regulator reviews senders", permission=True)
    named = _canonical_ids("sender_id", [sender_id])[0]
    current = register.get(named)
    if current is None:
        raise SenderRefused("sender_id", f"sender {named} is not declared")
    if status not in REVIEW_STATUSES:
        raise SenderRefused("status", "status: ACTIVE, SUSPENDED or REVOKED")
    reason = _text("reason", reason, required=status in NEEDS_REASON)
    reviewed = senders_pb2.Sender()
    reviewed.CopyFrom(current)
    reviewed.status = status
    reviewed.status_reason = reason if status in NEEDS_REASON else ""
    reviewed.updated_by = caller.id
    return reviewed


def migrated_from(parties: Iterable[Party]) -> list[senders_pb2.Sender]:
    """The directory's ``senders:`` lists as ACTIVE records, one per sender id, by id.

    A sender listed by several parties (an operator and the PSVA that sends for the brand)
    becomes one record with both among its sending parties.
    """
    by_id: dict[str, set[str]] = {}
    for party in parties:
        for sender_id in party.senders:
            by_id.setdefault(sender_id, set()).add(party.id)
    return [
        senders_pb2.Sender(
            sender_id=sender_id,
            kind=(
                senders_pb2.SENDER_KIND_SHORT_CODE
                if sender_id.isdigit() and len(sender_id) <= 6
                else senders_pb2.SENDER_KIND_LONG_NUMBER
                if sender_id.isdigit()
                else senders_pb2.SENDER_KIND_ALPHANUMERIC
            ),
            display_name=sender_id,
            legal_entity="(imported from the parties directory)",
            sending_party_ids=sorted(party_ids),
            status=ACTIVE,
            updated_by="platform",
        )
        for sender_id, party_ids in sorted(by_id.items())
    ]
