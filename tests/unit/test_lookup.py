"""The batch lookup's parts: hashing equals the pseudonymiser, the filter never forgets."""

from __future__ import annotations

import asyncio
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stopsms.domain.numbers import InvalidNumber, e164_or_none, normalise_msisdn
from stopsms.domain.privacy import Key, NumberHasher, Pseudonymiser
from stopsms.domain.viewcodec import LOCATED_BYTES, ScopeEntry, ViewLayout, locate_digests
from stopsms.registry.hashing import HashPool
from stopsms.registry.lookup import BatchChecker, SingleLookups
from stopsms.registry.subject_filter import SubjectFilter
from stopsms.v1 import registry_pb2

KEY = Key("pk1", bytes(range(32)))
PSEUDONYMS = Pseudonymiser(KEY, [Key("dk1", bytes(32))])

written_numbers = st.one_of(
    st.from_regex(r"(\+212|00212|212|0)[5-8][0-9]{8}", fullmatch=True),
    st.from_regex(r"\+212 ?\(0\)[67][0-9 ]{8,12}", fullmatch=True),
    st.text(max_size=20),
)


@settings(max_examples=500)
@given(written_numbers)
def test_the_fast_spelling_agrees_with_normalise(raw: str) -> None:
    try:
        expected: str | None = normalise_msisdn(raw)
    except InvalidNumber:
        expected = None
    assert e164_or_none(raw) == expected


@settings(max_examples=300)
@given(st.lists(written_numbers, max_size=40))
def test_the_batch_hasher_gives_the_pseudonymisers_subjects(numbers: list[str]) -> None:
    digests, invalid = NumberHasher(KEY.secret).hash_chunk(numbers)
    expected = [e164_or_none(n) for n in numbers]
    assert invalid == [i for i, e in enumerate(expected) if e is None]
    subjects = [PSEUDONYMS.subject(e) for e in expected if e is not None]
    assert [f"pk1:{digests[i : i + 16].hex()}" for i in range(0, len(digests), 16)] == subjects


async def test_worker_processes_hash_the_same_as_this_one() -> None:
    numbers = [f"06{n:08d}" for n in range(3000)] + ["garbage"] + ["+212 7 00 00 00 01"] * 5
    pool = HashPool(KEY, workers=1)
    try:
        assert await pool.hash_chunk(numbers) == NumberHasher(KEY.secret).hash_chunk(numbers)
    finally:
        pool.close()


def test_the_filter_never_forgets_a_subject_and_rarely_says_maybe() -> None:
    layout = ViewLayout()
    held = locate_digests(os.urandom(16 * 20_000), layout)
    others = locate_digests(os.urandom(16 * 20_000), layout)
    subject_filter = SubjectFilter(1 << 20)
    subject_filter.add(held.tobytes())
    assert subject_filter.might_hold(held).all()
    assert subject_filter.might_hold(others).mean() < 0.01


def test_located_digests_match_the_views_layout() -> None:
    layout = ViewLayout(bucket_bits=11)
    digests = os.urandom(16 * 50)
    located = locate_digests(digests, layout)
    for i in range(50):
        bucket, field = layout.locate("pk1:" + digests[16 * i : 16 * i + 16].hex())
        assert located[i].tobytes() == bucket + field


class FakeView:
    """Holds entries by located subject, as the Redis view would answer lookup_packed."""

    layout = ViewLayout()

    def __init__(self) -> None:
        self.values: dict[bytes, tuple[bytes | None, bytes | None]] = {}
        self.asked = 0

    async def lookup_packed(self, located: bytes, sender_id: str):  # type: ignore[no-untyped-def]
        rows = [located[i : i + LOCATED_BYTES] for i in range(0, len(located), LOCATED_BYTES)]
        self.asked += len(rows)
        return [self.values.get(r, (None, None)) for r in rows], {0: 10, 1: 7}


@pytest.mark.parametrize("with_filter", [True, False])
async def test_a_chunk_is_answered_in_order_with_invalid_numbers_in_place(
    with_filter: bool,
) -> None:
    view = FakeView()
    numbers = ["0612345678", "bad", "0700000001", "+212 6 00 00 00 02", "0522123456"]
    digests, _ = NumberHasher(KEY.secret).hash_chunk(numbers)
    located = locate_digests(digests, view.layout)
    suppressed = ScopeEntry(1, 3, 1_700_000_000_000).pack()
    view.values[located[1].tobytes()] = (None, suppressed)  # 0700000001: a global opt-out
    subject_filter = None
    if with_filter:
        subject_filter = SubjectFilter(1 << 16)
        subject_filter.add(located[1].tobytes())
        subject_filter.covered({0: 9, 1: 7})
        subject_filter.ready = True
    pool = HashPool(KEY, workers=0)
    checker = BatchChecker(view, pool, "pk1", subject_filter)  # type: ignore[arg-type]
    answer = await checker.check(numbers, "JUMIA", chunk_index=4)
    response = registry_pb2.CheckBatchResponse.FromString(answer.response)
    assert [r.verdict for r in response.results] == [
        registry_pb2.VERDICT_ALLOWED,
        registry_pb2.VERDICT_INVALID_NUMBER,
        registry_pb2.VERDICT_SUPPRESSED,
        registry_pb2.VERDICT_ALLOWED,
        registry_pb2.VERDICT_INVALID_NUMBER,
    ]
    assert response.results[2].matched_scope == registry_pb2.MATCHED_SCOPE_GLOBAL
    assert response.results[2].since.ToMilliseconds() == 1_700_000_000_000
    assert response.chunk_index == 4
    offsets = {p.partition: p.offset for p in response.as_of}
    # The filter covers partition 0 only up to 9: the answer says so rather than claim 10.
    assert offsets == ({0: 9, 1: 7} if with_filter else {0: 10, 1: 7})
    assert answer.subjects == [f"pk1:{digests[i : i + 16].hex()}" for i in range(0, 48, 16)]
    assert view.asked == (1 if with_filter else 3)
    assert np.array_equal(located, locate_digests(digests, view.layout))


