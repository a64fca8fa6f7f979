"""One way for a service to connect to Redis: a pool where a burst waits for a connection.

redis-py's asyncio pool holds a bounded number of connections (100 by default since redis-py
6) and answers the next concurrent caller with "Too many connections" instead of letting it
wait: under a burst of requests the intake lost the references of its citizens' requests, and
the registry's lookups would fail the same way. A blocking pool queues such a caller until a
connection is free, for at most ``wait_seconds``, then raises like any Redis error.
"""

from __future__ import annotations

import redis.asyncio as aioredis

#: Connections one process may hold; a burst beyond waits for one of them.
MAX_CONNECTIONS = 128
#: How long a caller waits for a free connection before the call fails.
WAIT_SECONDS = 5.0


def connect_redis(
    url: str, *, max_connections: int = MAX_CONNECTIONS, wait_seconds: float = WAIT_SECONDS
) -> aioredis.Redis:
    """A client for ``url`` whose pool makes a burst wait; closing it closes the pool."""
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=wait_seconds
    )
    return aioredis.Redis.from_pool(pool)
