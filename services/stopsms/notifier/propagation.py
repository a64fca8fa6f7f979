"""The proof of propagation, as the aggregation agent builds it from receipts.

A record starts when the notifier first sees a change (a PENDING receipt naming every
concerned party) and progresses as each party confirms (APPLIED receipts, from PSVAs'
acknowledgements and operators' committed offsets). Receipts may arrive in any order and more
than once; folding them is idempotent, and the record is done when every concerned party
applied the change. Pure functions, tested as a table.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from stopsms.v1 import events_pb2

PENDING = events_pb2.DELIVERY_STATUS_PENDING
APPLIED = events_pb2.DELIVERY_STATUS_APPLIED


@dataclass
class Propagation:
    """The aggregation state of one request (the table value)."""

    event_id: str
    request_id: str = ""
    origin_party_id: str = ""
    sender_id: str = ""
    action: int = 0
    action_time_ms: int = 0
    concerned: list[str] | None = None
    #: party id -> [kind, status, applied time in ms]
    parties: dict[str, list[int]] = field(default_factory=dict)
    done_time_ms: int = 0

    @property
    def done(self) -> bool:
        """True once every concerned party applied the change."""
        return self.concerned is not None and all(
            self.parties.get(p, [0, PENDING, 0])[1] == APPLIED for p in self.concerned
        )

    def applied(self) -> set[str]:
        """The parties that applied the change."""
        return {p for p, (_, status, _) in self.parties.items() if status == APPLIED}

    def to_json(self) -> bytes:
        """Serialise for the faust table."""
        return json.dumps(self.__dict__, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Propagation:
        """Parse a table value."""
        return cls(**json.loads(raw))

    def to_record(self) -> events_pb2.PropagationRecord:
        """The public record published to stopsms.propagation.v1."""
        record = events_pb2.PropagationRecord(
            event_id=self.event_id,
            request_id=self.request_id,
            origin_party_id=self.origin_party_id,
            sender_id=self.sender_id,
            action=self.action,
            done=self.done,
        )
        record.action_time.FromMilliseconds(self.action_time_ms)
        for party_id in sorted(set(self.concerned or []) | set(self.parties)):
            kind, status, applied_ms = self.parties.get(party_id, [0, PENDING, 0])
            delivery = record.deliveries.add(party_id=party_id, party_kind=kind, status=status)
            if applied_ms:
                delivery.applied_time.FromMilliseconds(applied_ms)
        if self.done:
            record.done_time.FromMilliseconds(self.done_time_ms)
        return record


def applied_parties(receipt: events_pb2.DeliveryReceipt) -> list[str]:
    """The parties a receipt speaks for: its ``party_id``, or the several of an APPLIED round."""
    if receipt.party_id:
        return [receipt.party_id]
    if receipt.status == APPLIED:
        return list(receipt.applied_party_ids)
    return []


def fold(
    state: Propagation | None, receipt: events_pb2.DeliveryReceipt
) -> tuple[Propagation, bool]:
    """Fold one receipt into the state; return the new state and whether it changed.

    A receipt that names several parties (``applied_party_ids``) carries no kind; the kinds
    come from the PENDING receipt's directory lookup, or stay 0 until then.
    """
    current = state or Propagation(event_id=receipt.event_id)
    changed = state is None
    if not current.request_id and receipt.request_id:
        current.request_id = receipt.request_id
        current.origin_party_id = receipt.origin_party_id
        current.sender_id = receipt.sender_id
        current.action = receipt.action
        changed = True
    if not current.action_time_ms and receipt.HasField("action_time"):
        current.action_time_ms = receipt.action_time.ToMilliseconds()
        changed = True
    if receipt.status == PENDING:
        concerned = sorted(set(current.concerned or []) | set(receipt.concerned_party_ids))
        if concerned != current.concerned:
            current.concerned = concerned
            changed = True
    for party_id in applied_parties(receipt):
        before = current.parties.get(party_id)
        kind, status, applied_ms = before or [receipt.party_kind, PENDING, 0]
        if receipt.status == APPLIED and status != APPLIED:
            status, applied_ms = APPLIED, receipt.applied_time.ToMilliseconds()
        after = [kind or receipt.party_kind, status, applied_ms]
        if after != before:
            current.parties[party_id] = after
            changed = True
    if current.done and not current.done_time_ms:
        current.done_time_ms = max(
            [current.parties[p][2] for p in current.concerned or []] or [current.action_time_ms]
        )
        changed = True
    return current, changed
