"""The preference rules of DOMAIN.md, as a table, and the decision function."""

import pytest

from stopsms.domain.rules import SubjectDecisions, combine, decide
from stopsms.domain.viewcodec import ScopeEntry
from stopsms.v1 import events_pb2, registry_pb2

S, A = events_pb2.STATE_SUPPRESSED, events_pb2.STATE_ALLOWED
SENDER, GLOBAL, NONE = (
    registry_pb2.MATCHED_SCOPE_SENDER,
    registry_pb2.MATCHED_SCOPE_GLOBAL,
    registry_pb2.MATCHED_SCOPE_UNSPECIFIED,
)


def e(state: int, version: int) -> ScopeEntry:
    return ScopeEntry(state, version, version * 1000)


@pytest.mark.parametrize(
    ("sender", "global_", "suppressed", "matched", "why"),
    [
        (None, None, False, NONE, "no record: no objection on record"),
        (e(S, 1), None, True, SENDER, "rule 1: the sender's opt-out"),
        (e(S, 1), e(A, 2), True, SENDER, "rule 1 wins over a later global opt-in"),
        (e(S, 2), e(S, 1), True, SENDER, "both opted out: the sender's record decides"),
        (None, e(S, 1), True, GLOBAL, "rule 2: global opt-out, no sender record"),
        (e(A, 1), e(S, 2), True, GLOBAL, "rule 2: global opt-out newer than the sender's opt-in"),
        (e(A, 3), e(S, 2), False, SENDER, "opt-back-in for one sender after a global opt-out"),
        (None, e(A, 2), False, GLOBAL, "a global opt-back-in alone"),
        (e(A, 1), None, False, SENDER, "an explicit opt-back-in"),
    ],
)
def test_how_preferences_combine(sender, global_, suppressed, matched, why) -> None:
    verdict = combine(sender, global_)
    assert verdict.suppressed is suppressed, why
    assert verdict.matched_scope == matched, why


def request(
    event: str, action: int, sender: str = "", ms: int = 1_000
) -> events_pb2.PreferenceRequested:
    r = events_pb2.PreferenceRequested(
        event_id=event,
        request_id=event,
        party_id="iam",
        action=action,
        sender_id=sender,
        channel=events_pb2.CHANNEL_API,
        subject="pk1:00",
    )
    r.action_time.FromMilliseconds(ms)
    r.accepted_time.FromMilliseconds(ms)
    return r


def run(requests: list[events_pb2.PreferenceRequested]):
    state, records = SubjectDecisions(), []
    for i, r in enumerate(requests):
        record, state = decide(state, r, decided_time_ms=10_000 + i)
        records.append(record)
        state = SubjectDecisions.from_json(state.to_json())  # through the table's format
    return state, records


OUT, IN = events_pb2.ACTION_OPT_OUT, events_pb2.ACTION_OPT_IN


def test_one_record_per_request_with_monotonic_versions_even_without_change() -> None:
    _, records = run([request("a", OUT, "JUMIA"), request("b", OUT, "JUMIA")])
    assert [r.version for r in records] == [1, 2]
    assert [r.changed for r in records] == [True, False]
    assert all(r.state == events_pb2.STATE_SUPPRESSED for r in records)


def test_a_redelivered_request_is_not_decided_twice() -> None:
    state, records = run([request("a", OUT, "JUMIA"), request("a", OUT, "JUMIA")])
    assert records[1] is None
    assert state.version == 1


def test_deciding_again_from_the_same_state_gives_an_identical_record() -> None:
    r = request("a", OUT, "JUMIA")
    first, _ = decide(SubjectDecisions(), r, 42)
    again, _ = decide(SubjectDecisions(), r, 42)
    assert first is not None and first.SerializeToString() == again.SerializeToString()


def test_global_opt_out_then_opt_in_for_one_sender_reallows_only_that_sender() -> None:
    state, records = run([request("g", OUT), request("j", IN, "JUMIA")])
    assert records[0].changed and records[1].changed
    assert state.suppressed_in("JUMIA") is False
    assert state.suppressed_in("MARJANE") is True
    assert state.suppressed_in("*") is True


def test_global_opt_back_in_never_lifts_a_sender_stopped_by_name() -> None:
    state, _ = run([request("j", OUT, "JUMIA"), request("g", OUT), request("s", IN)])
    assert state.suppressed_in("JUMIA") is True
    assert state.suppressed_in("MARJANE") is False


def test_an_opt_in_with_nothing_to_lift_changes_nothing() -> None:
    _, records = run([request("i", IN, "JUMIA")])
    assert records[0].state == events_pb2.STATE_ALLOWED
    assert records[0].changed is False
