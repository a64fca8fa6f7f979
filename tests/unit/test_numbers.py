import pytest

from stopsms.domain.numbers import InvalidNumber, normalise_msisdn


@pytest.mark.parametrize(
    ("written", "e164"),
    [
        ("0612345678", "+212612345678"),
        ("0712345678", "+212712345678"),
        ("06 12 34 56 78", "+212612345678"),
        ("06.12.34.56.78", "+212612345678"),
        ("06-12-34-56-78", "+212612345678"),
        ("+212612345678", "+212612345678"),
        ("+212 6 12 34 56 78", "+212612345678"),
        ("+212-712-345-678", "+212712345678"),
        ("+212 (0)6 12 34 56 78", "+212612345678"),
        ("00212612345678", "+212612345678"),
        ("00 212 7 12 34 56 78", "+212712345678"),
        ("212612345678", "+212612345678"),
        ("212 712345678", "+212712345678"),
        ("  0612345678  ", "+212612345678"),
        ("٠٦١٢٣٤٥٦٧٨", "+212612345678"),  # Arabic-Indic digits
        ("+٢١٢ ۶۱۲۳۴۵۶۷۸", "+212612345678"),  # Eastern Arabic-Indic digits
    ],
)
def test_every_moroccan_mobile_form_normalises_to_e164(written: str, e164: str) -> None:
    assert normalise_msisdn(written) == e164


@pytest.mark.parametrize(
    ("written", "why"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("0522123456", "mobile"),  # Casablanca landline
        ("+212522123456", "mobile"),
        ("+33612345678", "Moroccan"),  # French mobile
        ("0033612345678", "Moroccan"),
        ("061234567", "9 digits"),  # too short
        ("06123456789", "9 digits"),  # too long
        ("3535", "prefix"),  # short code
        ("06123A5678", "digits"),
        ("0612345678" * 4, "longer"),
        ("+212 8 12 34 56 78", "mobile"),
        ("06१२३४५६७८", "digits"),  # Devanagari digits are not Moroccan writing
    ],
)
def test_foreign_landline_short_and_malformed_numbers_are_refused(written: str, why: str) -> None:
    with pytest.raises(InvalidNumber, match=why):
        normalise_msisdn(written)


def test_the_error_never_echoes_the_number() -> None:
    with pytest.raises(InvalidNumber) as caught:
        normalise_msisdn("0522123456")
    assert "0522123456" not in str(caught.value)
