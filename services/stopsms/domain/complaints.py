"""Citizens' complaints: reading a forwarded SMS, and assessing it against the evidence.

The assessment is a pure function of what the platform knows — the register's record of the
sender, the text as the message check reads it, the complainant's decisions and the proof of
the opt-out in force — so the processor that feeds it (and re-runs it when a late proof
arrives) holds no rule of its own, and the rule is tested without a broker.

Findings, most serious first (the first one is the assessment's ``finding``):

- ``SENT_AFTER_OPT_OUT``: the complainant had opted out (of the sender or of all marketing)
  before the message arrived: the platform had decided it, and the assessment says when each
  concerned party applied it and how long before the message that was.
- ``UNDECLARED_SENDER``: no party declared the sender, or the message came from a phone number
  (not said of a complaint whose originating address is still unknown: that assessment is not
  final until the citizen names it).
- ``SENDER_SUSPENDED``: the regulator suspended or revoked the sender.
- ``NO_STOPSMS_MENTION``: neither the reply mention nor a valid StopSMS link of the sender.
- ``NO_FINDING``: nothing of the above.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from stopsms.domain.message_check import TextReading
from stopsms.domain.senders import REVOKED, SUSPENDED
from stopsms.domain.topics import GLOBAL_SCOPE
from stopsms.v1 import events_pb2, senders_pb2

SENT_AFTER_OPT_OUT = events_pb2.COMPLAINT_FINDING_SENT_AFTER_OPT_OUT
UNDECLARED_SENDER = events_pb2.COMPLAINT_FINDING_UNDECLARED_SENDER
SENDER_SUSPENDED = events_pb2.COMPLAINT_FINDING_SENDER_SUSPENDED
NO_STOPSMS_MENTION = events_pb2.COMPLAINT_FINDING_NO_STOPSMS_MENTION
NO_FINDING = events_pb2.COMPLAINT_FINDING_NO_FINDING

#: The words that make a message to the platform's code a complaint, as people write them:
#: French, English, Arabic (شكاية in Morocco, شكوى in MSA) and Darija in Latin letters.
COMPLAINT_KEYWORDS = (
    "spam",
    "plainte",
    "plaint",
    "reclamation",
    "signaler",
    "شكاية",
    "شكايه",
    "شكوى",
    "سبام",
    "chikaya",
    "chkaya",
    "chekaya",
)
_KEYWORD = re.compile(
    r"^\W*("
    + "|".join(sorted({re.escape(k) for k in COMPLAINT_KEYWORDS}, key=len, reverse=True))
    + r")(?:\b|(?=\W)|$)[\s:;,.\-–—>]*",
    re.IGNORECASE,
)


def _folded(text: str) -> str:
    """Lower case, Latin letters without accents (réclamation → reclamation), lengths kept.

    Each character stays one character, so a match's end is an index into the original text.
    """
    return "".join(
        unicodedata.normalize("NFD", char)[0] if not char.isascii() and char.isalpha() else char
        for char in text
    ).lower()


def read_complaint(text: str) -> tuple[bool, str]:
    """(is a complaint, the forwarded message without the leading keyword).

    A complaint starts with one of :data:`COMPLAINT_KEYWORDS`; what follows is the message the
    citizen forwarded (possibly empty when the operator passes the forwarded text apart).
    """
    found = _KEYWORD.match(_folded(text))
    if found is None:
        return False, text.strip()
    return True, text[found.end() :].strip()


@dataclass(frozen=True)
class Decision:
    """One of the complainant's decided changes, as the suppression list carried it."""

    scope: str  # a sender id, or "*" for all marketing
    state: int  # events_pb2.State
    decided_ms: int
    event_id: str


def in_force(history: Sequence[Decision], scope: str, at_ms: int) -> Decision | None:
    """The decision of ``scope`` in force at ``at_ms`` (the latest decided at or before it)."""
    found: Decision | None = None
    for decision in history:
        if decision.scope == scope and decision.decided_ms <= at_ms:
            if found is None or decision.decided_ms >= found.decided_ms:
                found = decision
    return found


