"""Opaque resume cursors: per-partition offsets of ``stopsms.suppressions.v1``.

A cursor names, for every partition, the next offset a PSVA has not yet been given (or, once
acknowledged, not yet applied). PSVAs treat it as an opaque string; it is URL-safe base64 with
a version prefix, so its form can evolve without breaking old cursors:

* ``c1.`` — ``p:o,p:o,...``: a position in the live list;
* ``c2.`` — the same, then ``|`` and the senders whose backfill this stream delivered before
  its live changes (acknowledging it also closes those backfills);
* ``b1.`` — ``<sender>|p:o,...``: a position in the backfill of a newly granted sender.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from dataclasses import dataclass

_PREFIX = "c1."
_LIVE_WITH_BACKFILLS = "c2."
_BACKFILL = "b1."
MAX_CURSOR_LENGTH = 4096
_BODY = re.compile(r"[A-Za-z0-9_-]*")


class InvalidCursor(ValueError):
    """The cursor was not issued by this platform."""


def _offsets_text(offsets: dict[int, int]) -> str:
    return ",".join(f"{p}:{o}" for p, o in sorted(offsets.items()))


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def encode_cursor(offsets: dict[int, int], backfilled: Sequence[str] = ()) -> str:
    """Encode per-partition next offsets (and the backfills delivered before them)."""
    if backfilled:
        return _LIVE_WITH_BACKFILLS + _b64(_offsets_text(offsets) + "|" + ",".join(backfilled))
    return _PREFIX + _b64(_offsets_text(offsets))


def encode_backfill_cursor(sender_id: str, offsets: dict[int, int]) -> str:
    """A position in the backfill of ``sender_id``."""
    return _BACKFILL + _b64(sender_id + "|" + _offsets_text(offsets))


@dataclass(frozen=True)
class Cursor:
    """A decoded cursor: live offsets, or a backfill position of one sender."""

    offsets: dict[int, int]
    backfill_sender: str = ""
    backfilled: tuple[str, ...] = ()


def parse_cursor(cursor: str, partitions: int) -> Cursor:
    """Decode any cursor; raise :class:`InvalidCursor` for anything malformed."""
    prefix = cursor[:3]
    if len(cursor) > MAX_CURSOR_LENGTH or prefix not in (_PREFIX, _LIVE_WITH_BACKFILLS, _BACKFILL):
        raise InvalidCursor("not a StopSMS cursor")
    body = cursor[3:]
    if not _BODY.fullmatch(body):
        raise InvalidCursor("not a StopSMS cursor")
    try:
        text = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode()
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise InvalidCursor("not a StopSMS cursor") from exc
    if prefix == _BACKFILL:
        sender, sep, rest = text.partition("|")
        if not sep or not sender:
            raise InvalidCursor("not a StopSMS cursor")
        return Cursor(_parse_offsets(rest, partitions), backfill_sender=sender)
    if prefix == _LIVE_WITH_BACKFILLS:
        rest, sep, senders = text.partition("|")
        if not sep:
            raise InvalidCursor("not a StopSMS cursor")
        return Cursor(_parse_offsets(rest, partitions), backfilled=tuple(senders.split(",")))
    return Cursor(_parse_offsets(text, partitions))


def decode_cursor(cursor: str, partitions: int) -> dict[int, int]:
    """The live offsets of a cursor; raise :class:`InvalidCursor` for anything else."""
    parsed = parse_cursor(cursor, partitions)
    if parsed.backfill_sender:
        raise InvalidCursor("a backfill cursor does not say where to resume the live list")
    return parsed.offsets


def _parse_offsets(text: str, partitions: int) -> dict[int, int]:
    try:
        offsets: dict[int, int] = {}
        for item in filter(None, text.split(",")):
            p, o = item.split(":")
            partition, offset = int(p), int(o)
            if not 0 <= partition < partitions or offset < 0:
                raise ValueError("out of range")
            offsets[partition] = offset
    except ValueError as exc:
        raise InvalidCursor("not a StopSMS cursor") from exc
    return offsets
