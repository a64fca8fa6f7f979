"""The gRPC server every service runs: typed servicers, health, reflection, graceful stop.

Health uses the library's ``grpc_health.v1`` servicer; each service's name is reported SERVING
once it is ready, and NOT_SERVING while it drains, so Kubernetes stops routing to it before it
stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import grpc
import mode
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError
from google.protobuf.message_factory import GetMessageClass
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from opentelemetry.trace import SpanKind
from prometheus_client import Counter, Histogram

from stopsms.adapters.tracing import traced, traceparent_of

log = logging.getLogger(__name__)

Registration = Callable[[grpc.aio.Server], None]

#: Largest request a client may send; a CheckBatch chunk of 10,000 numbers fits well within it.
MAX_MESSAGE_BYTES = 4 * 1024 * 1024

REQUESTS = Counter(
    "stopsms_grpc_requests_total",
    "gRPC calls answered, by method and status code.",
    ["method", "code"],
)
LATENCY = Histogram(
    "stopsms_grpc_request_seconds",
    "Time to answer a gRPC call (a stream: until it ends), by method.",
    ["method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 60, 600),
)


class Malformed:
    """Stands for a request whose bytes do not parse, so the servicer can say INVALID_ARGUMENT.

    gRPC's own handling of a deserialisation error answers UNKNOWN, which tells the caller
    nothing and looks like a server fault; the platform answers the caller's mistake instead.
    """

    def __init__(self, message_name: str, error: Exception) -> None:
        self.detail = f"request: not a valid {message_name} ({error})"


def _safe_parser(message_class: Any) -> Callable[[bytes], Any]:
    name = message_class.DESCRIPTOR.full_name

    def parse(data: bytes) -> Any:
        try:
            return message_class.FromString(data)
        except DecodeError as exc:
            return Malformed(name, exc)

    return parse


async def _refuse(context: grpc.aio.ServicerContext | DrainBeforeAbort, request: Malformed) -> None:
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.detail)


def servicer_registration(servicer: object, service: ServiceDescriptor) -> Registration:
    """Register ``servicer`` for ``service``, answering unparsable requests INVALID_ARGUMENT."""
    handlers: dict[str, grpc.RpcMethodHandler] = {}
    for method in service.methods:
        implementation = getattr(servicer, method.name)
        parse = _safe_parser(GetMessageClass(method.input_type))
        serialize = _serializer(GetMessageClass(method.output_type))
        handlers[method.name] = _handler(method, implementation, parse, serialize)

    def register(server: grpc.aio.Server) -> None:
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(service.full_name, handlers),)
        )

    return register


def _serializer(message_class: Any) -> Callable[[Any], bytes]:
    """Serialise responses; a servicer may also yield bytes it serialised itself.

    CheckBatch writes a million results faster as bytes than as message objects.
    """

    def serialize(message: Any) -> bytes:
        if isinstance(message, bytes):
            return message
        return message_class.SerializeToString(message)  # type: ignore[no-any-return]

    return serialize


#: The labelled series of each method (and code), looked up once: ``labels()`` takes a lock
#: and checks its arguments on every call, a tenth of a ``Check`` call's own Python time.
_counted = functools.cache(REQUESTS.labels)
_timed = functools.cache(LATENCY.labels)


def _observe(method: str, context: grpc.aio.ServicerContext, started: float, crashed: bool) -> None:
    """Count one call by method and status code, and time it."""
    code = context.code() if hasattr(context, "code") else None
    name = "UNKNOWN" if crashed and code is None else (code or grpc.StatusCode.OK).name
    _counted(method, name).inc()
    _timed(method).observe(time.perf_counter() - started)


def _call_span(
    name: str, request: Any, context: grpc.aio.ServicerContext
) -> contextlib.AbstractContextManager[str]:
    """The call's span, child of the W3C traceparent the caller sent in its metadata."""
    return traced(
        traceparent_of(context.invocation_metadata()),
        getattr(request, "request_id", None),
        name=name,
        kind=SpanKind.SERVER,
    )


#: How long a refused client-streaming call may go on reading what its client still sends.
DRAIN_SECONDS = 5.0


class DrainBeforeAbort:
    """A client-streaming call's context whose ``abort`` first reads what the client still sends.

    When a server ends a client-streaming call while its client is still writing, the Python
    asyncio client reports ``INTERNAL: Internal error from Core`` instead of the server's
    status (grpc/grpc#36066): a PSVA refused on ``CheckBatch`` would not learn why. Reading
    the rest of the stream first (at most :data:`DRAIN_SECONDS`) lets the client finish its
    writes, so the status it receives is the one sent: ``PERMISSION_DENIED``, say.
    """

    def __init__(self, context: grpc.aio.ServicerContext, requests: AsyncIterator[Any]) -> None:
        self._context = context
        self._requests = requests

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)

    async def abort(self, code: grpc.StatusCode, details: str = "", *args: Any, **kw: Any) -> Any:
        """Read the client's remaining messages (bounded), then end the call with the status."""
        with contextlib.suppress(Exception):
            async with asyncio.timeout(DRAIN_SECONDS):
                async for _ in self._requests:
                    pass
        return await self._context.abort(code, details, *args, **kw)


