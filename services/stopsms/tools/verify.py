"""The ledger check: what clients were told was accepted is on the list once, everywhere.

A load generator writes a ledger: one line per request intake acknowledged, ending with the
event id intake answered (``<request id> <event id>``; only the last column is read). The check
follows each of those ids through the platform, as Kafka's own system tests do after a fault:

1. ``stopsms.requests.v1`` holds the request (intake never says yes without Kafka);
2. ``stopsms.suppressions.v1`` holds exactly one distinct ``SuppressionChanged`` for it
   (identical repeats after a crash, and the same decision re-sealed under a newer data key,
   count once; two different records for one event id are a defect: the registry decided
   twice);
3. the registry's Redis view holds, for every subject and scope, the same entry as the latest
   record of the compacted topic (compared entry by entry, not only by count);
4. ``stopsms.propagation.v1`` holds a done proof for it: every concerned party applied it.

A request whose subject was erased since (its retention ended: a tombstone on its key after
its decision) is absent everywhere, as erasure means: it is counted as erased, not as lost or
unapplied, and the view must not hold it.

Lost, duplicated, divergent and unapplied items are reported with their ids; any of them makes
the check fail. The view and the proofs are given ``wait_seconds`` to catch up first, since a
check right after a fault would otherwise report work that is merely late.

    stopsms verify LEDGER [--wait 120] [--report report.json]
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from stopsms.adapters.kafka import Record, follow_topic, read_topic
from stopsms.adapters.kafka_access import KafkaAccess
from stopsms.adapters.view import RedisSuppressionView
from stopsms.domain.topics import Topics, is_key_change, subject_of_key, suppression_key
from stopsms.domain.viewcodec import ExpectedView, decode_changes
from stopsms.v1 import events_pb2

CLIENT_ID = "stopsms-verify"
#: How many ids of each kind the summary names (the report file has them all).
SHOWN = 10


def read_ledger(path: Path) -> list[str]:
    """The acknowledged event ids of a ledger file (last column of each non-empty line)."""
    return [line.split()[-1] for line in path.read_text().splitlines() if line.strip()]


@dataclass
class LedgerReport:
    """What the check found; ``ok`` only when nothing is lost, doubled, divergent or unapplied."""

    acknowledged: int = 0
    requests_found: int = 0
    changes_found: int = 0
    view_entries: int = 0
    topic_entries: int = 0
    proven: int = 0
    #: Decided, then erased with its subject (a tombstone after the decision): absent, rightly.
    erased: list[str] = field(default_factory=list)
    #: Acknowledged, but missing from the requests topic or without a decision.
    lost: list[str] = field(default_factory=list)
    #: Two different SuppressionChanged records for one event id.
    duplicated: list[str] = field(default_factory=list)
    #: View entries (``<located subject hex>/<sender or *>``) that differ from the topic.
    divergent: list[str] = field(default_factory=list)
    #: Decided, but not applied by every concerned party (``<event id> (pending: a, b)``).
    unapplied: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when the platform kept every promise the ledger records."""
        return not (self.lost or self.duplicated or self.divergent or self.unapplied)

    def summary(self) -> str:
        """A few lines for a person: the counts, then the first ids of each defect."""
        lines = [
            f"acknowledged {self.acknowledged}, in requests {self.requests_found}, "
            f"decided {self.changes_found}, proven applied {self.proven}, "
            f"erased since {len(self.erased)}; "
            f"view {self.view_entries} entries, topic {self.topic_entries}",
            f"lost {len(self.lost)}, duplicated {len(self.duplicated)}, "
            f"divergent {len(self.divergent)}, unapplied {len(self.unapplied)} "
            f"({'OK' if self.ok else 'FAILED'}, checked in {self.seconds:.1f} s)",
        ]
        for name in ("lost", "duplicated", "divergent", "unapplied"):
            ids: list[str] = getattr(self, name)
            if ids:
                more = f" … and {len(ids) - SHOWN} more" if len(ids) > SHOWN else ""
                lines.append(f"  {name}: {', '.join(ids[:SHOWN])}{more}")
        return "\n".join(lines)

    def to_json(self) -> str:
        """Every figure and id, for a file."""
        return json.dumps({**self.__dict__, "ok": self.ok}, indent=2)


