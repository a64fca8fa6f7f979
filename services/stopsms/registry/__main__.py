"""Run the registry: ``python -m stopsms.registry`` (the decision stage plus the gRPC API).

One process hosts the decision stage, the view materialiser and the ``RegistryService``; the
worker owns the event loop, handles SIGTERM and stops the gRPC server gracefully.
"""

from __future__ import annotations

import mode

from stopsms.adapters.bus import Bus, KafkaBus
from stopsms.adapters.eventloop import install_event_loop
from stopsms.adapters.identity import AuditTrail, Authenticator
from stopsms.adapters.kafka import PublisherService
from stopsms.adapters.reloading import DirectoryReloader
from stopsms.adapters.sender_register import SenderRegisterFollower
from stopsms.adapters.serving import GrpcEndpoint, HostedEndpoint, servicer_registration
from stopsms.adapters.settings import RegistrySettings
from stopsms.adapters.startup import before_serving, refuse_to_start
from stopsms.adapters.streams import ConsumerLag, GroupProcessor, run_worker, stream_worker
from stopsms.adapters.telemetry import configure_logging
from stopsms.adapters.view import RedisSuppressionView, SuppressionView
from stopsms.domain.parties import PartiesDirectory
from stopsms.domain.privacy import NumberHasher
from stopsms.domain.topics import Topics
from stopsms.domain.viewcodec import ViewLayout
from stopsms.registry.app import create_decision_stage
from stopsms.registry.hashing import HashPool
from stopsms.registry.lookup import BatchChecker
from stopsms.registry.materialiser import VIEW_BEHIND, ViewMaterialiser
from stopsms.registry.server import SERVICE_NAME, RegistryServicer
from stopsms.registry.subject_filter import SubjectFilter
from stopsms.v1 import registry_pb2


def create_registry(
    settings: RegistrySettings, *, bus: Bus, view: SuppressionView
) -> tuple[mode.Worker, GroupProcessor]:
    """Assemble the registry process: the worker, and its decision stage.

    The composition root: ``bus`` is where the view materialiser reads the suppression list,
    ``view`` where it writes and the lookups read (Kafka and Redis in production; the decision
    stage's consumer group and the audit publisher use the settings' Kafka).
    """
    topics = Topics(settings.topic_namespace)
    audit_publisher = PublisherService(settings.kafka, "stopsms-registry-audit")
    decisions = create_decision_stage(settings)
    lag = ConsumerLag(
        settings.kafka,
        decisions.group,
        [topics.requests],
        stall_exit_seconds=settings.stall_exit_seconds,
    )
    directory = PartiesDirectory.load(settings.parties_file)
    auth = Authenticator(
        directory,
        insecure=settings.insecure_identity,
        audit=AuditTrail(audit_publisher, topics.audit),
    )
    pseudonymiser = settings.pseudonymiser()
    subject_filter = (
        SubjectFilter(settings.subject_filter_bits) if settings.subject_filter_bits else None
    )
    hashing = HashPool(pseudonymiser.pseudonym_key, settings.hash_workers)
    servicer = RegistryServicer(
        lookups=BatchChecker(
            view,
            hashing,
            pseudonymiser.pseudonym_key.key_id,
            subject_filter,
            previous=(
                NumberHasher(pseudonymiser.previous_pseudonym_key.secret)
                if pseudonymiser.previous_pseudonym_key is not None
                else None
            ),
        ),
        auth=auth,
    )
    endpoint = GrpcEndpoint(
        settings.registry_grpc_address,
        [
            servicer_registration(
                servicer, registry_pb2.DESCRIPTOR.services_by_name["RegistryService"]
            )
        ],
        [SERVICE_NAME],
        credentials=settings.server_credentials(),
        health_address=settings.registry_health_address,
        ready_later=[SERVICE_NAME],
    )

    async def after_stop() -> None:
        await auth.audit.flush()
        hashing.close()

    VIEW_BEHIND.set(1)  # lookups wait for the view's first catch-up

    async def view_ready() -> None:
        VIEW_BEHIND.set(0)
        await endpoint.mark_serving(SERVICE_NAME)

    async def view_behind() -> None:
        VIEW_BEHIND.set(1)
        await endpoint.mark_not_serving(SERVICE_NAME)

    materialiser = ViewMaterialiser(
        bus,
        topics.suppressions,
        view,
        on_caught_up=view_ready,
        on_behind=view_behind,
        subject_filter=subject_filter,
        rebuild_workers=settings.rebuild_workers,
        parallel_rebuild_from=settings.parallel_rebuild_from,
        redis_url=settings.redis_url,
        namespace=settings.topic_namespace,
    )
    worker = stream_worker(
        [
            audit_publisher,
            DirectoryReloader(directory, settings.parties_reload_seconds),
            SenderRegisterFollower(bus, topics.senders, directory),
            decisions,
            lag,
            materialiser,
            HostedEndpoint(endpoint, settings.grace_seconds, after_stop),
        ],
        settings,
    )
    return worker, decisions


def main() -> None:
    """Entry point of the registry process."""
    with refuse_to_start("registry"):
        install_event_loop()
        settings = RegistrySettings.from_env()
        configure_logging("registry", settings.log_level, settings.log_format)
        view = RedisSuppressionView.from_url(
            settings.redis_url, settings.topic_namespace, ViewLayout(settings.view_bucket_bits)
        )
        worker, decisions = create_registry(settings, bus=KafkaBus(settings.kafka), view=view)
        before_serving(
            settings,
            "registry",
            [decisions.guarantees()],
            settings.registry_metrics_address,
        )
    run_worker(worker)


if __name__ == "__main__":
    main()
