"""What a PSVA is given of a change: the one conversion its stream and its webhook share.

A PSVA is entitled to the numbers of the changes that concern it (over mutual TLS), so the
sealed number is opened here, as late as possible, for the party that receives it.
"""

from __future__ import annotations

from stopsms.domain.privacy import Pseudonymiser
from stopsms.v1 import events_pb2, notifier_pb2


def to_change(
    change: events_pb2.SuppressionChanged, pseudonymiser: Pseudonymiser
) -> notifier_pb2.Change:
    """A change as PSVAs receive it (the number unsealed: they are entitled to it)."""
    out = notifier_pb2.Change(
        event_id=change.event_id,
        msisdn=pseudonymiser.unseal(change.sealed_msisdn),
        sender_id=change.sender_id,
        state=change.state,
        action=change.action,
        version=change.version,
        changed=change.changed,
        subject=change.subject,
        previous_subject=change.previous_subject,
    )
    out.action_time.CopyFrom(change.action_time)
    return out
