"""One-time codes on the real Redis: limits, tries, the lock, sessions; nothing in clear."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from stopsms.intake.codes import (
    CODES_PER_HOUR,
    Check,
    OneTimeCodes,
    Refusal,
)
from stopsms.intake.submission import Subject
from stopsms.tools.launcher import LocalInfrastructure
from stopsms.v1 import events_pb2

pytestmark = pytest.mark.integration
SUBJECT = "pk1:" + "ab" * 16


@pytest.fixture
async def codes(infra: LocalInfrastructure, namespace: str):
    client = aioredis.from_url(infra.redis.url)
    yield OneTimeCodes(client, namespace, b"k" * 32), client, namespace
    await client.aclose()


async def test_a_code_verifies_once_and_is_kept_only_as_an_hmac(codes) -> None:
    store, client, namespace = codes
    code = await store.issue(SUBJECT, "10.0.0.1")
    assert isinstance(code, str) and len(code) == 6 and code.isdigit()
    keys = [k async for k in client.scan_iter(match=f"{namespace}*")]
    for key in keys:
        assert code.encode() not in key
        assert code.encode() not in (await client.dump(key) or b"")
    assert await store.check(SUBJECT, code) == (Check.VERIFIED, 0)
    assert await store.check(SUBJECT, code) == (Check.EXPIRED, 0)  # used: gone


async def test_three_wrong_tries_lock_the_number_out_for_the_window(codes) -> None:
    store, _, _ = codes
    code = await store.issue(SUBJECT, "10.0.0.2")
    wrong = "000000" if code != "000000" else "111111"
    assert await store.check(SUBJECT, wrong) == (Check.WRONG, 2)
    assert await store.check(SUBJECT, wrong) == (Check.WRONG, 1)
    assert await store.check(SUBJECT, wrong) == (Check.LOCKED, 0)
    assert await store.check(SUBJECT, code) == (Check.LOCKED, 0)  # even the right one now
    assert await store.issue(SUBJECT, "10.0.0.2") is Refusal.LOCKED


async def test_a_number_gets_three_codes_an_hour_and_an_address_a_few_more(codes) -> None:
    store, _, _ = codes
    for _ in range(CODES_PER_HOUR):
        assert isinstance(await store.issue(SUBJECT, "10.0.0.3"), str)
    assert await store.issue(SUBJECT, "10.0.0.3") is Refusal.NUMBER_LIMIT
    others = [await store.issue(f"pk1:{i:032x}", "10.0.0.4") for i in range(12)]
    assert others.count(Refusal.ADDRESS_LIMIT) == 2


async def test_a_session_is_bound_to_its_number_and_ends(codes) -> None:
    store, _, _ = codes
    sealed = events_pb2.SealedMsisdn(key_id="dk1", nonce=b"n" * 12, ciphertext=b"c" * 28)
    token = await store.open_session(Subject(SUBJECT, sealed))
    session = await store.session(token)
    assert session is not None and session.subject.subject == SUBJECT
    assert session.subject.sealed == sealed
    assert await store.session("forged") is None
    await store.close_session(token)
    assert await store.session(token) is None
