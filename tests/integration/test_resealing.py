"""Re-sealing on the real broker and Redis: the list moves to a new data key, nothing else moves.

Requests sealed under the first data key (``dk1``) are decided by a registry that seals with
``dk2`` and still holds ``dk1``, its re-sealing pass every second. Every decision in force must
end on the list sealed under ``dk2`` with its version and number unchanged — among them one that
was superseded while the passes ran, which must never be re-published over the newer decision —
then ``stopsms keys reseal`` announces ``dk1`` retired; the ledger check still finds every request
decided once and the view whole; a later pass re-seals nothing again; and the operators' example
consumer, reading the whole list with both keys, applies it and notes the key change.
"""

from __future__ import annotations

import secrets
import sqlite3
from pathlib import Path

import pytest

from stopsms.adapters.bus import KafkaBus
from stopsms.adapters.kafka import KafkaPublisher, read_topic
from stopsms.adapters.settings import Settings
from stopsms.adapters.view import RedisSuppressionView
from stopsms.domain.topics import Topics, is_key_change, partition_for_key
from stopsms.domain.viewcodec import ViewLayout
from stopsms.tools.reseal import follow_resealing
from stopsms.tools.verify import verify
from stopsms.v1 import events_pb2

from ..conftest import running_service, until
from .test_operator_example import run_example_with
from .test_registry import preference

pytestmark = pytest.mark.integration
OUT, IN = events_pb2.ACTION_OPT_OUT, events_pb2.ACTION_OPT_IN
NUMBERS = [f"+2126110000{i:02d}" for i in range(12)]


async def publish_requests(
    settings: Settings, topics: Topics, requests: list[events_pb2.PreferenceRequested]
) -> None:
    publisher = KafkaPublisher(settings.kafka_bootstrap)
    await publisher.start()
    try:
        for r in requests:
            key = r.subject.encode()
            await publisher.publish(topics.requests, key, r.SerializeToString(),
                                    partition=partition_for_key(key, settings.partitions))  # fmt: skip
    finally:
        await publisher.stop()


async def latest_decisions(
    settings: Settings, topics: Topics
) -> dict[bytes, events_pb2.SuppressionChanged]:
    records = await read_topic(settings.kafka_bootstrap, topics.suppressions)
    latest = {r.key: events_pb2.SuppressionChanged.FromString(r.value) for r in records if r.value}
    return {k: c for k, c in latest.items() if not is_key_change(c.subject)}


