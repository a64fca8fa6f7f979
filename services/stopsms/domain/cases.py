"""Cases: complaints grouped against one sender, opened when the evidence says so.

A complaint belongs to the group of its sender when the register holds it (a case against a
declared sender and the parties that send for it), else to the group of its originating
address — the alphanumeric sender id nobody declared, or the phone number's subject — the
informal sector. A complaint whose originating address is unknown belongs to no group until
the citizen names it.

A group opens a case:

- at its first ``SENT_AFTER_OPT_OUT`` complaint (a message after a decided opt-out is a breach
  on its own), or
- when it holds :attr:`CasePolicy.complaints` complaints with a finding (any finding but
  ``NO_FINDING``) whose messages arrived within :attr:`CasePolicy.window_ms` of each other:
  5 within 10 days by default, India's 2025 thresholds.

A case, once open, stays open (closing one is the regulator's act): a complaint whose
assessment changes later moves the counts, never the opening. The book is a pure structure,
fed by the assessor with every assessment it makes; each change costs the size of the window
around the complaint, not the group's history.
"""

from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import dataclass, field

from stopsms.domain.ids import case_id, case_reference
from stopsms.v1 import events_pb2

DECLARED_SENDER = events_pb2.CASE_KIND_DECLARED_SENDER
INFORMAL_SECTOR = events_pb2.CASE_KIND_INFORMAL_SECTOR
BY_OPT_OUT = events_pb2.CASE_OPENING_SENT_AFTER_OPT_OUT
BY_THRESHOLD = events_pb2.CASE_OPENING_COMPLAINT_THRESHOLD

DAY_MS = 86_400_000

#: The findings, most serious first: the order of a case's counts (as ``domain.complaints``).
SEVERITY = (
    events_pb2.COMPLAINT_FINDING_SENT_AFTER_OPT_OUT,
    events_pb2.COMPLAINT_FINDING_UNDECLARED_SENDER,
    events_pb2.COMPLAINT_FINDING_SENDER_SUSPENDED,
    events_pb2.COMPLAINT_FINDING_NO_STOPSMS_MENTION,
    events_pb2.COMPLAINT_FINDING_NO_FINDING,
)


@dataclass(frozen=True)
class CasePolicy:
    """When a group of complaints opens a case (configurable per deployment)."""

    complaints: int = 5
    window_ms: int = 10 * DAY_MS

    def __post_init__(self) -> None:
        if self.complaints < 1:
            raise ValueError("a case needs at least one complaint to open")
        if self.window_ms < 0:
            raise ValueError("the window of a case cannot be negative")


def group_of(assessed: events_pb2.ComplaintAssessed) -> str | None:
    """The group a complaint belongs to, or None when its originating address is unknown."""
    if assessed.sender_declared and assessed.sender_id:
        return f"sender:{assessed.sender_id}"
    if assessed.origin_subject:
        return f"number:{assessed.origin_subject}"
    if assessed.sender_id:
        return f"informal:{assessed.sender_id}"
    return None


@dataclass
class _Member:
    received_ms: int
    finding: int
    flagged: bool  # a finding other than NO_FINDING: counts toward the threshold


@dataclass
class _Group:
    """One group's complaints and, once opened, how its case opened."""

    key: str
    kind: int
    sender_id: str
    origin_subject: str
    members: dict[str, _Member] = field(default_factory=dict)
    flagged_times: list[int] = field(default_factory=list)  # sorted received times
    findings: Counter[int] = field(default_factory=Counter)
    parties: set[str] = field(default_factory=set)
    opened_by: int = 0
    opening_complaint_id: str = ""
    first_ms: int | None = None
    last_ms: int | None = None


