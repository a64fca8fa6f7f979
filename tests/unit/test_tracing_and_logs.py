"""One opt-out can be followed: traces continue across steps, and every log line names them."""

import json
import logging

from stopsms.adapters.telemetry import ContextFilter, JsonFormatter, TextFormatter
from stopsms.adapters.tracing import continue_trace, trace_id, traced

CALLER = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_a_step_continues_the_callers_trace_under_a_new_span() -> None:
    continued = continue_trace(CALLER)
    assert trace_id(continued) == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert continued != CALLER  # a new span id
    fresh = continue_trace(None)
    assert trace_id(fresh) not in (None, trace_id(CALLER))
    assert trace_id("not a traceparent") is None


def record(message: str) -> logging.LogRecord:
    entry = logging.LogRecord("stopsms.test", logging.INFO, __file__, 1, message, (), None)
    ContextFilter().filter(entry)
    return entry


def test_log_lines_name_the_trace_and_request_in_text_and_json() -> None:
    with traced(CALLER, "call-centre-77"):
        inside = record("decided event e1")
    outside = record("started")
    text = TextFormatter("registry")
    assert text.format(inside).endswith(
        "decided event e1 [trace=4bf92f3577b34da6a3ce929d0e0e4736 request=call-centre-77]"
    )
    assert text.format(outside).endswith("started")
    document = json.loads(JsonFormatter("registry").format(inside))
    assert document["service"] == "registry" and document["message"] == "decided event e1"
    assert document["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert document["request_id"] == "call-centre-77"
    assert "trace_id" not in json.loads(JsonFormatter("registry").format(outside))
