"""The stand-in PSVA's acknowledgements: one in flight, the latest cursor next, none lost."""

from __future__ import annotations

import threading

from stopsms.tools.demo_parties import _LatestCursor

DEADLINE_S = 5.0


def _next(requests, what: str) -> str:
    """The next request the stream would send, read on a thread so a hang fails with a message."""
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(next(requests).cursor), daemon=True)
    reader.start()
    reader.join(DEADLINE_S)
    assert got, f"no acknowledgement was sent for {what} within {DEADLINE_S} s"
    return got[0]


def test_cursors_arriving_during_an_acknowledgement_go_as_one() -> None:
    cursors = _LatestCursor()
    requests = cursors.requests()
    cursors.offer("c1")
    assert _next(requests, "the first change") == "c1"
    for cursor in ("c2", "c3", "c4"):  # while c1 is in flight
        cursors.offer(cursor)
    cursors.answered()
    assert _next(requests, "the changes that arrived meanwhile") == "c4"


def test_nothing_is_sent_while_an_acknowledgement_is_in_flight() -> None:
    cursors = _LatestCursor()
    requests = cursors.requests()
    cursors.offer("c1")
    assert _next(requests, "the first change") == "c1"
    cursors.offer("c2")
    sent: list[str] = []
    reader = threading.Thread(target=lambda: sent.append(next(requests).cursor), daemon=True)
    reader.start()
    reader.join(0.2)  # a bounded look: the stream must still be waiting for c1's answer
    assert not sent, "a second acknowledgement went before the first was answered"
    cursors.answered()
    reader.join(DEADLINE_S)
    assert sent == ["c2"], "the acknowledgement after the answer never went"


def test_a_broken_stream_sends_the_latest_cursor_again() -> None:
    cursors = _LatestCursor()
    first = cursors.requests()
    cursors.offer("c1")
    assert _next(first, "the first change") == "c1"
    cursors.resend()  # the call broke before c1 was answered
    assert _next(cursors.requests(), "the resent change") == "c1"


def test_close_ends_the_requests() -> None:
    cursors = _LatestCursor()
    requests = cursors.requests()
    cursors.close()
    assert list(requests) == []
