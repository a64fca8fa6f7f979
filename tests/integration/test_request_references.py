"""Each subject's latest request per scope, on the real Redis: a burst keeps them all.

A burst of more concurrent requests than redis-py's pool holds once lost references ("Too
many connections"); the services' client (:func:`connect_redis`) makes the burst wait.
"""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from stopsms.adapters.redis_pool import connect_redis
from stopsms.intake.submission import RedisRequestReferences
from stopsms.tools.launcher import LocalInfrastructure

pytestmark = pytest.mark.integration


async def test_a_burst_of_requests_keeps_every_reference_and_the_latest_wins(
    infra: LocalInfrastructure, namespace: str
) -> None:
    client = connect_redis(infra.redis.url, max_connections=16)
    references = RedisRequestReferences(client, namespace)
    try:
        subjects = [f"pk1:{i:032x}" for i in range(300)]  # beyond any pool
        await asyncio.gather(
            *(references.remember(s, "JUMIA", f"first-{s}") for s in subjects),
            *(references.remember(s, "", f"global-{s}") for s in subjects[:50]),
        )
        await asyncio.gather(*(references.remember(s, "JUMIA", f"then-{s}") for s in subjects))
        for subject in subjects:
            expected = {"JUMIA": f"then-{subject}"}
            if subject in subjects[:50]:
                expected[""] = f"global-{subject}"
            assert await references.latest(subject) == expected, f"{subject}: latest not kept"
    finally:
        await client.aclose()


async def test_without_redis_a_request_still_returns_and_the_page_shows_no_reference() -> None:
    client = aioredis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    references = RedisRequestReferences(client)
    try:
        await asyncio.wait_for(references.remember("pk1:" + "0" * 32, "", "e"), timeout=10)
        await asyncio.wait_for(references.remember("pk1:" + "0" * 32, "", "f"), timeout=10)
        assert await references.latest("pk1:" + "0" * 32) == {}
    finally:
        await client.aclose()
