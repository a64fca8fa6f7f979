"""Logging and metrics set-up shared by the services: one line per event, never a raw number."""

from __future__ import annotations

import json
import logging
import sys
import time

from stopsms.adapters.settings import SettingsError
from stopsms.adapters.tracing import CURRENT_REQUEST, CURRENT_TRACEPARENT, trace_id


class ContextFilter(logging.Filter):
    """Adds the trace id and request id of the work in progress to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Keep every record; only annotate it."""
        record.trace_id = trace_id(CURRENT_TRACEPARENT.get()) or ""
        record.request_id = CURRENT_REQUEST.get() or ""
        return True


class TextFormatter(logging.Formatter):
    """One line: time, service, level, logger, message, then the trace and request ids."""

    def __init__(self, service: str) -> None:
        super().__init__(f"%(asctime)s {service} %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        """The usual line, with ``[trace=… request=…]`` when the work has them."""
        line = super().format(record)
        ids = (("trace", "trace_id"), ("request", "request_id"))
        context = [f"{name}={getattr(record, a)}" for name, a in ids if getattr(record, a, "")]
        return f"{line} [{' '.join(context)}]" if context else line


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log collectors: the same fields, named."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        """The record as one JSON object."""
        document = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "service": self.service,
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in ("trace_id", "request_id"):
            if getattr(record, name, ""):
                document[name] = getattr(record, name)
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return json.dumps(document, ensure_ascii=False)


def configure_logging(service: str, level: str = "INFO", fmt: str = "text") -> None:
    """Log to stderr, one line per event (``fmt``: text, or json for collectors).

    Numbers are never logged, only subjects, event and request ids; each line names the trace
    and request it belongs to, so one opt-out can be followed across the services.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service) if fmt == "json" else TextFormatter(service))
    handler.addFilter(ContextFilter())
    handler.formatter.converter = time.gmtime  # type: ignore[union-attr]
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    logging.getLogger("kafka").setLevel(logging.WARNING)


def serve_metrics(address: str) -> int:
    """Serve the process's Prometheus metrics on ``host:port`` (a thread); the port bound."""
    from prometheus_client import start_http_server

    host, _, port = address.rpartition(":")
    try:
        server, _ = start_http_server(int(port), addr=host or "0.0.0.0")
    except (OSError, ValueError) as exc:
        raise SettingsError(f"cannot serve metrics on {address}: {exc}") from exc
    return int(server.server_port)
