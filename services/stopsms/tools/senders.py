"""``stopsms senders migrate``: the directory's ``senders:`` lists become the register's records.

Run once per deployment (it is idempotent: a sender already in the register is left as it is,
so a second run, or a run after someone declared the sender, changes nothing). Each imported
sender is an ACTIVE record with every party that listed it among its sending parties, and a
``SenderChanged`` MIGRATED in the history. Afterwards the directory file holds parties only
(:func:`parties_only` writes that version of it), and every entitlement comes from the register.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from stopsms.adapters.bus import Bus, CompactedTopicIndex
from stopsms.adapters.kafka import Publisher
from stopsms.adapters.sender_register import publish_change
from stopsms.domain.ids import event_id
from stopsms.domain.parties import PartiesDirectory
from stopsms.domain.senders import SenderRegister, migrated_from
from stopsms.domain.topics import Topics
from stopsms.v1 import senders_pb2

#: The party id the migration's records are made by.
MIGRATION_PARTY = "platform"


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
    held = SenderRegister.of((await current_register(bus, topics)).values())
    done = Migration()
    for sender in migrated_from(directory):
        if held.holder_of(sender.sender_id) is not None:
            done.already.append(sender.sender_id)
            continue
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
