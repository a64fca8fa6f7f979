"""Assembles the intake process: the gRPC API, the link page and their adapters."""

from __future__ import annotations

import logging
from collections.abc import Callable

from aiohttp import web

from stopsms.adapters.bus import Bus, KafkaBus
from stopsms.adapters.identity import AuditTrail, Authenticator
from stopsms.adapters.kafka import KafkaPublisher, Publisher
from stopsms.adapters.link_store import RedisLinkStore
from stopsms.adapters.redis_pool import connect_redis
from stopsms.adapters.reloading import DirectoryReloader
from stopsms.adapters.sender_register import SenderRegisterFollower
from stopsms.adapters.serving import GrpcEndpoint, servicer_registration
from stopsms.adapters.settings import IntakeSettings
from stopsms.adapters.streams import ConsumerLag
from stopsms.domain.message_check import LinkSite
from stopsms.domain.parties import PartiesDirectory
from stopsms.domain.ratelimit import KeyedRateLimiter
from stopsms.domain.topics import Topics
from stopsms.intake.answers import RedisAnswerStore
from stopsms.intake.citizen_messages import CitizenMessages
from stopsms.intake.codes import OneTimeCodes
from stopsms.intake.complaint_page import add_complaint_routes
from stopsms.intake.complaints import ComplaintDesk
from stopsms.intake.links import LinkDirectory
from stopsms.intake.preferences import add_preferences_routes
from stopsms.intake.screenshot_store import FileScreenshotStore
from stopsms.intake.sender_lookup import add_sender_lookup_routes
from stopsms.intake.senders import SERVICE_NAME as SENDERS_SERVICE_NAME
from stopsms.intake.senders import SenderRegistryServicer
from stopsms.intake.server import SERVICE_NAME, IntakeServicer, number_limiter
from stopsms.intake.submission import RedisRequestReferences, RequestSubmitter
from stopsms.intake.undo import RedisUndoStore
from stopsms.intake.web import PlatformLookups, create_web_app
from stopsms.v1 import intake_pb2, senders_pb2

log = logging.getLogger(__name__)

#: The platform identity intake uses when it calls the registry for the link page.
INTAKE_PARTY_ID = "stopsms-intake"


