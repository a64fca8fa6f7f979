"""What every service does before it serves: refuse a bad configuration, check Kafka, serve metrics.

Kept apart from :mod:`stopsms.adapters.settings` and :mod:`stopsms.adapters.selfcheck` so
that neither needs the other: settings read variables, the self-check reads the broker, and this
module, which each service's ``__main__`` calls, puts them in order.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from stopsms.adapters.selfcheck import SelfCheckError, check_kafka, expected_topics
from stopsms.adapters.settings import Settings, SettingsError
from stopsms.adapters.telemetry import serve_metrics
from stopsms.adapters.tls import TlsError
from stopsms.adapters.tracing import configure_tracing
from stopsms.domain.parties import DirectoryError
from stopsms.domain.privacy import KeyMaterialError


@contextmanager
def refuse_to_start(service: str) -> Iterator[None]:
    """Turn a configuration problem at start into one clear line and exit status 2.

    A missing key, a malformed variable, an unreadable parties directory or missing TLS
    material must stop the service before it serves anything, with a message an SRE can act
    on rather than a traceback.
    """
    try:
        yield
    except (SettingsError, KeyMaterialError, DirectoryError, TlsError, SelfCheckError) as exc:
        print(f"stopsms {service} cannot start: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from exc


def before_serving(
    settings: Settings,
    service: str,
    producers: Iterable[tuple[str, object, bool]],
    metrics_address: str,
) -> None:
    """The last steps before a service serves: span export, Kafka, then its metrics.

    Spans are exported only when ``OTEL_EXPORTER_OTLP_ENDPOINT`` asks for it; Kafka is checked
    as the service's promises need.
    """
    configure_tracing(service)
    check_kafka(settings, expected_topics(settings.topics(), service), producers)
    if metrics_address:
        serve_metrics(metrics_address)
