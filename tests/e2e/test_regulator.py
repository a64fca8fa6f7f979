"""End to end, the regulator's side: a citizen's complaint about a message sent after their
opt-out becomes a case with the evidence, a signed pack verifies (and fails once altered), five
complaints about an undeclared sender open an informal-sector case; every service a process,
driven through its public interfaces as a citizen, an operator, a PSVA and the CNDP would."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from stopsms.domain import ids
from stopsms.domain.evidence import ExportSigner
from stopsms.tools import cli
from stopsms.tools.launcher import LocalInfrastructure
from stopsms.tools.local_platform import DEFAULT_PORTS, LocalPlatform
from stopsms.v1 import events_pb2, intake_pb2, notifier_pb2, regulator_pb2

from ..conftest import E2E_PARTIES, until
from .conftest import KAFKA_USERS
from .test_click_reaches_everyone import Connections, Operator, Psva

pytestmark = pytest.mark.e2e
NUMBER, NUMBER_E164 = "06 61 98 76 54", "+212661987654"
SENT_AFTER = events_pb2.COMPLAINT_FINDING_SENT_AFTER_OPT_OUT


@pytest.fixture
def platform(infra: LocalInfrastructure, namespace: str, tmp_path: Path) -> Iterator[LocalPlatform]:
    local = LocalPlatform(
        tmp_path / "platform",
        namespace=namespace,
        shared_infra=infra,
        parties_file=E2E_PARTIES,
        senders_seed=None,  # the directory lists its own senders
        preferred_ports={name: 0 for name in DEFAULT_PORTS},
        kafka_users=KAFKA_USERS,
    )
    local.start()
    try:
        yield local
    finally:
        local.stop()


def at(seconds: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromMilliseconds(int(seconds * 1000))
    return stamp


async def test_a_message_after_an_opt_out_opens_a_case_whose_signed_pack_verifies(
    platform: LocalPlatform, tmp_path: Path
) -> None:
    async with Connections(platform) as conn, aiohttp.ClientSession() as web:
        intake_psva, psva_md = conn.stub("intake", "atlas-sms")
        intake_iam, iam_md = conn.stub("intake", "iam")
        notifier, regulator_md = conn.stub("notifier", "cndp")
        regulator, _ = conn.stub("console", "cndp")
        prosecutor, _ = conn.stub("console", "cndp-parquet")
        # The PSVA that sends for JUMIA is told of the cases that concern it, on its stream.
        psva_notifier, psva_notifier_md = conn.stub("notifier", "atlas-sms")
        told: list[events_pb2.Case] = []

        async def watch_cases() -> None:
            call = psva_notifier.WatchCases(
                notifier_pb2.WatchCasesRequest(), metadata=psva_notifier_md
            )
            async for answer in call:
                told.append(answer.case)

        watching = asyncio.create_task(watch_cases())

        async def complain(request_id: str, number: str, origin: str, text: str, when: float):
            return await intake_iam.SubmitComplaint(
                intake_pb2.SubmitComplaintRequest(
                    request_id=request_id,
                    msisdn=number,
                    from_address=origin,
                    received_time=at(when),
                    text=text,
                ),
                metadata=iam_md,
            )

        with Operator(platform):
            psva = Psva(*conn.stub("notifier", "atlas-sms"))
            try:
                # The PSVA's JUMIA campaign carries a StopSMS link: a compliant message.
                link = await intake_psva.IssueStopLink(
                    intake_pb2.IssueStopLinkRequest(msisdn=NUMBER, sender_id="JUMIA"),
                    metadata=psva_md,
                )
                campaign = f"JUMIA: -50% ce week-end. Stop: {link.url}"
                clean = await complain("c-clean", NUMBER, "JUMIA", f"SPAM {campaign}", time.time())

                # The citizen opts out on the link; the operator and the PSVA apply it.
                async with web.post(link.url, data={"action": "opt_out"}) as page:
                    assert page.status == 200
                opt_out = ids.event_id("link", f"{link.code}:opt_out")

                async def proof_done():  # type: ignore[no-untyped-def]
                    try:
                        reply = await notifier.GetPropagation(
                            notifier_pb2.GetPropagationRequest(event_id=opt_out),
                            metadata=regulator_md,
                        )
                    except grpc.aio.AioRpcError as exc:
                        assert exc.code() == grpc.StatusCode.NOT_FOUND
                        return None
                    return reply.propagation if reply.propagation.done else None

                proof = await until(proof_done, "the opt-out's proof of propagation done")
                applied_ms = {d.party_id: d.applied_time.ToMilliseconds() for d in proof.deliveries}
                assert set(applied_ms) == {"iam", "atlas-sms"}

                # A marketing SMS from JUMIA arrives afterwards; the citizen forwards it.
                after = await complain("c-after", NUMBER, "JUMIA", f"SPAM {campaign}", time.time())
                assert after.reference.startswith("SPAM-")
            finally:
                await psva.close()

        # The regulator sees the case, opened by that complaint.
        async def jumia_case():  # type: ignore[no-untyped-def]
            reply = await regulator.ListCases(
                regulator_pb2.ListCasesRequest(sender_id="JUMIA"), metadata=regulator_md
            )
            found = [c for c in reply.cases if c.complaint_count == 2]
            return found[0] if found else None

        case = await until(jumia_case, "a case against JUMIA holding both complaints")
        assert case.kind == events_pb2.CASE_KIND_DECLARED_SENDER
        assert case.opened_by == events_pb2.CASE_OPENING_SENT_AFTER_OPT_OUT
        assert case.opening_complaint_id == after.complaint_id
        assert {"iam", "atlas-sms"} <= set(case.party_ids)

        async def psva_told():  # type: ignore[no-untyped-def]
            return any(c.case_id == case.case_id for c in told)

        await until(psva_told, "the case against JUMIA on atlas-sms's WatchCases stream")
        watching.cancel()

        async def final_evidence():  # type: ignore[no-untyped-def]
            reply = await regulator.GetCase(
                regulator_pb2.GetCaseRequest(case=case.reference), metadata=regulator_md
            )
            shown = {c.assessment.complaint_id: c for c in reply.complaints}
            breach = shown.get(after.complaint_id)
            if breach is None or not breach.assessment.final or len(breach.assessment.applied) < 2:
                return None
            return shown

        shown = await until(final_evidence, "the case's evidence with the proof's applied times")
        breach = shown[after.complaint_id]
        assert breach.assessment.finding == SENT_AFTER
        assert breach.assessment.opt_out_event_id == opt_out  # the citizen's reference
        received_ms = breach.assessment.received_time.ToMilliseconds()
        for party in breach.assessment.applied:
            assert party.applied_time.ToMilliseconds() == applied_ms[party.party_id]
            assert party.applied_before_message_ms == received_ms - applied_ms[party.party_id] > 0
        assert [e.kind for e in breach.timeline] == [
            regulator_pb2.TIMELINE_EVENT_KIND_OPT_OUT_REQUESTED,
            regulator_pb2.TIMELINE_EVENT_KIND_OPT_OUT_DECIDED,
            regulator_pb2.TIMELINE_EVENT_KIND_PARTY_APPLIED,
            regulator_pb2.TIMELINE_EVENT_KIND_PARTY_APPLIED,
            regulator_pb2.TIMELINE_EVENT_KIND_MESSAGE_RECEIVED,
            regulator_pb2.TIMELINE_EVENT_KIND_COMPLAINT_FILED,
        ]
        assert breach.complainant == "+212 6•• •• •• 54"
        # The message with a valid link, sent before any opt-out, holds nothing against JUMIA.
        assert shown[clean.complaint_id].assessment.finding == (
            events_pb2.COMPLAINT_FINDING_NO_FINDING
        )
        assert shown[clean.complaint_id].assessment.link_valid

        # The evidence pack, signed; checked with the platform's published key.
        public_key = tmp_path / "export-key.pub"
        public_key.write_bytes(
            ExportSigner.load(platform.data_dir / "keys" / "export.pem").public_pem()
        )
        out = tmp_path / "pack"
        assert cli.main(["verify-export", "/nonexistent.pdf", "--public-key", str(public_key)]) == 1
        pack = await regulator.ExportCase(
            regulator_pb2.ExportCaseRequest(case=case.case_id), metadata=regulator_md
        )
        out.mkdir()
        for suffix, body in (
            (".pdf", pack.pdf),
            (".pdf.sig", pack.pdf_signature),
            (".json", pack.json),
            (".json.sig", pack.json_signature),
        ):
            (out / f"{pack.name}{suffix}").write_bytes(body)
        pdf, document = out / f"{pack.name}.pdf", out / f"{pack.name}.json"
        for signed in (pdf, document):
            assert cli.main(["verify-export", str(signed), "--public-key", str(public_key)]) == 0
        assert b"+212 6\x95\x95 \x95\x95 \x95\x95 54" in pack.pdf
        assert NUMBER_E164.encode() not in pack.pdf and NUMBER_E164.encode() not in pack.json
        assert opt_out.encode() in pack.pdf
        altered = bytearray(pack.pdf)
        altered[len(altered) // 3] ^= 0x20
        pdf.write_bytes(bytes(altered))
        assert cli.main(["verify-export", str(pdf), "--public-key", str(public_key)]) == 1

        # The numbers in full are the prosecutor's copy: its own identity, audited.
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await regulator.ExportCase(
                regulator_pb2.ExportCaseRequest(case=case.case_id, full_numbers=True),
                metadata=regulator_md,
            )
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        full = await prosecutor.ExportCase(
            regulator_pb2.ExportCaseRequest(case=case.case_id, full_numbers=True),
            metadata=regulator_md,
        )
        assert NUMBER_E164.encode() in full.pdf

        # Five complaints about one undeclared sender within the window: the informal sector.
        for n in range(5):
            await complain(
                f"promo-{n}",
                f"07 70 00 11 2{n}",
                "PROMOCASH",
                "SPAM Credit immediat sans justificatif, appelez vite",
                time.time() - n * 3600,
            )

        async def informal_case():  # type: ignore[no-untyped-def]
            reply = await regulator.ListCases(
                regulator_pb2.ListCasesRequest(kind=events_pb2.CASE_KIND_INFORMAL_SECTOR),
                metadata=regulator_md,
            )
            return next((c for c in reply.cases if c.complaint_count == 5), None)

        informal = await until(informal_case, "an informal-sector case against PROMOCASH")
        assert informal.sender_id == "PROMOCASH"
        assert informal.opened_by == events_pb2.CASE_OPENING_COMPLAINT_THRESHOLD
        assert [(f.finding, f.count) for f in informal.findings][0] == (
            events_pb2.COMPLAINT_FINDING_UNDECLARED_SENDER,
            5,
        )
        ranked = await regulator.ListCases(regulator_pb2.ListCasesRequest(), metadata=regulator_md)
        assert [c.case_id for c in ranked.cases] == [case.case_id, informal.case_id]
        # Paged one by one: the same order; a token is bound to its filters.
        first_page = await regulator.ListCases(
            regulator_pb2.ListCasesRequest(page_size=1), metadata=regulator_md
        )
        assert [c.case_id for c in first_page.cases] == [case.case_id]
        assert first_page.total_size == 2 and first_page.next_page_token
        second_page = await regulator.ListCases(
            regulator_pb2.ListCasesRequest(page_size=1, page_token=first_page.next_page_token),
            metadata=regulator_md,
        )
        assert [c.case_id for c in second_page.cases] == [informal.case_id]
        assert not second_page.next_page_token
        with pytest.raises(grpc.aio.AioRpcError) as bad_token:
            await regulator.ListCases(
                regulator_pb2.ListCasesRequest(
                    page_size=1, page_token=first_page.next_page_token, sender_id="JUMIA"
                ),
                metadata=regulator_md,
            )
        assert bad_token.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "page_token" in (bad_token.value.details() or "")
        by_finding = await regulator.ListCases(
            regulator_pb2.ListCasesRequest(finding=events_pb2.COMPLAINT_FINDING_UNDECLARED_SENDER),
            metadata=regulator_md,
        )
        assert [c.case_id for c in by_finding.cases] == [informal.case_id]
        by_party = await regulator.ListCases(
            regulator_pb2.ListCasesRequest(party_id="atlas-sms"), metadata=regulator_md
        )
        assert [c.case_id for c in by_party.cases] == [case.case_id]

        # The citizen's history, by number (pseudonymised on the server) or by reference.
        by_number = await regulator.SearchRequests(
            regulator_pb2.SearchRequestsRequest(msisdn=NUMBER), metadata=regulator_md
        )
        assert [r.event_id for r in by_number.requests] == [opt_out]
        assert by_number.requests[0].proof.done
        assert {c.complaint_id for c in by_number.complaints} == {
            clean.complaint_id,
            after.complaint_id,
        }
        by_reference = await regulator.SearchRequests(
            regulator_pb2.SearchRequestsRequest(reference=after.reference), metadata=regulator_md
        )
        assert by_reference.subject == by_number.subject

        # Who looked at this citizen: the regulator's own queries are in the audit trail.
        async def audited():  # type: ignore[no-untyped-def]
            reply = await regulator.SearchRequests(
                regulator_pb2.SearchRequestsRequest(reference=opt_out), metadata=regulator_md
            )
            methods = {(a.party_id, a.method.rsplit("/", 1)[-1]) for a in reply.audit}
            wanted = {
                ("cndp", "GetCase"),
                ("cndp", "SearchRequests"),
                ("cndp-parquet", "ExportCase"),
            }
            return wanted <= methods

        await until(audited, "the regulator's queries about the citizen in their audit trail")

        # Each party's compliance over the period.
        compliance = await regulator.PartyCompliance(
            regulator_pb2.PartyComplianceRequest(), metadata=regulator_md
        )
        rows = {row.party_id: row for row in compliance.parties}
        assert rows["iam"].changes_applied >= 1 and rows["atlas-sms"].changes_applied >= 1
        assert rows["atlas-sms"].complaints_with_findings == 1
        assert rows["iam"].complaints_with_findings == 6  # it carried them all

        # Nobody else calls the regulator's service.
        for party in ("iam", "atlas-sms"):
            stranger, md = conn.stub("console", party)
            with pytest.raises(grpc.aio.AioRpcError) as denied:
                await stranger.ListCases(regulator_pb2.ListCasesRequest(), metadata=md)
            assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
