"""Opaque resume cursors: per-partition offsets of ``stopsms.suppressions.v1``.

A cursor names, for every partition, the next offset a PSVA has not yet been given (or, once
acknowledged, not yet applied). PSVAs treat it as an opaque string; it is URL-safe base64 of
``p:o,p:o,...`` with a version prefix, so its form can evolve without breaking old cursors.
"""

from __future__ import annotations

import base64
import binascii
import re

_PREFIX = "c1."
MAX_CURSOR_LENGTH = 4096
_BODY = re.compile(r"[A-Za-z0-9_-]*")


class InvalidCursor(ValueError):
    """The cursor was not issued by this platform."""


def encode_cursor(offsets: dict[int, int]) -> str:
    """Encode per-partition next offsets."""
    text = ",".join(f"{p}:{o}" for p, o in sorted(offsets.items()))
    return _PREFIX + base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, partitions: int) -> dict[int, int]:
    """Decode a cursor; raise :class:`InvalidCursor` for anything malformed."""
    if len(cursor) > MAX_CURSOR_LENGTH or not cursor.startswith(_PREFIX):
        raise InvalidCursor("not a StopSMS cursor")
    body = cursor[len(_PREFIX) :]
    if not _BODY.fullmatch(body):
        raise InvalidCursor("not a StopSMS cursor")
    try:
        text = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode()
        offsets: dict[int, int] = {}
        for item in filter(None, text.split(",")):
            p, o = item.split(":")
            partition, offset = int(p), int(o)
            if not 0 <= partition < partitions or offset < 0:
                raise ValueError("out of range")
            offsets[partition] = offset
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise InvalidCursor("not a StopSMS cursor") from exc
    return offsets
