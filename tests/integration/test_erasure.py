"""Erasure on the real broker and Redis: write, erase, verify — then the person comes back.

Requests decided years ago (their action time says so) stand for a legal record that has ended;
the registry runs with its erasure pass every second. It must tombstone exactly the subject
with no opt-out in force whose record is over, on the list and in the proofs; the Redis view
must forget it; ``stopsms verify`` must count its requests as erased while everything else on
the ledger is whole; and a later opt-out of the same person must be newer than anything erased.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from stopsms.adapters.kafka import KafkaPublisher, read_topic
from stopsms.adapters.settings import Settings
from stopsms.adapters.view import RedisSuppressionView
from stopsms.domain.topics import Topics, partition_for_key
from stopsms.domain.viewcodec import ViewLayout
from stopsms.tools.verify import verify
from stopsms.v1 import events_pb2

from ..conftest import running_service, until
from .test_registry import preference

pytestmark = pytest.mark.integration
OUT, IN = events_pb2.ACTION_OPT_OUT, events_pb2.ACTION_OPT_IN
GONE, STOPPED, RECENT = "+212611000001", "+212611000002", "+212611000003"
LONG_AGO = dt.datetime(2020, 1, 6, tzinfo=dt.UTC)


def at(
    settings: Settings, msisdn: str, request_id: str, action: int, sender: str, when: dt.datetime
) -> events_pb2.PreferenceRequested:
    r = preference(settings, msisdn, request_id, action, sender)
    r.action_time.FromDatetime(when)
    return r


async def test_a_subject_whose_retention_ended_is_erased_everywhere_and_verify_agrees(
    service_env: dict[str, str], namespace: str, tmp_path: Path
) -> None:
    env = {**service_env, "STOPSMS_ERASURE_PASS_SECONDS": "1"}
    settings = Settings.from_env(env)
    topics = Topics(namespace)
    now = dt.datetime.now(dt.UTC)
    requests = [
        # Opted out, then back in everywhere and for JUMIA, six years ago: erased.
        at(settings, GONE, "g1", OUT, "", LONG_AGO),
        at(settings, GONE, "g2", IN, "", LONG_AGO + dt.timedelta(days=1)),
        at(settings, GONE, "g3", IN, "JUMIA", LONG_AGO + dt.timedelta(days=2)),
        # An opt-out in force, however old, stays.
        at(settings, STOPPED, "s1", OUT, "KITEA", LONG_AGO),
        # Back in today: the legal record runs.
        at(settings, RECENT, "r1", IN, "", now),
    ]
    ledger = {r.request_id: r.event_id for r in requests}
    publisher = KafkaPublisher(settings.kafka_bootstrap)
    await publisher.start()
    try:
        # The notifier's done proofs, standing in for it (it is not running here).
        for r in requests:
            proof = events_pb2.PropagationRecord(event_id=r.event_id, done=True)
            await publisher.publish(topics.propagation, r.event_id.encode(),
                                    proof.SerializeToString())  # fmt: skip
        for r in requests:
            key = r.subject.encode()
            await publisher.publish(topics.requests, key, r.SerializeToString(),
                                    partition=partition_for_key(key, settings.partitions))  # fmt: skip
    finally:
        await publisher.stop()

    view = RedisSuppressionView.from_url(settings.redis_url, namespace, ViewLayout())
    gone = settings.pseudonymiser().subject(GONE)
    try:
        with running_service("registry", env, tmp_path):

            async def tombstoned() -> bool:
                records = await read_topic(settings.kafka_bootstrap, topics.suppressions)
                latest = {r.key: r.value for r in records}
                return bool(latest) and all(
                    (value is None) == key.startswith(gone.encode())
                    for key, value in latest.items()
                )

            await until(
                tombstoned, "tombstones for every scope of the erased subject, and only its"
            )

            async def forgotten() -> bool:
                (pair,), _ = await view.lookup([gone], "JUMIA")
                return pair == (None, None)

            await until(forgotten, "the Redis view forgetting the erased subject")
            proofs = await read_topic(settings.kafka_bootstrap, topics.propagation)
            latest_proofs = {r.key.decode(): r.value for r in proofs}
            for request_id in ("g1", "g2", "g3"):
                assert latest_proofs[ledger[request_id]] is None, f"{request_id}'s proof kept"
            assert latest_proofs[ledger["s1"]] is not None and latest_proofs[ledger["r1"]]

            report = await verify(
                ledger.values(), bootstrap=settings.kafka_bootstrap, topics=topics, view=view,
                wait_seconds=60,
            )  # fmt: skip
            assert report.ok, report.summary()
            assert report.erased == sorted(ledger[r] for r in ("g1", "g2", "g3")), report.summary()
            assert report.proven == 2 and not report.lost, report.summary()

            # The person opts out again: newer than every version erased (3).
            back = at(settings, GONE, "g4", OUT, "", now)
            publisher = KafkaPublisher(settings.kafka_bootstrap)
            await publisher.start()
            try:
                key = back.subject.encode()
                await publisher.publish(topics.requests, key, back.SerializeToString(),
                                        partition=partition_for_key(key, settings.partitions))  # fmt: skip
            finally:
                await publisher.stop()

            async def suppressed_again() -> object:
                (pair,), _ = await view.lookup([gone], "")
                return pair[1] is not None and pair[1]

            entry = await until(suppressed_again, "the returning person's opt-out in the view")
            assert entry.state == events_pb2.STATE_SUPPRESSED  # type: ignore[attr-defined]
            assert entry.version == 4, "a returning subject must be newer than what was erased"  # type: ignore[attr-defined]
    finally:
        await view.close()
