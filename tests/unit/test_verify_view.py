"""The ledger check's view comparison names each divergent entry, whatever its bytes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, cast

from stopsms.tools.verify import LedgerReport, _check_view


class Held:
    """A view that holds the given entries."""

    def __init__(self, entries: dict[bytes, bytes]) -> None:
        self._entries = entries

    async def entries(self) -> AsyncIterator[dict[bytes, bytes]]:
        yield self._entries


class Expected:
    """What the topic says the view must hold."""

    def __init__(self, entries: dict[bytes, bytes]) -> None:
        self._entries = entries

    def items(self) -> Any:
        return self._entries.items()


async def test_a_located_subject_with_a_zero_byte_is_reported_not_crashed_on() -> None:
    # The located digest is binary: a zero byte in it must not be read as the separator.
    located = bytes.fromhex("01ae00ff") + bytes(14)
    global_key, sender_key = located + b"\0", located + b"\0JUMIA"
    report = LedgerReport()
    await _check_view(
        cast(Any, Held({global_key: b"new", sender_key: b"same"})),
        cast(Any, Expected({global_key: b"old", sender_key: b"same"})),
        report,
    )
    assert report.divergent == [f"{located.hex()}/*"]
