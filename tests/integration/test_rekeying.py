"""Pseudonym re-keying on the real broker and Redis: every subject moves, no opt-out lost.

A registry under the first pseudonym key (``pk1``) decides a ledger of requests, and the ledger
check passes. The registry restarts with ``pk2`` as its pseudonym key and ``pk1`` as the
previous one, its re-keying pass every second and a grace of a few seconds; while it moves the
subjects, requests keep arriving under both keys, as while intake replicas roll. Then
``stopsms keys rotate-pseudonyms``'s follower must see every decision in force under ``pk2``; the
ledger check passes again over every request, none lost or doubled; ``Check`` answers each
number as before plus what came meanwhile; and the operators' example consumer, reading the
whole list through the change, holds the same rows as the list.
"""

from __future__ import annotations

import secrets
import sqlite3
from pathlib import Path

import grpc
import pytest

from stopsms.adapters.bus import KafkaBus
from stopsms.adapters.identity import PARTY_HEADER
from stopsms.adapters.kafka import KafkaPublisher, read_topic
from stopsms.adapters.settings import Settings
from stopsms.adapters.view import RedisSuppressionView
from stopsms.domain.topics import Topics
from stopsms.domain.viewcodec import ViewLayout
from stopsms.tools.rekey import follow_rekeying
from stopsms.tools.verify import verify
from stopsms.v1 import events_pb2, registry_pb2, registry_pb2_grpc

from ..conftest import running_service, until
from .test_operator_example import run_example_with
from .test_registry import preference
from .test_resealing import publish_requests

pytestmark = pytest.mark.integration
OUT, IN = events_pb2.ACTION_OPT_OUT, events_pb2.ACTION_OPT_IN
NUMBERS = [f"+2126120000{i:02d}" for i in range(12)]
SUPPRESSED, ALLOWED = events_pb2.STATE_SUPPRESSED, events_pb2.STATE_ALLOWED


async def publish_proofs(settings: Settings, topics: Topics, event_ids: list[str]) -> None:
    """Done proofs, standing in for the notifier (not running here)."""
    publisher = KafkaPublisher(settings.kafka_bootstrap)
    await publisher.start()
    try:
        for event_id in event_ids:
            proof = events_pb2.PropagationRecord(event_id=event_id, done=True)
            await publisher.publish(
                topics.propagation, event_id.encode(), proof.SerializeToString()
            )
    finally:
        await publisher.stop()


async def latest_decisions(
    settings: Settings, topics: Topics
) -> dict[bytes, events_pb2.SuppressionChanged]:
    """The list as compaction leaves it: the latest record of each key, tombstones honoured."""
    latest: dict[bytes, events_pb2.SuppressionChanged | None] = {}
    for record in await read_topic(settings.kafka_bootstrap, topics.suppressions):
        value = record.value
        latest[record.key or b""] = (
            None if value is None else events_pb2.SuppressionChanged.FromString(value)
        )
    return {k: c for k, c in latest.items() if c is not None}


def rows_by_number(
    settings: Settings, latest: dict[bytes, events_pb2.SuppressionChanged]
) -> dict[tuple[str, str], tuple[int, int]]:
    """The list as an operator keyed by number holds it: (number, scope) → (state, version)."""
    keys = settings.pseudonymiser()
    rows: dict[tuple[str, str], tuple[int, int]] = {}
    for change in latest.values():
        place = (keys.unseal(change.sealed_msisdn), change.sender_id)
        if place not in rows or rows[place][1] < change.version:
            rows[place] = (change.state, change.version)
    return rows


