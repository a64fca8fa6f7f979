"""Run intake: ``python -m stopsms.intake`` (gRPC API and link page)."""

from __future__ import annotations

import asyncio

from stopsms.adapters.eventloop import install_event_loop
from stopsms.adapters.kafka import KafkaPublisher
from stopsms.adapters.serving import run_until_signalled
from stopsms.adapters.settings import IntakeSettings
from stopsms.adapters.startup import before_serving, refuse_to_start
from stopsms.adapters.telemetry import configure_logging
from stopsms.intake.service import IntakeProcess


async def _run(settings: IntakeSettings) -> None:
    with refuse_to_start("intake"):
        process = IntakeProcess(settings)
        producers = []
        if isinstance(process.publisher, KafkaPublisher):
            producers.append(("intake", *process.publisher.guarantees()))
        before_serving(settings, "intake", producers, settings.intake_metrics_address)
    await run_until_signalled(process.start, process.stop)


def main() -> None:
    """Entry point of the intake process."""
    with refuse_to_start("intake"):
        install_event_loop()
        settings = IntakeSettings.from_env()
    configure_logging("intake", settings.log_level, settings.log_format)
    asyncio.run(_run(settings))


if __name__ == "__main__":
    main()
