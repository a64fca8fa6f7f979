import pytest
from hypothesis import given
from hypothesis import strategies as st
from kafka.partitioner.default import murmur2 as kafka_murmur2  # type: ignore[import-untyped]

from stopsms.adapters.settings import IntakeSettings, Settings, SettingsError
from stopsms.domain.parties import DirectoryError, InvalidSender, PartiesDirectory, check_sender_id
from stopsms.domain.topics import murmur2, partition_for_key, suppression_key
from stopsms.tools.senders import local_directory


def test_the_packaged_directory_loads_and_the_seed_declares_its_senders() -> None:
    directory = PartiesDirectory.load(Settings().parties_file)
    assert directory.get("iam").is_operator and not directory.is_declared("JUMIA")
    seeded = local_directory()
    assert seeded.is_declared("JUMIA") and not seeded.is_declared("UNKNOWN-BRAND")


def test_a_malformed_directory_says_where(tmp_path) -> None:
    path = tmp_path / "parties.yaml"
    path.write_text("parties:\n  - {id: a, kind: operator, colour: red}\n")
    with pytest.raises(DirectoryError, match=r"parties\[0\].*colour"):
        PartiesDirectory.load(path)
    path.write_text("parties:\n  - {id: a, kind: operator}\n  - {id: a, kind: psva}\n")
    with pytest.raises(DirectoryError, match="twice"):
        PartiesDirectory.load(path)


def test_settings_fail_fast_naming_the_variable() -> None:
    with pytest.raises(SettingsError, match="STOPSMS_PARTITIONS"):
        Settings.from_env({"STOPSMS_PARTITIONS": "twelve"})
    with pytest.raises(SettingsError, match="STOPSMS_PUBLIC_BASE_URL"):
        IntakeSettings.from_env({"STOPSMS_PUBLIC_BASE_URL": "ftp://x/"})
    assert Settings.from_env({}).partitions == 12


def test_sender_ids_are_checked() -> None:
    assert check_sender_id("JUMIA") == "JUMIA"
    assert check_sender_id("") == ""
    for bad in ["x" * 33, "<script>", "   ", "-lead", "JUM\u200bIA"]:
        with pytest.raises(InvalidSender):
            check_sender_id(bad)


def test_every_way_of_writing_a_sender_is_one_canonical_id() -> None:
    # Case, surrounding and repeated spaces, full-width letters: one spelling.
    for written in ["JUMIA", "Jumia", " jumia ", "jUmIa\t", "\uff2a\uff55\uff4d\uff49\uff41"]:
        assert check_sender_id(written) == "JUMIA", written
    assert check_sender_id("  Marjane   Market ") == "MARJANE MARKET"
    assert check_sender_id(" lead") == "LEAD"
    assert check_sender_id("1313") == "1313"


def test_the_directory_holds_canonical_senders_and_refuses_two_spellings_of_one(
    tmp_path,
) -> None:
    path = tmp_path / "parties.yaml"
    path.write_text("parties:\n  - {id: a, kind: psva, senders: [jumia, ' Kitea ']}\n")
    party = PartiesDirectory.load(path).get("a")
    assert party is not None and party.senders == {"JUMIA", "KITEA"}
    path.write_text("parties:\n  - {id: a, kind: psva, senders: [Jumia, JUMIA]}\n")
    with pytest.raises(DirectoryError, match="listed twice: JUMIA"):
        PartiesDirectory.load(path)


def test_suppression_records_of_one_subject_share_its_requests_partition() -> None:
    subject = "pk1:0123456789abcdef0123456789abcdef"
    expected = partition_for_key(subject, 12)
    for sender in ["", "JUMIA", "IAM"]:
        assert partition_for_key(suppression_key(subject, sender), 12) == expected


@given(st.binary(max_size=300))
def test_our_murmur2_places_every_key_where_kafkas_own_does(key: bytes) -> None:
    """Producers of every language place a keyed record with Kafka's murmur2: ours must agree."""
    assert murmur2(key) == kafka_murmur2(key)


def test_every_party_has_a_rate_limit_by_default_and_its_own_when_it_names_one(
    tmp_path,
) -> None:
    from stopsms.adapters.identity import Authenticator
    from stopsms.domain.parties import DEFAULT_RATE_LIMITS

    shipped = PartiesDirectory.load(Settings().parties_file)
    assert all(p.rate_limit == DEFAULT_RATE_LIMITS[p.kind_name] for p in shipped)
    path = tmp_path / "parties.yaml"
    path.write_text(
        "parties:\n"
        "  - {id: big, kind: operator}\n"
        "  - {id: small, kind: psva, senders: [JUMIA], rate_limit: 5}\n"
    )
    directory = PartiesDirectory.load(path)
    assert directory.get("small").rate_limit == 5  # type: ignore[union-attr]
    limiter = Authenticator(directory, insecure=True).limiter
    # One party alone cannot take the service: past its default it must wait.
    allowed = sum(limiter.retry_after("big") == 0.0 for _ in range(5000))
    assert DEFAULT_RATE_LIMITS["operator"] <= allowed < 5000
