"""The link page offers no opt-back-in to a link's holder: only its own browser's undo, once.

The PSVA that sends a campaign holds every link in it; holding one proves nothing about the
number. These tests drive the page over HTTP with in-memory adapters: the PSVA's own POST of
``opt_in`` or ``undo`` changes nothing and is refused; the citizen's undo works once within
its window, never after it, never twice.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp.test_utils import TestClient, TestServer

from stopsms.adapters.bus import InMemoryPublisher
from stopsms.adapters.link_store import LiveLink, StoreUnavailable
from stopsms.domain.privacy import Key, Pseudonymiser
from stopsms.domain.ratelimit import KeyedRateLimiter
from stopsms.domain.topics import Topics
from stopsms.intake.answers import InMemoryAnswerStore
from stopsms.intake.submission import InMemoryRequestReferences, RequestSubmitter
from stopsms.intake.undo import UNDO_COOKIE, InMemoryUndoStore
from stopsms.intake.web import create_web_app
from stopsms.tools.senders import local_directory
from stopsms.v1 import events_pb2

CODE = "AbCdEfGhIjK"
NUMBER = "+212612345678"
WINDOW = 900


@dataclass
class Links:
    link: LiveLink
    unavailable: bool = False  # Redis away

    async def get(self, code: str) -> LiveLink | None:
        if self.unavailable:
            raise StoreUnavailable("link store: connection refused")
        return self.link if code == self.link.code else None


@dataclass
class Registry:
    """What the page's Check sees: the scopes ("" for global) the number is suppressed in."""

    suppressed_scopes: set[str] = field(default_factory=set)

    async def suppressed(self, msisdn: str, sender_id: str) -> bool | None:
        assert msisdn == NUMBER
        return sender_id in self.suppressed_scopes or "" in self.suppressed_scopes

    async def propagation(self, event: str) -> events_pb2.PropagationRecord | None:
        return None


@dataclass
class Page:
    client: TestClient
    publisher: InMemoryPublisher
    registry: Registry
    clock: list[float]
    links: Links

    def published(self) -> list[events_pb2.PreferenceRequested]:
        records = self.publisher.records.get(Topics().requests, [])
        return [events_pb2.PreferenceRequested.FromString(value or b"") for _, value, _ in records]


@pytest.fixture
async def page() -> AsyncIterator[Page]:
    pseudonymiser = Pseudonymiser(Key("pk1", bytes(32)), [Key("dk1", bytes(range(32)))])
    publisher = InMemoryPublisher()
    links = Links(LiveLink(CODE, "JUMIA", int(time.time()) + 86_400, NUMBER))
    clock = [1000.0]
    registry = Registry()
    app = create_web_app(
        links=links,  # type: ignore[arg-type]
        submitter=RequestSubmitter(
            publisher,
            pseudonymiser,
            local_directory(),
            Topics(),
            12,
            InMemoryRequestReferences(),
        ),
        lookups=registry,  # type: ignore[arg-type]
        answers=InMemoryAnswerStore(),
        numbers=KeyedRateLimiter(rate=100, burst=100),
        misses=KeyedRateLimiter(rate=100, burst=100),
        undos=InMemoryUndoStore(clock=lambda: clock[0]),
        undo_seconds=WINDOW,
        secure_cookies=False,
    )
    async with TestClient(TestServer(app)) as client:
        yield Page(client, publisher, registry, clock, links)


async def post(client: TestClient, action: str, token: str | None = None):  # type: ignore[no-untyped-def]
    client.session.cookie_jar.clear()
    cookies = {UNDO_COOKIE: token} if token else None
    return await client.post(
        f"/{CODE}", data={"action": action}, cookies=cookies, allow_redirects=False
    )


def undo_token(response) -> str | None:  # type: ignore[no-untyped-def]
    morsel = response.cookies.get(UNDO_COOKIE)
    return morsel.value if morsel is not None and morsel.value else None


async def test_the_links_holder_cannot_opt_the_number_back_in(page: Page) -> None:
    page.registry.suppressed_scopes.add("JUMIA")  # the citizen said STOP by SMS
    shown = await (await page.client.get(f"/{CODE}")).text()
    assert 'value="opt_in"' not in shown and "START" in shown
    for action in ("opt_in", "undo"):
        refused = await post(page.client, action)
        assert refused.status == 403, action
        assert "START" in await refused.text()
    assert page.published() == []


async def test_no_undo_is_granted_for_an_opt_out_that_changed_nothing(page: Page) -> None:
    # The PSVA posts an opt-out for a number already suppressed, hoping to "undo" it after.
    page.registry.suppressed_scopes.add("JUMIA")
    answered = await post(page.client, "opt_out")
    assert answered.status == 303 and undo_token(answered) is None
    assert (await post(page.client, "undo", "made-up-token")).status == 403
    assert [r.action for r in page.published()] == [events_pb2.ACTION_OPT_OUT]


async def test_the_citizens_own_browser_may_undo_once_within_the_window(page: Page) -> None:
    answered = await post(page.client, "opt_out")
    assert answered.status == 303
    token = undo_token(answered)
    assert token is not None and token not in answered.headers["Location"]
    cookie = answered.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and f"Path=/{CODE}" in cookie
    status = await page.client.get(answered.headers["Location"], cookies={UNDO_COOKIE: token})
    assert 'value="undo"' in await status.text()

    undone = await post(page.client, "undo", token)
    assert undone.status == 303 and undone.headers["Location"].startswith(f"/{CODE}/done/undo")
    opt_out, opt_in = page.published()
    assert (opt_out.action, opt_in.action) == (events_pb2.ACTION_OPT_OUT, events_pb2.ACTION_OPT_IN)
    assert opt_in.sender_id == "JUMIA" and opt_in.channel == events_pb2.CHANNEL_LINK
    assert opt_in.request_id == f"{CODE}:undo"

    replayed = await post(page.client, "undo", token)
    assert replayed.status == 403 and len(page.published()) == 2

    # Stopping again after the undo is a new request, not the first one found again.
    again = await post(page.client, "opt_out_all")
    assert again.status == 303
    assert [r.request_id for r in page.published()][2] == f"{CODE}:opt_out_all:1"
    assert page.published()[2].sender_id == ""


async def test_after_the_window_the_undo_is_refused(page: Page) -> None:
    token = undo_token(await post(page.client, "opt_out_all"))
    assert token is not None
    page.clock[0] += WINDOW + 1
    status = await page.client.get(f"/{CODE}/done/opt_out_all", cookies={UNDO_COOKIE: token})
    assert 'value="undo"' not in await status.text()
    late = await post(page.client, "undo", token)
    assert late.status == 403
    assert [r.action for r in page.published()] == [events_pb2.ACTION_OPT_OUT]


async def test_the_token_is_random_and_long(page: Page) -> None:
    tokens = {undo_token(await post(page.client, "opt_out"))}
    assert all(t and re.fullmatch(r"[A-Za-z0-9_-]{43}", t) for t in tokens)


async def test_the_page_asks_to_retry_while_the_link_store_is_away(page: Page) -> None:
    page.links.unavailable = True
    away = await page.client.get(f"/{CODE}")
    assert away.status == 503 and "indisponible" in await away.text()
    assert (await post(page.client, "opt_out")).status == 503
    assert page.published() == []
