"""Pseudonym re-keying: every subject moves to the current pseudonym key, no decision lost.

A subject is ``<key id>:<HMAC of the number>``; changing the pseudonym key changes every
subject, and with it the partition of its requests and decisions. While the registry holds a
previous pseudonym key (``STOPSMS_PREVIOUS_PSEUDONYM_KEY_FILE``), a re-keying runs, in three
parts, all in the decision stage (the only place where a subject's decision in force is known
without racing a new one):

* **The move** (:class:`Rekeyer`, housekeeping like re-sealing). A pass reads this replica's
  partitions of ``stopsms.suppressions.v1``; once it has the record in force of every scope of a
  subject under the previous key, it unseals the number, derives its new subject and publishes
  a *migration* to ``stopsms.requests.v1`` under the new subject: its records in force, its
  version and the event ids it decided. The old subject's state is marked moved
  (``SubjectDecisions.moved_to``). The new subject may live in another partition, owned by
  another replica: the migration reaches it in order with that subject's requests.
* **The new subject starts where the old one was** (:func:`apply_migration`). Its owner
  takes the scopes and version as they were, and publishes each record in force again under the
  new subject with the same version and ``previous_subject`` naming the old one: operators keyed
  by number change nothing, a reader keyed by subject moves its row.
* **One place decides** (:class:`SubjectRouter`). While intake replicas roll to the new key,
  a person's requests arrive under either subject. A request under the old subject is decided
  there only while that subject holds decisions not yet moved; otherwise it is passed on to the
  new subject (``forwarded_from`` set). A request under a new subject with no state yet is
  passed to the old subject first (its history may not have moved yet), which decides it or
  passes it back; a request passed on is never passed on a second time the same way, so it
  crosses at most two partitions and is decided exactly once.

**The end**: a moved subject's old records stay on the list ``STOPSMS_REKEY_GRACE_SECONDS``
(a day) beside the new ones, so that every reader (view, operators, PSVAs, ``Check``, which
looks up both subjects meanwhile) has taken the new ones; the next pass after that tombstones
the old subject's scopes and forgets its state. Its proofs stay: they belong to the event ids,
which the new subject keeps. ``stopsms keys rotate-pseudonyms`` follows all of it from the list
and checks the ledger before and after (docs/operations.md, "Rotate the pseudonym key").
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from prometheus_client import Counter, Gauge

from stopsms.adapters.bus import Bus
from stopsms.adapters.kafka import message_headers
from stopsms.adapters.streams import Output, StateStore
from stopsms.domain.privacy import KeyMaterialError, Pseudonymiser
from stopsms.domain.rules import SubjectDecisions
from stopsms.domain.topics import GLOBAL_SCOPE, Topics, partition_for_key, suppression_key
from stopsms.domain.viewcodec import ScopeEntry
from stopsms.registry.list_pass import ListPass
from stopsms.v1 import events_pb2

log = logging.getLogger(__name__)

#: The party named on a migration: the registry itself, not a citizen's channel.
REKEYING_PARTY = "registry"

MOVED = Counter(
    "stopsms_rekey_moved_subjects",
    "Subjects whose decisions in force moved to the current pseudonym key (migrations sent).",
)
ENDED = Counter(
    "stopsms_rekey_ended_subjects",
    "Moved subjects whose old records were tombstoned after the grace period.",
)
FORWARDED = Counter(
    "stopsms_rekey_forwarded_requests",
    "Requests passed on to the same number's subject under the other pseudonym key.",
)
MERGED = Counter(
    "stopsms_rekey_merged_migrations",
    "Migrations that found the new subject already holding decisions (merged by version).",
)
PASS_STARTED = Gauge(
    "stopsms_rekey_pass_started_timestamp_seconds",
    "When the re-keying pass under way (or the last one) started; 0 without a previous key.",
)
PASS_ENDED = Gauge(
    "stopsms_rekey_pass_completed_timestamp_seconds",
    "When the last complete re-keying pass ended (every partition of this replica read).",
)
REMAINING = Gauge(
    "stopsms_rekey_subjects_remaining",
    "Subjects under the previous pseudonym key the last pass found still to move or to end.",
)
UNSEALABLE = Gauge(
    "stopsms_rekey_unsealable_subjects",
    "Subjects the last pass could not move: their number is sealed under a data key not held.",
)


def migration_event_id(old_subject: str) -> str:
    """The migration's event id: one per old subject, so a repeated migration is recognised."""
    return f"rekey:{old_subject}"


