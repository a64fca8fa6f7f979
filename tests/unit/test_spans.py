"""Spans: each step is a recorded span, child of the step before it through the traceparent.

The SDK is configured in a subprocess (a process has one tracer provider), with the SDK's
in-memory exporter, and runs the three steps the services take for one opt-out.
"""

from __future__ import annotations

import json
import subprocess
import sys

from stopsms.adapters.tracing import configure_tracing

STEPS = """
import json
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from stopsms.adapters.tracing import CURRENT_TRACEPARENT, traced

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
with traced(caller, "r1", name="call", kind=SpanKind.SERVER) as on_request:
    assert CURRENT_TRACEPARENT.get() == on_request
with traced(on_request, "r1", name="decide", kind=SpanKind.CONSUMER, event_id="e1") as on_change:
    pass
with traced(on_change, "r1", name="prove", kind=SpanKind.CONSUMER, event_id="e1"):
    pass
print(json.dumps([
    {"name": s.name, "trace": f"{s.context.trace_id:032x}", "span": f"{s.context.span_id:016x}",
     "parent": f"{s.parent.span_id:016x}", "event": s.attributes.get("stopsms.event_id")}
    for s in exporter.get_finished_spans()
]))
"""


def test_one_opt_out_is_one_trace_of_parent_and_child_spans() -> None:
    ran = subprocess.run([sys.executable, "-c", STEPS], capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stderr
    call, decide, prove = json.loads(ran.stdout)
    assert {call["trace"], decide["trace"], prove["trace"]} == {"4bf92f3577b34da6a3ce929d0e0e4736"}
    assert call["parent"] == "00f067aa0ba902b7"
    assert decide["parent"] == call["span"]
    assert prove["parent"] == decide["span"] and prove["event"] == "e1"


def test_spans_are_exported_only_when_an_endpoint_is_configured() -> None:
    assert not configure_tracing("intake", {})
    assert not configure_tracing(
        "intake",
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317", "OTEL_SDK_DISABLED": "true"},
    )
    assert not configure_tracing(
        "intake",
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317", "OTEL_TRACES_EXPORTER": "none"},
    )
