"""The view's packed layout: the rebuild's hand-written decoder agrees with the layout."""

from __future__ import annotations

import asyncio
from collections import namedtuple

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from stopsms.adapters.view import InMemorySuppressionView
from stopsms.domain.viewcodec import (
    ERASED,
    LOCATED_BYTES,
    BucketWindow,
    Census,
    ChangeBatch,
    ExpectedCensus,
    ExpectedView,
    ScopeEntry,
    ViewLayout,
    decode_changes,
    entry_hashes,
    pack_update,
    unpack_updates,
)
from stopsms.v1 import events_pb2

Record = namedtuple("Record", "partition offset value key", defaults=(None,))


@given(
    digest=st.binary(min_size=16, max_size=16),
    sender=st.sampled_from(["", "JUMIA", "A" * 11]),
    state=st.sampled_from([events_pb2.STATE_SUPPRESSED, events_pb2.STATE_ALLOWED]),
    version=st.integers(1, 2**40),
    action_ms=st.integers(0, 2**42),
    bucket_bits=st.integers(1, 24),
)
def test_decoding_a_record_gives_the_layouts_entry(
    digest: bytes, sender: str, state: int, version: int, action_ms: int, bucket_bits: int
) -> None:
    subject = "pk1:" + digest.hex()
    change = events_pb2.SuppressionChanged(
        subject=subject, sender_id=sender, state=state, version=version
    )
    change.action_time.FromMilliseconds(action_ms)
    layout = ViewLayout(bucket_bits)
    batch = decode_changes([Record(3, 41, change.SerializeToString())], layout)
    entry = ScopeEntry(state, version, action_ms)
    located = layout.located(subject)
    assert batch.located == [located]
    assert batch.values == [entry.pack()]
    assert batch.entries == [pack_update(located, sender, entry.pack())]
    assert batch.offsets == {3: 42}
    unpacked = ScopeEntry.unpack(entry.pack())
    assert unpacked == ScopeEntry(state, version, action_ms // 10 * 10)


def test_a_record_without_key_or_value_moves_the_offsets_only() -> None:
    batch = decode_changes([Record(0, 9, None)], ViewLayout())
    assert len(batch) == 0 and batch.offsets == {0: 10}


def test_a_tombstone_erases_its_subjects_entry_in_its_scope() -> None:
    subject = "pk1:" + "ab" * 16
    layout = ViewLayout()
    located = layout.located(subject)
    kept = events_pb2.SuppressionChanged(
        subject=subject, sender_id="JUMIA", state=events_pb2.STATE_ALLOWED, version=3
    )
    batch = decode_changes(
        [
            Record(2, 5, kept.SerializeToString()),
            Record(2, 6, None, f"{subject}|*".encode()),
            Record(2, 7, None, f"{subject}|JUMIA".encode()),
        ],
        layout,
    )
    assert batch.entries[1:] == [
        pack_update(located, "", ERASED),
        pack_update(located, "JUMIA", ERASED),
    ]
    assert batch.offsets == {2: 8}
    expected = ExpectedView()
    expected.add(batch)
    assert list(expected.items()) == [], "the erased entries are not expected in the view"


@given(
    entries=st.lists(
        st.tuples(
            st.binary(min_size=LOCATED_BYTES, max_size=LOCATED_BYTES),
            st.sampled_from(["", "JUMIA", "A" * 11]),
            st.binary(min_size=6, max_size=12),
        ),
        max_size=20,
    )
)
def test_unpacking_an_update_gives_back_what_was_packed(entries) -> None:
    packed = b"".join(pack_update(located, sender, value) for located, sender, value in entries)
    assert list(unpack_updates(packed)) == entries


@given(
    records=st.lists(
        st.tuples(
            st.integers(0, 5),  # which address
            st.integers(1, 4),  # version (repeats and reorders included)
            st.integers(0, 3),  # which value; 0 is an erasure
        ),
        max_size=60,
    ),
    split=st.integers(1, 7),
)
def test_the_streamed_census_folds_records_as_the_expected_view(
    records: list[tuple[int, int, int]], split: int
) -> None:
    addresses = [
        bytes([a]) * LOCATED_BYTES + b"\0" + (b"JUMIA" if a % 2 else b"") for a in range(6)
    ]
    keys = [addresses[a] for a, _, _ in records]
    values = [ERASED if v == 0 else bytes([v]) * 6 + bytes([version]) for _, version, v in records]
    batch = ChangeBatch(
        keys=keys,
        versions=[version for _, version, _ in records],
        values=values,
        entries=[
            pack_update(key[:LOCATED_BYTES], key[LOCATED_BYTES + 1 :].decode(), value)
            for key, value in zip(keys, values, strict=True)
        ],
    )
    whole, streamed = ExpectedView(), ExpectedCensus()
    whole.add(batch)
    for start in range(0, len(records), split):
        part = slice(start, start + split)
        streamed.add(
            ChangeBatch(
                keys=batch.keys[part],
                versions=batch.versions[part],
                values=batch.values[part],
                entries=batch.entries[part],
            )
        )
    assert streamed.census() == whole.census()


@given(
    records=st.lists(
        st.tuples(
            st.integers(0, 3),  # the address's first identity
            st.integers(0, 2),  # its second identity: few values, so addresses share one
            st.integers(1, 3),  # version
            st.booleans(),  # an erasure
        ),
        max_size=80,
    )
)
def test_the_census_folds_addresses_that_share_a_hash_apart(
    records: list[tuple[int, int, int, bool]],
) -> None:
    """Records whose address hash repeats are folded by both identities, in the order read."""
    expected = ExpectedCensus()
    if records:
        firsts, seconds, versions, erasures = zip(*records, strict=True)
        hashes = [1000 * i + 7 for i in range(len(records))]
        expected._columns.append(
            (
                np.array(firsts, dtype=np.uint64),
                np.array(seconds, dtype=np.int64),
                np.array(versions, dtype=np.int64),
                np.array(hashes, dtype=np.uint64),
                np.array(erasures, dtype=np.bool_),
            )
        )
    held: dict[tuple[int, int], tuple[int, int]] = {}
    for i, (first, second, version, erasure) in enumerate(records):
        address = (first, second)
        if erasure:
            held.pop(address, None)
        elif address not in held or version > held[address][0]:
            held[address] = (version, 1000 * i + 7)
    assert expected.census() == Census(len(held), sum(h for _, h in held.values()))


@given(
    entries=st.lists(st.binary(max_size=40), min_size=1, max_size=30),
    neighbour=st.binary(max_size=90),
)
def test_an_entrys_census_hash_depends_on_it_alone(entries: list[bytes], neighbour: bytes) -> None:
    """Hashed in columns, an entry gets the same hash whatever stands beside it (any width)."""
    alone = [int(entry_hashes([e])[0]) for e in entries]
    assert entry_hashes(entries).tolist() == alone
    assert entry_hashes([*entries, neighbour]).tolist()[:-1] == alone


def test_the_census_hash_tells_trailing_zero_bytes_and_one_byte_apart() -> None:
    """Padding to whole words never makes two entries one: the length is mixed in."""
    entries = [b"", b"\0", b"\0" * 8, b"ab", b"ab\0", b"ab\0\0\0\0\0\0", b"ab\0\0\0\0\0\0\0"]
    entries += [bytes([n]) for n in range(1, 256)]
    assert len(set(entry_hashes(entries).tolist())) == len(set(entries)) == len(entries)


@given(
    records=st.lists(
        st.tuples(
            st.integers(0, 11),  # which address (four buckets, three scopes)
            st.integers(1, 4),  # version (repeats and reorders included)
            st.booleans(),  # an erasure
        ),
        max_size=80,
    ),
    split=st.integers(1, 9),
    chunk=st.integers(1, 30),
)
def test_a_window_written_bucket_by_bucket_leaves_the_view_as_record_by_record(
    records: list[tuple[int, int, bool]], split: int, chunk: int
) -> None:
    """A rebuild's worker sorts what it read by bucket: each entry's records keep their order."""
    entries = [
        pack_update(
            bytes([a % 4]) * 3 + bytes([a]) * (LOCATED_BYTES - 3),
            ["", "JUMIA", "ORANGE"][a % 3],
            ERASED if erased else ScopeEntry(1, version, 10 * version).pack(),
        )
        for a, version, erased in records
    ]
    window = BucketWindow()
    for start in range(0, len(entries), split):
        window.add(ChangeBatch(entries=entries[start : start + split], offsets={0: start + 1}))
    chunks = list(window.chunks(chunk))
    sorted_entries = list(unpack_updates(b"".join(chunks)))
    assert [located[:3] for located, _, _ in sorted_entries] == sorted(
        located[:3] for located, _, _ in unpack_updates(b"".join(entries))
    )
    assert all(0 < len(list(unpack_updates(c))) <= chunk for c in chunks)
    assert window.count == len(entries)

    async def views() -> tuple[InMemorySuppressionView, InMemorySuppressionView]:
        one_by_one, by_bucket = InMemorySuppressionView(), InMemorySuppressionView()
        for view in (one_by_one, by_bucket):
            await view.write_meta()
        await one_by_one.apply_packed(b"".join(entries), {})
        for packed in chunks:
            await by_bucket.apply_by_bucket(packed, {})
        return one_by_one, by_bucket

    one_by_one, by_bucket = asyncio.run(views())
    assert asyncio.run(by_bucket.census()) == asyncio.run(one_by_one.census())
