"""Keyed pseudonyms and sealing: how a phone number travels without resting in clear.

* ``subject`` = ``<key id>:<hex of HMAC-SHA-256(pseudonym key, E.164)[:16]>``. It keys,
  partitions and looks up everything. A plain hash would not do: the Moroccan mobile number
  space (2 × 10⁸ numbers) enumerates in seconds, so only a secret key makes it one-way.
* ``sealed_msisdn`` = AES-256-GCM of the E.164 number under the data key, with the key id, so
  the notifier can hand the number to entitled PSVAs and operators can unseal their feed.

Both keys carry ids so that a later rotation can re-key from the sealed numbers.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from stopsms.domain.numbers import USUAL_SPELLING, e164_or_none
from stopsms.v1 import events_pb2

SUBJECT_DIGEST_BYTES = 16
KEY_BYTES = 32
NONCE_BYTES = 12


class KeyMaterialError(ValueError):
    """A key file is missing or malformed; the service must not start without its keys."""


@dataclass(frozen=True)
class Key:
    """A secret key and the id it is known by in every record it produced."""

    key_id: str
    secret: bytes

    def __repr__(self) -> str:  # never print the secret
        return f"Key(key_id={self.key_id!r})"


def load_key(path: Path) -> Key:
    """Read a key file written as ``<key id>:<64 hex digits>``; fail with a clear message."""
    try:
        text = path.read_text().strip()
    except FileNotFoundError as exc:
        raise KeyMaterialError(f"key file {path} does not exist") from exc
    key_id, sep, hex_secret = text.partition(":")
    if not sep or not key_id or not key_id.replace("-", "").replace("_", "").isalnum():
        raise KeyMaterialError(f"key file {path} must hold '<key id>:<hex secret>'")
    try:
        secret = bytes.fromhex(hex_secret)
    except ValueError as exc:
        raise KeyMaterialError(f"key file {path}: the secret is not hexadecimal") from exc
    if len(secret) != KEY_BYTES:
        raise KeyMaterialError(f"key file {path}: the secret must be {KEY_BYTES} bytes")
    return Key(key_id, secret)


def ensure_key(path: Path, key_id: str) -> Key:
    """Load the key at ``path``, creating a random one first (development set-ups only)."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        draft = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(f"{key_id}:{secrets.token_hex(KEY_BYTES)}\n")
        try:
            os.link(draft, path)  # atomic: services starting together agree on one key
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    return load_key(path)


