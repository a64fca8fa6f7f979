"""Webhooks against a real broker: signed batches, retries with backoff, receipts."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from pathlib import Path

import pytest
import yaml
from aiohttp import web

from stopsms.adapters.kafka import GroupOffsets, KafkaPublisher
from stopsms.adapters.settings import Settings
from stopsms.domain.topics import Topics
from stopsms.notifier.webhooks import SIGNATURE_HEADER, SignatureError, sign, verify
from stopsms.tools.launcher import free_port
from stopsms.v1 import events_pb2

from ..conftest import E2E_PARTIES, running_service, until
from .test_notifier import NAME, change, publish

pytestmark = pytest.mark.integration
SECRET = b"oasis-webhook-secret-0123456789"


class Receiver:
    """A PSVA's webhook endpoint that fails its first ``failures`` requests."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.attempts = 0
        self.accepted: list[dict] = []  # type: ignore[type-arg]
        self.bad_signatures = 0

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            verify(SECRET, request.headers.get(SIGNATURE_HEADER, ""), body)
        except SignatureError:
            self.bad_signatures += 1
            return web.Response(status=401)
        self.attempts += 1
        if self.attempts <= self.failures:
            return web.Response(status=503)
        self.accepted.append(json.loads(body))
        return web.Response(status=204)


async def test_a_receiver_that_fails_three_times_gets_every_entitled_change_once(
    service_env: dict[str, str], namespace: str, tmp_path: Path
) -> None:
    settings = Settings.from_env(service_env)
    topics = Topics(namespace)
    receiver = Receiver(failures=3)
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    hook_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", hook_port).start()

    (tmp_path / "oasis.secret").write_bytes(SECRET + b"\n")
    directory = yaml.safe_load(E2E_PARTIES.read_text())
    directory["parties"].append(
        {
            "id": "oasis-hooks",
            "kind": "psva",
            "name": "Oasis Hooks",
            "senders": ["JUMIA"],
            "webhook": {
                "url": f"http://127.0.0.1:{hook_port}/hook",
                "secret_file": str(tmp_path / "oasis.secret"),
            },
        }
    )
    parties = tmp_path / "parties.yaml"
    parties.write_text(yaml.safe_dump(directory))
    env = {
        **service_env,
        "STOPSMS_PARTIES_FILE": str(parties),
        "STOPSMS_WEBHOOK_RETRY_BASE_SECONDS": "0.1",
        "STOPSMS_WEBHOOK_DEGRADED_AFTER": "3",
    }
    changes = [
        change(settings, "+212611111111", "e-jumia", "JUMIA"),
        change(settings, "+212622222222", "e-kitea", "KITEA"),  # not Oasis's sender
        change(settings, "+212633333333", "e-global", ""),
    ]
    try:
        with running_service("notifier", env, tmp_path) as notifier:
            await publish(settings, topics.suppressions, changes)
            async with asyncio.timeout(30):
                while sum(len(b.get("changes", [])) for b in receiver.accepted) < 2:
                    await asyncio.sleep(0.1)
            await asyncio.sleep(1.0)  # nothing more may arrive
            metrics = await asyncio.to_thread(
                lambda: urllib.request.urlopen(notifier.metrics).read().decode()
            )
            offsets = GroupOffsets(settings.kafka_bootstrap)
            await offsets.start()

            async def group_past_all_three() -> dict[int, int] | None:
                committed = await offsets.committed(
                    topics.psva_group("oasis-hooks"), topics.suppressions
                )
                return committed if sum(committed.values()) == 3 else None

            try:  # the group follows the acknowledged cursor within a commit round
                committed = await until(group_past_all_three, "the PSVA's group past all three")
            finally:
                await offsets.stop()
    finally:
        await runner.cleanup()

    delivered = [c for batch in receiver.accepted for c in batch["changes"]]
    assert sorted(NAME[c["eventId"]] for c in delivered) == ["e-global", "e-jumia"]
    assert {c["msisdn"] for c in delivered} == {"+212611111111", "+212633333333"}
    assert all(batch["partyId"] == "oasis-hooks" and batch["cursor"] for batch in receiver.accepted)
    assert receiver.attempts == 3 + len(receiver.accepted) and receiver.bad_signatures == 0
    assert 'stopsms_webhook_retries_total{party="oasis-hooks"} 3.0' in metrics
    assert 'stopsms_webhook_changes_delivered_total{party="oasis-hooks"} 2.0' in metrics
    assert 'stopsms_webhook_degraded{party="oasis-hooks"} 0.0' in metrics
    assert sum(committed.values()) == 3  # the cursor moved past all three, the proof follows
    log = (tmp_path / "notifier.log").read_text()
    assert "marked degraded" in log and "is back" in log


