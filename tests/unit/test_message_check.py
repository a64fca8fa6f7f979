"""The StopSMS mention, the platform's links and the cost of a marketing text, from the text."""

from __future__ import annotations

import pytest

from stopsms.domain.message_check import Encoding, LinkSite, read_text, segments_of

SITE = LinkSite("https://stopsms.ma/")
CODE = "Ab3dEf7hJk9"


@pytest.mark.parametrize(
    "text",
    [
        f"Soldes -50% chez JUMIA ! StopSMS : https://stopsms.ma/{CODE}",
        f"Soldes -50% ! Stop SMS: stopsms.ma/{CODE}",
        f"Soldes ! STOP : https://stopsms.ma/{CODE}.",
        "Soldes -50% chez JUMIA ! STOP au 3030",
        "Promo: envoyez STOP au 3030",
        "Promo. Arrêt au 3030",
        "Promo STOP 3030",
        "تخفيضات كبيرة! للتوقف أرسل STOP إلى 3030",
        "تخفيضات كبيرة! ستوب إلى 3030",
        f"تخفيضات كبيرة! StopSMS : https://stopsms.ma/{CODE}",
    ],
)
def test_each_accepted_form_of_the_mention_is_found(text: str) -> None:
    assert read_text(text, SITE).has_mention, text


@pytest.mark.parametrize(
    "text",
    [
        "Soldes -50% chez JUMIA, profitez-en !",
        "Soldes ! Désabonnement : https://example.com/unsubscribe",
        f"Soldes ! StopSMS : https://stopsms-fake.ma/{CODE}",  # a look-alike site is no mention
        "Ne manquez pas nos offres, STOP ou encore ?",
        "تخفيضات كبيرة اليوم فقط",
        f"Soldes ! https://stopsms.ma/{CODE}",  # the site's name is not the word StopSMS
    ],
)
def test_a_text_without_an_accepted_mention_is_found_out(text: str) -> None:
    assert not read_text(text, SITE).has_mention, text


def test_only_the_platforms_links_are_read_each_once() -> None:
    text = (
        f"StopSMS : https://stopsms.ma/{CODE} ou https://stopsms.ma/{CODE}, "
        "https://stopsms.ma/Zz9yX8wV7u6 https://other.ma/Qq1wE2rT3y4 https://stopsms.ma/short"
    )
    assert read_text(text, SITE).link_codes == (CODE, "Zz9yX8wV7u6")


def test_a_site_under_a_path_and_port_reads_only_its_own_links() -> None:
    site = LinkSite("http://127.0.0.1:8080/s/")
    text = f"StopSMS : http://127.0.0.1:8080/s/{CODE} http://127.0.0.1:9090/s/Zz9yX8wV7u6"
    assert read_text(text, site).link_codes == (CODE,)


@pytest.mark.parametrize(
    ("text", "segments", "encoding"),
    [
        ("", 0, Encoding.GSM7),
        ("a" * 160, 1, Encoding.GSM7),
        ("a" * 161, 2, Encoding.GSM7),
        ("a" * 306, 2, Encoding.GSM7),
        ("a" * 307, 3, Encoding.GSM7),
        ("€" * 80, 1, Encoding.GSM7),  # the euro sign costs two characters
        ("ب" * 70, 1, Encoding.UCS2),
        ("ب" * 71, 2, Encoding.UCS2),
        ("ب" * 135, 3, Encoding.UCS2),
    ],
)
def test_segments_and_encoding_are_counted_as_the_network_does(
    text: str, segments: int, encoding: int
) -> None:
    assert segments_of(text) == (segments, encoding)


def test_arabic_costs_about_three_times_the_segments_of_the_same_length_in_latin() -> None:
    latin, arabic = "a" * 300, "ب" * 300
    assert segments_of(latin)[0] == 2 and segments_of(arabic)[0] == 5
