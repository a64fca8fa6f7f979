"""The parties directory: every organisation that may call the platform, and its senders.

Operators, PSVAs, the regulator and the platform's own services are listed in one YAML file.
Authorisation ("who may do what" in ARCHITECTURE.md) and fan-out (who is concerned by a change)
both read it, so a sender added here is entitled and notified everywhere at once.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

import yaml

from stopsms.v1 import events_pb2

KIND_BY_NAME = {
    "operator": events_pb2.PARTY_KIND_OPERATOR,
    "psva": events_pb2.PARTY_KIND_PSVA,
    "regulator": events_pb2.PARTY_KIND_REGULATOR,
    "platform": events_pb2.PARTY_KIND_PLATFORM,
}
_PARTY_FIELDS = {"id", "kind", "name", "senders", "webhook", "rate_limit", "permissions"}

#: Permissions a regulator identity may be granted beyond its kind's calls.
#: ``full-numbers``: export a case with the complainants' numbers in full (the prosecutor's
#: copy; audited as such). Other regulator identities see numbers masked.
PERMISSIONS = frozenset({"full-numbers"})

#: Calls per second (per service replica) a party of each kind may make when its entry names
#: no ``rate_limit`` of its own, so that no party can take a whole service. About half of what
#: a registry replica answers on two cores (~4,000 Check/s), for the parties that check before
#: every message; a PSVA scrubbing a campaign uses CheckBatch, one call per stream. The link
#: page (a platform identity) makes two calls per page view. docs/operations.md explains them.
DEFAULT_RATE_LIMITS: dict[str, float] = {
    "operator": 2000.0,
    "psva": 1000.0,
    "regulator": 100.0,
    "platform": 2000.0,
}


_SENDER_ID = re.compile(r"[A-Z0-9][A-Z0-9 ._&'-]{0,31}")
_SPACES = re.compile(r"\s+")


class InvalidSender(ValueError):
    """A sender id is not of the form the directory accepts."""


def canonical_sender_id(sender_id: str) -> str:
    """The one spelling of a sender id: every way a caller writes a sender reaches one record.

    Unicode compatibility forms are folded (a full-width "Ｊｕｍｉａ" is "Jumia"), spaces are
    trimmed and runs of them made one, and letters are upper-cased: " jumia ", "Jumia" and
    "JUMIA" are all ``JUMIA``. The records written before this form existed already hold it
    (the directory's senders were upper-case), so they keep matching.
    """
    return _SPACES.sub(" ", unicodedata.normalize("NFKC", sender_id)).strip().upper()


def check_sender_id(sender_id: str, *, required: bool = False) -> str:
    """Return the canonical form of ``sender_id`` (empty when allowed), or raise InvalidSender.

    Sender ids are the alphanumeric sender names and short codes of SMS (at most 32
    characters); anything else is refused before it reaches a topic.
    """
    canonical = canonical_sender_id(sender_id)
    if not canonical:
        if required:
            raise InvalidSender("a sender id is required")
        if sender_id:
            raise InvalidSender("a sender id of only spaces: leave it empty for all marketing")
        return ""
    if not _SENDER_ID.fullmatch(canonical):
        raise InvalidSender(
            "a sender id has 1 to 32 letters, digits, spaces or . _ & ' - and starts with a "
            "letter or digit"
        )
    return canonical


class DirectoryError(ValueError):
    """The parties directory is malformed; the message says where."""


@dataclass(frozen=True)
class Webhook:
    """Where a PSVA that prefers HTTP receives changes, and the file holding its secret."""

    url: str
    secret_file: str


@dataclass(frozen=True)
class Party:
    """One organisation: its id, kind and the sender ids it sends for."""

    id: str
    kind: int
    name: str
    senders: frozenset[str] = field(default_factory=frozenset)
    webhook: Webhook | None = None
    rate_limit: float | None = None
    permissions: frozenset[str] = field(default_factory=frozenset)

    def may(self, permission: str) -> bool:
        """True when the directory grants this party ``permission`` (:data:`PERMISSIONS`)."""
        return permission in self.permissions

    @property
    def kind_name(self) -> str:
        """The kind as written in the directory (operator, psva, ...)."""
        return next(name for name, value in KIND_BY_NAME.items() if value == self.kind)

    @property
    def is_operator(self) -> bool:
        """True for a mobile operator."""
        return self.kind == events_pb2.PARTY_KIND_OPERATOR

    @property
    def is_psva(self) -> bool:
        """True for a value-added SMS service provider."""
        return self.kind == events_pb2.PARTY_KIND_PSVA

    @property
    def is_regulator(self) -> bool:
        """True for the regulator."""
        return self.kind == events_pb2.PARTY_KIND_REGULATOR

    @property
    def is_platform(self) -> bool:
        """True for the platform's own services."""
        return self.kind == events_pb2.PARTY_KIND_PLATFORM

    def sends_for(self, sender_id: str) -> bool:
        """True when this party declared ``sender_id`` as one of its own."""
        return sender_id in self.senders

    def is_concerned_by(self, sender_id: str) -> bool:
        """True when a change in scope ``sender_id`` must reach this party.

        Operators carry every message, so every change concerns them; a PSVA is concerned by
        its own senders and by global opt-outs; the regulator and the platform are not parties
        to the propagation.
        """
        if self.is_operator:
            return True
        if self.is_psva:
            return not sender_id or self.sends_for(sender_id)
        return False


class SenderEntitlements(Protocol):
    """What the register of declared senders tells the directory (domain/senders.py)."""

    def senders_of(self, party_id: str) -> frozenset[str]:
        """The ids of every sender ``party_id`` sends for."""
        ...

    def resolve(self, sender_id: str) -> str:
        """The canonical id an alias stands for (itself when it is no alias)."""
        ...

    def declared_ids(self) -> frozenset[str]:
        """Every declared sender's id, whatever its status."""
        ...


class PartiesDirectory:
    """The loaded directory, indexed by party id and by sender id.

    One object per process, shared by everything that reads the directory; :meth:`replace`
    swaps its contents when the file changes (:class:`DirectoryReloader`) or when the register
    of declared senders does (:meth:`with_senders`), so every reader sees the new entitlements
    at once, and listeners (rate limits, say) are told. A party's senders are those the file
    lists for it (until they are migrated) and those the register names it a sending party of.
    """

    def __init__(
        self,
        parties: Iterable[Party],
        source: Path | None = None,
        register: SenderEntitlements | None = None,
    ) -> None:
        self.source = source
        self._listed: dict[str, Party] = {}
        for party in parties:
            if party.id in self._listed:
                raise DirectoryError(f"party id {party.id!r} is listed twice")
            self._listed[party.id] = party
        self._register = register
        self._by_id, self._declared = self._entitled(self._listed, register)
        self._listeners: list[Callable[[PartiesDirectory], None]] = []

    @staticmethod
    def _entitled(
        listed: dict[str, Party], register: SenderEntitlements | None
    ) -> tuple[dict[str, Party], frozenset[str]]:
        if register is None:
            by_id = dict(listed)
            return by_id, frozenset(s for p in by_id.values() for s in p.senders)
        by_id = {
            party_id: replace(party, senders=party.senders | register.senders_of(party_id))
            for party_id, party in listed.items()
        }
        declared = frozenset(s for p in listed.values() for s in p.senders)
        return by_id, declared | register.declared_ids()

    def with_senders(self, register: SenderEntitlements) -> PartiesDirectory:
        """The same parties, entitled by ``register`` (give it to :meth:`replace`)."""
        return PartiesDirectory(self._listed.values(), self.source, register)

    def resolve_sender(self, sender_id: str) -> str:
        """The canonical sender id ``sender_id`` (canonical already) stands for."""
        return self._register.resolve(sender_id) if self._register is not None else sender_id

    def on_replace(self, listener: Callable[[PartiesDirectory], None]) -> None:
        """Call ``listener`` with this directory after each :meth:`replace`."""
        self._listeners.append(listener)

    def replace(self, newer: PartiesDirectory) -> list[str]:
        """Take the contents of ``newer``; returns what changed, one line per party."""
        register = newer._register if newer._register is not None else self._register
        self._listed = dict(newer._listed)
        self._register = register
        by_id, declared = self._entitled(self._listed, register)
        changes = _describe(self._by_id, by_id)
        self._by_id, self._declared = by_id, declared
        for listener in self._listeners:
            listener(self)
        return changes

    @classmethod
    def load(cls, path: Path) -> PartiesDirectory:
        """Read and validate a directory file."""
        try:
            document = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise DirectoryError(f"cannot read the parties directory {path}: {exc}") from exc
        if not isinstance(document, dict) or not isinstance(document.get("parties"), list):
            raise DirectoryError(f"{path}: expected a mapping with a 'parties' list")
        unknown = set(document) - {"parties"}
        if unknown:
            raise DirectoryError(f"{path}: unknown top-level fields: {', '.join(sorted(unknown))}")
        return cls((_parse_party(path, i, raw) for i, raw in enumerate(document["parties"])), path)

    def get(self, party_id: str) -> Party | None:
        """Return the party with this id, or None."""
        return self._by_id.get(party_id)

    def __iter__(self):  # type: ignore[no-untyped-def]
        """Iterate over every party."""
        return iter(self._by_id.values())

    def declared_senders(self) -> list[str]:
        """Every sender some party declared, sorted (the citizen's page lists them)."""
        return sorted(self._declared)

    def is_declared(self, sender_id: str) -> bool:
        """True when some party declared this sender id."""
        return sender_id in self._declared

    def concerned_by(self, sender_id: str) -> list[Party]:
        """Every party a change in scope ``sender_id`` must reach, sorted by id."""
        return sorted(
            (p for p in self._by_id.values() if p.is_concerned_by(sender_id)), key=lambda p: p.id
        )


def describe_changes(older: PartiesDirectory, newer: PartiesDirectory) -> list[str]:
    """What a reload changes: parties added or removed, senders granted or withdrawn."""
    return _describe({p.id: p for p in older}, {p.id: p for p in newer})


def _describe(before: dict[str, Party], after: dict[str, Party]) -> list[str]:
    lines = [f"+ {i} ({after[i].name})" for i in sorted(set(after) - set(before))]
    lines += [f"- {i}" for i in sorted(set(before) - set(after))]
    for party_id in sorted(set(before) & set(after)):
        old, new = before[party_id], after[party_id]
        granted, withdrawn = new.senders - old.senders, old.senders - new.senders
        if granted:
            lines.append(f"{party_id}: senders granted {', '.join(sorted(granted))}")
        if withdrawn:
            lines.append(f"{party_id}: senders withdrawn {', '.join(sorted(withdrawn))}")
        if (new.kind, new.webhook, new.rate_limit, new.name, new.permissions) != (
            old.kind,
            old.webhook,
            old.rate_limit,
            old.name,
            old.permissions,
        ):
            lines.append(f"{party_id}: settings changed")
    return lines


def _parse_party(path: Path, index: int, raw: object) -> Party:
    """Validate one entry of the ``parties`` list."""
    where = f"{path}: parties[{index}]"
    if not isinstance(raw, dict):
        raise DirectoryError(f"{where} must be a mapping")
    unknown = set(raw) - _PARTY_FIELDS
    if unknown:
        raise DirectoryError(f"{where} has unknown fields: {', '.join(sorted(unknown))}")
    party_id, kind = raw.get("id"), raw.get("kind")
    if not isinstance(party_id, str) or not party_id:
        raise DirectoryError(f"{where} needs an id")
    if kind not in KIND_BY_NAME:
        raise DirectoryError(f"{where} ({party_id}): kind must be one of {sorted(KIND_BY_NAME)}")
    senders = raw.get("senders") or []
    if not isinstance(senders, list) or not all(isinstance(s, str | int) for s in senders):
        raise DirectoryError(f"{where} ({party_id}): senders must be a list of ids")
    canonical: list[str] = []
    for sender in senders:
        try:
            canonical.append(check_sender_id(str(sender), required=True))
        except InvalidSender as exc:
            raise DirectoryError(f"{where} ({party_id}): sender {sender!r}: {exc}") from exc
    repeated = sorted({s for s in canonical if canonical.count(s) > 1})
    if repeated:
        raise DirectoryError(f"{where} ({party_id}): senders listed twice: {', '.join(repeated)}")
    if kind in ("regulator", "platform") and senders:
        raise DirectoryError(f"{where} ({party_id}): a {kind} claims no sender")
    webhook = raw.get("webhook")
    hook = None
    if webhook is not None:
        if kind != "psva":
            raise DirectoryError(f"{where} ({party_id}): only a PSVA receives webhooks")
        if not isinstance(webhook, dict) or set(webhook) != {"url", "secret_file"}:
            raise DirectoryError(
                f"{where} ({party_id}): webhook needs exactly url and secret_file (the secret "
                "itself comes from a mounted Secret, never from the directory)"
            )
        if not str(webhook["url"]).startswith(("https://", "http://")):
            raise DirectoryError(f"{where} ({party_id}): webhook url must be http(s)")
        hook = Webhook(str(webhook["url"]), str(webhook["secret_file"]))
    rate = raw.get("rate_limit")
    if rate is not None and (not isinstance(rate, int | float) or rate <= 0):
        raise DirectoryError(f"{where} ({party_id}): rate_limit must be a positive number")
    permissions = raw.get("permissions") or []
    if not isinstance(permissions, list) or not set(permissions) <= PERMISSIONS:
        raise DirectoryError(
            f"{where} ({party_id}): permissions must be a list of {', '.join(sorted(PERMISSIONS))}"
        )
    if permissions and kind != "regulator":
        raise DirectoryError(f"{where} ({party_id}): only a regulator identity has permissions")
    return Party(
        id=party_id,
        kind=KIND_BY_NAME[kind],
        name=str(raw.get("name") or party_id),
        senders=frozenset(canonical),
        webhook=hook,
        rate_limit=float(rate) if rate is not None else DEFAULT_RATE_LIMITS[kind],
        permissions=frozenset(permissions),
    )