class SubjectRouter:
    """Where a request is decided while a re-keying runs (see the module docstring)."""

    def __init__(self, pseudonymiser: Pseudonymiser, topics: Topics, partitions: int) -> None:
        self.pseudonymiser = pseudonymiser
        self.topics = topics
        self.partitions = partitions
        previous = pseudonymiser.previous_pseudonym_key
        self._old_prefix = f"{previous.key_id}:" if previous is not None else None
        self._new_prefix = f"{pseudonymiser.pseudonym_key.key_id}:"

    @property
    def enabled(self) -> bool:
        """Whether a re-keying runs: a previous pseudonym key is held."""
        return self._old_prefix is not None

    def destination(
        self, request: events_pb2.PreferenceRequested, state: SubjectDecisions | None
    ) -> str | None:
        """The subject to pass ``request`` on to, or None to decide it here.

        ``state``: the subject's state, None when it has none (never decided, or erased, or
        moved and ended).
        """
        if self._old_prefix is None or request.HasField("migration"):
            return None
        if request.subject.startswith(self._old_prefix):
            if state is not None and not state.moved_to:
                return None  # its decisions have not moved yet: they are in force here
            if state is not None:
                return state.moved_to
            return self._other_subject(request, self.pseudonymiser.subject)
        if request.subject.startswith(self._new_prefix):
            if state is not None or request.forwarded_from:
                return None  # moved here already, or the old subject said it holds nothing
            return self._other_subject(request, self.pseudonymiser.previous_subject)
        return None

    def _other_subject(
        self, request: events_pb2.PreferenceRequested, derive: Callable[[str], str | None]
    ) -> str | None:
        try:
            number = self.pseudonymiser.unseal(request.sealed_msisdn)
        except KeyMaterialError:
            log.error(
                "request %s is sealed under data key %r, not held: decided under %s as it came",
                request.event_id,
                request.sealed_msisdn.key_id,
                request.subject.partition(":")[0],
            )
            return None
        return derive(number)

    def forward(self, request: events_pb2.PreferenceRequested, destination: str) -> Output:
        """The request, passed on to ``destination`` (the requests topic places it there)."""
        passed = events_pb2.PreferenceRequested()
        passed.CopyFrom(request)
        passed.subject = destination
        passed.forwarded_from = request.subject
        FORWARDED.inc()
        log.info("event %s passed on to the subject under the other pseudonym key", passed.event_id)
        return Output(
            self.topics.requests,
            destination.encode(),
            passed.SerializeToString(),
            partition_for_key(destination, self.partitions),
            message_headers("stopsms.v1.PreferenceRequested"),
        )


def apply_migration(
    state: SubjectDecisions, known: bool, request: events_pb2.PreferenceRequested
) -> tuple[list[events_pb2.SuppressionChanged], SubjectDecisions | None]:
    """A migration applied to the new subject: the records to publish again, the new state.

    ``known``: whether the new subject already had a state. The routing makes that impossible
    (a new subject decides nothing before its old one moved or said it holds nothing), but if
    it happens, each scope keeps whichever decision has the higher version, and it is counted.
    Returns ``([], None)`` for a migration already applied (a repeat after a crash).
    """
    migration = request.migration
    if request.event_id in state.decided:
        return [], None
    if known and state.scopes:
        MERGED.inc()
        log.warning(
            "migration %s found %s already holding decisions: merged by version",
            request.event_id,
            request.subject,
        )
    after = SubjectDecisions(
        version=max(state.version, migration.version),
        scopes=dict(state.scopes),
        decided=dict(state.decided),
        resealed=dict(state.resealed),
    )
    for event in migration.decided:
        after.decided.setdefault(event.event_id, (event.version, event.state, event.changed))
    after.decided[request.event_id] = (migration.version, 0, False)
    records = []
    for change in migration.in_force:
        scope = change.sender_id or GLOBAL_SCOPE
        held = after.scopes.get(scope)
        if held is not None and held.version >= change.version:
            continue
        after.scopes[scope] = ScopeEntry(
            change.state, change.version, change.action_time.ToMilliseconds()
        )
        after.resealed.pop(scope, None)
        moved = events_pb2.SuppressionChanged()
        moved.CopyFrom(change)
        moved.subject = request.subject
        moved.previous_subject = migration.from_subject
        records.append(moved)
    return records, after


