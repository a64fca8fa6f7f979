"""The registry's view is rebuilt from the topic when Redis loses it, and verified exactly."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
import redis.asyncio as aioredis
from grpc_health.v1 import health_pb2, health_pb2_grpc

from stopsms.adapters.kafka import KafkaPublisher, read_topic
from stopsms.adapters.settings import Settings
from stopsms.adapters.view import RedisSuppressionView
from stopsms.domain.topics import Topics, partition_for_key
from stopsms.domain.viewcodec import ExpectedView, decode_changes
from stopsms.v1 import events_pb2

from ..conftest import running_service, view_applied
from .test_registry import preference

pytestmark = pytest.mark.integration

SERVICE = health_pb2.HealthCheckRequest(service="stopsms.v1.RegistryService")
SERVING = health_pb2.HealthCheckResponse.SERVING


async def read_all(settings: Settings, topic: str) -> list:  # type: ignore[type-arg]
    async with asyncio.timeout(30):
        return await read_topic(settings.kafka_bootstrap, topic)


async def test_a_flush_under_load_is_rebuilt_to_the_same_checksum_while_not_serving(
    service_env: dict[str, str], namespace: str, tmp_path: Path
) -> None:
    settings = Settings.from_env(service_env)
    topics = Topics(namespace)
    senders = ["", "JUMIA", "KITEA", "MARJANE"]
    requests = [
        preference(
            settings,
            f"+2126{n % 1500:08d}",
            f"flush-{n}",
            events_pb2.ACTION_OPT_OUT if n % 7 else events_pb2.ACTION_OPT_IN,
            senders[n % 4],
        )
        for n in range(3000)
    ]
    view = RedisSuppressionView(aioredis.from_url(settings.redis_url), namespace)
    # Rebuilds of any size go through the worker processes, as a national list's would.
    env = {**service_env, "STOPSMS_PARALLEL_REBUILD_FROM": "1"}
    with running_service("registry", env, tmp_path) as registry:
        address = registry.address
        async with grpc.aio.insecure_channel(address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            async with asyncio.timeout(30):
                while (await health.Check(SERVICE)).status != SERVING:
                    await asyncio.sleep(0.1)
            statuses: list[int] = []

            async def watch_health() -> None:
                while True:
                    statuses.append((await health.Check(SERVICE)).status)
                    await asyncio.sleep(0.02)

            async def load() -> None:
                publisher = KafkaPublisher(settings.kafka_bootstrap)
                await publisher.start()
                try:
                    for start in range(0, len(requests), 100):
                        for r in requests[start : start + 100]:
                            key = r.subject.encode()
                            await publisher.publish(
                                topics.requests,
                                key,
                                r.SerializeToString(),
                                partition=partition_for_key(key, settings.partitions),
                            )
                        await asyncio.sleep(0.1)
                finally:
                    await publisher.stop()

            watcher = asyncio.create_task(watch_health())
            loading = asyncio.create_task(load())
            async with asyncio.timeout(60):  # mid-load: the view holds some of it
                while sum((await view.applied_offsets()).values()) < 300:
                    await asyncio.sleep(0.05)
            assert statuses[-1] == SERVING and not loading.done()
            await view.clear()  # what FLUSHALL or a failover to an empty replica does to it
            await loading
            not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
            async with asyncio.timeout(60):  # the rebuild: NOT_SERVING, then SERVING again
                while not_serving not in statuses or statuses[-1] != SERVING:
                    await asyncio.sleep(0.1)
            # Every request has been decided once the topic holds a change for each.
            async with asyncio.timeout(60):
                while len(await read_all(settings, topics.suppressions)) < len(requests):
                    await asyncio.sleep(0.5)
            await view_applied(view, await read_all(settings, topics.suppressions))
            watcher.cancel()

    records = await read_all(settings, topics.suppressions)
    expected = ExpectedView()
    batch = decode_changes(records, view.layout)
    expected.add(batch)
    ends = batch.offsets
    census, offsets = await view.census()
    await view.close()
    assert census == expected.census()
    assert offsets == {p: o for p, o in ends.items()}
    log = (tmp_path / "registry.log").read_text()
    assert "view rebuilt and verified" in log and "by 2 processes" in log


async def test_scrub_splits_a_campaign_and_rebuild_runs_on_demand(
    service_env: dict[str, str], namespace: str, tmp_path: Path
) -> None:
    settings = Settings.from_env(service_env)
    topics = Topics(namespace)
    opted_out = [f"+2126{n:08d}" for n in range(0, 400, 4)]  # every fourth number
    publisher = KafkaPublisher(settings.kafka_bootstrap)
    await publisher.start()
    for i, number in enumerate(opted_out):
        r = preference(
            settings, number, f"scrub-{i}", events_pb2.ACTION_OPT_OUT, "JUMIA" if i % 2 else ""
        )
        key = r.subject.encode()
        await publisher.publish(
            topics.requests,
            key,
            r.SerializeToString(),
            partition=partition_for_key(key, settings.partitions),
        )
    await publisher.stop()
    campaign = tmp_path / "campaign.csv"
    lines = ["msisdn,name"] + [f"06{n:08d},client {n}" for n in range(400)]
    lines += ["0522123456,a landline", "", "garbage,who"]
    campaign.write_bytes(("\n".join(lines) + "\n").encode() + b"\xff\xfe not text\n")
    with running_service("registry", service_env, tmp_path) as registry:
        env = {
            **service_env,
            "STOPSMS_REGISTRY_GRPC_ADDRESS": registry.address,
            "STOPSMS_DATA_DIR": str(tmp_path / "cli"),
        }
        async with asyncio.timeout(60):
            while len(await read_all(settings, topics.suppressions)) < len(opted_out):
                await asyncio.sleep(0.3)
        view = RedisSuppressionView(aioredis.from_url(settings.redis_url), namespace)
        await view_applied(view, await read_all(settings, topics.suppressions))
        await view.close()
        scrub = await asyncio.create_subprocess_exec(
            "stopsms", "scrub", str(campaign), "--sender", "JUMIA", "--party", "atlas-sms",
            env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await scrub.communicate()
        assert scrub.returncode == 0, err.decode()
        assert "400 clean" not in err.decode() and "100 suppressed" in err.decode(), err.decode()
        clean = (tmp_path / "campaign.clean.csv").read_text().splitlines()
        suppressed = (tmp_path / "campaign.suppressed.csv").read_text().splitlines()
        rejects = (tmp_path / "campaign.rejects.csv").read_text().splitlines()
        assert clean[0] == "msisdn,name" and len(clean) == 1 + 300
        assert suppressed[0] == "msisdn,name,matched_scope,since" and len(suppressed) == 1 + 100
        assert {line.split(",")[2] for line in suppressed[1:]} == {"sender", "global"}
        reasons = {line.split(",")[0]: line for line in rejects[1:]}
        assert sorted(reasons) == ["402", "404", "405"]
        assert "mobile" in reasons["402"] and "prefix" in reasons["404"]
        assert "UTF-8" in reasons["405"]

        rebuild = await asyncio.create_subprocess_exec(
            "stopsms", "registry", "rebuild",
            env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await rebuild.communicate()
        assert rebuild.returncode == 0, err.decode()
        assert "view rebuilt and verified: 100 entries" in err.decode(), err.decode()