class SlowView(FakeView):
    """A view whose round trips take a moment, counting them."""

    def __init__(self) -> None:
        super().__init__()
        self.round_trips = 0

    async def lookup_packed(self, located: bytes, sender_id: str):  # type: ignore[no-untyped-def]
        self.round_trips += 1
        await asyncio.sleep(0.01)
        return await super().lookup_packed(located, sender_id)


async def test_concurrent_checks_share_round_trips_and_the_filter_spares_most() -> None:
    view = SlowView()
    digests, _ = NumberHasher(KEY.secret).hash_chunk([f"06{n:08d}" for n in range(200)])
    located = locate_digests(digests, view.layout)
    held = located[:10]
    for row in held:
        view.values[row.tobytes()] = (None, ScopeEntry(1, 2, 5_000).pack())
    subject_filter = SubjectFilter(1 << 16)
    subject_filter.add(held.tobytes())
    subject_filter.covered({0: 10, 1: 7})
    subject_filter.ready = True
    lookups = SingleLookups(view, subject_filter)  # type: ignore[arg-type]
    answers = await asyncio.gather(*(lookups.lookup(row.tobytes(), "JUMIA") for row in located))
    assert all(a.global_ == ScopeEntry(1, 2, 5_000) for a in answers[:10])
    assert all(a.global_ is None and a.sender is None for a in answers[10:])
    assert answers[0].as_of == {0: 10, 1: 7} and answers[50].as_of == {0: 10, 1: 7}
    # 10 numbers (plus the filter's rare "maybe"s) go to Redis, in a couple of round trips
    assert view.asked < 20 and view.round_trips <= 3


@pytest.mark.parametrize("with_filter", [True, False])
async def test_during_a_rekeying_lookups_take_the_newer_entry_of_either_subject(
    with_filter: bool,
) -> None:
    """A number has two subjects while its decisions move; the higher version is in force."""
    previous = Key("pk0", bytes(range(1, 33)))
    view = FakeView()
    numbers = ["0611000001", "0611000002", "0611000003", "bad"]
    new_located = locate_digests(NumberHasher(KEY.secret).hash_chunk(numbers)[0], view.layout)
    old_located = locate_digests(NumberHasher(previous.secret).hash_chunk(numbers)[0], view.layout)
    out_v2, in_v3 = ScopeEntry(1, 2, 1_000).pack(), ScopeEntry(2, 3, 2_000).pack()
    # 1: moved (both hold v2), then opted back in under the new subject (v3): allowed.
    view.values[old_located[0].tobytes()] = (None, out_v2)
    view.values[new_located[0].tobytes()] = (None, in_v3)
    # 2: not moved yet: only the old subject holds its opt-out.
    view.values[old_located[1].tobytes()] = (out_v2, None)
    subject_filter = None
    if with_filter:
        subject_filter = SubjectFilter(1 << 16)
        subject_filter.add(new_located[0].tobytes() + old_located[:2].tobytes())
        subject_filter.covered({0: 10, 1: 7})
        subject_filter.ready = True
    checker = BatchChecker(view, HashPool(KEY, workers=0), "pk1", subject_filter,  # type: ignore[arg-type]
                           previous=NumberHasher(previous.secret))  # fmt: skip
    answer = await checker.check(numbers, "JUMIA", chunk_index=0)
    results = registry_pb2.CheckBatchResponse.FromString(answer.response).results
    assert [r.verdict for r in results] == [
        registry_pb2.VERDICT_ALLOWED,
        registry_pb2.VERDICT_SUPPRESSED,
        registry_pb2.VERDICT_ALLOWED,
        registry_pb2.VERDICT_INVALID_NUMBER,
    ]
    assert results[0].matched_scope == registry_pb2.MATCHED_SCOPE_GLOBAL
    assert results[1].matched_scope == registry_pb2.MATCHED_SCOPE_SENDER
    for e164, verdict in (("+212611000001", False), ("+212611000002", True)):
        one = await checker.check_one(e164, "JUMIA")
        suppressed = bool(one.sender and one.sender.state == 1) or bool(
            one.global_ and one.global_.state == 1
        )
        assert suppressed is verdict
