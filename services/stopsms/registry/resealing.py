"""Re-sealing: decisions in force sealed under an older data key, published again under the new.

Once none is left under it, the older key can be retired.

The list is compacted: the record in force for a subject and scope is its latest, and a number
that never changes again keeps the seal it was decided under for ever. While the registry holds
previous data keys (``STOPSMS_PREVIOUS_DATA_KEY_FILES``), a pass of the :class:`Resealer` reads
the partitions of ``stopsms.suppressions.v1`` whose requests this replica decides, and publishes
each record sealed under another key again: the same decision (event id, version, state,
times), its number sealed under the current key, and ``resealed_time`` set.

It runs as the decision stage's housekeeping, between batches of requests, because only there
is re-publishing safe: a record is re-sealed only while the subject's state says that its
version is the one in force for its scope. A decision made meanwhile has a higher version, so
the stale record is skipped and never lands after the newer one (which compaction would then
keep). The state also remembers the version re-sealed (``SubjectDecisions.resealed``), so a
later pass, which still reads the superseded records until compaction removes them, publishes
nothing twice.

The reading and the rounds are the :class:`~stopsms.registry.list_pass.ListPass`'s.
``stopsms keys reseal`` follows the passes from the list itself and, once no decision in
force is sealed under the retired key, publishes the
key-change record (docs/operations.md, "Re-seal the list").
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
from stopsms.domain.topics import GLOBAL_SCOPE, Topics, is_key_change, suppression_key
from stopsms.registry.list_pass import ListPass
from stopsms.v1 import events_pb2

log = logging.getLogger(__name__)

RESEALED = Counter(
    "stopsms_resealed_records",
    "Decisions in force published again under the current data key (re-sealing).",
)
PASS_STARTED = Gauge(
    "stopsms_reseal_pass_started_timestamp_seconds",
    "When the re-sealing pass under way (or the last one) started; 0 without previous keys.",
)
PASS_ENDED = Gauge(
    "stopsms_reseal_pass_completed_timestamp_seconds",
    "When the last complete re-sealing pass ended (every partition of this replica read).",
)
UNSEALABLE = Gauge(
    "stopsms_reseal_unsealable_records",
    "Decisions in force found by the last pass under a data key this registry does not hold.",
)


class Resealer(ListPass):
    """Re-seals, a round at a time, the decisions in force sealed under an older data key."""

    client_id = "stopsms-registry-reseal"
    name = "re-sealing pass"

    def __init__(
        self,
        bus: Bus,
        topics: Topics,
        state: StateStore,
        pseudonymiser: Pseudonymiser,
        pass_every_s: float,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(bus, topics, state, pass_every_s, clock, monotonic)
        self.pseudonymiser = pseudonymiser
        self.current = pseudonymiser.data_key.key_id
        self._resealed = self._unsealable = 0
        self._unknown_keys: set[str] = set()

    @property
    def enabled(self) -> bool:
        """Whether there is anything to re-seal from: previous data keys are held."""
        return len(self.pseudonymiser.data_keys) > 1

    def wanted(self, change: events_pb2.SuppressionChanged) -> bool:
        """A record sealed under another key than the current one (not the key-change note)."""
        return change.sealed_msisdn.key_id != self.current and not is_key_change(change.subject)

    def handle(self, partition: int, changes: list[events_pb2.SuppressionChanged]) -> list[Output]:
        """Re-seal the slice."""
        return self._reseal(partition, changes)

    def started(self) -> None:
        """A pass starts: its counts from zero."""
        self._resealed = self._unsealable = 0
        PASS_STARTED.set(self._clock())

    def finished(self, seconds: float) -> None:
        """Every partition read: the figures of the pass."""
        PASS_ENDED.set(self._clock())
        UNSEALABLE.set(self._unsealable)
        log.info(
            "re-sealing pass: %d decisions in force re-sealed under %s, %d under keys not "
            "held, in %.1f s",
            self._resealed,
            self.current,
            self._unsealable,
            seconds,
        )

    def _reseal(self, partition: int, changes: list[events_pb2.SuppressionChanged]) -> list[Output]:
        """Each record still in force, sealed under the current key; the states marked."""
        outputs: list[Output] = []
        marked: dict[bytes, SubjectDecisions] = {}
        now = self._clock()
        # One trace for the slice: a re-sealing continues no citizen's request.
        headers = message_headers("stopsms.v1.SuppressionChanged")
        for change in changes:
            subject = change.subject.encode()
            state = marked.get(subject)
            if state is None:
                raw = self.state.get(partition, subject)
                if raw is None:
                    continue  # erased, or the partition was handed to another replica
                state = SubjectDecisions.from_json(raw)
            if state.moved_to:
                continue  # re-keyed: its decisions are in force under the new subject
            scope = change.sender_id or GLOBAL_SCOPE
            entry = state.scopes.get(scope)
            if entry is None or entry.version != change.version:
                continue  # superseded: the newer decision is sealed under the current key
            if state.resealed.get(scope) == change.version:
                continue  # re-sealed by an earlier pass; compaction has not removed this yet
            try:
                number = self.pseudonymiser.unseal(change.sealed_msisdn)
            except KeyMaterialError:
                self._unsealable += 1
                if change.sealed_msisdn.key_id not in self._unknown_keys:
                    self._unknown_keys.add(change.sealed_msisdn.key_id)
                    log.error(
                        "decisions in force are sealed under data key %r, which this registry "
                        "does not hold: add it to STOPSMS_PREVIOUS_DATA_KEY_FILES to re-seal them",
                        change.sealed_msisdn.key_id,
                    )
                continue
            resealed = events_pb2.SuppressionChanged()
            resealed.CopyFrom(change)
            resealed.sealed_msisdn.CopyFrom(self.pseudonymiser.seal(number))
            resealed.resealed_time.FromNanoseconds(round(now * 1e9))
            # Read from ``partition``, where its subject places it: it goes back there.
            key = suppression_key(change.subject, change.sender_id).encode()
            value = resealed.SerializeToString()
            outputs.append(Output(self.topics.suppressions, key, value, partition, headers))
            state.resealed[scope] = change.version
            marked[subject] = state
        for subject, state in marked.items():
            outputs.append(self.state.put(partition, subject, state.to_json().encode()))
        self._resealed += len(outputs) - len(marked)
        RESEALED.inc(len(outputs) - len(marked))
        return outputs
