"""The event loop every StopSMS process runs on: uvloop.

Most of a service's CPU is spent in event-loop machinery rather than in its own logic: the
socket reads and writes of Kafka, Redis and gRPC, timers, futures and callbacks. uvloop does
that work in C (libuv) instead of in Python (docs/architecture.md has the sweep's 200/s step
with each loop: p99 2.65 s on the standard loop, 1.07 s on uvloop, one run each). Every
process installs it first thing, before anything asks for a loop:
the gRPC server and the stream worker are built before they run, on the loop made here.

``STOPSMS_EVENT_LOOP=asyncio`` keeps the standard loop (to compare, or to debug with asyncio's
own tools).
"""

from __future__ import annotations

import asyncio
import os

import uvloop

from stopsms.adapters.settings import SettingsError

#: The variable that chooses the loop; read here, before any settings object exists, because
#: the loop must be in place before anything is built.
EVENT_LOOP_VARIABLE = "STOPSMS_EVENT_LOOP"
LOOPS = ("uvloop", "asyncio")


def install_event_loop(choice: str | None = None) -> str:
    """Make ``choice`` (default: ``STOPSMS_EVENT_LOOP``, else uvloop) this thread's loop.

    Sets the policy, so ``asyncio.run`` makes loops of that kind, and a fresh current loop, for
    code that builds asyncio objects before the loop runs (a ``mode.Worker`` and the gRPC
    server it hosts). Returns the name of the loop installed; an unknown choice is a
    :class:`~stopsms.adapters.settings.SettingsError` naming the variable.
    """
    choice = choice or os.environ.get(EVENT_LOOP_VARIABLE) or "uvloop"
    if choice not in LOOPS:
        raise SettingsError(f"{EVENT_LOOP_VARIABLE}: one of {', '.join(LOOPS)}, not {choice!r}")
    if choice == "uvloop":
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    else:
        asyncio.set_event_loop_policy(asyncio.DefaultEventLoopPolicy())
    asyncio.set_event_loop(asyncio.new_event_loop())
    return choice
