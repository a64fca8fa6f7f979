"""Run the notifier: ``python -m stopsms.notifier`` (faust worker plus the gRPC API)."""

from __future__ import annotations

import faust

from stopsms.core.identity import AuditTrail, Authenticator
from stopsms.core.kafka import GroupOffsets, PublisherService
from stopsms.core.parties import PartiesDirectory
from stopsms.core.reloading import DirectoryReloader
from stopsms.core.selfcheck import before_serving
from stopsms.core.serving import GrpcEndpoint, HostedEndpoint, servicer_registration
from stopsms.core.settings import NotifierSettings, refuse_to_start
from stopsms.core.streams import producer_guarantees, run_worker, stream_worker
from stopsms.core.telemetry import configure_logging
from stopsms.core.topics import Topics
from stopsms.notifier.app import ReceiptPoller, RecentChanges, create_notifier_app
from stopsms.notifier.backfill import Backfills, follow_grants
from stopsms.notifier.feed import LiveFeed
from stopsms.notifier.lateness import LatenessWatcher
from stopsms.notifier.server import SERVICE_NAME, NotifierServicer, PropagationIndex
from stopsms.notifier.webhooks import WebhookSender
from stopsms.v1 import notifier_pb2


def create_worker(settings: NotifierSettings) -> faust.Worker:
    """Assemble the notifier process from its settings."""
    topics = Topics(settings.topic_namespace)
    audit_publisher = PublisherService(settings.kafka, "stopsms-notifier-audit")
    directory = PartiesDirectory.load(settings.parties_file)
    recent = RecentChanges()
    offsets = GroupOffsets(settings.kafka)
    propagation = PropagationIndex(settings.kafka, topics.propagation)
    app = create_notifier_app(settings, directory, recent, published=propagation.peek)
    auth = Authenticator(
        directory,
        insecure=settings.insecure_identity,
        audit=AuditTrail(audit_publisher, topics.audit),
    )
    pseudonymiser = settings.pseudonymiser()
    backfills = Backfills(settings.kafka, topics, offsets)
    follow_grants(directory, backfills)
    feed = LiveFeed(settings.kafka, topics.suppressions)
    servicer = NotifierServicer(
        settings,
        auth=auth,
        offsets=offsets,
        propagation=propagation,
        pseudonymiser=pseudonymiser,
        backfills=backfills,
        feed=feed,
    )
    endpoint = GrpcEndpoint(
        settings.notifier_grpc_address,
        [
            servicer_registration(
                servicer, notifier_pb2.DESCRIPTOR.services_by_name["NotifierService"]
            )
        ],
        [SERVICE_NAME],
        credentials=settings.server_credentials(),
        health_address=settings.notifier_health_address,
    )
    return stream_worker(
        app,
        [
            audit_publisher,
            DirectoryReloader(directory, settings.parties_reload_seconds),
            *app.stopsms_services,
            offsets,
            propagation,
            feed,
            ReceiptPoller(app, settings, directory, offsets, recent),
            WebhookSender(app, settings, directory, offsets, pseudonymiser),
            LatenessWatcher(propagation.open, settings.propagation_slo_seconds),
            HostedEndpoint(endpoint, settings.grace_seconds, auth.audit.flush),
        ],
        settings,
    )


def main() -> None:
    """Entry point of the notifier process."""
    with refuse_to_start("notifier"):
        settings = NotifierSettings.from_env()
        configure_logging("notifier", settings.log_level, settings.log_format)
        worker = create_worker(settings)
        before_serving(
            settings,
            "notifier",
            [producer_guarantees(worker.app)],
            settings.notifier_metrics_address,
        )
    run_worker(worker)


if __name__ == "__main__":
    main()
