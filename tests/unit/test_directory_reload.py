"""The parties directory: validation with clear errors, and reloading without a restart."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from stopsms.adapters.identity import Authenticator
from stopsms.adapters.reloading import DirectoryReloader
from stopsms.domain.parties import DirectoryError, PartiesDirectory

BASE = {
    "parties": [
        {"id": "iam", "kind": "operator", "name": "Maroc Telecom", "senders": ["IAM"]},
        {"id": "atlas-sms", "kind": "psva", "senders": ["JUMIA"], "rate_limit": 5},
    ]
}


def write(path: Path, document: object) -> Path:
    path.write_text(yaml.safe_dump(document))
    return path


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["parties"][1].update(colour="red"), "unknown fields: colour"),
        (lambda d: d.update(senders=["X"]), "unknown top-level fields: senders"),
        (lambda d: d["parties"].append(dict(d["parties"][0])), "listed twice"),
        (lambda d: d["parties"][1].update(senders=["JUMIA", "JUMIA"]), "senders listed twice"),
        (lambda d: d["parties"][1].update(senders=["no/slash"]), "sender 'no/slash'"),
        (
            lambda d: d["parties"].append({"id": "cndp", "kind": "regulator", "senders": ["X"]}),
            "a regulator claims no sender",
        ),  # fmt: skip
        (
            lambda d: d["parties"][0].update(webhook={"url": "https://x", "secret_file": "/s"}),
            "only a PSVA receives webhooks",
        ),  # fmt: skip
        (
            lambda d: d["parties"][1].update(webhook={"url": "https://x", "secret": "hunter2"}),
            "never from the directory",
        ),  # fmt: skip
        (lambda d: d["parties"][1].update(rate_limit=-1), "rate_limit must be a positive"),
        (lambda d: d["parties"][1].update(kind="bank"), "kind must be one of"),
    ],
)
def test_a_malformed_directory_is_refused_saying_where(tmp_path: Path, change, message) -> None:
    document = yaml.safe_load(yaml.safe_dump(BASE))
    change(document)
    with pytest.raises(DirectoryError, match=message):
        PartiesDirectory.load(write(tmp_path / "parties.yaml", document))


def test_a_change_is_applied_in_place_and_a_bad_one_keeps_the_previous(tmp_path: Path) -> None:
    path = write(tmp_path / "parties.yaml", BASE)
    directory = PartiesDirectory.load(path)
    auth = Authenticator(directory, insecure=True)
    reloader = DirectoryReloader(directory, interval_s=60)
    assert reloader.check_once() is False  # unchanged

    newer = yaml.safe_load(yaml.safe_dump(BASE))
    newer["parties"][1]["senders"] = ["JUMIA", "MARJANE"]
    newer["parties"][1]["rate_limit"] = 50
    newer["parties"].append({"id": "sahara-push", "kind": "psva", "senders": ["KITEA"]})
    write(path, newer)
    assert reloader.check_once() is True
    atlas = directory.get("atlas-sms")
    assert atlas is not None and atlas.sends_for("MARJANE")
    assert [p.id for p in directory.concerned_by("KITEA")] == ["iam", "sahara-push"]
    assert directory.is_declared("KITEA")
    # the rate limiter followed: 50 calls pass at once now
    assert all(auth.limiter.retry_after("atlas-sms") == 0 for _ in range(50))

    path.write_text("parties: [ {id: broken")  # a typo in the ConfigMap
    assert reloader.check_once() is False
    assert directory.get("sahara-push") is not None  # the previous directory stays


def test_a_reload_says_what_changed(tmp_path: Path) -> None:
    directory = PartiesDirectory.load(write(tmp_path / "a.yaml", BASE))
    newer = yaml.safe_load(yaml.safe_dump(BASE))
    newer["parties"][1]["senders"] = ["MARJANE"]
    del newer["parties"][0]
    changes = directory.replace(PartiesDirectory.load(write(tmp_path / "b.yaml", newer)))
    assert changes == [
        "- iam",
        "atlas-sms: senders granted MARJANE",
        "atlas-sms: senders withdrawn JUMIA",
    ]
