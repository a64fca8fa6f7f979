"""Deterministic event ids: a retry after any crash yields the same id, so it dedups."""

from __future__ import annotations

import uuid

#: The namespace of every StopSMS event id (UUIDv5). Never change it within v1.
EVENT_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://stopsms.ma/events/v1")

#: The party id of link clicks: the link page acts for the holder of the link.
LINK_PARTY_ID = "link"
#: The party id of changes made on the citizen's own page, behind a one-time code.
CITIZEN_WEB_PARTY_ID = "citizen-web"


def event_id(party_id: str, request_id: str) -> str:
    """Return the UUIDv5 of the calling party's id and its request id."""
    return str(uuid.uuid5(EVENT_NAMESPACE, f"{party_id}\x1f{request_id}"))


def link_request_id(code: str, action: str, round_: int = 0) -> str:
    """Return the request id of a link click: the link code plus the action.

    After an undo on the page the link starts a new round (intake.undo); later clicks carry
    it, so that stopping again is a new request rather than the first one found again.
    """
    return f"{code}:{action}" if round_ == 0 else f"{code}:{action}:{round_}"


def message_id(party_id: str, request_id: str, purpose: str) -> str:
    """The id of a message to a citizen answering ``request_id``: the same on every retry."""
    return event_id(party_id, f"{request_id}\x1foutbound\x1f{purpose}")


def complaint_id(party_id: str, request_id: str) -> str:
    """The id of a complaint a party submitted: the same on every retry of its request id."""
    return event_id(party_id, f"{request_id}\x1fcomplaint")


def complaint_reference(complaint: str) -> str:
    """The reference a citizen is sent for a complaint: ``SPAM-`` and 8 characters of its id.

    Short enough to read out on the phone; the regulator's search also takes the full id.
    """
    return "SPAM-" + complaint.replace("-", "")[:8].upper()


def case_id(group: str) -> str:
    """The id of the case of a group of complaints (``domain.cases.group_of``): always the same."""
    return event_id("stopsms-cases", group)


def case_reference(case: str) -> str:
    """The reference of a case: ``CASE-`` and 8 characters of its id."""
    return "CASE-" + case.replace("-", "")[:8].upper()
