"""The register's own records from files: the directory's old lists, and a seed of records.

``stopsms senders migrate``: the directory's ``senders:`` lists become the register's records.

Run once per deployment (it is idempotent: a sender already in the register is left as it is,
so a second run, or a run after someone declared the sender, changes nothing). Each imported
sender is an ACTIVE record with every party that listed it among its sending parties, and a
``SenderChanged`` MIGRATED in the history. Afterwards the directory file holds parties only
(:func:`parties_only` writes that version of it), and every entitlement comes from the register.

``stopsms senders import FILE``: records written as YAML (``config/senders.yaml`` is the local
platform's, seeded by ``stopsms up``) published the same way, once each.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from google.protobuf import json_format

from stopsms.adapters.bus import Bus, CompactedTopicIndex
from stopsms.adapters.kafka import Publisher
from stopsms.adapters.sender_register import publish_change
from stopsms.adapters.settings import PACKAGE_CONFIG
from stopsms.domain.ids import event_id
from stopsms.domain.parties import InvalidSender, PartiesDirectory, check_sender_id
from stopsms.domain.senders import ACTIVE, KINDS, SenderRegister, migrated_from
from stopsms.domain.topics import Topics
from stopsms.v1 import senders_pb2

#: The party id the migration's records are made by.
MIGRATION_PARTY = "platform"
#: The local platform's register, seeded by ``stopsms up`` and the local test platform.
LOCAL_SEED = PACKAGE_CONFIG / "senders.yaml"


class SeedError(ValueError):
    """A seed file that is not a list of valid sender records."""


def load_seed(path: Path = LOCAL_SEED) -> list[senders_pb2.Sender]:
    """The sender records of a seed file (YAML: ``senders:``, each a Sender; ACTIVE by default)."""
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise SeedError(f"cannot read {path}: {exc}") from exc
    if not isinstance(document, dict) or not isinstance(document.get("senders"), list):
        raise SeedError(f"{path}: expected a mapping with a 'senders' list")
    records: list[senders_pb2.Sender] = []
    for i, raw in enumerate(document["senders"]):
        where = f"{path}: senders[{i}]"
        try:
            sender = json_format.ParseDict(
                {"status": "SENDER_STATUS_ACTIVE", "updated_by": MIGRATION_PARTY, **raw},
                senders_pb2.Sender(),
            )
            canonical = check_sender_id(sender.sender_id, required=True)
        except (json_format.ParseError, TypeError, InvalidSender) as exc:
            raise SeedError(f"{where}: {exc}") from exc
        if canonical != sender.sender_id or sender.kind not in KINDS:
            raise SeedError(f"{where}: sender_id {canonical!r} in canonical form, and a kind")
        if not sender.sending_party_ids:
            raise SeedError(f"{where}: sending_party_ids is required")
        records.append(sender)
    return records


def local_register(path: Path = LOCAL_SEED) -> SenderRegister:
    """The seed's records as a register (for in-process tests and benchmarks)."""
    return SenderRegister.of(load_seed(path))


def local_directory(parties_file: Path | None = None, seed: Path = LOCAL_SEED) -> PartiesDirectory:
    """A parties directory entitled by a seed's register, as the services would be once read."""
    directory = PartiesDirectory.load(parties_file or PACKAGE_CONFIG / "parties.yaml")
    directory.replace(directory.with_senders(local_register(seed)))
    return directory


@dataclass
class Migration:
    """What a migration did: the senders imported, and those the register already held."""

    imported: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)


async def current_register(bus: Bus, topics: Topics) -> dict[str, senders_pb2.Sender]:
    """The register's records as the topic holds them now."""
    index: CompactedTopicIndex[senders_pb2.Sender] = CompactedTopicIndex(
        bus, topics.senders, senders_pb2.Sender.FromString
    )
    await index.start()
    try:
        if not await index.caught_up(wait_seconds=30.0):
            raise RuntimeError(f"could not read {topics.senders} to its end within 30 s")
        return dict(index._values)  # noqa: SLF001 - a one-off read of the whole index
    finally:
        await index.stop()


async def migrate_directory(
    directory: PartiesDirectory, bus: Bus, publisher: Publisher, topics: Topics
) -> Migration:
    """Publish the directory's listed senders the register does not hold yet, as ACTIVE."""
    return await import_senders(migrated_from(directory), bus, publisher, topics)


async def import_senders(
    senders: Iterable[senders_pb2.Sender], bus: Bus, publisher: Publisher, topics: Topics
) -> Migration:
    """Publish each record the register does not hold yet (as an id or an alias), once."""
    held = SenderRegister.of((await current_register(bus, topics)).values())
    done = Migration()
    for sender in senders:
        if held.holder_of(sender.sender_id) is not None:
            done.already.append(sender.sender_id)
            continue
        sender.status = sender.status or ACTIVE
        sender.updated_time.GetCurrentTime()
        changed = senders_pb2.SenderChanged(
            event_id=event_id(MIGRATION_PARTY, f"migrate:{sender.sender_id}"),
            change=senders_pb2.SENDER_CHANGE_MIGRATED,
            sender=sender,
            request_id=f"migrate:{sender.sender_id}",
        )
        await publish_change(publisher, topics, changed)
        done.imported.append(sender.sender_id)
    return done


_SENDERS_LINE = re.compile(r"^(\s*)senders:(.*)$")


def parties_only(text: str) -> str:
    """The directory file's text without its ``senders:`` entries; comments and order kept.

    Handles both forms a list takes in YAML: ``senders: [A, B]`` on one line, and a block of
    ``- A`` lines indented below ``senders:``.
    """
    kept: list[str] = []
    dropping_below: int | None = None
    for line in text.splitlines(keepends=True):
        indent = len(line) - len(line.lstrip())
        if dropping_below is not None:
            item = line.lstrip().startswith("- ") and indent == dropping_below
            if line.strip() and (indent > dropping_below or item):
                continue
            dropping_below = None
        found = _SENDERS_LINE.match(line.rstrip("\n"))
        if found:
            if not found.group(2).strip():
                dropping_below = len(found.group(1))
            continue
        kept.append(line)
    return "".join(kept)
