"""Deadlines for the long phases of a launcher: a phase that overruns fails, naming itself.

The fault harness, ``stopsms up`` and the tests' platform start children, wait for services,
drive load and check ledgers. Each of those waits has a timeout of its own, but a call that
never returns (a child that hangs in its fork, a client without a timeout) would stop a run
without a word. :func:`deadline` bounds a whole phase instead:

- at the deadline the main thread is interrupted (SIGALRM) with :class:`PhaseOverran`, which
  names the phase, so the caller fails that phase and goes on;
- if the main thread cannot be interrupted (stuck in C code that holds the interpreter),
  ``faulthandler`` prints every thread's stack a minute later and ends the process, so a
  run can never hang for ever.

Phases nest; the earliest deadline of those open applies. Only the main thread can be
interrupted: elsewhere :func:`deadline` is a no-op (the waits' own timeouts still hold).
"""

from __future__ import annotations

import faulthandler
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

#: After a phase's deadline, how long the main thread has to unwind before the process ends.
BACKSTOP_SECONDS = 60.0

#: The open phases, innermost last: (name, monotonic deadline).
_open: list[tuple[str, float]] = []


class PhaseOverran(TimeoutError):
    """A phase did not finish within its deadline; the message names it."""


def _earliest() -> tuple[str, float]:
    return min(_open, key=lambda phase: phase[1])


def _arm() -> None:
    """Set the alarm (and the backstop) for the earliest open deadline, or clear both."""
    if not _open:
        signal.setitimer(signal.ITIMER_REAL, 0)
        faulthandler.cancel_dump_traceback_later()
        return
    _, ends = _earliest()
    remaining = max(ends - time.monotonic(), 0.001)
    signal.setitimer(signal.ITIMER_REAL, remaining)
    faulthandler.dump_traceback_later(remaining + BACKSTOP_SECONDS, exit=True, file=sys.stderr)


def _overran(signum: int, frame: FrameType | None) -> None:
    name, _ = _earliest()
    raise PhaseOverran(f"the phase '{name}' overran its deadline")


@contextmanager
def deadline(phase: str, seconds: float) -> Iterator[None]:
    """Bound the block: past ``seconds`` it raises :class:`PhaseOverran` naming ``phase``."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if not _open:
        signal.signal(signal.SIGALRM, _overran)
    _open.append((phase, time.monotonic() + seconds))
    _arm()
    try:
        yield
    finally:
        _open.pop()
        _arm()