class CaseBook:
    """Every group of complaints, and the cases they opened."""

    def __init__(self, policy: CasePolicy | None = None) -> None:
        self.policy = policy or CasePolicy()
        self._groups: dict[str, _Group] = {}
        self._group_of: dict[str, str] = {}
        self._by_case: dict[str, str] = {}  # case id → group key, once opened

    def add(self, assessed: events_pb2.ComplaintAssessed, carrier_party_id: str = "") -> str | None:
        """Take a complaint's (new) assessment; the key of the group whose case changed, if any.

        ``carrier_party_id`` is the operator that carried the message and submitted the
        complaint: a party concerned by the case (it can stop the sender on its network).
        """
        key = group_of(assessed)
        if key is None:
            return None
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = _Group(
                key=key,
                kind=DECLARED_SENDER if key.startswith("sender:") else INFORMAL_SECTOR,
                sender_id=assessed.sender_id,
                origin_subject=assessed.origin_subject,
            )
        self._group_of[assessed.complaint_id] = key
        received_ms = assessed.received_time.ToMilliseconds()
        flagged = assessed.finding != events_pb2.COMPLAINT_FINDING_NO_FINDING
        member = _Member(received_ms, assessed.finding, flagged)
        before = group.members.get(assessed.complaint_id)
        parties_before = len(group.parties)
        group.parties.update(assessed.sender_party_ids)
        if carrier_party_id:
            group.parties.add(carrier_party_id)
        if before == member and len(group.parties) == parties_before:
            return None
        if before is not None:
            group.findings[before.finding] -= 1
            if before.flagged:
                times = group.flagged_times
                del times[bisect.bisect_left(times, before.received_ms)]
        group.members[assessed.complaint_id] = member
        group.findings[member.finding] += 1
        group.first_ms = received_ms if group.first_ms is None else min(group.first_ms, received_ms)
        group.last_ms = received_ms if group.last_ms is None else max(group.last_ms, received_ms)
        if member.flagged:
            bisect.insort(group.flagged_times, received_ms)
        if not group.opened_by:
            self._maybe_open(group, assessed.complaint_id, member)
            if group.opened_by:
                self._by_case[case_id(key)] = key
        return key if group.opened_by else None

    def _maybe_open(self, group: _Group, complaint_id: str, member: _Member) -> None:
        """Open the group's case if this complaint completes what opens one."""
        if member.finding == events_pb2.COMPLAINT_FINDING_SENT_AFTER_OPT_OUT:
            group.opened_by, group.opening_complaint_id = BY_OPT_OUT, complaint_id
            return
        if not member.flagged:
            return
        times, needed = group.flagged_times, self.policy.complaints
        at = bisect.bisect_left(times, member.received_ms)
        # any run of `needed` consecutive times that holds this one and fits in the window
        for start in range(max(0, at - needed + 1), at + 1):
            end = start + needed - 1
            if end < len(times) and times[end] - times[start] <= self.policy.window_ms:
                group.opened_by, group.opening_complaint_id = BY_THRESHOLD, complaint_id
                return

    def group_of_case(self, case: str) -> str | None:
        """The group whose case has this id (None: no such case is open)."""
        return self._by_case.get(case)

    def group_of_complaint(self, complaint_id: str) -> str | None:
        """The group a complaint was put in."""
        return self._group_of.get(complaint_id)

    def complaint_ids(self, key: str) -> list[str]:
        """The complaints of a group, oldest message first."""
        group = self._groups.get(key)
        if group is None:
            return []
        return sorted(group.members, key=lambda cid: (group.members[cid].received_ms, cid))

    def most_complained_informal(self, limit: int = 10) -> list[tuple[str, str, int, bool]]:
        """The informal sector's groups with the most complaints, whether or not a case opened.

        Each as (sender id or "", originating number's subject or "", complaints, opened).
        """
        informal = [g for g in self._groups.values() if g.kind == INFORMAL_SECTOR]
        informal.sort(key=lambda g: (-len(g.members), g.key))
        return [
            (g.sender_id, g.origin_subject, len(g.members), bool(g.opened_by))
            for g in informal[:limit]
        ]

    def open_groups(self) -> list[str]:
        """The keys of the groups that opened a case."""
        return [key for key, group in self._groups.items() if group.opened_by]

    def case(
        self, key: str, now_ms: int, before: events_pb2.Case | None = None
    ) -> events_pb2.Case | None:
        """The case of a group as it stands (None: not opened); ``before`` keeps its opening."""
        group = self._groups.get(key)
        if group is None or not group.opened_by:
            return None
        identifier = case_id(key)
        case = events_pb2.Case(
            case_id=identifier,
            reference=case_reference(identifier),
            kind=group.kind,
            sender_id=group.sender_id,
            origin_subject=group.origin_subject,
            party_ids=sorted(group.parties),
            opened_by=before.opened_by if before is not None else group.opened_by,
            opening_complaint_id=(
                before.opening_complaint_id if before is not None else group.opening_complaint_id
            ),
            complaint_count=len(group.members),
            revision=(before.revision + 1) if before is not None else 1,
        )
        if before is not None:
            case.opened_time.CopyFrom(before.opened_time)
        else:
            case.opened_time.FromMilliseconds(now_ms)
        for finding in SEVERITY:
            if group.findings[finding] > 0:
                case.findings.add(finding=finding, count=group.findings[finding])
        if group.first_ms is not None and group.last_ms is not None:
            case.first_received_time.FromMilliseconds(group.first_ms)
            case.last_received_time.FromMilliseconds(group.last_ms)
        case.updated_time.FromMilliseconds(now_ms)
        return case


def same_case(a: events_pb2.Case, b: events_pb2.Case) -> bool:
    """Whether two records of a case say the same (their times and revisions aside)."""
    copies = []
    for record in (a, b):
        copy = events_pb2.Case()
        copy.CopyFrom(record)
        copy.ClearField("updated_time")
        copy.revision = 0
        copies.append(copy.SerializeToString(deterministic=True))
    return copies[0] == copies[1]
