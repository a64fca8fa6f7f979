"""The ledger check finds each kind of defect, names its ids, and fails the command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from stopsms.adapters.kafka import KafkaPublisher
from stopsms.adapters.settings import Settings
from stopsms.adapters.view import RedisSuppressionView
from stopsms.domain.topics import Topics
from stopsms.domain.viewcodec import ScopeEntry, ViewLayout, ViewUpdate, decode_changes
from stopsms.tools.verify import verify
from stopsms.v1 import events_pb2

pytestmark = pytest.mark.integration


def change(subject: str, event: str, version: int) -> events_pb2.SuppressionChanged:
    c = events_pb2.SuppressionChanged(
        event_id=event,
        request_id=event,
        party_id="iam",
        subject=subject,
        state=events_pb2.STATE_SUPPRESSED,
        version=version,
    )
    c.action_time.FromMilliseconds(1_700_000_000_000)
    return c


async def test_lost_duplicated_divergent_and_unapplied_items_are_reported_by_id(
    service_env: dict[str, str], namespace: str, tmp_path: Path
) -> None:
    settings = Settings.from_env(service_env)
    topics = Topics(namespace)
    subjects = [settings.pseudonymiser().subject(f"+2126{i:08d}") for i in range(3)]
    publisher = KafkaPublisher(settings.kafka_bootstrap)
    view = RedisSuppressionView.from_url(settings.redis_url, namespace, ViewLayout())
    await publisher.start()
    try:
        for event, subject in zip(("e1", "e2", "e3"), subjects, strict=True):
            request = events_pb2.PreferenceRequested(event_id=event, subject=subject)
            await publisher.publish(topics.requests, subject.encode(), request.SerializeToString())
        records = [
            change(subjects[0], "e1", 1),
            change(subjects[0], "e1", 1),  # an identical repeat after a crash: counts once
            change(subjects[1], "e2", 1),
            change(subjects[1], "e2", 2),  # decided twice, differently: a defect
        ]
        for record in records:
            await publisher.publish(
                topics.suppressions, record.subject.encode(), record.SerializeToString()
            )
        done = events_pb2.PropagationRecord(event_id="e1", done=True)
        await publisher.publish(topics.propagation, b"e1", done.SerializeToString())
        # The view holds e1's entry as the topic does, but an older one for e2's subject.
        await view.write_meta()
        e1 = decode_changes(
            [type("R", (), {"partition": 0, "offset": 0, "value": records[0].SerializeToString()})],
            view.layout,
        )
        stale = ScopeEntry(events_pb2.STATE_SUPPRESSED, 1, 1_700_000_000_000)
        await view.apply([ViewUpdate(subjects[1], "", stale)], {p: 99 for p in range(12)})
        await view.apply_packed(e1.packed(), {p: 100 for p in range(12)})

        report = await verify(
            ["e1", "e2", "e3", "e4"],
            bootstrap=settings.kafka_bootstrap,
            topics=topics,
            view=view,
            wait_seconds=1,
        )
    finally:
        await publisher.stop()
        await view.close()

    assert report.lost == ["e4", "e3"]  # not in the requests; in them but never decided
    assert report.duplicated == ["e2"]
    assert len(report.divergent) == 1 and report.divergent[0].endswith("/*")
    assert report.unapplied == ["e2 (no proof)"]
    assert report.proven == 1 and not report.ok
    assert "lost 2, duplicated 1, divergent 1, unapplied 1" in report.summary()

    ledger = tmp_path / "ledger"
    ledger.write_text("r1 e1\nr2 e2\n")
    result = subprocess.run(
        [sys.executable, "-m", "stopsms.tools.cli", "verify", str(ledger), "--wait", "1"],
        env={**service_env, "STOPSMS_DATA_DIR": str(tmp_path / "none")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stderr
    assert "duplicated: e2" in result.stdout and "FAILED" in result.stdout
