"""Trace context: one opt-out followed across intake, the registry and the notifier.

A caller may send a W3C ``traceparent`` in its gRPC metadata (an instrumented PSVA or operator
does); intake continues that trace, or starts one, and every record published while handling
the call carries it in its ``traceparent`` Kafka header. The registry decides each request in
the request's trace and carries it to the ``SuppressionChanged``; the notifier announces and
proves the change in it. The log lines written meanwhile name the trace id and the request id,
so ``grep <trace id>`` over the three services' logs follows one opt-out.

Propagation goes through the OpenTelemetry API (W3C Trace Context). No SDK is configured, so
no span is recorded; a deployment that installs one sees the same ids.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from opentelemetry import propagate, trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

TRACE_HEADER = "traceparent"

#: The traceparent of the work in progress (what records published now carry).
CURRENT_TRACEPARENT: ContextVar[str | None] = ContextVar("stopsms_traceparent", default=None)
#: The request id of the work in progress, for the logs.
CURRENT_REQUEST: ContextVar[str | None] = ContextVar("stopsms_request", default=None)


def continue_trace(incoming: str | None) -> str:
    """A traceparent for a new step: the caller's trace (a new span under it), or a new trace."""
    parent = trace.get_current_span(propagate.extract({TRACE_HEADER: incoming or ""}))
    known = parent.get_span_context()
    trace_id = known.trace_id if known.is_valid else int.from_bytes(os.urandom(16), "big")
    span = SpanContext(
        trace_id,
        int.from_bytes(os.urandom(8), "big"),
        is_remote=False,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
    )
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=trace.set_span_in_context(NonRecordingSpan(span)))
    return carrier[TRACE_HEADER]


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
def traced(traceparent: str | None, request_id: str | None = None) -> Iterator[str]:
    """Do the enclosed work in ``traceparent``'s trace (continued), naming ``request_id``.

    Yields the traceparent that records published inside should carry.
    """
    current = continue_trace(traceparent)
    trace_token = CURRENT_TRACEPARENT.set(current)
    request_token = CURRENT_REQUEST.set(request_id)
    try:
        yield current
    finally:
        CURRENT_TRACEPARENT.reset(trace_token)
        CURRENT_REQUEST.reset(request_token)
