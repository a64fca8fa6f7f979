"""A raw grpc.aio echo service with the registry's mutual TLS: the baseline of ``Check``.

    python -m bench.echo_server <address> <tls folder>

With port 0 in the address the kernel picks the port, and the first line the server prints
says which (``serving on 127.0.0.1:<port>``): nothing can take it between a probe and a bind.

It answers ``/bench.Echo/Echo`` with the request's bytes, doing nothing else, so the ratio of
``Check`` to it is what the registry's own work costs over gRPC and TLS themselves.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import grpc

from stopsms.adapters.tls import server_credentials

METHOD = "/bench.Echo/Echo"


async def serve(address: str, tls_folder: Path) -> None:
    """Serve until killed."""

    async def echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return request

    handler = grpc.method_handlers_generic_handler(
        "bench.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(echo)}
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    port = server.add_secure_port(address, server_credentials(tls_folder))
    await server.start()
    print(f"serving on {address.rpartition(':')[0]}:{port}", flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1], Path(sys.argv[2])))


def wait_for_address(log: Path, timeout: float = 30.0) -> str:
    """The address an echo server started with port 0 reports in its log."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in log.read_text(errors="replace").splitlines() if log.exists() else []:
            if line.startswith("serving on "):
                return line.removeprefix("serving on ").strip()
        time.sleep(0.05)
    raise RuntimeError(f"the echo server did not report its address within {timeout:.0f} s")