def opt_out_in_force(history: Sequence[Decision], sender_id: str, at_ms: int) -> Decision | None:
    """The opt-out that covered a message from ``sender_id`` at ``at_ms``, if any.

    The sender's own opt-out first (it names the sender), else the global one.
    """
    scopes = [sender_id, GLOBAL_SCOPE] if sender_id else [GLOBAL_SCOPE]
    for scope in scopes:
        decision = in_force(history, scope, at_ms)
        if decision is not None and decision.state == events_pb2.STATE_SUPPRESSED:
            return decision
    return None


@dataclass(frozen=True)
class Evidence:
    """What the platform knows about one complaint when it assesses it."""

    complaint: events_pb2.ComplaintFiled
    sender: senders_pb2.Sender | None  # the register's record (None: not declared)
    reading: TextReading | None  # the message check's reading (None: the text is unknown)
    link_valid: bool  # the text's StopSMS links are the platform's, for this sender
    history: Sequence[Decision]  # the complainant's decided changes
    proof: events_pb2.PropagationRecord | None  # the proof of the opt-out in force, if known


def assess(evidence: Evidence, now_ms: int, revision: int = 1) -> events_pb2.ComplaintAssessed:
    """The assessment of one complaint (see the module's docstring for the findings)."""
    complaint = evidence.complaint
    received_ms = complaint.received_time.ToMilliseconds()
    sender = evidence.sender
    assessed = events_pb2.ComplaintAssessed(
        complaint_id=complaint.complaint_id,
        reference=complaint.reference,
        subject=complaint.subject,
        sender_id=complaint.sender_id,
        origin_subject=complaint.origin_subject,
        sender_declared=sender is not None,
        sender_status=sender.status if sender is not None else 0,
        mention_present=evidence.reading is not None and evidence.reading.has_mention,
        link_valid=evidence.link_valid,
        revision=revision,
        final=True,
    )
    if sender is not None:
        assessed.sender_party_ids.extend(sorted(set(sender.sending_party_ids)))
    assessed.received_time.CopyFrom(complaint.received_time)
    assessed.assessed_time.FromMilliseconds(now_ms)
    findings: list[int] = []
    opt_out = opt_out_in_force(evidence.history, complaint.sender_id, received_ms)
    if opt_out is not None:
        findings.append(SENT_AFTER_OPT_OUT)
        assessed.opt_out_scope = opt_out.scope
        assessed.opt_out_event_id = opt_out.event_id
        assessed.opt_out_decided_time.FromMilliseconds(opt_out.decided_ms)
        assessed.decided_before_message_ms = received_ms - opt_out.decided_ms
        proof = evidence.proof
        if proof is None or not proof.done:
            assessed.final = False  # assessed again when the proof is done
        for delivery in proof.deliveries if proof is not None else ():
            applied = assessed.applied.add(
                party_id=delivery.party_id,
                party_kind=delivery.party_kind,
                status=delivery.status,
            )
            if delivery.HasField("applied_time"):
                applied.applied_time.CopyFrom(delivery.applied_time)
                applied.applied_before_message_ms = (
                    received_ms - delivery.applied_time.ToMilliseconds()
                )
    if complaint.origin_unknown:
        assessed.final = False  # assessed again once the citizen names the sender
    elif sender is None:
        findings.append(UNDECLARED_SENDER)
    elif sender.status in (SUSPENDED, REVOKED):
        findings.append(SENDER_SUSPENDED)
    if evidence.reading is not None and not (evidence.reading.has_mention or evidence.link_valid):
        findings.append(NO_STOPSMS_MENTION)
    if not findings:
        findings.append(NO_FINDING)
    assessed.finding = findings[0]
    assessed.findings.extend(findings)
    return assessed
