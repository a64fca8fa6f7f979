"""A raw grpc.aio echo service with the registry's mutual TLS: the baseline of ``Check``.

    python -m bench.echo_server <address> <tls folder>

It answers ``/bench.Echo/Echo`` with the request's bytes, doing nothing else, so the ratio of
``Check`` to it is what the registry's own work costs over gRPC and TLS themselves.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import grpc

from stopsms.core.tls import server_credentials

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
    server.add_secure_port(address, server_credentials(tls_folder))
    await server.start()
    print("serving", flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1], Path(sys.argv[2])))