async def _view_caught_up(
    view: RedisSuppressionView, ends: dict[int, int], deadline: float
) -> None:
    while time.monotonic() < deadline:
        applied = await view.applied_offsets()
        if all(applied.get(p, 0) >= end for p, end in ends.items()):
            return
        await asyncio.sleep(0.5)


@dataclass
class Decisions:
    """What the suppressions topic holds: every record, and each event id's decisions."""

    records: list[Record] = field(default_factory=list)
    #: The distinct records per event id.
    distinct: dict[str, set[bytes]] = field(default_factory=dict)
    #: Where each event id was decided: (key, offset) of its latest record.
    placed: dict[str, tuple[bytes, int]] = field(default_factory=dict)
    #: The offset of the latest tombstone (erasure) of each key (a key lives in one partition).
    erasures: dict[bytes, int] = field(default_factory=dict)
    #: Event ids whose decision moved to a subject of the current pseudonym key.
    moved: set[str] = field(default_factory=set)
    #: Subjects whose decisions moved to the current pseudonym key: the tombstones on their keys
    #: end a re-keying, they erase nobody.
    moved_from: set[str] = field(default_factory=set)

    def erased(self, event: str, request_key: bytes | None) -> bool:
        """Whether an event's subject was erased after it was decided.

        Without its decision (compacted away), a tombstone on the key its request names says so.
        A decision superseded before its subject moved stays under the old subject, whose
        tombstones end the re-keying: decided, not erased.
        """
        placed = self.placed.get(event)
        if placed is not None:
            key, offset = placed
            if subject_of_key(key).decode() in self.moved_from:
                return False
            return self.erasures.get(key, -1) > offset
        if request_key is not None and subject_of_key(request_key).decode() in self.moved_from:
            return False  # asked under a subject that moved since: decided under the new one
        return request_key in self.erasures


async def _read_decisions(
    bootstrap: KafkaAccess | str, topics: Topics, expected: dict[str, bytes], deadline: float
) -> Decisions:
    """Every suppression record, the distinct records per event id, and the erasures.

    ``expected``: the event ids to wait for, with the key their request names. Read again until
    every one is decided (or erased) or the deadline passes: right after
    a fault the registry may still be catching up, which is late, not lost.
    """
    found = Decisions()

    def keep(batch: list[Record]) -> None:
        for record in batch:
            found.records.append(record)
            if record.value is not None:
                change = events_pb2.SuppressionChanged.FromString(record.value)
                if is_key_change(change.subject):
                    continue  # no decision: a data key was retired
                found.distinct.setdefault(change.event_id, set()).add(decision_content(change))
                if change.previous_subject or change.event_id not in found.moved:
                    # A moved decision lives on under its new subject, whose key a re-keying's
                    # end does not tombstone; partitions are read in no particular order.
                    found.placed[change.event_id] = (record.key or b"", record.offset)
                if change.previous_subject:
                    found.moved.add(change.event_id)
                    found.moved_from.add(change.previous_subject)
            elif record.key is not None:
                found.erasures[record.key] = record.offset

    await follow_topic(
        bootstrap,
        topics.suppressions,
        keep,
        done=lambda: all(e in found.distinct or found.erased(e, k) for e, k in expected.items()),
        deadline=deadline,
        client_id=CLIENT_ID,
    )
    return found


def decision_content(change: events_pb2.SuppressionChanged) -> bytes:
    """What must not differ between two records of one event: all but how the number is sealed.

    A re-sealed record (registry/resealing.py) repeats its decision under another data key, with
    another seal and ``resealed_time``; a moved one (registry/rekeying.py) under the subject of
    the current pseudonym key, naming the one it was decided under. Each is the same decision,
    not a duplicate; one event decided under two subjects is.
    """
    plain = events_pb2.SuppressionChanged()
    plain.CopyFrom(change)
    plain.ClearField("resealed_time")
    plain.ClearField("sealed_msisdn")
    if plain.previous_subject:
        plain.subject = plain.previous_subject
        plain.ClearField("previous_subject")
    return plain.SerializeToString(deterministic=True)


