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


def test_the_direct_path_continues_exactly_the_traces_the_propagator_would() -> None:
    """continue_trace writes the common cases itself; the W3C rules must not change with it."""
    caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    headers = {
        CALLER: caller_trace,
        f"00-{caller_trace}-00f067aa0ba902b7-00": caller_trace,  # not sampled: still its trace
        f"00-{'0' * 32}-00f067aa0ba902b7-01": None,  # no trace id: a new trace
        f"00-{caller_trace}-{'0' * 16}-01": None,  # no parent span: a new trace
        CALLER.upper(): None,  # W3C hex is lowercase
        f"ff-{caller_trace}-00f067aa0ba902b7-01": None,  # version ff is invalid
        f"01-{caller_trace}-00f067aa0ba902b7-01-future": caller_trace,  # a later version
        "": None,
        "nonsense": None,
    }
    for header, kept in headers.items():
        continued = continue_trace(header)
        assert trace_id(continued) is not None, header
        assert continued.startswith("00-") and continued.endswith("-01"), header
        if kept is None:
            assert trace_id(continued) != caller_trace, header
        else:
            assert trace_id(continued) == kept, header
        assert continued.split("-")[2] != "00f067aa0ba902b7", header  # always a new span
    assert len({continue_trace(None) for _ in range(1000)}) == 1000


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