def _handler(method: Any, implementation: Any, parse: Any, serialize: Any) -> grpc.RpcMethodHandler:
    name = method.full_name
    if method.client_streaming:

        async def stream_stream(request_iterator: Any, context: grpc.aio.ServicerContext) -> Any:
            # Both refusals drain the client's own stream, unchecked: a message that does not
            # parse, read while a call is already being refused, must not end it a second
            # time (grpc raises "Abort already called") nor replace the reason it is refused.
            refusing = DrainBeforeAbort(context, request_iterator)

            async def checked() -> Any:
                async for request in request_iterator:
                    if isinstance(request, Malformed):
                        await _refuse(refusing, request)
                    yield request

            started, crashed = time.perf_counter(), True
            try:
                async for response in implementation(checked(), refusing):
                    yield response
                crashed = False
            finally:
                _observe(name, context, started, crashed)

        return grpc.stream_stream_rpc_method_handler(
            stream_stream, request_deserializer=parse, response_serializer=serialize
        )
    if method.server_streaming:

        async def unary_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
            started, crashed = time.perf_counter(), True
            try:
                with _call_span(name, request, context):
                    if isinstance(request, Malformed):
                        await _refuse(context, request)
                    async for response in implementation(request, context):
                        yield response
                crashed = False
            finally:
                _observe(name, context, started, crashed)

        return grpc.unary_stream_rpc_method_handler(
            unary_stream, request_deserializer=parse, response_serializer=serialize
        )

    async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
        started, crashed = time.perf_counter(), True
        try:
            with _call_span(name, request, context):
                if isinstance(request, Malformed):
                    await _refuse(context, request)
                result = await implementation(request, context)
            crashed = False
            return result
        finally:
            _observe(name, context, started, crashed)

    return grpc.unary_unary_rpc_method_handler(
        unary_unary, request_deserializer=parse, response_serializer=serialize
    )


class GrpcEndpoint:
    """One grpc.aio server (mutual TLS unless in development mode) plus a health-only port.

    The API port requires a client certificate; Kubernetes' gRPC probes cannot present one, so
    the same health state is also served alone on a plaintext ``health_address``.
    """

    def __init__(
        self,
        address: str,
        registrations: Sequence[Registration],
        service_names: Sequence[str],
        *,
        credentials: grpc.ServerCredentials | None = None,
        health_address: str | None = None,
        ready_later: Sequence[str] = (),
    ) -> None:
        self.address = address
        self.service_names = list(service_names)
        #: Services that report NOT_SERVING until :meth:`mark_serving` (the process itself
        #: stays SERVING, so a liveness probe never kills a service that is catching up).
        self._pending = set(ready_later)
        self.server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.so_reuseport", 0),
            ]
        )
        for register in registrations:
            register(self.server)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            [*self.service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], self.server
        )
        if credentials is None:
            self.port = self.server.add_insecure_port(address)
        else:
            self.port = self.server.add_secure_port(address, credentials)
        if self.port == 0:
            raise RuntimeError(f"cannot listen on {address}")
        self.health_server: grpc.aio.Server | None = None
        self.health_port = 0
        if health_address is not None:
            self.health_server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
            health_pb2_grpc.add_HealthServicer_to_server(self.health, self.health_server)
            self.health_port = self.health_server.add_insecure_port(health_address)
            if self.health_port == 0:
                raise RuntimeError(f"cannot listen on {health_address}")

    async def start(self) -> None:
        """Start serving and report every service SERVING."""
        await self.server.start()
        if self.health_server is not None:
            await self.health_server.start()
        await self.set_serving(True)
        log.info("gRPC listening on %s", self.address)

    async def set_serving(self, serving: bool) -> None:
        """Report the process and each ready service SERVING (or all NOT_SERVING)."""
        for name in ["", *self.service_names]:
            ready = serving and name not in self._pending
            await self.health.set(
                name,
                health_pb2.HealthCheckResponse.SERVING
                if ready
                else health_pb2.HealthCheckResponse.NOT_SERVING,
            )

    async def mark_serving(self, name: str) -> None:
        """A service that was catching up is ready: report it SERVING."""
        self._pending.discard(name)
        await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    async def mark_not_serving(self, name: str) -> None:
        """A service must catch up again (a view rebuild): NOT_SERVING until marked serving."""
        self._pending.add(name)
        await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)

    async def stop(self, grace: float) -> None:
        """Stop taking new calls, let running ones finish within ``grace`` seconds."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
        if self.health_server is not None:
            await self.health_server.stop(0)


class HostedEndpoint(mode.Service):
    """Runs a :class:`GrpcEndpoint` inside a faust worker, started and stopped with it."""

    def __init__(
        self,
        endpoint: GrpcEndpoint,
        grace: float,
        after_stop: Callable[[], Awaitable[None]] | None = None,
        **kwargs: object,
    ) -> None:
        self.endpoint = endpoint
        self.grace = grace
        self.after_stop = after_stop
        super().__init__(**kwargs)  # type: ignore[arg-type]

    async def on_start(self) -> None:
        """Start the gRPC server."""
        await self.endpoint.start()
        # Everything allocated so far (faust, grpc, protobuf modules: hundreds of thousands of
        # objects) lives as long as the process; leaving it out of the collector's full
        # passes keeps those passes short, which is what a p99 latency sees.
        gc.freeze()

    async def on_stop(self) -> None:
        """Drain and stop the gRPC server, then run ``after_stop`` (the audit's last flush)."""
        await self.endpoint.stop(self.grace)
        if self.after_stop is not None:
            await self.after_stop()


async def run_until_signalled(
    start: Callable[[], Awaitable[None]], stop: Callable[[], Awaitable[None]]
) -> None:
    """Start, wait for SIGTERM or SIGINT, then stop: the life of a plain asyncio service."""
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    await start()
    await stopping.wait()
    log.info("stopping")
    await stop()
