r"""``stopsms check-campaign campaign.txt --sender ID``: every text checked before it is sent.

A campaign file holds one text per line (blank lines and lines starting with ``#`` are skipped;
``\n`` in a line stands for a line break inside the SMS). The texts go to ``CheckMessages`` in
batches of 10,000 and each problem is printed against the file's line number, with the cost of
the text in segments, so the person preparing the campaign can fix it line by line.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from stopsms.adapters.clients import Metadata
from stopsms.v1 import senders_pb2, senders_pb2_grpc

BATCH = 10_000
_ENCODING = {senders_pb2.MESSAGE_ENCODING_GSM7: "GSM-7", senders_pb2.MESSAGE_ENCODING_UCS2: "UCS-2"}


@dataclass
class CampaignReport:
    """The result of a campaign's check."""

    texts: int = 0
    ok: int = 0
    segments: int = 0
    #: (line number, problem code name, detail), in file order.
    problems: list[tuple[int, str, str]] = field(default_factory=list)


def campaign_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of each text of the campaign file."""
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            text = line.rstrip("\r\n")
            if text.strip() and not text.lstrip().startswith("#"):
                yield number, text.replace("\\n", "\n")


def _batches(path: Path) -> Iterator[list[tuple[int, str]]]:
    batch: list[tuple[int, str]] = []
    for item in campaign_lines(path):
        batch.append(item)
        if len(batch) == BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


async def check_campaign(
    channel: grpc.aio.Channel,
    metadata: Metadata,
    path: Path,
    sender_id: str,
    show: bool = True,
) -> CampaignReport:
    """Check every text of ``path`` for ``sender_id``; print each problem when ``show``."""
    stub = senders_pb2_grpc.SenderRegistryServiceStub(channel)
    report = CampaignReport()
    for batch in _batches(path):
        reply = await stub.CheckMessages(
            senders_pb2.CheckMessagesRequest(sender_id=sender_id, texts=[t for _, t in batch]),
            metadata=metadata,
            timeout=60,
        )
        for (line, _), check in zip(batch, reply.checks, strict=True):
            report.texts += 1
            report.segments += check.segments
            if check.ok:
                report.ok += 1
                continue
            cost = f"{check.segments} segment(s), {_ENCODING.get(check.encoding, '?')}"
            for problem in check.problems:
                name = senders_pb2.MessageProblemCode.Name(problem.code).removeprefix(
                    "MESSAGE_PROBLEM_CODE_"
                )
                report.problems.append((line, name, problem.detail))
                if show:
                    print(f"line {line}: {name}: {problem.detail} ({cost})")
    return report
