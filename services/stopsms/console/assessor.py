"""The complaint assessor: each ``ComplaintFiled`` becomes a ``ComplaintAssessed``.

It follows, each from the beginning of its topic, what the rule needs (``domain.complaints``):

- the register of senders (declared? its status, who sends for it), through the directory it
  entitles, so senders not yet migrated off the directory count as declared;
- the suppression list, kept per subject as the history of decided changes (every record
  read, not only the latest, so "in force when the message arrived" can be answered);
- the proofs of propagation, by event id (when each party applied an opt-out): the open
  ones in memory, the done ones read from the proof store the notifier fills;
- the issued StopSMS links, by code (is a link in the text the platform's, for this sender?);
- the assessments already published, so a restart publishes nothing it published before.

A complaint is assessed when read, and again when something it depends on arrives later: a
decision of the complainant decided before the message (the suppression list was behind), or
the opt-out's proof completing. A new assessment is published only when it differs from the
last one (its ``revision`` then counts up), keyed by complaint id on a compacted topic.

Every assessment also goes into the :class:`~stopsms.domain.cases.CaseBook`: a group of
complaints that opens a case, and an open case a complaint joins, publishes the case on
``stopsms.cases.v1`` (compacted by case id), where the operators concerned read it. Cases are
published only once the complaints read at start are all assessed, so a restart never
publishes a case with fewer complaints than it had.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol, TypeVar, cast

import mode

from stopsms.adapters.bus import Bus, CompactedTopicIndex, TopicReading
from stopsms.adapters.decision_store import DecisionStore
from stopsms.adapters.kafka import Publisher, PublishFailed, Record, message_headers
from stopsms.adapters.proof_store import ProofStore, PropagationIndex
from stopsms.adapters.sender_register import SenderRegisterFollower
from stopsms.adapters.streams import stop_together
from stopsms.console.history import DecisionHistory, RequestHistory, decision_of
from stopsms.domain.cases import CaseBook, CasePolicy, same_case
from stopsms.domain.complaints import Decision, Evidence, assess, opt_out_in_force
from stopsms.domain.compliance import ComplaintTally
from stopsms.domain.ids import case_id
from stopsms.domain.message_check import LinkSite, TextReading, read_text
from stopsms.domain.parties import PartiesDirectory
from stopsms.domain.privacy import KeyMaterialError, Pseudonymiser
from stopsms.domain.senders import ACTIVE
from stopsms.domain.timestamps import readable
from stopsms.domain.topics import GLOBAL_SCOPE, Topics
from stopsms.v1 import events_pb2, senders_pb2

log = logging.getLogger(__name__)
T = TypeVar("T")

#: The suppression list and the proofs change with every opt-out and every party's receipt:
#: the assessor takes them at most five times a second (a late decision or proof re-assesses
#: a complaint a fraction of a second later; each wake-up costs a fetch of every partition).
INDEX_WINDOW_S = 0.2

#: A request accepted this long ago has been decided (seconds): when the suppression list no
#: longer holds its decision, compaction removed it.
DECIDED_WITHIN_S = 3600


def _comparable(assessed: events_pb2.ComplaintAssessed) -> bytes:
    """An assessment without its time and revision: what tells a new finding from a repeat."""
    copy = events_pb2.ComplaintAssessed()
    copy.CopyFrom(assessed)
    copy.ClearField("assessed_time")
    copy.revision = 0
    return copy.SerializeToString(deterministic=True)


class ProofIndex(PropagationIndex):
    """The proofs of propagation by event id, and a call when one changes.

    With a store (the console's process: the notifier's proof store, in Redis), memory holds
    only the open proofs and the few seconds of done ones the store has not taken yet, whatever
    the history; a done proof is read from the store (:meth:`latest`). Without one, every proof
    stays in memory (tests of the assessor alone).
    """

    WINDOW_S = INDEX_WINDOW_S

    def __init__(
        self, bus: Bus, topic: str, store: ProofStore | None = None, **kwargs: Any
    ) -> None:
        # No group: the notifier's replicas fill the store; the console only reads it.
        super().__init__(bus, topic, store, group=None, **kwargs)
        self.on_change: Callable[[str], None] = lambda event_id: None
        #: Also told of every record read (the console's compliance figures).
        self.listeners: list[Callable[[events_pb2.PropagationRecord], None]] = []

    def on_value(self, key: str, value: events_pb2.PropagationRecord | None) -> None:
        """Keep the open ones apart; tell the assessor, and the listeners."""
        super().on_value(key, value)
        self.on_change(key)
        if value is not None:
            for listener in self.listeners:
                listener(value)


class IssuedLink(Protocol):
    """What the assessor needs of an issued link: its sender."""

    @property
    def sender_id(self) -> str:
        """The sender the link was issued for."""
        ...


class LinkLookup(Protocol):
    """Finds issued links by code (a service: it starts, stops and catches up)."""

    async def get_many(
        self, codes: Iterable[str], wait_seconds: float = 3.0
    ) -> Mapping[str, IssuedLink]:
        """The links of those codes that were issued."""
        ...

    async def caught_up(self, wait_seconds: float = 3.0) -> bool:
        """Wait until every link issued before the call can be found."""
        ...


class IndexedLinks(CompactedTopicIndex[events_pb2.StopLink]):
    """Every issued link in memory, from the links topic (tests and benchmarks of the assessor).

    The console's process asks the link store instead, so that no console holds every link.
    """

    def __init__(self, bus: Bus, topic: str, **kwargs: object) -> None:
        super().__init__(bus, topic, events_pb2.StopLink.FromString, **kwargs)

    async def get_many(
        self, codes: Iterable[str], wait_seconds: float = 3.0
    ) -> dict[str, events_pb2.StopLink]:
        """The links of those codes held, once caught up for the others."""
        wanted = list(codes)
        if any(self.peek(code) is None for code in wanted):
            await self.caught_up(wait_seconds)
        return {code: link for code in wanted if (link := self.peek(code)) is not None}


def received_time_readable(complaint: events_pb2.ComplaintFiled) -> bool:
    """Whether the complaint's ``received_time`` is a time; if not, it becomes the filing time.

    Intake refuses such times, but a complaint filed before it did is on the topic for good:
    converting it raised, and the assessor stopped at it on every start. Assessed as of its
    filing (what intake records when the time is absent), the complaint still counts.
    """
    if readable(complaint.received_time):
        return True
    complaint.received_time.CopyFrom(complaint.filed_time)
    return False


class ComplaintAssessor(mode.Service):
    """Reads complaints, assesses them, publishes (and re-publishes) their assessments."""

    def __init__(
        self,
        bus: Bus,
        publisher: Publisher,
        topics: Topics,
        directory: PartiesDirectory,
        pseudonymiser: Pseudonymiser,
        link_site: LinkSite,
        *,
        clock: Callable[[], float] = time.time,
        case_policy: CasePolicy | None = None,
        requests: RequestHistory | None = None,
        links: LinkLookup | None = None,
        proof_store: ProofStore | None = None,
        decision_store: DecisionStore | None = None,
        **kwargs: object,
    ) -> None:
        self._bus = bus
        self._publisher = publisher
        self._topics = topics
        self._directory = directory
        self._pseudonymiser = pseudonymiser
        self._site = link_site
        self._clock = clock
        self.register = SenderRegisterFollower(bus, topics.senders, directory)
        #: The request log per subject: the decisions compaction removed from the list.
        self.requests = requests
        self.decisions = DecisionHistory(bus, topics.suppressions, decision_store)
        self.proofs = ProofIndex(bus, topics.propagation, proof_store)
        # listening before the indexes read anything
        self.decisions.on_decision = self._decided
        self.proofs.on_change = self._proved
        #: Where link codes are looked up: the link store intake fills (the console's
        #: process), or an index of the links topic in memory (tests and benchmarks).
        self.links: LinkLookup = links or IndexedLinks(bus, topics.links)
        self.published: CompactedTopicIndex[events_pb2.ComplaintAssessed] = CompactedTopicIndex(
            bus, topics.complaint_assessments, events_pb2.ComplaintAssessed.FromString
        )
        self.published_cases: CompactedTopicIndex[events_pb2.Case] = CompactedTopicIndex(
            bus, topics.cases, events_pb2.Case.FromString
        )
        self.cases = CaseBook(case_policy)
        self.tally = ComplaintTally()  # complaints with a finding per party and day
        self._cases_ready = False  # set once the complaints read at start are assessed
        self.caught_up = asyncio.Event()  # set then: the console serves from this moment
        self._complaints: dict[str, events_pb2.ComplaintFiled] = {}
        self._by_subject: dict[str, list[str]] = defaultdict(list)
        self._by_reference: dict[str, str] = {}
        self._by_opt_out: dict[str, set[str]] = defaultdict(set)
        self._again: asyncio.Queue[str] = asyncio.Queue()
        self._reader: TopicReading | None = None
        self.assessed = 0
        super().__init__(**kwargs)  # type: ignore[arg-type]

    def on_init_dependencies(self) -> list[mode.ServiceT]:
        """The indexes start (and read their topics) before complaints are read."""
        indexes: list[mode.ServiceT] = [
            self.register,
            self.decisions,
            self.proofs,
            cast(mode.ServiceT, self.links),  # a service too: it starts and stops
            self.published,
            self.published_cases,
        ]
        return [*indexes, self.requests] if self.requests is not None else indexes

    async def _stop_children(self) -> None:
        """The indexes stop at once, once the assessor's own reading has (``on_stop``)."""
        await stop_together(self._children)

    async def on_started(self) -> None:
        """Once the indexes run: catch them up, then read the complaints from the beginning."""
        for index in (
            self.decisions,
            self.proofs,
            self.links,
            self.published,
            self.published_cases,
        ):
            await index.caught_up(15.0)
        if self.requests is not None:
            await self.requests.read_to_end.wait()  # the request log as it was at start
        reader = self._bus.reader(self._topics.complaints, client_id="stopsms-assessor")
        await reader.start()
        self._reader = reader  # only now: the reading task waits for a started reader

    async def on_stop(self) -> None:
        """Close the complaints' reader."""
        if self._reader is not None:
            await self._reader.stop()

    def _proved(self, event_id: str) -> None:
        """An opt-out's proof changed: the complaints that name it are looked at again."""
        for complaint_id in self._by_opt_out.get(event_id, ()):
            self._again.put_nowait(complaint_id)

    def _decided(self, decision: Decision, subject: str) -> None:
        """A decision arrived: the subject's complaints about later messages are looked at again."""
        for complaint_id in self._by_subject.get(subject, ()):
            complaint = self._complaints[complaint_id]
            if decision.decided_ms <= complaint.received_time.ToMilliseconds():
                self._again.put_nowait(complaint_id)

    def _took(self, records: list[Record]) -> list[str]:
        """Keep the complaints read; their ids, to assess."""
        read: list[str] = []
        for record in records:
            if record.value is None:
                continue
            try:
                complaint = events_pb2.ComplaintFiled.FromString(record.value)
            except Exception:  # noqa: BLE001 - one bad record must not stop the assessor
                log.exception("unreadable complaint at offset %d", record.offset)
                continue
            if not received_time_readable(complaint):
                log.warning(
                    "complaint %s at offset %d: its received_time is not a valid time; "
                    "assessed as of its filing",
                    complaint.complaint_id,
                    record.offset,
                )
            known = self._complaints.get(complaint.complaint_id)
            if known is None:
                self._complaints[complaint.complaint_id] = complaint
                self._by_subject[complaint.subject].append(complaint.complaint_id)
                self._by_reference[complaint.reference] = complaint.complaint_id
            elif known.origin_unknown and not complaint.origin_unknown:
                # the citizen named the sender: the complaint again, whole, with its origin
                self._complaints[complaint.complaint_id] = complaint
            read.append(complaint.complaint_id)
        return read

    @mode.Service.task
    async def _read_complaints(self) -> None:
        while self._reader is None and not self.should_stop:
            await asyncio.sleep(0.05)
        assert self._reader is not None
        async for records in self._reader.read_to_end():
            await self._assess(self._took(records))
        # every complaint of the past is in the book: the cases it holds are complete
        self._cases_ready = True
        await self._publish_cases(self.cases.open_groups())
        self.caught_up.set()
        log.info(
            "assessor caught up: %d complaints, %d open cases",
            len(self._complaints),
            len(self.cases.open_groups()),
        )
        while not self.should_stop:
            read = self._took(await self._reader.read(timeout_ms=200))
            if read:
                await self._assess(read)

    @mode.Service.task
    async def _assess_again(self) -> None:
        while not self.should_stop:
            again = [await self._again.get()]
            while not self._again.empty():
                again.append(self._again.get_nowait())
            await self._assess(again)

    def _sender(self, sender_id: str) -> senders_pb2.Sender | None:
        """The register's record of a sender (None: nobody declared it).

        A sender still declared only in the directory counts as declared and active, with the
        parties that send for it.
        """
        if not sender_id:
            return None
        record = self.register.register.get(sender_id)
        if record is not None:
            return record
        if not self._directory.is_declared(sender_id):
            return None
        senders = [party.id for party in self._directory if party.sends_for(sender_id)]
        return senders_pb2.Sender(sender_id=sender_id, status=ACTIVE, sending_party_ids=senders)

    def history_of(
        self,
        subject: str,
        decided: Sequence[events_pb2.SuppressionChanged] = (),
        asked: Sequence[events_pb2.PreferenceRequested] = (),
    ) -> list[Decision]:
        """A subject's decisions: those on the suppression list, and older ones from the log.

        The compacted list keeps only each scope's latest decision once its compaction lag
        (seven days) has passed; an older opt-out a message arrived under is then read from
        the request log, with its acceptance as its time. Only requests accepted more than
        :data:`DECIDED_WITHIN_S` ago count this way: a newer one without its decision is
        still being decided, not compacted away. ``decided`` and ``asked`` are the subject's
        decided changes and requests (read before, with the batch's others: :meth:`histories`).
        """
        history = list(dict.fromkeys(decision_of(change) for change in decided))
        if self.requests is None:
            return history
        known = {decision.event_id for decision in history}
        settled_ms = int(self._clock() * 1000) - DECIDED_WITHIN_S * 1000
        for request in asked:
            accepted_ms = request.accepted_time.ToMilliseconds()
            if request.event_id in known or accepted_ms > settled_ms:
                continue
            state = (
                events_pb2.STATE_SUPPRESSED
                if request.action == events_pb2.ACTION_OPT_OUT
                else events_pb2.STATE_ALLOWED
            )
            history.append(
                Decision(request.sender_id or GLOBAL_SCOPE, state, accepted_ms, request.event_id)
            )
        return history

    def reading(self, complaint: events_pb2.ComplaintFiled) -> TextReading | None:
        """What the complained-of text says (None: no text, or its key is unknown)."""
        if not complaint.HasField("sealed_text"):
            return None
        try:
            text = self._pseudonymiser.unseal_text(complaint.sealed_text)
        except KeyMaterialError:
            log.warning("complaint %s: its text's key is unknown", complaint.complaint_id)
            return None
        return read_text(text, self._site)

    def opt_out_of(
        self,
        complaint: events_pb2.ComplaintFiled,
        decided: Sequence[events_pb2.SuppressionChanged] = (),
        asked: Sequence[events_pb2.PreferenceRequested] = (),
    ) -> tuple[list[Decision], Decision | None]:
        """The complainant's decisions, and the opt-out in force when the message arrived."""
        history = self.history_of(complaint.subject, decided, asked)
        return history, opt_out_in_force(
            history, complaint.sender_id, complaint.received_time.ToMilliseconds()
        )

    def evidence(
        self,
        complaint: events_pb2.ComplaintFiled,
        reading: TextReading | None,
        links: Mapping[str, IssuedLink],
        decided: tuple[list[Decision], Decision | None],
        proofs: Mapping[str, events_pb2.PropagationRecord],
    ) -> Evidence:
        """Everything the rule needs about one complaint, as the indexes hold it now.

        ``links`` holds the issued links of the text's codes, ``decided`` the complainant's
        decisions and opt-out in force (:meth:`opt_out_of`), ``proofs`` the proofs of such
        opt-outs (all looked up before, together).
        """
        link_valid = False
        if reading is not None:
            found = [links.get(code) for code in reading.link_codes]
            link_valid = bool(found) and all(
                link is not None and link.sender_id == complaint.sender_id for link in found
            )
        history, opt_out = decided
        proof = None
        if opt_out is not None:
            self._by_opt_out[opt_out.event_id].add(complaint.complaint_id)
            proof = proofs.get(opt_out.event_id)
        return Evidence(
            complaint=complaint,
            sender=self._sender(complaint.sender_id),
            reading=reading,
            link_valid=link_valid,
            history=tuple(history),
            proof=proof,
        )

    def complaint(self, complaint_id: str) -> events_pb2.ComplaintFiled | None:
        """A complaint read, by id."""
        return self._complaints.get(complaint_id)

    def complaint_by_reference(self, reference: str) -> events_pb2.ComplaintFiled | None:
        """A complaint by its reference (SPAM-XXXXXXXX) or its id."""
        found = self._by_reference.get(reference.upper())
        return self._complaints.get(found or reference)

    def complaints_of(self, subject: str) -> list[events_pb2.ComplaintFiled]:
        """A complainant's complaints, in the order read."""
        return [self._complaints[c] for c in self._by_subject.get(subject, ())]

    def carrier(self, complaint: events_pb2.ComplaintFiled) -> str:
        """The operator that carried a complained-of message (empty for the web)."""
        return self._carrier(complaint)

    def _carrier(self, complaint: events_pb2.ComplaintFiled) -> str:
        """The operator that carried the complained-of message (it forwarded the complaint)."""
        party = self._directory.get(complaint.party_id)
        return party.id if party is not None and party.is_operator else ""

    @staticmethod
    async def _waiting(store: str, lookup: Callable[[], Awaitable[T]]) -> T:
        """A store's answer; while the store does not answer, wait for it.

        An assessment made without it would be wrong, not late: every link foreign, the opt-out
        the message arrived under missed, or its proof missing.
        """
        while True:
            try:
                return await lookup()
            except ConnectionError:
                log.warning("%s unavailable; assessments wait for it", store, exc_info=True)
                await asyncio.sleep(1.0)

    async def _links_of(self, codes: set[str]) -> Mapping[str, IssuedLink]:
        """The issued links of ``codes`` (the link store)."""
        if not codes:
            return {}
        return await self._waiting("link store", lambda: self.links.get_many(codes))

    async def histories(
        self, subjects: set[str]
    ) -> tuple[
        Mapping[str, list[events_pb2.SuppressionChanged]],
        Mapping[str, list[events_pb2.PreferenceRequested]],
    ]:
        """The complainants' decided changes and requests (a round trip each, side by side)."""
        requests = self.requests

        async def asked() -> Mapping[str, list[events_pb2.PreferenceRequested]]:
            if requests is None:
                return {}
            return await self._waiting("request log store", lambda: requests.of_many(subjects))

        return await asyncio.gather(
            self._waiting("decision store", lambda: self.decisions.changes_of(subjects)), asked()
        )

    async def _proofs_of(self, event_ids: set[str]) -> Mapping[str, events_pb2.PropagationRecord]:
        """The proofs of these opt-outs (in memory, else the proof store)."""
        return await self._waiting("proof store", lambda: self.proofs.latest(event_ids))

    async def _assess(self, complaint_ids: list[str]) -> None:
        """Assess complaints; publish, together, the assessments and the cases that changed."""
        now_ms = int(self._clock() * 1000)
        changed: dict[str, events_pb2.ComplaintAssessed] = {}
        groups: set[str] = set()
        ids = list(dict.fromkeys(complaint_ids))
        readings = {c: self.reading(self._complaints[c]) for c in ids}
        codes = {code for r in readings.values() if r is not None for code in r.link_codes}
        links = await self._links_of(codes)
        changes, asked = await self.histories({self._complaints[c].subject for c in ids})
        decided = {
            c: self.opt_out_of(
                complaint, changes.get(complaint.subject, ()), asked.get(complaint.subject, ())
            )
            for c in ids
            if (complaint := self._complaints[c]) is not None
        }
        proofs = await self._proofs_of(
            {opt_out.event_id for _, opt_out in decided.values() if opt_out is not None}
        )
        for complaint_id in ids:
            before = self.published.peek(complaint_id)
            complaint = self._complaints[complaint_id]
            assessed = assess(
                self.evidence(
                    complaint, readings[complaint_id], links, decided[complaint_id], proofs
                ),
                now_ms=now_ms,
                revision=(before.revision + 1) if before is not None else 1,
            )
            if before is None or _comparable(before) != _comparable(assessed):
                changed[complaint_id] = assessed
            carrier = self._carrier(complaint)
            self.tally.record(assessed, carrier)
            group = self.cases.add(assessed, carrier)
            if group is not None:
                groups.add(group)
        await asyncio.gather(
            *(
                self._publish(
                    self._topics.complaint_assessments,
                    a.complaint_id,
                    a.SerializeToString(),
                    "stopsms.v1.ComplaintAssessed",
                )
                for a in changed.values()
            )
        )
        for complaint_id, assessed in changed.items():
            self.published.put(complaint_id, assessed)
            self.assessed += 1
            log.info(
                "complaint %s assessed: %s (revision %d%s)",
                assessed.reference,
                events_pb2.ComplaintFinding.Name(assessed.finding),
                assessed.revision,
                "" if assessed.final else ", waiting for the proof",
            )
        if self._cases_ready and groups:
            await self._publish_cases(sorted(groups))

    async def _publish_cases(self, groups: list[str]) -> None:
        """Publish, together, the cases of these groups whose record changed."""
        now_ms = int(self._clock() * 1000)
        changed: list[events_pb2.Case] = []
        for group in groups:
            before = self.published_cases.peek(case_id(group))
            case = self.cases.case(group, now_ms, before)
            if case is not None and (before is None or not same_case(before, case)):
                changed.append(case)
        await asyncio.gather(
            *(
                self._publish(
                    self._topics.cases, case.case_id, case.SerializeToString(), "stopsms.v1.Case"
                )
                for case in changed
            )
        )
        for case in changed:
            self.published_cases.put(case.case_id, case)
            log.info(
                "case %s %s: %d complaints (%s)",
                case.reference,
                "opened" if case.revision == 1 else "updated",
                case.complaint_count,
                events_pb2.CaseOpening.Name(case.opened_by),
            )

    async def _publish(self, topic: str, key: str, value: bytes, type_name: str) -> None:
        """Publish one record, retrying until Kafka takes it: an assessment is never lost."""
        while not self.should_stop:
            try:
                await self._publisher.publish(
                    topic, key.encode(), value, headers=message_headers(type_name)
                )
                return
            except PublishFailed:
                log.warning("%s %s not acknowledged; retrying", type_name, key)
                await asyncio.sleep(1.0)
