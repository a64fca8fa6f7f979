"""Logging set-up shared by the services: one line per event, never a raw number."""

from __future__ import annotations

import logging
import sys


def configure_logging(service: str, level: str = "INFO") -> None:
    """Log to stderr with the service's name; numbers are never logged, only subjects."""
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format=f"%(asctime)s {service} %(levelname)s %(name)s: %(message)s",
        force=True,
    )
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    logging.getLogger("kafka").setLevel(logging.WARNING)


def serve_metrics(address: str) -> int:
    """Serve the process's Prometheus metrics on ``host:port`` (a thread); the port bound."""
    from prometheus_client import start_http_server

    host, _, port = address.rpartition(":")
    server, _ = start_http_server(int(port), addr=host or "0.0.0.0")
    return int(server.server_port)