class Rekeyer(ListPass):
    """Moves, a round at a time, the subjects under the previous pseudonym key; then ends them."""

    client_id = "stopsms-registry-rekey"
    name = "re-keying pass"

    def __init__(
        self,
        bus: Bus,
        topics: Topics,
        state: StateStore,
        pseudonymiser: Pseudonymiser,
        partitions: int,
        pass_every_s: float,
        grace_s: float,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(bus, topics, state, pass_every_s, clock, monotonic)
        self.pseudonymiser = pseudonymiser
        self.partitions = partitions
        self.grace_ms = round(grace_s * 1000)
        previous = pseudonymiser.previous_pseudonym_key
        self._old_prefix = f"{previous.key_id}:" if previous is not None else ""
        #: Per subject met this pass, the records in force gathered so far, by scope.
        self._gathered: dict[bytes, dict[str, events_pb2.SuppressionChanged]] = {}
        self._moved = self._ended = self._unsealable = 0
        self._remaining: set[bytes] = set()

    @property
    def enabled(self) -> bool:
        """Whether a re-keying runs: a previous pseudonym key is held."""
        return bool(self._old_prefix)

    def wanted(self, change: events_pb2.SuppressionChanged) -> bool:
        """A record under the previous pseudonym key."""
        return change.subject.startswith(self._old_prefix)

    def started(self) -> None:
        """A pass starts: its counts from zero."""
        self._moved = self._ended = self._unsealable = 0
        self._gathered.clear()
        self._remaining.clear()
        PASS_STARTED.set(self._clock())

    def finished(self, seconds: float) -> None:
        """Every partition read: the figures of the pass."""
        # A subject whose scopes were not all found stays for the next pass (one decided
        # meanwhile has a newer record further on, read next time).
        self._remaining |= self._gathered.keys()
        self._gathered.clear()
        PASS_ENDED.set(self._clock())
        REMAINING.set(len(self._remaining))
        UNSEALABLE.set(self._unsealable)
        log.info(
            "re-keying pass: %d subjects moved to %s, %d ended, %d still to move or to end, "
            "%d not movable (data key not held), in %.1f s",
            self._moved,
            self.pseudonymiser.pseudonym_key.key_id,
            self._ended,
            len(self._remaining),
            self._unsealable,
            seconds,
        )

    def handle(self, partition: int, changes: list[events_pb2.SuppressionChanged]) -> list[Output]:
        """Gather each subject's records in force; move the complete ones, end the due ones."""
        outputs: list[Output] = []
        now_ms = round(self._clock() * 1000)
        for change in changes:
            subject = change.subject.encode()
            raw = self.state.get(partition, subject)
            if raw is None:
                continue  # ended (or erased), or the partition was handed to another replica
            state = SubjectDecisions.from_json(raw)
            if state.moved_to:
                if now_ms - state.moved_ms >= self.grace_ms:
                    outputs += self._end(partition, change.subject, state)
                else:
                    self._remaining.add(subject)
                continue
            scope = change.sender_id or GLOBAL_SCOPE
            entry = state.scopes.get(scope)
            if entry is None or entry.version != change.version:
                continue  # superseded by a newer record of the scope
            gathered = self._gathered.setdefault(subject, {})
            gathered[scope] = change
            if gathered.keys() == state.scopes.keys() and all(
                gathered[s].version == e.version for s, e in state.scopes.items()
            ):
                del self._gathered[subject]
                outputs += self._move(partition, change.subject, state, gathered, now_ms)
        return outputs

    def _move(
        self,
        partition: int,
        subject: str,
        state: SubjectDecisions,
        in_force: dict[str, events_pb2.SuppressionChanged],
        now_ms: int,
    ) -> list[Output]:
        number = None
        for change in in_force.values():
            try:
                number = self.pseudonymiser.unseal(change.sealed_msisdn)
                break
            except KeyMaterialError:
                continue
        if number is None:
            self._unsealable += 1
            self._remaining.add(subject.encode())
            log.error(
                "subject of partition %d not moved: its number is sealed under data key %r, "
                "which this registry does not hold",
                partition,
                next(iter(in_force.values())).sealed_msisdn.key_id,
            )
            return []
        destination = self.pseudonymiser.subject(number)
        migration = events_pb2.PreferenceRequested(
            event_id=migration_event_id(subject),
            request_id=migration_event_id(subject),
            party_id=REKEYING_PARTY,
            subject=destination,
            sealed_msisdn=next(iter(in_force.values())).sealed_msisdn,
            migration=events_pb2.SubjectMigration(
                from_subject=subject,
                version=state.version,
                in_force=[in_force[scope] for scope in sorted(in_force)],
                decided=[
                    events_pb2.DecidedEvent(
                        event_id=event, version=version, state=decided_state, changed=changed
                    )
                    for event, (version, decided_state, changed) in sorted(state.decided.items())
                ],
            ),
        )
        migration.accepted_time.FromMilliseconds(now_ms)
        state.moved_to, state.moved_ms = destination, now_ms
        self._moved += 1
        self._remaining.add(subject.encode())  # moved; it still has to end
        MOVED.inc()
        return [
            Output(
                self.topics.requests,
                destination.encode(),
                migration.SerializeToString(),
                partition_for_key(destination, self.partitions),
                message_headers("stopsms.v1.PreferenceRequested"),
            ),
            self.state.put(partition, subject.encode(), state.to_json().encode()),
        ]

    def _end(self, partition: int, subject: str, state: SubjectDecisions) -> list[Output]:
        """The old subject's scopes tombstoned on the list, its state forgotten."""
        outputs = [
            Output(
                self.topics.suppressions,
                suppression_key(subject, "" if scope == GLOBAL_SCOPE else scope).encode(),
                None,
                partition,
            )
            for scope in sorted(state.scopes)
        ]
        outputs.append(self.state.delete(partition, subject.encode()))
        self._ended += 1
        ENDED.inc()
        return outputs
