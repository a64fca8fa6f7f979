"""The local broker's ports and ACL spellings, without starting a broker."""

from __future__ import annotations

import json
import time
from pathlib import Path

from stopsms.tools.launcher import LocalKafka, _constant, _wait_for_leaders


def test_a_data_folder_from_before_the_secured_listener_keeps_its_ports(tmp_path: Path) -> None:
    # KRaft stores the controller's port in the formatted data: it must not change.
    (tmp_path / "ports.json").write_text(json.dumps({"port": 19092, "controller_port": 19093}))
    port, controller, secured = LocalKafka(tmp_path)._ports()
    assert (port, controller) == (19092, 19093)
    assert secured not in (port, controller)
    saved = json.loads((tmp_path / "ports.json").read_text())
    assert saved == {"port": 19092, "controller_port": 19093, "secured_port": secured}
    assert LocalKafka(tmp_path)._ports() == (port, controller, secured)


def test_a_new_folder_gets_three_distinct_ports(tmp_path: Path) -> None:
    assert len(set(LocalKafka(tmp_path / "new")._ports())) == 3


def test_strimzi_spellings_become_kafka_constants() -> None:
    assert _constant("DescribeConfigs") == "DESCRIBE_CONFIGS"
    assert _constant("IdempotentWrite") == "IDEMPOTENT_WRITE"
    assert _constant("transactionalId") == "TRANSACTIONAL_ID"
    assert _constant("topic") == "TOPIC"


class _DescribingAdmin:
    """Answers describe_topics as kafka-python does: ``leader_id`` per partition."""

    def __init__(self, leaders: list[list[int]]) -> None:
        self.leaders = leaders  # one answer per call; the last one repeats
        self.calls = 0

    def describe_topics(self, names: list[str]) -> list[dict[str, object]]:
        answer = self.leaders[min(self.calls, len(self.leaders) - 1)]
        self.calls += 1
        return [
            {
                "error_code": 0,
                "name": name,
                "partitions": [
                    {"error_code": 0, "partition_index": i, "leader_id": leader}
                    for i, leader in enumerate(answer)
                ],
            }
            for name in names
        ]


def test_topics_whose_partitions_have_leaders_are_answered_at_once() -> None:
    admin = _DescribingAdmin([[1, 1, 1]])
    started = time.monotonic()
    _wait_for_leaders(admin, ["a", "b"], seconds=30.0)
    assert admin.calls == 1, "the wait described the topics again though every leader was known"
    assert time.monotonic() - started < 5


def test_the_wait_goes_on_until_the_last_partition_has_a_leader() -> None:
    admin = _DescribingAdmin([[1, -1], [1, -1], [1, 1]])
    _wait_for_leaders(admin, ["a"], seconds=30.0)
    assert admin.calls == 3
