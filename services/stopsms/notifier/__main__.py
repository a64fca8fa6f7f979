"""Run the notifier: ``python -m stopsms.notifier`` (the proof stage plus the gRPC API)."""

from __future__ import annotations

import mode

from stopsms.adapters.bus import Bus, KafkaBus
from stopsms.adapters.eventloop import install_event_loop
from stopsms.adapters.identity import AuditTrail, Authenticator
from stopsms.adapters.kafka import GroupOffsets, KafkaPublisher, PublisherService
from stopsms.adapters.proof_store import PropagationIndex, RedisProofStore
from stopsms.adapters.redis_pool import connect_redis
from stopsms.adapters.reloading import DirectoryReloader
from stopsms.adapters.sender_register import SenderRegisterFollower
from stopsms.adapters.serving import GrpcEndpoint, HostedEndpoint, servicer_registration
from stopsms.adapters.settings import NotifierSettings
from stopsms.adapters.startup import before_serving, refuse_to_start
from stopsms.adapters.streams import (
    ConsumerLag,
    GroupProcessor,
    Together,
    run_worker,
    stream_worker,
)
from stopsms.adapters.telemetry import configure_logging
from stopsms.domain.parties import PartiesDirectory
from stopsms.domain.proof import ProgressLog, with_progress
from stopsms.domain.topics import Topics
from stopsms.notifier.app import Prover, create_tracking_stage
from stopsms.notifier.backfill import Backfills, follow_grants
from stopsms.notifier.cases import CaseFeed
from stopsms.notifier.feed import LiveFeed
from stopsms.notifier.lateness import LatenessWatcher
from stopsms.notifier.progress import (
    Acknowledgements,
    OperatorPoller,
    ProgressFollower,
    ProgressPublisher,
)
from stopsms.notifier.server import SERVICE_NAME, NotifierServicer
from stopsms.notifier.webhooks import WebhookSender
from stopsms.v1 import notifier_pb2


def create_notifier(settings: NotifierSettings, *, bus: Bus) -> tuple[mode.Worker, GroupProcessor]:
    """Assemble the notifier process: the composition root.

    ``bus`` is where the live feed of PSVA streams reads the suppression list; the stream
    stages, the receipts and the proof use the settings' Kafka.
    """
    topics = Topics(settings.topic_namespace)
    audit_publisher = PublisherService(settings.kafka, "stopsms-notifier-audit")
    directory = PartiesDirectory.load(settings.parties_file)
    offsets = GroupOffsets(settings.kafka)
    propagation = PropagationIndex(
        bus,
        topics.propagation,
        RedisProofStore(
            connect_redis(settings.redis_url),
            settings.topic_namespace,
            int(settings.retention_requests_days * 86_400),
        ),
        group=topics.processor_group("notifier-proofs"),
        session_timeout_s=settings.kafka_session_timeout_seconds,
    )
    publisher = ProgressPublisher(
        lambda: KafkaPublisher(settings.kafka, client_id="stopsms-notifier-proof")
    )
    progress = ProgressLog()
    prover = Prover(topics, directory, publisher, propagation, progress)
    tracking = create_tracking_stage(settings, prover)
    # How far the proof store is behind the proofs topic (StopSMSStoreBehind).
    proofs_lag = ConsumerLag(settings.kafka, propagation.group, [topics.propagation])
    lag = ConsumerLag(
        settings.kafka,
        tracking.group,
        [topics.suppressions],
        stall_exit_seconds=settings.stall_exit_seconds,
    )
    follower = ProgressFollower(
        bus,
        topics,
        directory,
        offsets,
        progress,
        on_advanced=prover.advanced,
        replay_seconds=settings.progress_replay_seconds,
    )
    acknowledgements = Acknowledgements(
        publisher,
        follower,
        offsets,
        topics,
        directory,
        flush_seconds=settings.ack_flush_seconds,
        commit_seconds=settings.ack_group_commit_seconds,
    )
    operators = OperatorPoller(
        publisher,
        follower,
        offsets,
        topics,
        directory,
        prover.mine,
        prover.waiting,
        busy_seconds=settings.receipt_poll_seconds,
        idle_seconds=settings.receipt_idle_poll_seconds,
        wake=prover.opened,
    )
    auth = Authenticator(
        directory,
        insecure=settings.insecure_identity,
        audit=AuditTrail(audit_publisher, topics.audit),
    )
    pseudonymiser = settings.pseudonymiser()
    backfills = Backfills(bus, topics, offsets, acknowledgements.durable)
    follow_grants(directory, backfills)
    feed = LiveFeed(bus, topics.suppressions)
    cases = CaseFeed(bus, topics.cases)
    servicer = NotifierServicer(
        settings,
        auth=auth,
        acknowledgements=acknowledgements,
        propagation=propagation,
        pseudonymiser=pseudonymiser,
        backfills=backfills,
        feed=feed,
        cases=cases,
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
    worker = stream_worker(
        [
            audit_publisher,
            publisher,
            DirectoryReloader(directory, settings.parties_reload_seconds),
            # Readers only: they stop at once, once the stages and the API that use them have.
            Together(
                SenderRegisterFollower(bus, topics.senders, directory),
                offsets,
                propagation,
                follower,
                feed,
                cases,
            ),
            prover,
            tracking,
            Together(lag, proofs_lag),
            acknowledgements,
            operators,
            WebhookSender(
                prover.mine,
                settings,
                directory,
                acknowledgements,
                pseudonymiser,
                bus=bus,
                cases=cases,
            ),
            LatenessWatcher(
                propagation.open,
                settings.propagation_slo_seconds,
                fill=lambda record: with_progress(record, progress),
            ),
            HostedEndpoint(endpoint, settings.grace_seconds, auth.audit.flush),
        ],
        settings,
    )
    return worker, tracking


def main() -> None:
    """Entry point of the notifier process."""
    with refuse_to_start("notifier"):
        install_event_loop()
        settings = NotifierSettings.from_env()
        configure_logging("notifier", settings.log_level, settings.log_format)
        worker, tracking = create_notifier(settings, bus=KafkaBus(settings.kafka))
        before_serving(
            settings,
            "notifier",
            [tracking.guarantees()],
            settings.notifier_metrics_address,
        )
    run_worker(worker)


if __name__ == "__main__":
    main()
