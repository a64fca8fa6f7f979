"""Every service installs its event loop first: uvloop by default, asyncio on request."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import uvloop

from stopsms.adapters.eventloop import install_event_loop
from stopsms.adapters.settings import SettingsError


@pytest.fixture
def made() -> Iterator[list[asyncio.AbstractEventLoop]]:
    """The loops a test installs, closed after it; the session's policy restored."""
    policy = asyncio.get_event_loop_policy()
    loops: list[asyncio.AbstractEventLoop] = []
    yield loops
    for loop in loops:
        loop.close()
    asyncio.set_event_loop_policy(policy)


def test_uvloop_is_the_default_and_runs_what_asyncio_run_starts(
    made: list[asyncio.AbstractEventLoop], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STOPSMS_EVENT_LOOP", raising=False)
    assert install_event_loop() == "uvloop"
    # the worker's loop, made before anything runs (the gRPC server is built on it)
    made.append(asyncio.get_event_loop_policy().get_event_loop())
    assert isinstance(made[0], uvloop.Loop)

    async def running() -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()

    assert isinstance(asyncio.run(running()), uvloop.Loop)


def test_the_standard_loop_on_request(
    made: list[asyncio.AbstractEventLoop], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STOPSMS_EVENT_LOOP", "asyncio")
    assert install_event_loop() == "asyncio"
    made.append(asyncio.get_event_loop_policy().get_event_loop())
    assert not isinstance(made[0], uvloop.Loop)


def test_an_unknown_loop_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STOPSMS_EVENT_LOOP", "tokio")
    with pytest.raises(SettingsError, match="STOPSMS_EVENT_LOOP"):
        install_event_loop()
