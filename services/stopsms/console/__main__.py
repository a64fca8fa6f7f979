"""Run the console: ``python -m stopsms.console`` (assessor, cases, RegulatorService, pages).

One process follows the topics the regulator's questions need — the complaints and their
evidence (through the complaint assessor, which also opens the cases), the request log and
the audit trail — and serves ``RegulatorService`` over mutual TLS to regulator identities,
and the CNDP's pages over HTTPS with the same client certificates (``console.web``).
It is SERVING once the assessor has assessed every complaint already filed, so a first
answer is never partial. Run one replica: the assessor is the only writer of assessments
and cases (docs/complaints.md).
"""

from __future__ import annotations

import mode

from stopsms.adapters.bus import Bus, KafkaBus
from stopsms.adapters.decision_store import RedisDecisionStore
from stopsms.adapters.eventloop import install_event_loop
from stopsms.adapters.identity import AuditTrail, Authenticator
from stopsms.adapters.kafka import PublisherService
from stopsms.adapters.link_store import LinkDirectory, RedisLinkStore
from stopsms.adapters.proof_store import RedisProofStore
from stopsms.adapters.redis_pool import connect_redis
from stopsms.adapters.reloading import DirectoryReloader
from stopsms.adapters.request_log_store import RedisRequestLogStore
from stopsms.adapters.serving import GrpcEndpoint, HostedEndpoint, servicer_registration
from stopsms.adapters.settings import ConsoleSettings
from stopsms.adapters.startup import before_serving, refuse_to_start
from stopsms.adapters.streams import run_worker, stream_worker
from stopsms.adapters.telemetry import configure_logging
from stopsms.console.assessor import ComplaintAssessor
from stopsms.console.history import AuditIndex, RequestHistory
from stopsms.console.regulator import SERVICE_NAME, RegulatorServicer
from stopsms.console.web import ConsoleSite, create_app
from stopsms.domain.cases import DAY_MS, CasePolicy
from stopsms.domain.compliance import ComplianceBook
from stopsms.domain.evidence import ExportSigner
from stopsms.domain.message_check import LinkSite
from stopsms.domain.parties import PartiesDirectory
from stopsms.domain.topics import Topics
from stopsms.v1 import regulator_pb2


class WhenCaughtUp(mode.Service):
    """Marks the endpoint SERVING once the assessor has caught up with the complaints."""

    def __init__(self, assessor: ComplaintAssessor, endpoint: GrpcEndpoint, **kwargs: object):
        self._assessor = assessor
        self._endpoint = endpoint
        super().__init__(**kwargs)  # type: ignore[arg-type]

    @mode.Service.task
    async def _serve_when_ready(self) -> None:
        await self._assessor.caught_up.wait()
        await self._endpoint.mark_serving(SERVICE_NAME)


def create_console(settings: ConsoleSettings, *, bus: Bus) -> mode.Worker:
    """Assemble the console process: the composition root."""
    topics = Topics(settings.topic_namespace)
    publisher = PublisherService(settings.kafka, "stopsms-console")
    directory = PartiesDirectory.load(settings.parties_file)
    pseudonymiser = settings.pseudonymiser()
    signer = ExportSigner.load(settings.export_key_path, generate=settings.generate_keys)
    # Each citizen's requests are kept in Redis: the console's memory does not hold the log.
    requests = RequestHistory(
        bus,
        topics.requests,
        RedisRequestLogStore(
            connect_redis(settings.redis_url),
            settings.topic_namespace,
            int(settings.retention_requests_days * 86_400),
        ),
    )
    assessor = ComplaintAssessor(
        bus,
        publisher,
        topics,
        directory,
        pseudonymiser,
        LinkSite(settings.public_base_url),
        case_policy=CasePolicy(
            complaints=settings.case_complaints,
            window_ms=int(settings.case_window_days * DAY_MS),
        ),
        requests=requests,
        # Looked up in the link store intake fills: no console holds every link.
        links=LinkDirectory(
            bus,
            topics.links,
            RedisLinkStore(connect_redis(settings.redis_url), settings.topic_namespace),
            pseudonymiser,
            fill=False,
        ),
        # Every decision of the list, per subject, in Redis (the assessor's "in force then").
        decision_store=RedisDecisionStore(
            connect_redis(settings.redis_url), settings.topic_namespace
        ),
        # Done proofs are read from the store the notifier fills: no console holds them all.
        proof_store=RedisProofStore(
            connect_redis(settings.redis_url),
            settings.topic_namespace,
            int(settings.retention_requests_days * 86_400),
        ),
    )
    compliance = ComplianceBook(objective_ms=int(settings.propagation_slo_seconds * 1000))
    assessor.proofs.listeners.append(compliance.record)
    audit = AuditIndex(bus, topics.audit)
    auth = Authenticator(
        directory,
        insecure=settings.insecure_identity,
        audit=AuditTrail(publisher, topics.audit),
    )
    servicer = RegulatorServicer(
        auth=auth,
        assessor=assessor,
        requests=requests,
        audit=audit,
        compliance=compliance,
        pseudonymiser=pseudonymiser,
        signer=signer,
    )
    endpoint = GrpcEndpoint(
        settings.console_grpc_address,
        [
            servicer_registration(
                servicer, regulator_pb2.DESCRIPTOR.services_by_name["RegulatorService"]
            )
        ],
        [SERVICE_NAME],
        credentials=settings.server_credentials(),
        health_address=settings.console_health_address,
        ready_later=[SERVICE_NAME],
    )
    return stream_worker(
        [
            publisher,
            DirectoryReloader(directory, settings.parties_reload_seconds),
            assessor,  # starts the request log's index with its own
            audit,
            HostedEndpoint(endpoint, settings.grace_seconds, auth.audit.flush),
            ConsoleSite(
                create_app(servicer, assessor, insecure=settings.insecure_identity),
                settings.console_http_address,
                settings.client_tls_folder,
            ),
            WhenCaughtUp(assessor, endpoint),
        ],
        settings,
    )


def main() -> None:
    """Entry point of the console process."""
    with refuse_to_start("console"):
        install_event_loop()
        settings = ConsoleSettings.from_env()
        configure_logging("console", settings.log_level, settings.log_format)
        worker = create_console(settings, bus=KafkaBus(settings.kafka))
        before_serving(settings, "console", [], settings.console_metrics_address)
    run_worker(worker)


if __name__ == "__main__":
    main()
