"""The CNDP's console in the browser: HTTPS with the regulator's client certificate.

The server asks every browser for a client certificate signed by the platform's CA (mutual
TLS, as the gRPC APIs do); the party is the one the certificate names, and only regulator
identities get a page (any other is refused with 403, and the refusal audited). Each page is
answered by the very ``RegulatorService`` methods a gRPC caller reaches, through a
:class:`WebCall` that stands for the call: the same checks, the same audit, the same answers.

In the development mode (``STOPSMS_INSECURE_IDENTITY``) the server speaks plain HTTP and takes
the party from the ``x-stopsms-party`` header, as the gRPC services do.
"""

from __future__ import annotations

import io
import logging
import ssl
import zipfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import mode
from aiohttp import web

from stopsms.adapters.identity import PARTY_HEADER
from stopsms.adapters.tls import party_from_sans, party_san, read_material
from stopsms.console import pages
from stopsms.console.assessor import ComplaintAssessor
from stopsms.console.regulator import RegulatorServicer
from stopsms.domain.numbers import InvalidNumber, normalise_msisdn
from stopsms.v1 import regulator_pb2

log = logging.getLogger(__name__)

#: gRPC refusals as HTTP statuses.
HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
}
#: What the export button downloads: the whole pack in one ZIP (each export is made anew,
#: stamped with its time, so a document and its signature must come from one export).
PACK_FILES = (
    (".pdf", "pdf"),
    (".pdf.sig", "pdf_signature"),
    (".json", "json"),
    (".json.sig", "json_signature"),
)


def pack_zip(pack: regulator_pb2.ExportCaseResponse) -> bytes:
    """The evidence pack as one ZIP: the PDF, the JSON and their signature files."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for suffix, field in PACK_FILES:
            archive.writestr(f"{pack.name}{suffix}", getattr(pack, field))
    return out.getvalue()


class Refused(Exception):
    """A ``RegulatorService`` method ended the call: its status and message."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code, self.details = code, details


class WebCall:
    """What the servicer reads of a gRPC call, for one browser request."""

    def __init__(self, party_id: str | None) -> None:
        self._party_id = party_id

    def auth_context(self) -> dict[str, list[bytes]]:
        """The peer's identity as gRPC's TLS would give it."""
        if self._party_id is None:
            return {}
        return {"x509_subject_alternative_name": [party_san(self._party_id).encode()]}

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        """The development header, when the party came from one."""
        return ((PARTY_HEADER, self._party_id),) if self._party_id else ()

    async def abort(self, code: grpc.StatusCode, details: str = "", **_: Any) -> None:
        """End the request with that refusal."""
        raise Refused(code, details)


def client_tls(folder: Path) -> ssl.SSLContext:
    """HTTPS that requires a client certificate signed by the platform's CA."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(folder / "server.pem", folder / "server.key")
    context.load_verify_locations(cadata=read_material(folder / "ca.pem").decode())
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def _peer_party(request: web.Request, insecure: bool) -> str | None:
    """The party a browser request comes from: its certificate's, or the development header."""
    if insecure:
        return request.headers.get(PARTY_HEADER) or None
    transport = request.transport
    certificate = transport.get_extra_info("peercert") if transport is not None else None
    names = (certificate or {}).get("subjectAltName", ())
    return party_from_sans(name for kind, name in names if kind == "DNS")


def _lang(request: web.Request) -> str:
    lang = request.query.get("lang", "")
    if lang in pages.LANGUAGES:
        return lang
    accepted = request.headers.get("Accept-Language", "")
    return "ar" if accepted.lower().startswith("ar") else "fr"


def _html(text: str, status: int = 200) -> web.Response:
    return web.Response(
        text=text,
        status=status,
        content_type="text/html",
        headers={
            "Cache-Control": "no-store",
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
            "img-src 'self'; form-action 'self'",
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
        },
    )


Handler = Callable[[web.Request, WebCall, str], Awaitable[web.Response]]


