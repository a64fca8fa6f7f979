"""The complaint assessor on the real broker: findings from the evidence on the topics, a late
proof that makes a waiting assessment final, and the cases the complaints open."""

from __future__ import annotations

import time

import pytest

from stopsms.adapters.bus import CompactedTopicIndex, KafkaBus
from stopsms.adapters.kafka import KafkaPublisher
from stopsms.adapters.settings import Settings
from stopsms.console.assessor import ComplaintAssessor
from stopsms.console.history import RequestHistory
from stopsms.domain.ids import case_id
from stopsms.domain.message_check import LinkSite
from stopsms.domain.parties import PartiesDirectory
from stopsms.domain.topics import Topics, partition_for_key, suppression_key
from stopsms.intake.complaints import ComplaintDesk, Origin
from stopsms.intake.submission import InMemoryRequestReferences, RequestSubmitter
from stopsms.v1 import events_pb2
from tests.conftest import until

pytestmark = pytest.mark.integration

HOUR_MS = 3_600_000


async def test_complaints_are_assessed_from_the_evidence_and_a_late_proof_finalises_one(
    service_env: dict[str, str], namespace: str
) -> None:
    settings = Settings.from_env(service_env)
    topics = Topics(namespace)
    keys = settings.pseudonymiser()
    directory = PartiesDirectory.load(settings.parties_file)
    publisher = KafkaPublisher(settings.kafka_bootstrap)
    await publisher.start()
    submitter = RequestSubmitter(
        publisher, keys, directory, topics, 12, InMemoryRequestReferences()
    )
    desk = ComplaintDesk(publisher, submitter, keys, topics, 12)
    now_ms = int(time.time() * 1000)

    async def decided(e164: str, sender_id: str, event_id: str, ago_ms: int) -> None:
        subject = keys.subject(e164)
        change = events_pb2.SuppressionChanged(
            event_id=event_id,
            subject=subject,
            sender_id=sender_id,
            state=events_pb2.STATE_SUPPRESSED,
            changed=True,
        )
        change.decided_time.FromMilliseconds(now_ms - ago_ms)
        key = suppression_key(subject, sender_id).encode()
        await publisher.publish(
            topics.suppressions,
            key,
            change.SerializeToString(),
            partition=partition_for_key(key, 12),
        )

    async def proved(event_id: str, done: bool, applied_ago_ms: int) -> None:
        proof = events_pb2.PropagationRecord(event_id=event_id, done=done)
        for party in ("iam", "atlas-sms")[: 2 if done else 1]:
            delivery = proof.deliveries.add(
                party_id=party, status=events_pb2.DELIVERY_STATUS_APPLIED
            )
            delivery.applied_time.FromMilliseconds(now_ms - applied_ago_ms)
        await publisher.publish(topics.propagation, event_id.encode(), proof.SerializeToString())

    async def complain(request_id: str, e164: str, origin: str, text: str) -> str:
        complaint = desk.build(
            party_id="iam",
            request_id=request_id,
            channel=events_pb2.CHANNEL_SMS,
            complainant=submitter.protect(e164),
            origin=desk.origin(origin),
            received_time=None,  # now: after every decision above
            text=text,
        )
        await desk.file(complaint)
        return complaint.complaint_id

    assessments: CompactedTopicIndex[events_pb2.ComplaintAssessed] = CompactedTopicIndex(
        KafkaBus(settings.kafka),
        topics.complaint_assessments,
        events_pb2.ComplaintAssessed.FromString,
    )
    cases: CompactedTopicIndex[events_pb2.Case] = CompactedTopicIndex(
        KafkaBus(settings.kafka), topics.cases, events_pb2.Case.FromString
    )
    assessor = ComplaintAssessor(
        KafkaBus(settings.kafka),
        publisher,
        topics,
        directory,
        keys,
        LinkSite("https://stopsms.ma/"),
        requests=RequestHistory(KafkaBus(settings.kafka), topics.requests),
    )
    try:
        # A month-old opt-out whose decision compaction removed from the list: only the
        # request log has it.
        old = events_pb2.PreferenceRequested(
            event_id="old-opt-out",
            request_id="r-old",
            party_id="iam",
            action=events_pb2.ACTION_OPT_OUT,
            sender_id="JUMIA",
            subject=keys.subject("+212611000009"),
        )
        old.accepted_time.FromMilliseconds(now_ms - 30 * 24 * HOUR_MS)
        old_key = old.subject.encode()
        await publisher.publish(
            topics.requests,
            old_key,
            old.SerializeToString(),
            partition=partition_for_key(old_key, 12),
        )
        # Before the assessor starts: an opt-out an hour ago, applied by both parties.
        await decided("+212611000001", "JUMIA", "opt-out-1", HOUR_MS)
        await proved("opt-out-1", True, HOUR_MS - 60_000)
        after_opt_out = await complain(
            "c1", "+212611000001", "JUMIA", "SPAM Soldes chez Jumia! STOP au 1313"
        )
        informal = await complain("c2", "+212611000002", "+212 699 00 00 01", "Credit rapide!")
        clean = await complain("c3", "+212611000003", "JUMIA", "SPAM Soldes. STOP au 1313")
        await assessor.start()
        await assessments.start()
        await cases.start()

        async def assessed(complaint_id: str, final: bool = True, applied: int | None = None):  # type: ignore[no-untyped-def]
            """The complaint's assessment once it is (not) final, with that many parties."""

            async def probe():  # type: ignore[no-untyped-def]
                found = assessments.peek(complaint_id)
                if found is None or found.final != final:
                    return None
                return found if applied is None or len(found.applied) == applied else None

            return await until(probe, f"an assessment (final={final}) of {complaint_id}")

        first = await assessed(after_opt_out)
        assert first.finding == events_pb2.COMPLAINT_FINDING_SENT_AFTER_OPT_OUT
        assert first.opt_out_event_id == "opt-out-1" and first.opt_out_scope == "JUMIA"
        assert 0.99 * HOUR_MS < first.decided_before_message_ms < 1.1 * HOUR_MS
        assert {a.party_id for a in first.applied} == {"iam", "atlas-sms"}
        assert all(a.applied_before_message_ms > 0 for a in first.applied)
        second = await assessed(informal)
        assert list(second.findings) == [
            events_pb2.COMPLAINT_FINDING_UNDECLARED_SENDER,
            events_pb2.COMPLAINT_FINDING_NO_STOPSMS_MENTION,
        ]
        assert second.origin_subject and not second.sender_declared
        third = await assessed(clean)
        assert third.finding == events_pb2.COMPLAINT_FINDING_NO_FINDING

        async def case_of(group: str, complaints: int) -> events_pb2.Case:
            async def probe():  # type: ignore[no-untyped-def]
                found = cases.peek(case_id(group))
                return found if found is not None and found.complaint_count == complaints else None

            return await until(probe, f"the case of {group} with {complaints} complaints")

        # The complaint sent after an opt-out opened a case against the sender at once; the
        # clean complaint about the same sender joined it.
        jumia = await case_of("sender:JUMIA", 2)
        assert jumia.kind == events_pb2.CASE_KIND_DECLARED_SENDER
        assert jumia.opened_by == events_pb2.CASE_OPENING_SENT_AFTER_OPT_OUT
        assert jumia.opening_complaint_id == after_opt_out
        assert "iam" in jumia.party_ids
        # Five complaints about one phone number open an informal-sector case.
        for n in range(4):
            await complain(f"n{n}", f"+21261100010{n}", "+212 699 00 00 01", "Credit rapide!")
        informal_case = await case_of(f"number:{second.origin_subject}", 5)
        assert informal_case.kind == events_pb2.CASE_KIND_INFORMAL_SECTOR
        assert informal_case.opened_by == events_pb2.CASE_OPENING_COMPLAINT_THRESHOLD
        assert informal_case.party_ids == ["iam"]

        # A message under an opt-out of a month ago, known from the request log alone.
        long_after = await complain("c5", "+212611000009", "JUMIA", "SPAM Soldes. STOP au 1313")
        fifth = await assessed(long_after, final=False)  # no proof of it on the topic here
        assert fifth.finding == events_pb2.COMPLAINT_FINDING_SENT_AFTER_OPT_OUT
        assert fifth.opt_out_event_id == "old-opt-out"
        assert fifth.decided_before_message_ms > 29 * 24 * HOUR_MS
        await case_of("sender:JUMIA", 3)

        # A complaint whose sender the operator could not tell waits; the citizen's answer
        # naming it completes it, and the assessment is made again.
        unknown = await complain("c6", "+212611000010", "", "SPAM Promo du jour")
        waiting_origin = await assessed(unknown, final=False)
        assert not waiting_origin.sender_id and not waiting_origin.sender_declared
        first_record = desk.build(
            party_id="iam",
            request_id="c6",
            channel=events_pb2.CHANNEL_SMS,
            complainant=submitter.protect("+212611000010"),
            origin=desk.origin(""),
            received_time=None,
            text="SPAM Promo du jour",
        )
        await desk.file(desk.complete(first_record, desk.origin("PROMOCASH")))
        completed = await assessed(unknown)
        assert completed.sender_id == "PROMOCASH"
        assert completed.finding == events_pb2.COMPLAINT_FINDING_UNDECLARED_SENDER

        # While it runs: an opt-out whose proof is not done yet, then done.
        await decided("+212611000004", "", "opt-out-2", 10 * 60_000)
        await proved("opt-out-2", False, 9 * 60_000)
        late = await complain("c4", "+212611000004", "JUMIA", "SPAM Soldes. STOP au 1313")
        # Each piece of evidence read is a new revision: the complaint, the decision and the
        # pending proof may come in any order; wait for the one that holds all three.
        waiting = await assessed(late, final=False, applied=1)
        assert waiting.finding == events_pb2.COMPLAINT_FINDING_SENT_AFTER_OPT_OUT
        assert waiting.opt_out_scope == "*"
        await proved("opt-out-2", True, 9 * 60_000)
        done = await assessed(late)
        assert done.revision > waiting.revision and len(done.applied) == 2
        assert Origin().unknown

        # A restart reads everything again and publishes nothing it published before.
        late_case = await case_of("sender:JUMIA", 4)
        restarted = ComplaintAssessor(
            KafkaBus(settings.kafka),
            publisher,
            topics,
            directory,
            keys,
            LinkSite("https://stopsms.ma/"),
            requests=RequestHistory(KafkaBus(settings.kafka), topics.requests),
        )
        await restarted.start()

        async def caught_up() -> bool:
            return restarted.caught_up.is_set()

        try:
            await until(caught_up, "the restarted assessor catching up")
            assert restarted.assessed == 0
            assert restarted.published_cases.peek(late_case.case_id) == late_case
            assert len(restarted.cases.open_groups()) == 2
        finally:
            await restarted.stop()

    finally:
        await assessments.stop()
        await cases.stop()
        await assessor.stop()
        await publisher.stop()
