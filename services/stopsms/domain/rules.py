"""The registry's rules: how preferences combine, and how a request becomes a decision.

Pure functions over plain data, so they are tested as a table (tests/unit/test_rules.py) and
used unchanged by the faust agent and by ``Check``.

How preferences combine (DOMAIN.md), for a number and a sender, with S the sender's record and
G the global one: S opted out → SUPPRESSED; G opted out and no S newer than G → SUPPRESSED;
otherwise ALLOWED. "Newer" is the registry's per-subject version, never a clock.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from stopsms.domain.topics import GLOBAL_SCOPE
from stopsms.domain.viewcodec import ScopeEntry
from stopsms.v1 import events_pb2, registry_pb2

SUPPRESSED = events_pb2.STATE_SUPPRESSED
ALLOWED = events_pb2.STATE_ALLOWED


@dataclass(frozen=True)
class Verdict:
    """The answer for one number and sender, and the record that decided it."""

    suppressed: bool
    matched_scope: int
    record: ScopeEntry | None

    @property
    def verdict(self) -> int:
        """The protobuf verdict value."""
        return registry_pb2.VERDICT_SUPPRESSED if self.suppressed else registry_pb2.VERDICT_ALLOWED


def combine(sender: ScopeEntry | None, global_: ScopeEntry | None) -> Verdict:
    """Apply the DOMAIN.md rules to the sender's and the global record."""
    if sender is not None and sender.state == SUPPRESSED:
        return Verdict(True, registry_pb2.MATCHED_SCOPE_SENDER, sender)
    if (
        global_ is not None
        and global_.state == SUPPRESSED
        and (sender is None or sender.version < global_.version)
    ):
        return Verdict(True, registry_pb2.MATCHED_SCOPE_GLOBAL, global_)
    if sender is not None:
        return Verdict(False, registry_pb2.MATCHED_SCOPE_SENDER, sender)
    if global_ is not None:
        return Verdict(False, registry_pb2.MATCHED_SCOPE_GLOBAL, global_)
    return Verdict(False, registry_pb2.MATCHED_SCOPE_UNSPECIFIED, None)


@dataclass
class SubjectDecisions:
    """Everything the registry remembers about one subject: its table value.

    ``decided`` maps every event id already decided to (version, state, changed), which makes
    the agent idempotent: a redelivered request is recognised and not decided twice.
    ``resealed`` maps a scope to the version whose record was published again under the
    current data key (registry/resealing.py), so a later pass does not re-seal it again.
    ``moved_to`` names the subject under the current pseudonym key that this subject's
    decisions moved to (registry/rekeying.py), at ``moved_ms``: from then on its requests are
    passed on there, never decided here.
    """

    version: int = 0
    scopes: dict[str, ScopeEntry] = field(default_factory=dict)
    decided: dict[str, tuple[int, int, bool]] = field(default_factory=dict)
    resealed: dict[str, int] = field(default_factory=dict)
    moved_to: str = ""
    moved_ms: int = 0

    def suppressed_in(self, scope: str) -> bool:
        """The effective verdict of a scope (``*`` = global) under the rules."""
        global_ = self.scopes.get(GLOBAL_SCOPE)
        if scope == GLOBAL_SCOPE:
            return global_ is not None and global_.state == SUPPRESSED
        return combine(self.scopes.get(scope), global_).suppressed

    def to_json(self) -> str:
        """Serialise for the faust table (and its changelog)."""
        value: dict[str, object] = {
            "v": self.version,
            "s": {k: [e.state, e.version, e.action_time_ms] for k, e in self.scopes.items()},
            "d": {k: list(v) for k, v in self.decided.items()},
        }
        if self.resealed:  # only while a re-sealing has marked it: most states never are
            value["r"] = self.resealed
        if self.moved_to:  # only during a pseudonym re-keying
            value["m"] = [self.moved_to, self.moved_ms]
        return json.dumps(value, separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str | bytes | None) -> SubjectDecisions:
        """Parse a table value (None: a subject never seen)."""
        if not raw:
            return cls()
        data = json.loads(raw)
        return cls(
            version=int(data["v"]),
            scopes={k: ScopeEntry(*map(int, v)) for k, v in data["s"].items()},
            decided={k: (int(v[0]), int(v[1]), bool(v[2])) for k, v in data["d"].items()},
            resealed={k: int(v) for k, v in data.get("r", {}).items()},
            moved_to=str(data["m"][0]) if "m" in data else "",
            moved_ms=int(data["m"][1]) if "m" in data else 0,
        )


def decide(
    state: SubjectDecisions, request: events_pb2.PreferenceRequested, decided_time_ms: int
) -> tuple[events_pb2.SuppressionChanged | None, SubjectDecisions]:
    """Decide one request: the record to publish (None for a duplicate) and the new state.

    The record depends only on the request, the prior state and ``decided_time_ms`` (the
    request record's own timestamp), so deciding the same request again after a crash yields
    an identical record.
    """
    if request.event_id in state.decided:
        return None, state
    scope = request.sender_id or GLOBAL_SCOPE
    before = state.suppressed_in(scope)
    version = state.version + 1
    new_state = SUPPRESSED if request.action == events_pb2.ACTION_OPT_OUT else ALLOWED
    action_ms = request.action_time.ToMilliseconds()
    after = SubjectDecisions(
        version=version,
        scopes={**state.scopes, scope: ScopeEntry(new_state, version, action_ms)},
        decided=dict(state.decided),
        # The scope decided now is published under the current key; the others keep their mark.
        resealed={k: v for k, v in state.resealed.items() if k != scope},
    )
    changed = before != after.suppressed_in(scope)
    after.decided[request.event_id] = (version, new_state, changed)
    record = events_pb2.SuppressionChanged(
        event_id=request.event_id,
        request_id=request.request_id,
        party_id=request.party_id,
        action=request.action,
        sender_id=request.sender_id,
        channel=request.channel,
        subject=request.subject,
        undeclared_sender=request.undeclared_sender,
        state=new_state,
        version=version,
        changed=changed,
    )
    record.action_time.CopyFrom(request.action_time)
    record.accepted_time.CopyFrom(request.accepted_time)
    record.sealed_msisdn.CopyFrom(request.sealed_msisdn)
    record.decided_time.FromMilliseconds(decided_time_ms)
    return record, after


def erasable(state: SubjectDecisions, now_ms: int, legal_record_ms: int) -> bool:
    """Whether a subject's records may be erased now (DOMAIN.md: tombstones only for erasure).

    Only when no opt-out is in force in any scope — deleting one would expose the person to
    marketing again — and the legal record of its latest request has ended: every scope's last
    action is at least ``legal_record_ms`` old.
    """
    if not state.scopes or any(e.state == SUPPRESSED for e in state.scopes.values()):
        return False
    return max(e.action_time_ms for e in state.scopes.values()) + legal_record_ms <= now_ms