def create_app(
    servicer: RegulatorServicer, assessor: ComplaintAssessor, *, insecure: bool
) -> web.Application:
    """The console's pages over the servicer."""

    def page(handler: Handler) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def serve(request: web.Request) -> web.Response:
            lang = _lang(request)
            call = WebCall(_peer_party(request, insecure))
            try:
                return await handler(request, call, lang)
            except Refused as refused:
                status = HTTP_STATUS.get(refused.code, 503)
                return _html(pages.error_page(lang, status, refused.details), status)

        return serve

    async def cases(request: web.Request, call: WebCall, lang: str) -> web.Response:
        answer = await servicer.ListCases(
            regulator_pb2.ListCasesRequest(page_size=200),
            call,  # type: ignore[arg-type]
        )
        return _html(
            pages.cases_page(lang, answer.cases, assessor.cases.most_complained_informal())
        )

    async def case(request: web.Request, call: WebCall, lang: str) -> web.Response:
        answer = await servicer.GetCase(
            regulator_pb2.GetCaseRequest(case=request.match_info["case"]),
            call,  # type: ignore[arg-type]
        )
        party = servicer.party_of(call)
        may_full = party is not None and party.may("full-numbers")
        return _html(pages.case_page(lang, answer, may_export_full=may_full))

    async def export(request: web.Request, call: WebCall, lang: str) -> web.Response:
        full = request.query.get("full") == "1"
        pack = await servicer.ExportCase(
            regulator_pb2.ExportCaseRequest(case=request.match_info["case"], full_numbers=full),
            call,  # type: ignore[arg-type]
        )
        name = f"{pack.name}{'-parquet' if full else ''}.zip"
        return web.Response(
            body=pack_zip(pack),
            content_type="application/zip",
            headers={
                "Content-Disposition": f'attachment; filename="{name}"',
                "Cache-Control": "no-store",
            },
        )

    async def search(request: web.Request, call: WebCall, lang: str) -> web.Response:
        # The form POSTs, so that a number searched for is in no URL (history, proxies);
        # a reference may come in the query (links between pages).
        if request.method == "POST":
            query = str((await request.post()).get("q", "")).strip()
        else:
            query = request.query.get("q", "").strip()
        if not query:
            # who is asking is still checked: a stranger gets 403, not the form
            await servicer.caller_of(call, "SearchRequests")
            return _html(pages.search_page(lang, "", None))
        try:
            normalise_msisdn(query)
            wanted = regulator_pb2.SearchRequestsRequest(msisdn=query)
        except InvalidNumber:
            wanted = regulator_pb2.SearchRequestsRequest(reference=query)
        answer = await servicer.SearchRequests(wanted, call)  # type: ignore[arg-type]
        # the number searched for is not echoed back into the page
        shown = query if wanted.reference else ""
        return _html(pages.search_page(lang, shown, answer))

    async def compliance(request: web.Request, call: WebCall, lang: str) -> web.Response:
        try:
            days = min(max(int(request.query.get("days", "30")), 1), 366)
        except ValueError:
            return _html(pages.error_page(lang, 400, "days: a number of days"), 400)
        asked = regulator_pb2.PartyComplianceRequest()
        now_ms = servicer.now_ms()
        asked.end_time.FromMilliseconds(now_ms)
        asked.start_time.FromMilliseconds(now_ms - days * 86_400_000)
        answer = await servicer.PartyCompliance(asked, call)  # type: ignore[arg-type]
        return _html(pages.compliance_page(lang, days, answer))

    app = web.Application(client_max_size=4096)
    app.router.add_get("/", page(cases))
    app.router.add_get("/case/{case}", page(case))
    app.router.add_get("/case/{case}/export.zip", page(export))
    app.router.add_get("/search", page(search))
    app.router.add_post("/search", page(search))
    app.router.add_get("/compliance", page(compliance))
    return app


class ConsoleSite(mode.Service):
    """Serves the console's pages on ``address`` (HTTPS with client certificates)."""

    def __init__(
        self,
        app: web.Application,
        address: str,
        tls_folder: Path | None,
        **kwargs: object,
    ) -> None:
        self._app = app
        self._host, _, port = address.rpartition(":")
        self._port = int(port)
        self._tls = tls_folder
        self._runner: web.AppRunner | None = None
        self.port = 0
        super().__init__(**kwargs)  # type: ignore[arg-type]

    async def on_start(self) -> None:
        """Listen; the port actually bound is logged (0 asks the system for one)."""
        self._runner = web.AppRunner(self._app, access_log=None)
        await self._runner.setup()
        context = client_tls(self._tls) if self._tls is not None else None
        site = web.TCPSite(self._runner, self._host, self._port, ssl_context=context)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self._port
        scheme = "https" if context is not None else "http"
        log.info("console pages on %s://%s:%d/", scheme, self._host, self.port)

    async def on_stop(self) -> None:
        """Stop serving."""
        if self._runner is not None:
            await self._runner.cleanup()