async def test_the_list_is_resealed_under_the_new_key_and_nothing_is_lost_or_doubled(
    service_env: dict[str, str], namespace: str, tmp_path: Path
) -> None:
    first = Settings.from_env(service_env)  # seals with dk1, as intake did before the change
    dk1 = first.pseudonymiser().data_key
    assert dk1.key_id == "dk1"
    dk2_file = tmp_path / "data-dk2.key"
    dk2_file.write_text(f"dk2:{secrets.token_hex(32)}\n")
    env = {
        **service_env,
        "STOPSMS_DATA_KEY_FILE": str(dk2_file),
        "STOPSMS_PREVIOUS_DATA_KEY_FILES": str(first.key_dir / "data.key"),
        "STOPSMS_RESEAL_PASS_SECONDS": "1",
    }
    second = Settings.from_env(env)
    keys = second.pseudonymiser()
    topics = Topics(namespace)
    requests = [
        preference(first, n, f"r{i}", OUT, "JUMIA" if i % 3 else "") for i, n in enumerate(NUMBERS)
    ]
    # Back in for JUMIA, also before the key change: its opt-out, superseded while the passes
    # may already run, must never come back over it.
    late = preference(first, NUMBERS[1], "r-late", IN, "JUMIA")
    ledger = [r.event_id for r in [*requests, late]]
    publisher = KafkaPublisher(first.kafka_bootstrap)
    await publisher.start()
    try:  # the notifier's done proofs, standing in for it (it is not running here)
        for event_id in ledger:
            proof = events_pb2.PropagationRecord(event_id=event_id, done=True)
            await publisher.publish(
                topics.propagation, event_id.encode(), proof.SerializeToString()
            )
    finally:
        await publisher.stop()
    await publish_requests(first, topics, [*requests, late])

    view = RedisSuppressionView.from_url(second.redis_url, namespace, ViewLayout())
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    try:
        with running_service("registry", env, log_dir):

            async def all_resealed() -> bool:
                latest = await latest_decisions(second, topics)
                return len(latest) == len(NUMBERS) and all(
                    c.sealed_msisdn.key_id == "dk2" for c in latest.values()
                )

            await until(all_resealed, "every decision in force re-sealed under dk2", timeout=90)
            publisher = KafkaPublisher(second.kafka_bootstrap)
            await publisher.start()
            try:
                outcome = await follow_resealing(
                    KafkaBus(second.kafka_bootstrap), publisher, topics, second.partitions, keys,
                    wait_s=90,
                )  # fmt: skip
            finally:
                await publisher.stop()
            assert outcome.complete and outcome.announced == ["dk1"], outcome
            assert outcome.count.by_key == {"dk2": len(NUMBERS)}, outcome.count.describe()

            latest = await latest_decisions(second, topics)
            by_event = {c.event_id: c for c in latest.values()}
            for r in [*requests[:1], *requests[2:], late]:
                c = by_event[r.event_id]
                assert c.sealed_msisdn.key_id == "dk2", r.request_id
                assert keys.unseal(c.sealed_msisdn) == first.pseudonymiser().unseal(
                    r.sealed_msisdn
                ), f"{r.request_id}: the number changed in re-sealing"
            assert requests[1].event_id not in by_event, "the superseded opt-out came back"
            assert by_event[late.event_id].version == 2

            # The history: no re-sealed record ever landed after a newer decision of its key.
            records = await read_topic(second.kafka_bootstrap, topics.suppressions)
            newest: dict[bytes, int] = {}
            resealed: dict[str, int] = {}
            for record in records:
                if not record.value:
                    continue
                c = events_pb2.SuppressionChanged.FromString(record.value)
                if is_key_change(c.subject):
                    assert c.key_change.retired_key_id == "dk1"
                    assert c.key_change.current_key_id == "dk2"
                    continue
                assert c.version >= newest.get(record.key, 0), f"{c.event_id} after a newer one"
                newest[record.key] = c.version
                if c.HasField("resealed_time"):
                    resealed[c.event_id] = resealed.get(c.event_id, 0) + 1
            assert all(n == 1 for n in resealed.values()), f"re-sealed more than once: {resealed}"
            assert set(by_event) <= set(resealed), "a decision in force was not re-sealed"

            report = await verify(ledger, bootstrap=second.kafka_bootstrap, topics=topics,
                                  view=view, wait_seconds=60)  # fmt: skip
            assert report.ok, report.summary()
            assert report.proven == len(ledger) and not report.duplicated, report.summary()

            # Later passes find nothing more to re-seal: the marks in the state hold.
            log = log_dir / "registry.log"
            passes = log.read_text().count("re-sealing pass: 0 decisions")

            async def another_empty_pass() -> bool:
                return log.read_text().count("re-sealing pass: 0 decisions") > passes + 1

            await until(another_empty_pass, "two more re-sealing passes that re-seal nothing")
            again = await read_topic(second.kafka_bootstrap, topics.suppressions)
            assert len(again) == len(records), "a later pass published records again"
    finally:
        await view.close()

    # The operators' example, with both keys, reads the whole list through the change.
    store = tmp_path / "suppressions.db"
    output = await run_example_with(
        second, topics, store, len(records), [first.key_dir / "data.key", dk2_file]
    )
    assert "data key dk1 retired" in output, output
    with sqlite3.connect(store) as db:
        rows = sorted(db.execute("SELECT msisdn, sender_id, suppressed FROM suppression"))
    expected = sorted((n, "JUMIA" if i % 3 else "", int(i != 1)) for i, n in enumerate(NUMBERS))
    assert rows == expected
