import pytest

from stopsms.domain.cursor import InvalidCursor, decode_cursor, encode_cursor
from stopsms.domain.keywords import classify
from stopsms.intake.links import CODE_LENGTH, is_code, new_code
from stopsms.v1 import intake_pb2


def test_a_cursor_round_trips_and_is_opaque() -> None:
    cursor = encode_cursor({0: 5, 11: 42})
    assert decode_cursor(cursor, 12) == {0: 5, 11: 42}
    assert "42" not in cursor


@pytest.mark.parametrize("bad", ["", "c1.!!!", "x" * 5000, "c1." + "MTI6NQ", "hello"])
def test_a_foreign_cursor_is_refused(bad: str) -> None:
    with pytest.raises(InvalidCursor):
        decode_cursor(bad, 12)  # "MTI6NQ" is "12:5": partition out of range


@pytest.mark.parametrize(
    ("text", "intent"),
    [
        ("STOP", intake_pb2.INTENT_OPT_OUT),
        ("stop", intake_pb2.INTENT_OPT_OUT),
        (" Stop! ", intake_pb2.INTENT_OPT_OUT),
        ("STOP SMS", intake_pb2.INTENT_OPT_OUT),
        ("stop all", intake_pb2.INTENT_OPT_OUT_ALL),
        ("STOP TOUT", intake_pb2.INTENT_OPT_OUT_ALL),
        ("start", intake_pb2.INTENT_OPT_IN),
        ("merci pour l'offre", intake_pb2.INTENT_NONE),
        ("", intake_pb2.INTENT_NONE),
    ],
)
def test_plain_keywords_are_understood(text: str, intent: int) -> None:
    assert classify(text) == intent


def test_link_codes_are_random_base62_of_fixed_length() -> None:
    codes = {new_code() for _ in range(1000)}
    assert len(codes) == 1000
    assert all(len(c) == CODE_LENGTH and is_code(c) for c in codes)
    assert len("https://stopsms.ma/" + new_code()) <= 30
    assert not is_code("../etc/pass") and not is_code("short")