async def test_a_webhook_psva_is_told_of_the_cases_that_concern_it(
    service_env: dict[str, str], namespace: str, tmp_path: Path
) -> None:
    settings = Settings.from_env(service_env)
    topics = Topics(namespace)
    receiver = Receiver(failures=1)
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    hook_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    (tmp_path / "oasis.secret").write_bytes(SECRET + b"\n")
    directory = yaml.safe_load(E2E_PARTIES.read_text())
    directory["parties"].append(
        {
            "id": "oasis-hooks",
            "kind": "psva",
            "senders": ["JUMIA"],
            "webhook": {
                "url": f"http://127.0.0.1:{hook_port}/hook",
                "secret_file": str(tmp_path / "oasis.secret"),
            },
        }
    )
    parties = tmp_path / "parties.yaml"
    parties.write_text(yaml.safe_dump(directory))
    env = {
        **service_env,
        "STOPSMS_PARTIES_FILE": str(parties),
        "STOPSMS_WEBHOOK_RETRY_BASE_SECONDS": "0.1",
    }
    ours = events_pb2.Case(
        case_id="case-ours", reference="CASE-0000AAAA", sender_id="JUMIA", revision=1
    )
    ours.party_ids.extend(["iam", "oasis-hooks"])
    other = events_pb2.Case(
        case_id="case-other", reference="CASE-0000BBBB", sender_id="KITEA", revision=1
    )
    other.party_ids.extend(["iam", "sahara-push"])
    publisher = KafkaPublisher(settings.kafka_bootstrap)
    await publisher.start()
    try:
        with running_service("notifier", env, tmp_path):
            for case in (other, ours):
                await publisher.publish(
                    topics.cases, case.case_id.encode(), case.SerializeToString()
                )

            async def told() -> bool:
                return any(batch.get("cases") for batch in receiver.accepted)

            await until(told, "a batch of cases POSTed to the webhook PSVA")
    finally:
        await publisher.stop()
        await runner.cleanup()
    cases = [c for batch in receiver.accepted for c in batch.get("cases", [])]
    assert [c["caseId"] for c in cases] == ["case-ours"]  # not the other PSVA's case
    batch = next(b for b in receiver.accepted if b.get("cases"))
    assert (
        batch["partyId"] == "oasis-hooks" and not batch.get("changes") and not batch.get("cursor")
    )
    assert receiver.bad_signatures == 0 and receiver.attempts >= 2  # retried after a failure


def test_signatures_are_checked_as_a_receiver_must() -> None:
    body = b'{"changes":[]}'
    header = sign(SECRET, body, 1_800_000_000)
    assert verify(SECRET, header, body, now=1_800_000_010) == 1_800_000_000
    with pytest.raises(SignatureError, match="stale"):
        verify(SECRET, header, body, now=1_800_000_000 + 301)
    with pytest.raises(SignatureError, match="match"):
        verify(SECRET, header, body + b" ", now=1_800_000_000)
    with pytest.raises(SignatureError, match="match"):
        verify(b"another secret of some length", header, body, now=1_800_000_000)
    rotated = header + ",v1=" + "0" * 64
    assert verify(SECRET, rotated, body, now=1_800_000_000) == 1_800_000_000
    with pytest.raises(SignatureError, match="malformed"):
        verify(SECRET, "v1=abc", body)
