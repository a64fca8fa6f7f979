"""Times as callers send them: which ones protobuf can read back.

A ``google.protobuf.Timestamp`` on the wire may hold any seconds and nanos; converting one
outside its range (``ToMilliseconds``, ``ToDatetime``) raises. A time that reached a topic
that way would stop every reader that converts it, so callers' times are checked here first.
"""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

#: The Timestamp's range: from 0001-01-01 to 9999-12-31 23:59:59, UTC.
MIN_SECONDS, MAX_SECONDS = -62_135_596_800, 253_402_300_799


def readable(stamp: Timestamp) -> bool:
    """Whether protobuf converts ``stamp`` without raising."""
    return MIN_SECONDS <= stamp.seconds <= MAX_SECONDS and 0 <= stamp.nanos < 10**9
