"""Property tests of the registry's rules: redeliveries, duplicates and restarts converge.

The registry consumes ``stopsms.requests.v1`` at least once. A crash can come between
publishing a decision and writing the table, or between writing the table and committing the
offset, so after a restart requests are decided again from a table that may be behind what was
published, and may be ahead of the committed offset (never behind it: the changelog is flushed
before offsets are committed). Whatever the faults, the platform must end in the same state,
with the same sequence of distinct ``SuppressionChanged`` records, as a run without faults;
a repeat of a record must be byte-identical, never a second, different record for one event.
The view, fed those records in any order and any number of times, must hold the same entries
and give the same verdicts as the table.
"""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from stopsms.adapters.view import InMemorySuppressionView
from stopsms.domain.rules import SubjectDecisions, combine, decide
from stopsms.domain.topics import GLOBAL_SCOPE
from stopsms.domain.viewcodec import ScopeEntry, ViewUpdate
from stopsms.v1 import events_pb2

SENDERS = ["", "JUMIA", "KITEA"]
SUBJECT = "pk1:" + "ab" * 16

requests_strategy = st.lists(
    st.tuples(
        st.sampled_from([events_pb2.ACTION_OPT_OUT, events_pb2.ACTION_OPT_IN]),
        st.sampled_from(SENDERS),
    ),
    min_size=1,
    max_size=12,
)


def make_log(
    actions: list[tuple[int, str]], duplicates: list[int]
) -> list[tuple[events_pb2.PreferenceRequested, int]]:
    """The requests topic: each request with its record timestamp.

    A client's retry appears again later as a new record (same event id, its own timestamp).
    """
    requests = []
    for i, (action, sender) in enumerate(actions):
        r = events_pb2.PreferenceRequested(
            event_id=f"e{i}",
            request_id=f"r{i}",
            party_id="iam",
            action=action,
            sender_id=sender,
            channel=events_pb2.CHANNEL_API,
            subject=SUBJECT,
        )
        r.action_time.FromMilliseconds(1_000 + i)
        r.accepted_time.FromMilliseconds(1_000 + i)
        requests.append(r)
    log = [(r, 10_000 + i) for i, r in enumerate(requests)]
    for j, d in enumerate(duplicates):
        log.append((requests[d % len(requests)], 20_000 + j))
    return log


def clean_run(log) -> tuple[SubjectDecisions, list[bytes]]:  # type: ignore[no-untyped-def]
    state, published = SubjectDecisions(), []
    for request, timestamp in log:
        record, state = decide(state, request, timestamp)
        if record is not None:
            published.append(record.SerializeToString())
    return state, published


def faulty_run(log, data) -> tuple[SubjectDecisions, list[bytes]]:  # type: ignore[no-untyped-def]
    """Process with crashes between publishing and the table write.

    A restart reads the table back from its changelog, which holds some prefix of the work at
    or after the committed offset, and consumes again from that offset.
    """
    published: list[bytes] = []
    snapshots = [SubjectDecisions()]  # snapshots[i]: the table after i positions
    table = SubjectDecisions()
    position = committed = crashes = 0
    while position < len(log):
        record, after = decide(table, *log[position])
        if record is not None:
            published.append(record.SerializeToString())  # published before the table write
        if crashes < 5 and data.draw(st.booleans(), label="crash before the table write"):
            crashes += 1
            persisted = data.draw(st.integers(committed, position), label="changelog holds")
            del snapshots[persisted + 1 :]
            table = SubjectDecisions.from_json(snapshots[persisted].to_json())
            position = committed
            while position < persisted:  # redelivered, and already in the table
                again, table = decide(table, *log[position])
                assert again is None, "a request the table holds is never decided twice"
                position += 1
            continue
        table = SubjectDecisions.from_json(after.to_json())  # through the changelog's format
        position += 1
        snapshots.append(table)
        if data.draw(st.booleans(), label="commit the offset"):
            committed = position
    return table, published


@settings(max_examples=300, deadline=None)
@given(requests_strategy, st.lists(st.integers(0, 11), max_size=4), st.data())
def test_faults_converge_to_the_clean_runs_state_and_records(actions, duplicates, data) -> None:
    log = make_log(actions, duplicates)
    expected_state, expected_records = clean_run(log)
    state, published = faulty_run(log, data)
    assert state.to_json() == expected_state.to_json()
    distinct = list(dict.fromkeys(published))  # identical repeats count once, order kept
    assert distinct == expected_records
    by_event: dict[str, bytes] = {}
    for raw in published:
        event = events_pb2.SuppressionChanged.FromString(raw).event_id
        assert by_event.setdefault(event, raw) == raw, "two different records for one event"


@settings(max_examples=300, deadline=None)
@given(requests_strategy, st.randoms(use_true_random=False), st.integers(0, 3))
def test_the_view_fed_in_any_order_agrees_with_the_table(actions, rng, repeats) -> None:
    state, records = clean_run(make_log(actions, []))
    changes = [events_pb2.SuppressionChanged.FromString(r) for r in records]
    updates = [
        ViewUpdate(
            c.subject,
            c.sender_id,
            ScopeEntry(c.state, c.version, c.action_time.ToMilliseconds()),
        )
        for c in changes
    ]
    shuffled = updates * (1 + repeats)
    rng.shuffle(shuffled)
    view = InMemorySuppressionView()

    async def feed() -> None:
        for i in range(0, len(shuffled), 3):
            await view.apply(shuffled[i : i + 3], {0: i})

    asyncio.run(feed())
    assert len(view) == len(state.scopes)
    # the view holds "since when" to a hundredth of a second, as the Redis view does
    as_held = {scope: ScopeEntry.unpack(entry.pack()) for scope, entry in state.scopes.items()}
    assert {scope: view.entry(SUBJECT, scope) for scope in state.scopes} == as_held
    for sender in ["MARJANE", *SENDERS]:
        sender_entry = view.entry(SUBJECT, sender) if sender else None
        verdict = combine(sender_entry, view.entry(SUBJECT, GLOBAL_SCOPE))
        assert verdict.suppressed == state.suppressed_in(sender or GLOBAL_SCOPE)