async def _check_requests(
    bootstrap: KafkaAccess | str, topics: Topics, wanted: set[str]
) -> dict[str, bytes]:
    """The acknowledged event ids found on the requests topic, with their suppression key."""
    found = {}
    for record in await read_topic(bootstrap, topics.requests, CLIENT_ID):
        if record.value is not None:
            request = events_pb2.PreferenceRequested.FromString(record.value)
            if request.event_id in wanted:
                found[request.event_id] = suppression_key(
                    request.subject, request.sender_id
                ).encode()
    return found


async def _check_view(
    view: RedisSuppressionView, expected: ExpectedView, report: LedgerReport
) -> None:
    held: dict[bytes, bytes] = {}
    async for chunk in view.entries():
        held.update(chunk)
    wanted = dict(expected.items())
    report.view_entries, report.topic_entries = len(held), len(wanted)
    for key in sorted(held.keys() ^ wanted.keys() | {k for k in held if held[k] != wanted.get(k)}):
        # The located digest is binary and may hold a zero byte; a sender id never does.
        located, _, sender = key.rpartition(b"\0")
        report.divergent.append(f"{located.hex()}/{sender.decode() or '*'}")


async def _check_proofs(
    bootstrap: KafkaAccess | str, topics: Topics, decided: set[str], deadline: float
) -> dict[str, events_pb2.PropagationRecord]:
    """The latest proof of every decided id, re-read until all are done or the deadline."""
    latest: dict[str, events_pb2.PropagationRecord] = {}

    def keep(batch: list[Record]) -> None:
        for record in batch:
            if record.key is None:
                continue
            if record.value is None:  # erased with its subject
                latest.pop(record.key.decode(), None)
            else:
                latest[record.key.decode()] = events_pb2.PropagationRecord.FromString(record.value)

    await follow_topic(
        bootstrap,
        topics.propagation,
        keep,
        done=lambda: all(e in latest and latest[e].done for e in decided),
        deadline=deadline,
        client_id=CLIENT_ID,
    )
    return latest


async def verify(
    acknowledged: Iterable[str],
    *,
    bootstrap: KafkaAccess | str,
    topics: Topics,
    view: RedisSuppressionView,
    wait_seconds: float = 120.0,
) -> LedgerReport:
    """Follow every acknowledged event id through the platform; see the module docstring."""
    started = time.monotonic()
    deadline = started + wait_seconds
    wanted = set(acknowledged)
    report = LedgerReport(acknowledged=len(wanted))
    in_requests = await _check_requests(bootstrap, topics, wanted)
    report.requests_found = len(in_requests)

    found = await _read_decisions(bootstrap, topics, in_requests, deadline)
    distinct = found.distinct
    report.erased = sorted(e for e in wanted if found.erased(e, in_requests.get(e)))
    erased = set(report.erased)
    decided = {e for e in wanted if e in distinct and e not in erased}
    report.changes_found = len(decided)
    report.lost = sorted(wanted - in_requests.keys() - erased) + sorted(
        (wanted & in_requests.keys()) - decided - erased
    )
    report.duplicated = sorted(e for e, values in distinct.items() if len(values) > 1)

    ends: dict[int, int] = {}
    for record in found.records:
        ends[record.partition] = max(ends.get(record.partition, 0), record.offset + 1)
    await _view_caught_up(view, ends, deadline)
    expected = ExpectedView()
    expected.add(decode_changes(found.records, view.layout))
    await _check_view(view, expected, report)

    proofs = await _check_proofs(bootstrap, topics, decided, deadline)
    for event in sorted(decided):
        proof = proofs.get(event)
        if proof is not None and proof.done:
            report.proven += 1
            continue
        if proof is None:
            why = "no proof"
        else:
            pending = [
                d.party_id
                for d in proof.deliveries
                if d.status != events_pb2.DELIVERY_STATUS_APPLIED
            ]
            why = f"pending: {', '.join(pending)}" if pending else "proof not marked done"
        report.unapplied.append(f"{event} ({why})")
    report.seconds = time.monotonic() - started
    return report
