"""Adapters: how the services reach the world, each behind a small interface.

Kafka readers and writers and the stream runner, the Redis view, gRPC serving and clients,
identity and TLS, settings, telemetry and traces. Each interface has an in-memory fake beside
it, so a service's composition root takes either. Adapters may use :mod:`stopsms.domain`, never
a service.
"""
