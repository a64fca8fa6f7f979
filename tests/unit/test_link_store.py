"""The link store's packing: small, sealed, authenticated, readable under every key of the ring."""

from __future__ import annotations

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from stopsms.adapters.kafka import Record
from stopsms.adapters.link_store import (
    EXPIRED_KEPT_DAYS,
    InMemoryLinkStore,
    LinkSealer,
    LinkStoreError,
    LinkStoreFiller,
    LiveLink,
    StoreUnavailable,
    sweep,
)
from stopsms.domain.privacy import Key, Pseudonymiser
from stopsms.v1 import events_pb2

OLD, NEW = Key("dk1", bytes(range(32))), Key("dk2", bytes(range(1, 33)))
NUMBER = "+212612345678"


def test_a_link_packs_into_a_few_dozen_bytes_and_reads_back() -> None:
    sealer = LinkSealer(OLD, [OLD])
    value = sealer.pack("AbCdEfGhIjK", "JUMIA", 2_000_000_000, NUMBER)
    assert len(value) == 4 + 2 + 1 + len("JUMIA") + 8 + 7
    assert b"612345678" not in value and (612345678).to_bytes(4, "big") not in value
    assert sealer.unpack("AbCdEfGhIjK", value) == LiveLink(
        "AbCdEfGhIjK", "JUMIA", 2_000_000_000, NUMBER
    )


def test_the_longest_e164_number_fits() -> None:
    sealer = LinkSealer(OLD, [OLD])
    longest = "+" + "9" * 15
    assert sealer.unpack("c", sealer.pack("c", "S", 1, longest)).e164 == longest


def test_a_value_moved_to_another_code_or_altered_does_not_read() -> None:
    sealer = LinkSealer(OLD, [OLD])
    value = sealer.pack("AbCdEfGhIjK", "JUMIA", 2_000_000_000, NUMBER)
    with pytest.raises(LinkStoreError):
        sealer.unpack("ZZCdEfGhIjK", value)
    later = (2_100_000_000).to_bytes(4, "big") + value[4:]  # a longer life, forged
    with pytest.raises(LinkStoreError):
        sealer.unpack("AbCdEfGhIjK", later)


def test_values_sealed_under_a_previous_key_read_until_it_leaves_the_ring() -> None:
    value = LinkSealer(OLD, [OLD]).pack("AbCdEfGhIjK", "JUMIA", 5, NUMBER)
    assert LinkSealer(NEW, [NEW, OLD]).unpack("AbCdEfGhIjK", value).e164 == NUMBER
    with pytest.raises(LinkStoreError, match="no longer held"):
        LinkSealer(NEW, [NEW]).unpack("AbCdEfGhIjK", value)


def _record(offset: int, code: str, link: events_pb2.StopLink | None) -> Record:
    value = link.SerializeToString() if link is not None else None
    return Record(
        topic="stopsms.links.v1",
        partition=0,
        offset=offset,
        key=code.encode(),
        value=value,
        headers=(),
        timestamp_ms=0,
    )


async def test_the_filler_stores_links_forgets_tombstones_and_the_sweep_drops_old_ones() -> None:
    pseudonymiser = Pseudonymiser(Key("pk1", bytes(32)), [OLD])
    store = InMemoryLinkStore()
    filler = LinkStoreFiller(store, pseudonymiser)

    def link(code: str, expire: int) -> events_pb2.StopLink:
        issued = events_pb2.StopLink(
            code=code, sender_id="JUMIA", sealed_msisdn=pseudonymiser.seal(NUMBER)
        )
        issued.expire_time.seconds = expire
        return issued

    now = 2_000_000_000
    long_ago = now - (EXPIRED_KEPT_DAYS + 1) * 86_400
    await filler.process(
        [
            _record(0, "AAAAAAAAAAA", link("AAAAAAAAAAA", now + 60)),
            _record(1, "BBBBBBBBBBB", link("BBBBBBBBBBB", now + 60)),
            _record(2, "CCCCCCCCCCC", link("CCCCCCCCCCC", now - 60)),  # expired: kept a while
            _record(3, "DDDDDDDDDDD", link("DDDDDDDDDDD", long_ago)),
            _record(4, "BBBBBBBBBBB", None),  # erased
        ]
    )
    assert sorted(store.entries) == ["AAAAAAAAAAA", "CCCCCCCCCCC", "DDDDDDDDDDD"]
    assert await filler.positions({0, 1}) == {0: 5, 1: 0}
    assert await sweep(store, now) == 1
    assert sorted(store.entries) == ["AAAAAAAAAAA", "CCCCCCCCCCC"]


async def test_a_code_already_held_by_a_live_link_keeps_that_link() -> None:
    """Codes are random: a later link with the same code is not stored, never acts for it."""
    pseudonymiser = Pseudonymiser(Key("pk1", bytes(32)), [OLD])
    store = InMemoryLinkStore()
    filler = LinkStoreFiller(store, pseudonymiser)

    def link(number: str, sender: str) -> events_pb2.StopLink:
        issued = events_pb2.StopLink(
            code="AAAAAAAAAAA", sender_id=sender, sealed_msisdn=pseudonymiser.seal(number)
        )
        issued.expire_time.seconds = 2_000_000_000
        return issued

    first, later = link(NUMBER, "JUMIA"), link("+212612345679", "KITEA")
    sealer = LinkSealer.of(pseudonymiser)
    await filler.process([_record(0, "AAAAAAAAAAA", first), _record(1, "AAAAAAAAAAA", later)])
    assert sealer.unpack("AAAAAAAAAAA", store.entries["AAAAAAAAAAA"]).e164 == NUMBER
    await filler.process([_record(2, "AAAAAAAAAAA", later)])  # in a later batch
    assert sealer.unpack("AAAAAAAAAAA", store.entries["AAAAAAAAAAA"]).e164 == NUMBER
    await filler.process([_record(0, "AAAAAAAAAAA", first)])  # the same link again: no change
    assert len(store.entries) == 1


class AwayStore(InMemoryLinkStore):
    async def apply(self, puts, deletes, offsets) -> None:  # type: ignore[no-untyped-def]
        raise RedisConnectionError("Connection refused")


async def test_a_batch_the_store_could_not_take_is_retried_not_fatal() -> None:
    filler = LinkStoreFiller(AwayStore(), Pseudonymiser(Key("pk1", bytes(32)), [OLD]))
    with pytest.raises(StoreUnavailable) as raised:
        await filler.process([_record(0, "AAAAAAAAAAA", None)])
    assert isinstance(raised.value, OSError)  # the stream layer retries an OSError
