"""Messages to citizens: one SMS segment in every language, naming what changed and its reference."""

from __future__ import annotations

import pytest

from stopsms.domain import messages
from stopsms.domain.privacy import Key, Pseudonymiser
from stopsms.v1 import events_pb2

EVENT = "3f2a9c1d-5b6e-5a7f-8c9d-0e1f2a3b4c5d"
LONGEST_SENDER = "ABCDEFGHIJK"  # sender ids have at most 11 characters


@pytest.mark.parametrize("language", messages.LANGUAGES)
@pytest.mark.parametrize("action", [events_pb2.ACTION_OPT_OUT, events_pb2.ACTION_OPT_IN])
@pytest.mark.parametrize("sender", [LONGEST_SENDER, ""])
def test_every_confirmation_is_one_segment_and_names_scope_and_reference(
    language: str, action: int, sender: str
) -> None:
    text = messages.confirmation(language, action, sender, EVENT)
    assert messages.fits_one_segment(text), (text, messages.segment_length(text))
    assert "3F2A9C1D" in text
    assert (sender in text) if sender else LONGEST_SENDER not in text


@pytest.mark.parametrize("language", messages.LANGUAGES)
def test_help_and_codes_are_one_segment(language: str) -> None:
    assert messages.fits_one_segment(messages.help_text(language))
    code = messages.code_text(language, "042917")
    assert messages.fits_one_segment(code) and "042917" in code


@pytest.mark.parametrize("language", messages.LANGUAGES)
@pytest.mark.parametrize("ask_sender", [False, True])
def test_a_complaints_acknowledgement_is_one_segment_with_its_reference(
    language: str, ask_sender: bool
) -> None:
    text = messages.complaint_text(language, "SPAM-1A2B3C4D", ask_sender=ask_sender)
    assert messages.fits_one_segment(text), (text, messages.segment_length(text))
    assert "SPAM-1A2B3C4D" in text


def test_segments_are_counted_as_the_network_counts_them() -> None:
    assert messages.segment_length("é" * 160) == (160, 160)  # in the GSM-7 alphabet
    assert messages.segment_length("€" * 10) == (20, 160)  # the extension takes two
    assert messages.segment_length("ç") == (1, 70)  # not GSM-7: UCS-2
    assert messages.segment_length("توقف") == (4, 70)


@pytest.mark.parametrize(
    ("reply", "language"),
    [
        ("STOP", "fr"),
        ("arrêtez svp", "fr"),
        ("7bes had sms 3afak", "fr"),  # Darija in Latin letters is answered in French
        ("توقف", "ar"),
        ("please stop sending me this", "en"),
        ("unsubscribe", "en"),
    ],
)
def test_the_answer_is_in_the_language_of_the_reply(reply: str, language: str) -> None:
    assert messages.reply_language(reply) == language


def test_languages_are_read_from_tags_and_anything_else_is_french() -> None:
    assert messages.language_of("ar-MA") == "ar"
    assert messages.language_of("EN") == "en"
    assert messages.language_of("zgh") == "fr"


def test_a_code_is_sealed_for_the_operator_and_opens_with_the_data_key() -> None:
    keys = Pseudonymiser(Key("pk1", bytes(32)), [Key("dk1", bytes(range(32)))])
    sealed = keys.seal_text(messages.code_text("fr", "042917"))
    assert b"042917" not in sealed.SerializeToString()
    assert "042917" in keys.unseal_text(sealed)