async def test_a_rotation_moves_every_subject_and_loses_or_doubles_no_opt_out(
    service_env: dict[str, str], namespace: str, tmp_path: Path
) -> None:
    first = Settings.from_env(service_env)  # pk1, as every service held it before
    assert first.pseudonymiser().pseudonym_key.key_id == "pk1"
    pk2_file = tmp_path / "pseudonym-pk2.key"
    pk2_file.write_text(f"pk2:{secrets.token_hex(32)}\n")
    env = {
        **service_env,
        "STOPSMS_PSEUDONYM_KEY_FILE": str(pk2_file),
        "STOPSMS_PREVIOUS_PSEUDONYM_KEY_FILE": str(first.key_dir / "pseudonym.key"),
        "STOPSMS_REKEY_PASS_SECONDS": "1",
        "STOPSMS_REKEY_GRACE_SECONDS": "4",
    }
    second = Settings.from_env(env)  # the registry during the rotation, and intake after it
    topics = Topics(namespace)
    before = [
        preference(first, n, f"b{i}", OUT, "JUMIA" if i % 3 else "") for i, n in enumerate(NUMBERS)
    ]
    before.append(preference(first, NUMBERS[1], "b-in", IN, "JUMIA"))  # back in: version 2
    before.append(preference(first, NUMBERS[4], "b-global", OUT, ""))  # a second scope
    view = RedisSuppressionView.from_url(second.redis_url, namespace, ViewLayout())
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    try:
        await publish_proofs(first, topics, [r.event_id for r in before])
        await publish_requests(first, topics, before)
        with running_service("registry", service_env, log_dir):
            report = await verify([r.event_id for r in before], bootstrap=first.kafka_bootstrap,
                                  topics=topics, view=view, wait_seconds=60)  # fmt: skip
            assert report.ok and report.changes_found == len(before), report.summary()
        rows_before = rows_by_number(first, await latest_decisions(first, topics))
        assert len(rows_before) == len(NUMBERS) + 1

        # During: an intake replica not rolled yet (pk1), and one rolled already (pk2).
        during = [
            preference(first, NUMBERS[2], "d-old-key", IN, "JUMIA"),
            preference(second, NUMBERS[3], "d-new-key", OUT, "KITEA"),
            preference(second, "+212612999999", "d-new-number", OUT, ""),
        ]
        await publish_proofs(first, topics, [r.event_id for r in during])
        (log_dir / "registry.log").rename(log_dir / "registry-before.log")
        with running_service("registry", env, log_dir) as registry:
            await publish_requests(first, topics, during)
            outcome = await follow_rekeying(
                KafkaBus(second.kafka_bootstrap), topics, second.partitions, "pk2", wait_s=120
            )
            assert outcome.complete, f"the re-keying never ended: {outcome.count}"
            assert outcome.at_start > 0 and outcome.count.moved >= len(rows_before)
            latest = await latest_decisions(second, topics)
            assert all(key.startswith(b"pk2:") for key in latest), "an old subject in force"

            # Requests after the end, from an intake replica that still has pk1 and one with pk2.
            after = [
                preference(first, NUMBERS[5], "a-old-key", IN, "JUMIA"),
                preference(second, NUMBERS[6], "a-new-key", IN, ""),
            ]
            await publish_proofs(first, topics, [r.event_id for r in after])
            await publish_requests(first, topics, after)
            ledger = [r.event_id for r in [*before, *during, *after]]
            report = await verify(ledger, bootstrap=second.kafka_bootstrap, topics=topics,
                                  view=view, wait_seconds=60)  # fmt: skip
            assert report.ok, report.summary()
            assert report.changes_found == len(ledger) and not report.erased, report.summary()

            expected = dict(rows_before)
            expected[(NUMBERS[2], "JUMIA")] = (ALLOWED, 2)
            expected[(NUMBERS[3], "KITEA")] = (SUPPRESSED, 2)
            expected[("+212612999999", "")] = (SUPPRESSED, 1)
            expected[(NUMBERS[5], "JUMIA")] = (ALLOWED, 2)
            expected[(NUMBERS[6], "")] = (ALLOWED, 2)
            latest = await latest_decisions(second, topics)
            assert rows_by_number(second, latest) == expected
            assert all(key.startswith(b"pk2:") for key in latest)

            async with grpc.aio.insecure_channel(registry.address) as channel:
                stub = registry_pb2_grpc.RegistryServiceStub(channel)
                for (number, sender), (state, _) in sorted(expected.items()):
                    want = (
                        registry_pb2.VERDICT_SUPPRESSED
                        if state == SUPPRESSED
                        else registry_pb2.VERDICT_ALLOWED
                    )

                    async def answered(number: str = number, sender: str = sender,
                                       want: int = want) -> bool:  # fmt: skip
                        answer = await stub.Check(
                            registry_pb2.CheckRequest(msisdn=number, sender_id=sender),
                            metadata=((PARTY_HEADER, "iam"),),
                        )
                        return answer.verdict == want

                    await until(answered, f"Check answering {number}/{sender or '*'} as the list")
        records = await read_topic(second.kafka_bootstrap, topics.suppressions)
    finally:
        await view.close()

    # The operators' example reads the whole list, old subjects, moves and tombstones.
    store = tmp_path / "suppressions.db"
    await run_example_with(second, topics, store, len(records), [first.key_dir / "data.key"])
    with sqlite3.connect(store) as db:
        rows = {
            (n, s): (SUPPRESSED if sup else ALLOWED, v)
            for n, s, sup, v in db.execute(
                "SELECT msisdn, sender_id, suppressed, version FROM suppression"
            )
        }
    assert rows == expected
