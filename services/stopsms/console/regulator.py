"""The regulator's gRPC API: cases, their evidence, a citizen's history, compliance, exports.

Regulator identities only (any other party is PERMISSION_DENIED, and the refusal audited).
Every answer that names a citizen is in the audit trail with that citizen's subject: who
looked, at what, when. A number the regulator searches by is pseudonymised here and never
kept or logged; numbers in answers are masked, except in the prosecutor's copy of an export,
which needs the ``full-numbers`` permission and is audited as such.

Everything is answered from the console's in-memory indexes (the assessor's, the request
log's, the audit's), so a query costs what it returns, plus the cases it filters.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TypeVar

import grpc

from stopsms.adapters.identity import Authenticator
from stopsms.console.assessor import ComplaintAssessor
from stopsms.console.history import AuditIndex, RequestHistory
from stopsms.domain import evidence
from stopsms.domain.compliance import DAY_MS, ComplianceBook
from stopsms.domain.numbers import InvalidNumber, normalise_msisdn
from stopsms.domain.parties import InvalidSender, Party, check_sender_id
from stopsms.domain.privacy import KeyMaterialError, Pseudonymiser
from stopsms.domain.timestamps import readable
from stopsms.v1 import events_pb2, regulator_pb2, regulator_pb2_grpc

log = logging.getLogger(__name__)
T = TypeVar("T")

SERVICE_NAME = "stopsms.v1.RegulatorService"
METHOD = "/stopsms.v1.RegulatorService/"
DEFAULT_PAGE, MAX_PAGE = 50, 500
MAX_PERIOD_DAYS = 366
#: The range of a valid google.protobuf.Timestamp (years 1 to 9999).


def _rank(case: events_pb2.Case) -> tuple[int, int, int, str]:
    """Most serious first: opened by a message after an opt-out, then by complaints, latest."""
    return (
        0 if case.opened_by == events_pb2.CASE_OPENING_SENT_AFTER_OPT_OUT else 1,
        -case.complaint_count,
        -case.opened_time.ToMilliseconds(),
        case.case_id,
    )


class RegulatorServicer(regulator_pb2_grpc.RegulatorServiceServicer):
    """``RegulatorService`` over the console's indexes."""

    def __init__(
        self,
        *,
        auth: Authenticator,
        assessor: ComplaintAssessor,
        requests: RequestHistory,
        audit: AuditIndex,
        compliance: ComplianceBook,
        pseudonymiser: Pseudonymiser,
        signer: evidence.ExportSigner,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._auth = auth
        self._assessor = assessor
        self._requests = requests
        self._audit = audit
        self._compliance = compliance
        self._keys = pseudonymiser
        self._signer = signer
        self._clock = clock

    def party_of(self, context: grpc.aio.ServicerContext) -> Party | None:
        """The party a call names (no check: what a page may offer it)."""
        return self._auth.party_of(context)

    async def caller_of(self, context: grpc.aio.ServicerContext, name: str) -> Party:
        """The calling regulator identity, checked and refused as a call of ``name`` would be."""
        return await self._regulator(context, name)

    def now_ms(self) -> int:
        """The servicer's clock, in milliseconds."""
        return int(self._clock() * 1000)

    async def _regulator(self, context: grpc.aio.ServicerContext, name: str) -> Party:
        """The calling regulator identity, or the call ends PERMISSION_DENIED (audited)."""
        party = await self._auth.caller(context, METHOD + name)
        if not party.is_regulator:
            await self._auth.deny(
                context, party, METHOD + name, "only the regulator calls RegulatorService"
            )
        return party

    @staticmethod
    async def _invalid(context: grpc.aio.ServicerContext, message: str) -> None:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, message)

    async def _millis(
        self, context: grpc.aio.ServicerContext, request: object, field: str
    ) -> int | None:
        """A time field of the request in milliseconds (None: unset).

        A time outside the Timestamp's range is INVALID_ARGUMENT naming the field.
        """
        if not request.HasField(field):  # type: ignore[attr-defined]
            return None
        stamp = getattr(request, field)
        if not readable(stamp):
            await self._invalid(context, f"{field}: not a valid time")
        return int(stamp.ToMilliseconds())

    # --- cases ----------------------------------------------------------------------------

    async def ListCases(  # noqa: N802 - gRPC method name
        self, request: regulator_pb2.ListCasesRequest, context: grpc.aio.ServicerContext
    ) -> regulator_pb2.ListCasesResponse:
        """A page of the cases that match the filters, most serious first."""
        party = await self._regulator(context, "ListCases")
        if request.page_size < 0:
            await self._invalid(context, "page_size: cannot be negative")
        size = min(request.page_size or DEFAULT_PAGE, MAX_PAGE)
        sender_id = ""
        if request.sender_id:
            try:
                sender_id = check_sender_id(request.sender_id)
            except InvalidSender as exc:
                await self._invalid(context, f"sender_id: {exc}")
        start_ms = await self._millis(context, request, "start_time")
        end_ms = await self._millis(context, request, "end_time")
        if start_ms is not None and end_ms is not None and end_ms <= start_ms:
            await self._invalid(context, "end_time: must be after start_time")
        filters = request.__class__()
        filters.CopyFrom(request)
        filters.ClearField("page_size")
        filters.ClearField("page_token")
        fingerprint = hashlib.sha256(filters.SerializeToString(deterministic=True)).hexdigest()[:16]
        offset = 0
        if request.page_token:
            try:
                token = json.loads(base64.urlsafe_b64decode(request.page_token.encode()))
                offset, given = int(token["o"]), str(token["f"])
            except (ValueError, KeyError, TypeError):
                await self._invalid(context, "page_token: not a token this service gave")
            if given != fingerprint or offset < 0:
                await self._invalid(context, "page_token: the filters changed since that page")

        def matches(case: events_pb2.Case) -> bool:
            opened_ms = case.opened_time.ToMilliseconds()
            return (
                (not request.finding or any(f.finding == request.finding for f in case.findings))
                and (not sender_id or case.sender_id == sender_id)
                and (not request.party_id or request.party_id in case.party_ids)
                and (not request.kind or case.kind == request.kind)
                and (start_ms is None or opened_ms >= start_ms)
                and (end_ms is None or opened_ms < end_ms)
            )

        found = sorted(
            (c for c in self._assessor.published_cases.values() if matches(c)), key=_rank
        )
        page = found[offset : offset + size]
        next_token = ""
        if offset + size < len(found):
            next_token = base64.urlsafe_b64encode(
                json.dumps({"o": offset + size, "f": fingerprint}).encode()
            ).decode()
        self._auth.permitted(party, METHOD + "ListCases", [])
        return regulator_pb2.ListCasesResponse(
            cases=page, next_page_token=next_token, total_size=len(found)
        )

    async def _case(
        self, context: grpc.aio.ServicerContext, wanted: str
    ) -> tuple[events_pb2.Case, list[regulator_pb2.CaseComplaint], list[str]]:
        """A case, its complaints as the regulator sees them, and the subjects they name."""
        if not wanted or len(wanted) > 64:
            await self._invalid(context, "case: a case id or reference (CASE-XXXXXXXX)")
        case = self._assessor.published_cases.peek(wanted)
        if case is None and wanted.upper().startswith("CASE-"):
            case = next(
                (
                    c
                    for c in self._assessor.published_cases.values()
                    if c.reference == wanted.upper()
                ),
                None,
            )
        group = self._assessor.cases.group_of_case(case.case_id) if case is not None else None
        if case is None or group is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"case: no case {wanted!r}")
            raise AssertionError("unreachable")
        shown: list[regulator_pb2.CaseComplaint] = []
        subjects: list[str] = []
        held = [
            (complaint, assessed)
            for complaint_id in self._assessor.cases.complaint_ids(group)
            if (complaint := self._assessor.complaint(complaint_id)) is not None
            and (assessed := self._assessor.published.peek(complaint_id)) is not None
        ]
        proofs = await self._proofs(
            context, [a.opt_out_event_id for _, a in held if a.opt_out_event_id]
        )
        for complaint, assessed in held:
            subjects.append(complaint.subject)
            if complaint.origin_subject:
                subjects.append(complaint.origin_subject)
            proof = proofs.get(assessed.opt_out_event_id)
            item = regulator_pb2.CaseComplaint(
                assessment=assessed,
                channel=complaint.channel,
                party_id=complaint.party_id,
                complainant=self._number(complaint.sealed_msisdn, full=False),
                origin=complaint.sender_id
                or (
                    self._number(complaint.origin_sealed_msisdn, full=False)
                    if complaint.HasField("origin_sealed_msisdn")
                    else ""
                ),
                text=self._text(complaint),
                timeline=evidence.timeline(complaint, assessed, proof),
                screenshot_sha256=complaint.screenshot_sha256,
            )
            item.filed_time.CopyFrom(complaint.filed_time)
            shown.append(item)
        return case, shown, subjects

    @staticmethod
    async def _stored(context: grpc.aio.ServicerContext, lookup: Awaitable[T]) -> T:
        """A store's answer; UNAVAILABLE while the store does not answer.

        A partial answer would tell the regulator that a citizen asked nothing.
        """
        try:
            return await lookup
        except ConnectionError:
            log.warning("request log store unavailable", exc_info=True)
            await context.abort(
                grpc.StatusCode.UNAVAILABLE, "the request log store is unavailable; retry"
            )
            raise AssertionError("unreachable") from None

    async def _proofs(
        self, context: grpc.aio.ServicerContext, event_ids: list[str]
    ) -> dict[str, events_pb2.PropagationRecord]:
        """The proofs of these requests (done ones from the proof store, in one round trip).

        UNAVAILABLE while the store does not answer: an answer without them would show
        opt-outs as never applied.
        """
        try:
            return await self._assessor.proofs.latest(event_ids)
        except ConnectionError:
            log.warning("proof store unavailable", exc_info=True)
            await context.abort(
                grpc.StatusCode.UNAVAILABLE, "the proof store is unavailable; retry"
            )
            raise AssertionError("unreachable") from None

    def _number(self, sealed: events_pb2.SealedMsisdn, *, full: bool) -> str:
        """A sealed number as the regulator's documents show it (masked unless ``full``)."""
        try:
            e164 = self._keys.unseal(sealed)
        except KeyMaterialError:
            return evidence.MASK * 4
        return e164 if full else evidence.mask_number(e164)

    def _text(self, complaint: events_pb2.ComplaintFiled) -> str:
        if not complaint.HasField("sealed_text"):
            return ""
        try:
            return self._keys.unseal_text(complaint.sealed_text)
        except KeyMaterialError:
            return "(texte illisible : clé inconnue)"

    async def GetCase(  # noqa: N802 - gRPC method name
        self, request: regulator_pb2.GetCaseRequest, context: grpc.aio.ServicerContext
    ) -> regulator_pb2.GetCaseResponse:
        """One case, its complaints and their evidence timelines."""
        party = await self._regulator(context, "GetCase")
        case, complaints, subjects = await self._case(context, request.case.strip())
        self._auth.permitted(party, METHOD + "GetCase", subjects)
        return regulator_pb2.GetCaseResponse(case=case, complaints=complaints)

    async def ExportCase(  # noqa: N802 - gRPC method name
        self, request: regulator_pb2.ExportCaseRequest, context: grpc.aio.ServicerContext
    ) -> regulator_pb2.ExportCaseResponse:
        """The signed evidence pack of a case (PDF and JSON)."""
        party = await self._regulator(context, "ExportCase")
        method = METHOD + "ExportCase"
        if request.full_numbers and not party.may("full-numbers"):
            await self._auth.deny(
                context,
                party,
                method,
                "full_numbers: this identity may not export numbers in full (the directory "
                "grants full-numbers to the prosecutor's copy only)",
            )
        case, complaints, subjects = await self._case(context, request.case.strip())
        if request.full_numbers:
            for item in complaints:
                complaint = self._assessor.complaint(item.assessment.complaint_id)
                if complaint is not None:
                    item.complainant = self._number(complaint.sealed_msisdn, full=True)
                    if complaint.HasField("origin_sealed_msisdn"):
                        item.origin = self._number(complaint.origin_sealed_msisdn, full=True)
        now_ms = int(self._clock() * 1000)
        stamp = datetime.fromtimestamp(now_ms / 1000, UTC).strftime("%Y%m%dT%H%M%SZ")
        name = f"{case.reference}-{stamp}"
        shared = {
            "generated_ms": now_ms,
            "generated_by": party.id,
            "key_id": self._signer.key_id,
            "full_numbers": request.full_numbers,
        }
        document = evidence.pack_json(case, complaints, **shared)  # type: ignore[arg-type]
        pdf = evidence.pdf_document(
            evidence.pack_lines(case, complaints, **shared),  # type: ignore[arg-type]
            f"StopSMS {case.reference}",
        )
        self._auth.audit.record(
            party.id,
            party.kind,
            method,
            events_pb2.AUDIT_DECISION_PERMITTED,
            f"evidence pack of {case.reference}, numbers "
            + ("IN FULL (prosecutor's copy)" if request.full_numbers else "masked"),
            subjects,
        )
        log.info(
            "evidence pack of %s exported for %s (numbers %s)",
            case.reference,
            party.id,
            "in full" if request.full_numbers else "masked",
        )
        return regulator_pb2.ExportCaseResponse(
            name=name,
            json=document,
            pdf=pdf,
            json_signature=self._signer.sign(document, f"{name}.json"),
            pdf_signature=self._signer.sign(pdf, f"{name}.pdf"),
            key_id=self._signer.key_id,
        )

    # --- a citizen's history ----------------------------------------------------------------

    async def SearchRequests(  # noqa: N802 - gRPC method name
        self, request: regulator_pb2.SearchRequestsRequest, context: grpc.aio.ServicerContext
    ) -> regulator_pb2.SearchRequestsResponse:
        """One citizen's requests, decisions, proofs and complaints, and who looked at them."""
        party = await self._regulator(context, "SearchRequests")
        reference, msisdn = request.reference.strip(), request.msisdn
        if bool(reference) == bool(msisdn):
            await self._invalid(context, "reference or msisdn: exactly one is required")
        subject: str | None = None
        if msisdn:
            try:
                subject = self._keys.subject(normalise_msisdn(msisdn))
            except InvalidNumber as exc:
                await self._invalid(context, f"msisdn: {exc}")
        else:
            if len(reference) > 64:
                await self._invalid(context, "reference: too long")
            complaint = self._assessor.complaint_by_reference(reference)
            if complaint is not None:
                subject = complaint.subject
            else:  # an event id: its request in the log (a decision has its request's id)
                subject = await self._stored(context, self._requests.subject_of(reference))
            if subject is None:
                await context.abort(grpc.StatusCode.NOT_FOUND, "reference: no such reference")
        assert subject is not None
        answer = regulator_pb2.SearchRequestsResponse(subject=subject)
        asked_all = await self._stored(context, self._requests.of(subject))
        proofs = await self._proofs(context, [asked.event_id for asked in asked_all])
        # A request made before a re-keying was decided under the subject it had then (and
        # moved with the decisions): the searched subject's decision first.
        changes = await self._stored(
            context,
            self._assessor.decisions.changes_of([subject, *(a.subject for a in asked_all)]),
        )
        decided = {
            change.event_id: change for held in reversed(list(changes.values())) for change in held
        }
        for asked in asked_all:
            item = answer.requests.add(
                event_id=asked.event_id,
                party_id=asked.party_id,
                channel=asked.channel,
                action=asked.action,
                sender_id=asked.sender_id,
            )
            item.action_time.CopyFrom(asked.action_time)
            decision = decided.get(asked.event_id)
            if decision is not None:
                item.decided_time.CopyFrom(decision.decided_time)
                item.state, item.changed = decision.state, decision.changed
            proof = proofs.get(asked.event_id)
            if proof is not None:
                item.proof.CopyFrom(proof)
        for complaint in self._assessor.complaints_of(subject):
            assessed = self._assessor.published.peek(complaint.complaint_id)
            if assessed is not None:
                answer.complaints.append(assessed)
        answer.audit.extend(self._audit.of(subject))
        self._auth.permitted(party, METHOD + "SearchRequests", [subject])
        return answer

    # --- compliance -------------------------------------------------------------------------

    async def PartyCompliance(  # noqa: N802 - gRPC method name
        self, request: regulator_pb2.PartyComplianceRequest, context: grpc.aio.ServicerContext
    ) -> regulator_pb2.PartyComplianceResponse:
        """Per party over the period: applied, p50/p99, LATE, complaints with findings."""
        party = await self._regulator(context, "PartyCompliance")
        now_ms = int(self._clock() * 1000)
        end_ms = await self._millis(context, request, "end_time") or now_ms
        start_ms = await self._millis(context, request, "start_time")
        if start_ms is None:
            start_ms = end_ms - 30 * DAY_MS
        if end_ms <= start_ms:
            await self._invalid(context, "end_time: must be after start_time")
        if end_ms - start_ms > MAX_PERIOD_DAYS * DAY_MS:
            await self._invalid(context, f"start_time: a period is at most {MAX_PERIOD_DAYS} days")
        directory = self._auth.directory
        if request.party_id:
            asked = directory.get(request.party_id)
            if asked is None or not (asked.is_operator or asked.is_psva):
                await self._invalid(context, "party_id: not an operator or PSVA of the directory")
            parties = [asked] if asked is not None else []
        else:
            parties = sorted(
                (p for p in directory if p.is_operator or p.is_psva), key=lambda p: p.id
            )
        answer = regulator_pb2.PartyComplianceResponse(objective_ms=self._compliance.objective_ms)
        for one in parties:
            figures = self._compliance.figures(one.id, start_ms, end_ms, now_ms, one.kind)
            row = answer.parties.add(
                party_id=one.id,
                party_kind=one.kind,
                changes_applied=figures.applied,
                p50_ms=figures.p50_ms,
                p99_ms=figures.p99_ms,
                late=figures.late,
                complaints_with_findings=self._assessor.tally.count(one.id, start_ms, end_ms),
            )
            for day in figures.days:
                point = row.days.add(
                    changes_applied=day.applied, p50_ms=day.p50_ms, p99_ms=day.p99_ms, late=day.late
                )
                point.day.FromMilliseconds(day.day_ms)
        self._auth.permitted(party, METHOD + "PartyCompliance", [])
        return answer