class Pseudonymiser:
    """Turns E.164 numbers into subjects and seals them, and unseals for entitled readers."""

    def __init__(
        self, pseudonym_key: Key, data_keys: list[Key], previous_pseudonym_key: Key | None = None
    ) -> None:
        """``data_keys[0]`` seals; every one of them unseals (the others are previous keys).

        ``previous_pseudonym_key``: held only while a pseudonym re-keying runs (the registry
        moves every subject from it to ``pseudonym_key``; registry/rekeying.py).
        """
        if not data_keys:
            raise KeyMaterialError("at least one data key is needed")
        if previous_pseudonym_key is not None and (
            previous_pseudonym_key.key_id == pseudonym_key.key_id
        ):
            # Subjects are told apart by their key id: two keys under one id would mix them.
            raise KeyMaterialError(
                f"the previous pseudonym key must have another id than {pseudonym_key.key_id!r}"
            )
        self._previous_pseudonym_key = previous_pseudonym_key
        self._previous_hasher = (
            NumberHasher(previous_pseudonym_key.secret) if previous_pseudonym_key else None
        )
        ids = [k.key_id for k in data_keys]
        if len(set(ids)) != len(ids):
            # Two secrets under one id would unseal some records and fail others at random.
            raise KeyMaterialError(f"data key ids must differ: {', '.join(ids)}")
        self._pseudonym_key = pseudonym_key
        self._hasher = NumberHasher(pseudonym_key.secret)
        self._data_key = data_keys[0]
        self._data_keys = list(data_keys)
        self._ciphers = {k.key_id: AESGCM(k.secret) for k in data_keys}

    @property
    def data_key(self) -> Key:
        """The data key that seals now."""
        return self._data_key

    @property
    def data_keys(self) -> list[Key]:
        """Every data key held: the current one first, then those that still unseal."""
        return list(self._data_keys)

    @property
    def pseudonym_key(self) -> Key:
        """The key subjects are computed with (the registry's batch hashing needs it)."""
        return self._pseudonym_key

    @property
    def previous_pseudonym_key(self) -> Key | None:
        """The pseudonym key subjects are moving away from, while a re-keying runs."""
        return self._previous_pseudonym_key

    def subject(self, e164: str) -> str:
        """Return the keyed pseudonym of an E.164 number."""
        return f"{self._pseudonym_key.key_id}:{self._hasher.digest(e164).hex()}"

    def previous_subject(self, e164: str) -> str | None:
        """The number's subject under the previous pseudonym key (None: no re-keying runs)."""
        if self._previous_pseudonym_key is None or self._previous_hasher is None:
            return None
        return f"{self._previous_pseudonym_key.key_id}:{self._previous_hasher.digest(e164).hex()}"

    def seal(self, e164: str) -> events_pb2.SealedMsisdn:
        """Encrypt an E.164 number under the current data key, with a fresh nonce."""
        nonce = secrets.token_bytes(NONCE_BYTES)
        ciphertext = self._ciphers[self._data_key.key_id].encrypt(nonce, e164.encode(), None)
        return events_pb2.SealedMsisdn(
            key_id=self._data_key.key_id, nonce=nonce, ciphertext=ciphertext
        )

    def seal_many(self, numbers: list[str]) -> list[events_pb2.SealedMsisdn]:
        """:meth:`seal` for a campaign: one draw from the OS for every nonce of the batch."""
        randomness = secrets.token_bytes(NONCE_BYTES * len(numbers))
        cipher, key_id = self._ciphers[self._data_key.key_id], self._data_key.key_id
        sealed = []
        for i, e164 in enumerate(numbers):
            nonce = randomness[i * NONCE_BYTES : (i + 1) * NONCE_BYTES]
            sealed.append(
                events_pb2.SealedMsisdn(
                    key_id=key_id,
                    nonce=nonce,
                    ciphertext=cipher.encrypt(nonce, e164.encode(), None),
                )
            )
        return sealed

    def seal_text(self, text: str) -> events_pb2.SealedText:
        """Encrypt a message text like a number (one-time codes never rest in clear)."""
        sealed = self.seal(text)
        return events_pb2.SealedText(
            key_id=sealed.key_id, nonce=sealed.nonce, ciphertext=sealed.ciphertext
        )

    def unseal_text(self, sealed: events_pb2.SealedText) -> str:
        """Decrypt a sealed text; raises ``KeyMaterialError`` for an unknown key id."""
        return self.unseal(
            events_pb2.SealedMsisdn(
                key_id=sealed.key_id, nonce=sealed.nonce, ciphertext=sealed.ciphertext
            )
        )

    def unseal(self, sealed: events_pb2.SealedMsisdn) -> str:
        """Decrypt a sealed number; raises ``KeyMaterialError`` for an unknown key id."""
        cipher = self._ciphers.get(sealed.key_id)
        if cipher is None:
            raise KeyMaterialError(f"no data key with id {sealed.key_id!r}")
        return cipher.decrypt(sealed.nonce, sealed.ciphertext, None).decode()


class NumberHasher:
    """The subject digest: HMAC-SHA-256 of an E.164 number under the pseudonym key, truncated.

    The one place the pseudonym is computed (:meth:`Pseudonymiser.subject`, ``Check`` and
    ``CheckBatch`` all call it). The key's pads are hashed once, here, so each number costs two
    SHA-256 compressions on copies (a test holds it to :func:`hmac.digest`).
    """

    def __init__(self, secret: bytes) -> None:
        block = secret if len(secret) <= 64 else hashlib.sha256(secret).digest()
        block = block.ljust(64, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in block))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in block))

    def digest(self, e164: str) -> bytes:
        """The subject digest of one E.164 number."""
        inner = self._inner.copy()
        inner.update(e164.encode())
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()[:SUBJECT_DIGEST_BYTES]

    def hash_chunk(self, numbers: Sequence[str]) -> tuple[bytes, list[int]]:
        """The subject digests of the valid numbers, joined, and the positions of the others.

        The fast path of :meth:`digest` and :func:`e164_or_none` for a campaign list, written
        out in one loop (function calls per number cost an eighth of the throughput); a
        property test holds it to them.
        """
        digests: list[bytes] = []
        invalid: list[int] = []
        usual = USUAL_SPELLING.fullmatch
        inner, outer = self._inner, self._outer
        for position, raw in enumerate(numbers):
            match = usual(raw)
            e164 = "+212" + match.group(1) if match is not None else e164_or_none(raw)
            if e164 is None:
                invalid.append(position)
                continue
            h = inner.copy()
            h.update(e164.encode())
            o = outer.copy()
            o.update(h.digest())
            digests.append(o.digest()[:SUBJECT_DIGEST_BYTES])
        return b"".join(digests), invalid
