"""The local broker's ports and ACL spellings, without starting a broker."""

from __future__ import annotations

import json
from pathlib import Path

from stopsms.tools.launcher import LocalKafka, _constant


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
