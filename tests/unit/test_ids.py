import uuid

from stopsms.domain.ids import event_id, link_request_id


def test_event_id_is_a_deterministic_uuid5_of_party_and_request() -> None:
    first = event_id("iam", "req-1")
    assert first == event_id("iam", "req-1")
    assert uuid.UUID(first).version == 5
    assert first != event_id("orange", "req-1")
    assert first != event_id("iam", "req-2")


def test_party_and_request_id_cannot_be_confused_by_concatenation() -> None:
    assert event_id("ia", "mreq") != event_id("iam", "req")


def test_a_link_click_is_identified_by_code_and_action() -> None:
    assert link_request_id("AbCdEfGhIjK", "opt_out") == "AbCdEfGhIjK:opt_out"
    assert event_id("link", link_request_id("AbCdEfGhIjK", "opt_out")) != event_id(
        "link", link_request_id("AbCdEfGhIjK", "opt_in")
    )