class IntakeProcess:
    """The running intake: start() and stop() everything in order."""

    def __init__(
        self,
        settings: IntakeSettings,
        *,
        publisher: Publisher | None = None,
        bus: Bus | None = None,
    ) -> None:
        """The composition root: ``publisher`` and ``bus`` default to the settings' Kafka."""
        self.settings = settings
        topics = Topics(settings.topic_namespace)
        # Keys and the directory first: a bad one stops the start before any connection.
        directory = PartiesDirectory.load(settings.parties_file)
        pseudonymiser = settings.pseudonymiser()
        credentials = settings.server_credentials()
        self._own_publisher = publisher is None
        self.publisher: Publisher = publisher or KafkaPublisher(
            settings.kafka,
            timeout_seconds=settings.publish_timeout_seconds,
            client_id="stopsms-intake",
        )
        redis = connect_redis(settings.redis_url)
        self.submitter = RequestSubmitter(
            self.publisher,
            pseudonymiser,
            directory,
            topics,
            settings.partitions,
            RedisRequestReferences(redis, settings.topic_namespace),
        )
        bus = bus or KafkaBus(settings.kafka)
        self.links = LinkDirectory(
            bus,
            topics.links,
            RedisLinkStore(redis, settings.topic_namespace),
            pseudonymiser,
            group=topics.processor_group("intake-links"),
            session_timeout_s=settings.kafka_session_timeout_seconds,
        )
        # How far the link store is behind the links topic (StopSMSStoreBehind).
        self.links_lag = ConsumerLag(
            settings.kafka, topics.processor_group("intake-links"), [topics.links]
        )
        self.sender_register = SenderRegisterFollower(bus, topics.senders, directory)
        self.auth = auth = Authenticator(
            directory,
            insecure=settings.insecure_identity,
            audit=AuditTrail(self.publisher, topics.audit),
        )
        numbers = number_limiter(settings)
        self.answers = RedisAnswerStore(redis, settings.topic_namespace)
        undos = RedisUndoStore(
            redis, settings.topic_namespace, (settings.link_ttl_days + 1) * 86_400
        )
        citizens = CitizenMessages(self.publisher, pseudonymiser, topics, settings.partitions)
        complaint_desk = ComplaintDesk(
            self.publisher, self.submitter, pseudonymiser, topics, settings.partitions
        )
        servicer = IntakeServicer(
            settings,
            submitter=self.submitter,
            citizens=citizens,
            publisher=self.publisher,
            auth=auth,
            answers=self.answers,
            numbers=numbers,
            sender_register=self.sender_register,
            complaints=complaint_desk,
        )
        senders = SenderRegistryServicer(
            register=self.sender_register,
            links=self.links,
            publisher=self.publisher,
            auth=auth,
            answers=self.answers,
            topics=topics,
            link_site=LinkSite(settings.public_base_url),
        )
        self.endpoint = GrpcEndpoint(
            settings.intake_grpc_address,
            [
                servicer_registration(
                    servicer, intake_pb2.DESCRIPTOR.services_by_name["IntakeService"]
                ),
                servicer_registration(
                    senders, senders_pb2.DESCRIPTOR.services_by_name["SenderRegistryService"]
                ),
            ],
            [SERVICE_NAME, SENDERS_SERVICE_NAME],
            credentials=credentials,
            health_address=settings.intake_health_address,
        )
        self.lookups = PlatformLookups(
            settings.registry_grpc_address,
            settings.notifier_grpc_address,
            INTAKE_PARTY_ID,
            settings.client_tls_folder,
        )

        def citizen_pages(app: web.Application, language: Callable[[web.Request], str]) -> None:
            """The citizen's own page, the complaint form, and the public lookup of senders."""
            codes = OneTimeCodes(
                redis, settings.topic_namespace, pseudonymiser.pseudonym_key.secret
            )
            add_complaint_routes(
                app,
                language=language,
                codes=codes,
                desk=complaint_desk,
                citizens=citizens,
                answers=self.answers,
                store=FileScreenshotStore(settings.screenshot_folder),
            )
            add_preferences_routes(
                app,
                language=language,
                codes=codes,
                citizens=citizens,
                submitter=self.submitter,
                check=self.lookups.check,
                propagation=self.lookups.propagation,
                unseal=pseudonymiser.unseal,
                senders=self.submitter.declared_senders,
                secure_cookies=settings.public_base_url.startswith("https://"),
            )
            add_sender_lookup_routes(
                app,
                language=language,
                register=lambda: self.sender_register.register,
                directory=directory,
            )

        per_minute = settings.link_misses_per_minute
        self.web_app = create_web_app(
            links=self.links,
            submitter=self.submitter,
            lookups=self.lookups,
            answers=self.answers,
            numbers=numbers,
            misses=KeyedRateLimiter(rate=per_minute / 60, burst=per_minute),
            undos=undos,
            undo_seconds=settings.link_undo_seconds,
            secure_cookies=settings.public_base_url.startswith("https://"),
            citizens_page=citizen_pages,
        )
        self._web_runner: web.AppRunner | None = None
        self.reloader = DirectoryReloader(directory, settings.parties_reload_seconds)

    async def start(self) -> None:
        """Connect to Kafka, load the links, then open the gRPC and HTTP ports."""
        try:
            if self._own_publisher:
                await self.publisher.start()  # type: ignore[attr-defined]
            await self.links.start()
            await self.links_lag.start()
            await self.sender_register.start()  # returns once the register is read
            self._web_runner = web.AppRunner(self.web_app, access_log=None)
            await self._web_runner.setup()
            host, _, port = self.settings.intake_http_address.rpartition(":")
            await web.TCPSite(self._web_runner, host, int(port)).start()
            await self.endpoint.start()
            await self.reloader.start()
        except BaseException:
            await self.stop()
            raise
        log.info("link page on http://%s/", self.settings.intake_http_address)

    async def stop(self) -> None:
        """Drain the gRPC server, close the page, flush Kafka."""
        await self.reloader.stop()
        await self.endpoint.stop(self.settings.grace_seconds)
        await self.auth.audit.flush()
        if self._web_runner is not None:
            await self._web_runner.cleanup()
        await self.lookups.close()
        await self.answers.close()
        await self.sender_register.stop()
        await self.links_lag.stop()
        await self.links.stop()
        if self._own_publisher:
            await self.publisher.stop()  # type: ignore[attr-defined]
