import pytest

from stopsms.domain.privacy import Key, KeyMaterialError, Pseudonymiser, ensure_key, load_key

PSEUDONYM = Key("pk1", bytes(range(32)))
DATA = Key("dk1", bytes(range(32, 64)))


def test_subject_is_stable_keyed_and_carries_the_key_id() -> None:
    p = Pseudonymiser(PSEUDONYM, [DATA])
    subject = p.subject("+212612345678")
    assert subject == p.subject("+212612345678")
    key_id, _, digest = subject.partition(":")
    assert key_id == "pk1"
    assert len(bytes.fromhex(digest)) == 16
    assert subject != p.subject("+212612345679")
    other_key = Pseudonymiser(Key("pk1", bytes(32)), [DATA])
    assert other_key.subject("+212612345678") != subject


def test_the_subject_is_not_a_plain_hash_of_the_number() -> None:
    import hashlib

    p = Pseudonymiser(PSEUDONYM, [DATA])
    digest = p.subject("+212612345678").split(":")[1]
    assert digest != hashlib.sha256(b"+212612345678").hexdigest()[:32]


def test_sealing_round_trips_with_a_fresh_nonce_and_the_key_id() -> None:
    p = Pseudonymiser(PSEUDONYM, [DATA])
    first, second = p.seal("+212612345678"), p.seal("+212612345678")
    assert first.key_id == "dk1"
    assert first.nonce != second.nonce
    assert b"612345678" not in first.ciphertext
    assert p.unseal(first) == p.unseal(second) == "+212612345678"


def test_an_older_data_key_still_unseals_after_rotation() -> None:
    old = Pseudonymiser(PSEUDONYM, [DATA])
    sealed = old.seal("+212712345678")
    rotated = Pseudonymiser(PSEUDONYM, [Key("dk2", bytes(32)), DATA])
    assert rotated.seal("+212712345678").key_id == "dk2"
    assert rotated.unseal(sealed) == "+212712345678"


def test_key_files_are_created_once_and_validated(tmp_path) -> None:
    path = tmp_path / "keys" / "pseudonym.key"
    created = ensure_key(path, "pk1")
    assert ensure_key(path, "other") == created
    assert (path.stat().st_mode & 0o777) == 0o600
    path.write_text("pk1:nothex")
    with pytest.raises(KeyMaterialError, match="hexadecimal"):
        load_key(path)
    with pytest.raises(KeyMaterialError, match="does not exist"):
        load_key(tmp_path / "missing.key")
    assert "secret" not in repr(created) and created.secret.hex() not in repr(created)


def test_two_data_keys_under_one_id_are_refused() -> None:
    with pytest.raises(KeyMaterialError, match="data key ids must differ"):
        Pseudonymiser(PSEUDONYM, [DATA, Key("dk1", bytes(32))])


def test_a_rotation_through_the_settings_seals_with_the_new_key_and_unseals_the_old(
    tmp_path,
) -> None:
    from stopsms.adapters.settings import Settings

    for name, text in (("pk1", PSEUDONYM), ("dk1", DATA), ("dk2", Key("dk2", bytes(32)))):
        (tmp_path / f"{name}.key").write_text(f"{text.key_id}:{text.secret.hex()}\n")
    env = {
        "STOPSMS_PSEUDONYM_KEY_FILE": str(tmp_path / "pk1.key"),
        "STOPSMS_DATA_KEY_FILE": str(tmp_path / "dk1.key"),
    }
    sealed_before = Settings.from_env(env).pseudonymiser().seal("+212612345678")
    rotated = Settings.from_env(
        {
            **env,
            "STOPSMS_DATA_KEY_FILE": str(tmp_path / "dk2.key"),
            "STOPSMS_PREVIOUS_DATA_KEY_FILES": str(tmp_path / "dk1.key"),
        }
    ).pseudonymiser()
    assert rotated.seal("+212612345678").key_id == "dk2"
    assert rotated.unseal(sealed_before) == "+212612345678"
    forgot_the_old_key = Settings.from_env(
        {**env, "STOPSMS_DATA_KEY_FILE": str(tmp_path / "dk2.key")}
    ).pseudonymiser()
    with pytest.raises(KeyMaterialError, match="no data key with id 'dk1'"):
        forgot_the_old_key.unseal(sealed_before)
    with pytest.raises(KeyMaterialError, match="does not exist"):
        Settings.from_env(
            {**env, "STOPSMS_PREVIOUS_DATA_KEY_FILES": str(tmp_path / "gone.key")}
        ).pseudonymiser()


@pytest.mark.parametrize("secret", [bytes(range(32)), b"k" * 64, b"a much longer secret " * 5])
def test_the_subject_digest_is_the_standard_hmac_whatever_the_key_length(secret: bytes) -> None:
    import hmac

    from stopsms.domain.privacy import SUBJECT_DIGEST_BYTES, NumberHasher

    for e164 in ("+212612345678", "+212700000000"):
        expected = hmac.digest(secret, e164.encode(), "sha256")[:SUBJECT_DIGEST_BYTES]
        assert NumberHasher(secret).digest(e164) == expected
