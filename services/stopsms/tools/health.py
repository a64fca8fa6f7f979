"""The gRPC health protocol, asked from outside: container healthchecks, the fault tests.

    python -m stopsms.tools.health HOST:PORT [SERVICE]

exits 0 when the server says SERVING (for SERVICE, or the whole server), 1 otherwise. The
services serve health alone on a plaintext port (``STOPSMS_*_HEALTH_ADDRESS``), so neither a
probe nor this command needs a client certificate.
"""

from __future__ import annotations

import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

SERVING = health_pb2.HealthCheckResponse.SERVING


def health_status(address: str, service: str = "", timeout: float = 1.0) -> int | None:
    """The health status of ``service`` at ``address``, or None when nothing answers."""
    try:
        with grpc.insecure_channel(address) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
            return int(reply.status)
    except grpc.RpcError:
        return None


def is_serving(address: str, service: str = "") -> bool:
    """True when the server at ``address`` says SERVING."""
    return health_status(address, service) == SERVING


def main(argv: list[str] | None = None) -> int:
    """Entry point of the health command."""
    args = sys.argv[1:] if argv is None else argv
    if not 1 <= len(args) <= 2:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    status = health_status(args[0], args[1] if len(args) == 2 else "", timeout=3.0)
    name = (
        health_pb2.HealthCheckResponse.ServingStatus.Name(status)
        if status is not None
        else "no answer"
    )
    print(name)
    return 0 if status == SERVING else 1


if __name__ == "__main__":
    raise SystemExit(main())
