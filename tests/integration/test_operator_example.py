"""examples/operator_consumer.py against the real broker: bootstrap, unseal, store, commit."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from stopsms.adapters.kafka import GroupOffsets, KafkaPublisher
from stopsms.adapters.settings import Settings
from stopsms.domain.topics import Topics, partition_for_key, suppression_key
from stopsms.v1 import events_pb2

from .test_notifier import change, publish

pytestmark = pytest.mark.integration
GROUP = "stopsms.operator.iam"
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "operator_consumer.py"


async def run_example(settings: Settings, topics: Topics, store: Path, records: int) -> str:
    """Run the example until its group committed ``records`` records (its receipt); its output.

    The example names its group as an operator does; the topic is the test's own.
    """
    return await run_example_with(settings, topics, store, records, [settings.key_dir / "data.key"])


async def run_example_with(
    settings: Settings, topics: Topics, store: Path, records: int, data_keys: list[Path]
) -> str:
    """:func:`run_example` with the operator's data key files."""
    keys = [arg for path in data_keys for arg in ("--data-key", str(path))]
    consumer = subprocess.Popen(
        [
            sys.executable,
            str(EXAMPLE),
            "--bootstrap", settings.kafka_bootstrap,
            "--operator", "iam",
            "--topic", topics.suppressions,
            *keys,
            "--store", str(store),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    offsets = GroupOffsets(settings.kafka_bootstrap)
    await offsets.start()
    try:
        async with asyncio.timeout(60):
            while sum((await offsets.committed(GROUP, topics.suppressions)).values()) < records:
                assert consumer.poll() is None, consumer.stdout.read()  # type: ignore[union-attr]
                await asyncio.sleep(0.3)
    except TimeoutError:
        raise AssertionError(f"the example never committed {records} records") from None
    finally:
        await offsets.stop()
        consumer.send_signal(signal.SIGINT)
        output, _ = consumer.communicate(timeout=20)
    return output


async def test_the_operator_example_bootstraps_the_list_and_commits_after_applying(
    service_env: dict[str, str], namespace: str, tmp_path: Path
) -> None:
    settings = Settings.from_env(service_env)
    topics = Topics(namespace)
    changes = [
        change(settings, "+212611111111", "e-jumia", "JUMIA"),
        change(settings, "+212633333333", "e-global", ""),
    ]
    opt_in = change(settings, "+212611111111", "e-kitea", "JUMIA")  # later: back in for JUMIA
    opt_in.state, opt_in.version = events_pb2.STATE_ALLOWED, 2
    await publish(settings, topics.suppressions, [*changes, opt_in])

    store = tmp_path / "suppressions.db"
    output = await run_example(settings, topics, store, 3)
    assert "3 changes applied" in output
    with sqlite3.connect(store) as db:
        rows = sorted(db.execute("SELECT msisdn, sender_id, suppressed, version FROM suppression"))
    assert rows == [("+212611111111", "JUMIA", 0, 2), ("+212633333333", "", 1, 1)]


async def test_the_operator_example_forgets_an_erased_entry(
    service_env: dict[str, str], namespace: str, tmp_path: Path
) -> None:
    settings = Settings.from_env(service_env)
    topics = Topics(namespace)
    kept = change(settings, "+212611111111", "e-jumia", "JUMIA")
    erased = change(settings, "+212633333333", "e-global", "")
    erased.state = events_pb2.STATE_ALLOWED
    await publish(settings, topics.suppressions, [kept, erased])
    # The registry's erasure: a tombstone per scope, keyed and placed as the record was.
    key = suppression_key(erased.subject, "").encode()
    publisher = KafkaPublisher(settings.kafka_bootstrap)
    await publisher.start()
    try:
        await publisher.publish(
            topics.suppressions, key, None, partition=partition_for_key(key, settings.partitions)
        )
    finally:
        await publisher.stop()

    store = tmp_path / "suppressions.db"
    await run_example(settings, topics, store, 3)
    with sqlite3.connect(store) as db:
        rows = sorted(db.execute("SELECT msisdn, sender_id FROM suppression"))
    assert rows == [("+212611111111", "JUMIA")], "the erased entry is still in the store"
