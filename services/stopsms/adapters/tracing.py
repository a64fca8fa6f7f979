"""Trace context: one opt-out followed across intake, the registry and the notifier.

A caller may send a W3C ``traceparent`` in its gRPC metadata (an instrumented PSVA or operator
does); intake continues that trace, or starts one, and every record published while handling
the call carries it in its ``traceparent`` Kafka header. The registry decides each request in
the request's trace and carries it to the ``SuppressionChanged``; the notifier announces and
proves the change in it. The log lines written meanwhile name the trace id and the request id,
so ``grep <trace id>`` over the three services' logs follows one opt-out.

Each step is a span: the gRPC call (``SERVER``), the registry's decision and the notifier's
opening of the proof (``CONSUMER``), children of one another through the ``traceparent`` the
records carry. With ``OTEL_EXPORTER_OTLP_ENDPOINT`` set, :func:`configure_tracing` installs the
OpenTelemetry SDK and the spans are exported over OTLP (gRPC) to a collector; without it the
API's no-op tracer records nothing and the ids are made here, so the logs correlate the same
way at no cost.
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar

from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind

TRACE_HEADER = "traceparent"
#: The variables that turn span export on (the standard OpenTelemetry ones).
ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")

_TRACER = trace.get_tracer("stopsms")

#: The traceparent of the work in progress (what records published now carry).
CURRENT_TRACEPARENT: ContextVar[str | None] = ContextVar("stopsms_traceparent", default=None)
#: The request id of the work in progress, for the logs.
CURRENT_REQUEST: ContextVar[str | None] = ContextVar("stopsms_request", default=None)


#: A W3C traceparent of version 00, the only one in use: version, trace id, span id, flags.
_TRACEPARENT_00 = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}")
_NO_TRACE, _NO_SPAN = "0" * 32, "0" * 16


def continue_trace(incoming: str | None) -> str:
    """A traceparent for a new step: the caller's trace (a new span under it), or a new trace.

    Every gRPC call and every published record takes one, so it is written directly: the
    propagator API's round trip (extract, a span object, inject) cost a third of a ``Check``
    call's own Python time. A well-formed version-00 traceparent is read here too; anything
    else (another version, a malformed header) goes through the configured propagator, which
    knows the rules. Random ids come from :func:`random.getrandbits`, as the OpenTelemetry
    SDK's own id generator does: they must be unique, not secret.
    """
    trace_hex = None
    well_formed = _TRACEPARENT_00.fullmatch(incoming) if incoming else None
    if well_formed is not None:
        if well_formed[1] != _NO_TRACE and well_formed[2] != _NO_SPAN:
            trace_hex = well_formed[1]
    elif incoming:
        known = trace.get_current_span(propagate.extract({TRACE_HEADER: incoming}))
        context = known.get_span_context()
        trace_hex = f"{context.trace_id:032x}" if context.is_valid else None
    if trace_hex is None:
        trace_hex = f"{random.getrandbits(128) or 1:032x}"
    return f"00-{trace_hex}-{random.getrandbits(64) or 1:016x}-01"


def trace_id(traceparent: str | None) -> str | None:
    """The 32-hex trace id of a traceparent, or None when it is not one."""
    span = trace.get_current_span(propagate.extract({TRACE_HEADER: traceparent or ""}))
    context = span.get_span_context()
    return f"{context.trace_id:032x}" if context.is_valid else None


def traceparent_of(headers: object) -> str | None:
    """The traceparent among Kafka headers (pairs of name and bytes), if any."""
    for name, value in headers or ():  # type: ignore[attr-defined]
        if name == TRACE_HEADER:
            return value.decode() if isinstance(value, bytes) else str(value)
    return None


@contextmanager
def traced(
    traceparent: str | None,
    request_id: str | None = None,
    *,
    name: str = "stopsms",
    kind: SpanKind = SpanKind.INTERNAL,
    event_id: str | None = None,
) -> Iterator[str]:
    """Do the enclosed work in a span of ``traceparent``'s trace (or a new one).

    ``request_id`` names the work in the logs and on the span. Yields the traceparent that
    records published inside should carry: the span's own when the SDK records it, so the next
    service's span becomes its child.
    """
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        # No SDK installed: nothing would be recorded, so skip the span machinery (half the
        # cost of a step's tracing) and only carry the ids.
        with _carrying(continue_trace(traceparent), request_id) as current:
            yield current
        return
    parent = propagate.extract({TRACE_HEADER: traceparent}) if traceparent else None
    attributes = {"stopsms.request_id": request_id or "", "stopsms.event_id": event_id or ""}
    with _TRACER.start_as_current_span(
        name, context=parent, kind=kind, attributes=attributes
    ) as span:
        if span.is_recording():
            carrier: dict[str, str] = {}
            propagate.inject(carrier)
            current = carrier[TRACE_HEADER]
        else:  # sampled out
            current = continue_trace(traceparent)
        with _carrying(current, request_id):
            yield current


@contextmanager
def _carrying(traceparent: str, request_id: str | None) -> Iterator[str]:
    """Make ``traceparent`` and ``request_id`` those of the work in progress (records, logs)."""
    trace_token = CURRENT_TRACEPARENT.set(traceparent)
    request_token = CURRENT_REQUEST.set(request_id)
    try:
        yield traceparent
    finally:
        CURRENT_TRACEPARENT.reset(trace_token)
        CURRENT_REQUEST.reset(request_token)


def configure_tracing(service: str, environ: Mapping[str, str] = os.environ) -> bool:
    """Install the OpenTelemetry SDK with an OTLP exporter when the environment asks for it.

    The standard variables apply: ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``…_TRACES_ENDPOINT``)
    turns export on; ``OTEL_SERVICE_NAME`` (default ``stopsms-<service>``),
    ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER``, ``OTEL_BSP_*`` and the exporter's
    TLS and header variables are read by the SDK itself; ``OTEL_SDK_DISABLED=true`` or
    ``OTEL_TRACES_EXPORTER=none`` keep it off. Spans leave in batches from a background
    thread, so a slow collector never delays an opt-out. True when the SDK was installed.
    """
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() == "none":
        return False
    if not any(environ.get(name) for name in ENDPOINT_VARIABLES):
        return False
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    named = {} if environ.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: f"stopsms-{service}"}
    provider = TracerProvider(resource=Resource.create(named))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return True
