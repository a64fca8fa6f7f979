"""``stopsms scrub campaign.csv --sender ID``: split a campaign list into clean and suppressed.

Reads a CSV whose first column is the number (other columns ride along untouched; a header
row is recognised and copied), checks every number with ``CheckBatch`` and writes, beside the
input (or in ``--out-dir``):

* ``<name>.clean.csv``: the rows the sender may message;
* ``<name>.suppressed.csv``: the rows it must not, with the scope that decided and since when;
* ``<name>.rejects.csv``: line number, reason and row of every line that is not a Moroccan
  mobile number (or not CSV at all). A bad line never stops the run.

A progress bar shows the rate and the time left; a summary ends the run.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from stopsms.adapters.clients import Metadata
from stopsms.domain.numbers import InvalidNumber, normalise_msisdn
from stopsms.registry.client import INVALID, SUPPRESSED, scrub
from stopsms.registry.server import MAX_BATCH_CHUNK
from stopsms.v1 import registry_pb2

_SCOPES = {
    registry_pb2.MATCHED_SCOPE_SENDER: "sender",
    registry_pb2.MATCHED_SCOPE_GLOBAL: "global",
}


@dataclass
class ScrubSummary:
    """What a scrub did."""

    numbers: int = 0
    clean: int = 0
    suppressed: int = 0
    rejected: int = 0
    seconds: float = 0.0
    clean_path: Path | None = None
    suppressed_path: Path | None = None
    rejects_path: Path | None = None

    @property
    def rate(self) -> float:
        """Numbers checked per second."""
        return self.numbers / self.seconds if self.seconds else 0.0


@dataclass
class _Row:
    line: int
    cells: list[str]


class _Reader:
    """Reads the CSV line by line, counting bytes for the progress bar.

    Lines that are not text or not CSV become rejects at once.
    """

    def __init__(self, path: Path, rejects: csv.writer) -> None:  # type: ignore[valid-type]
        self.path = path
        self.bytes_read = 0
        self.header: list[str] | None = None
        self.rejected = 0
        self._rejects = rejects

    def _reject(self, line: int, reason: str, raw: str) -> None:
        self.rejected += 1
        self._rejects.writerow([line, reason, raw.rstrip("\r\n")])  # type: ignore[attr-defined]

    def chunks(self) -> Iterator[tuple[list[_Row], list[str]]]:
        """Rows and their numbers, a chunk at a time."""
        rows: list[_Row] = []
        numbers: list[str] = []
        with self.path.open("rb") as handle:
            for line_number, raw_bytes in enumerate(handle, start=1):
                self.bytes_read += len(raw_bytes)
                try:
                    raw = raw_bytes.decode("utf-8-sig" if line_number == 1 else "utf-8")
                except UnicodeDecodeError:
                    self._reject(line_number, "not UTF-8 text", raw_bytes.decode("latin-1"))
                    continue
                if not raw.strip():
                    continue
                try:
                    cells = next(csv.reader([raw]))
                except csv.Error as exc:
                    self._reject(line_number, f"not a CSV line ({exc})", raw)
                    continue
                number = cells[0].strip() if cells else ""
                if line_number == 1 and any(c.isalpha() for c in number):
                    self.header = cells  # a header row: "msisdn,name,…"
                    continue
                rows.append(_Row(line_number, cells))
                numbers.append(number)
                if len(numbers) == MAX_BATCH_CHUNK:
                    yield rows, numbers
                    rows, numbers = [], []
        if numbers:
            yield rows, numbers


def _reason(number: str) -> str:
    try:
        normalise_msisdn(number)
    except InvalidNumber as exc:
        return str(exc)
    return "not a Moroccan mobile number"


async def scrub_csv(
    channel: grpc.aio.Channel,
    metadata: Metadata,
    path: Path,
    sender_id: str,
    *,
    out_dir: Path | None = None,
    console: Console | None = None,
) -> ScrubSummary:
    """Scrub ``path`` for ``sender_id`` and write the clean, suppressed and rejects lists."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    out_dir = out_dir or path.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = path.name.removesuffix(".csv")
    summary = ScrubSummary(
        clean_path=out_dir / f"{stem}.clean.csv",
        suppressed_path=out_dir / f"{stem}.suppressed.csv",
        rejects_path=out_dir / f"{stem}.rejects.csv",
    )
    assert summary.clean_path and summary.suppressed_path and summary.rejects_path
    console = console or Console(stderr=True)
    total_bytes = path.stat().st_size
    started = time.monotonic()
    with (
        summary.clean_path.open("w", newline="") as clean_file,
        summary.suppressed_path.open("w", newline="") as suppressed_file,
        summary.rejects_path.open("w", newline="") as rejects_file,
        Progress(
            TextColumn("[bold]scrubbing[/] {task.fields[name]}"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[numbers]:,} numbers · {task.fields[rate]:,.0f}/s"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        ) as progress,
    ):
        clean = csv.writer(clean_file)
        suppressed = csv.writer(suppressed_file)
        rejects = csv.writer(rejects_file)
        rejects.writerow(["line", "reason", "row"])
        reader = _Reader(path, rejects)
        task = progress.add_task("scrub", total=total_bytes, name=path.name, numbers=0, rate=0.0)
        header_written = False
        async for chunk in scrub(channel, reader.chunks(), sender_id, metadata):
            if not header_written:
                header = reader.header
                if header is not None:
                    clean.writerow(header)
                    suppressed.writerow([*header, "matched_scope", "since"])
                header_written = True
            results = chunk.response.results
            for i, verdict in enumerate(chunk.verdicts):
                row = chunk.items[i]
                assert isinstance(row, _Row)
                if verdict == SUPPRESSED:
                    summary.suppressed += 1
                    since = results[i].since.ToDatetime().isoformat() + "Z"
                    scope = _SCOPES.get(results[i].matched_scope, "")
                    suppressed.writerow([*row.cells, scope, since])
                elif verdict == INVALID:
                    reader.rejected += 1
                    rejects.writerow([row.line, _reason(chunk.numbers[i]), ",".join(row.cells)])
                else:
                    summary.clean += 1
                    clean.writerow(row.cells)
            summary.numbers += len(chunk.numbers)
            elapsed = time.monotonic() - started
            progress.update(
                task,
                completed=reader.bytes_read,
                numbers=summary.numbers,
                rate=summary.numbers / elapsed if elapsed else 0.0,
            )
        progress.update(task, completed=total_bytes)
    summary.seconds = time.monotonic() - started
    summary.rejected = reader.rejected
    return summary
