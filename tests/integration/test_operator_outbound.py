"""examples/operator_outbound.py against the real broker: its own messages, once, before they expire."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from stopsms.adapters.kafka import GroupOffsets, KafkaPublisher
from stopsms.adapters.settings import Settings
from stopsms.domain.topics import Topics
from stopsms.intake.citizen_messages import CitizenMessages
from stopsms.intake.submission import Subject
from stopsms.v1 import events_pb2

pytestmark = pytest.mark.integration
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "operator_outbound.py"


async def test_the_operator_delivers_its_own_messages_once_and_drops_expired_ones(
    service_env: dict[str, str], namespace: str, tmp_path: Path
) -> None:
    settings = Settings.from_env(service_env)
    topics = Topics(namespace)
    keys = settings.pseudonymiser()

    def subject(e164: str) -> Subject:
        return Subject(keys.subject(e164), keys.seal(e164))

    publisher = KafkaPublisher(settings.kafka_bootstrap)
    await publisher.start()
    citizens = CitizenMessages(publisher, keys, topics, 12)
    request = events_pb2.PreferenceRequested(
        event_id="3f2a9c1d-5b6e-5a7f-8c9d-0e1f2a3b4c5d",
        request_id="r1",
        party_id="iam",
        action=events_pb2.ACTION_OPT_OUT,
        sender_id="JUMIA",
        subject=keys.subject("+212611111111"),
        sealed_msisdn=keys.seal("+212611111111"),
    )
    try:
        await citizens.confirm(request, "fr", "iam")  # forwarded by iam: iam's
        await citizens.confirm(request, "fr", "iam")  # the same again: delivered once
        await citizens.help("orange", "r2", subject("+212622222222"), "fr", "orange")  # not iam's
        await citizens.code("citizen-web", "r3", subject("+212633333333"), "ar", "042917", 300)
        await citizens.code("citizen-web", "r4", subject("+212644444444"), "fr", "999999", -60)
    finally:
        await publisher.stop()

    consumer = subprocess.Popen(
        [
            sys.executable,
            str(EXAMPLE),
            "--bootstrap", settings.kafka_bootstrap,
            "--operator", "iam",
            "--topic", topics.outbound,
            "--data-key", str(settings.key_dir / "data.key"),
            "--store", str(tmp_path / "outbound.db"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    group = "stopsms.operator.iam.outbound"  # as an operator names it; the topic is this test's
    offsets = GroupOffsets(settings.kafka_bootstrap)
    await offsets.start()
    try:
        async with asyncio.timeout(60):
            while sum((await offsets.committed(group, topics.outbound)).values()) < 5:
                assert consumer.poll() is None, consumer.stdout.read()  # type: ignore[union-attr]
                await asyncio.sleep(0.3)
    finally:
        await offsets.stop()
        consumer.send_signal(signal.SIGINT)
        output, _ = consumer.communicate(timeout=20)
    # two subjects, two partitions: the order between them is not given
    sms = sorted(line for line in output.splitlines() if line.startswith("SMS to "))
    assert len(sms) == 2, output
    assert sms[0].startswith("SMS to +212611111111: StopSMS: fini la pub de JUMIA")
    assert "3F2A9C1D" in sms[0]
    assert sms[1].startswith("SMS to +212633333333: ") and "042917" in sms[1]
    assert "2 messages delivered" in output
