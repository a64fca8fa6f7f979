"""The evidence of a case: each complaint's timeline, the pack a prosecutor reads, its signature.

A complaint's timeline puts the platform's records in the order a court reads them: the
citizen asked to stop, the platform decided it, each concerned party applied it, then the
message arrived anyway, then the citizen complained. Every step is dated from a record on a
topic (the proof of propagation, the complaint), never from a clock at export time.

The pack is the case as JSON (canonical: sorted keys, so the same evidence gives the same
bytes) and as a PDF, each with a detached Ed25519 signature by the platform's export key
(:class:`ExportSigner`). :func:`verify` checks a document against its signature file and the
platform's public key: one changed byte fails it. Numbers appear masked
(:func:`mask_number`) unless the regulator asked for the prosecutor's copy in full.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from google.protobuf.json_format import MessageToDict

from stopsms.v1 import events_pb2, regulator_pb2

SIGNATURE_ALGORITHM = "Ed25519"
MASK = "\u2022"  # •

FINDING_LABELS = {
    events_pb2.COMPLAINT_FINDING_SENT_AFTER_OPT_OUT: "Envoyé après l'opposition",
    events_pb2.COMPLAINT_FINDING_UNDECLARED_SENDER: "Expéditeur non déclaré",
    events_pb2.COMPLAINT_FINDING_SENDER_SUSPENDED: "Expéditeur suspendu",
    events_pb2.COMPLAINT_FINDING_NO_STOPSMS_MENTION: "Sans mention StopSMS",
    events_pb2.COMPLAINT_FINDING_NO_FINDING: "Aucun manquement",
}


def mask_number(e164: str) -> str:
    """A number as the regulator's documents show it: ``+212 6•• •• •• 78``.

    The country code, the first digit (mobile or not) and the last two digits stay; every
    other digit is masked, grouped as people write numbers.
    """
    if not e164.startswith("+") or not e164[1:].isdigit() or len(e164) < 8:
        return MASK * 4
    if e164.startswith("+212") and len(e164) == 13:
        national = e164[4:]
        return f"+212 {national[0]}{MASK * 2} {MASK * 2} {MASK * 2} {national[-2:]}"
    country, rest = e164[:4], e164[4:]
    return f"{country} {MASK * (len(rest) - 2)}{rest[-2:]}"


def _ts(ms: int) -> str:
    """A time as the documents write it: ISO 8601, UTC, to the millisecond."""
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


def _gap(ms: int) -> str:
    """A duration in words (French), for the timeline's lines."""
    seconds = abs(ms) / 1000
    if seconds < 120:
        text = f"{seconds:.1f} s"
    elif seconds < 7200:
        text = f"{seconds / 60:.0f} min"
    elif seconds < 172_800:
        text = f"{seconds / 3600:.1f} h"
    else:
        text = f"{seconds / 86400:.1f} jours"
    return text


def timeline(
    complaint: events_pb2.ComplaintFiled,
    assessment: events_pb2.ComplaintAssessed,
    proof: events_pb2.PropagationRecord | None,
) -> list[regulator_pb2.TimelineEvent]:
    """The complaint's evidence in time order (steps with the same time keep this order)."""
    steps: list[tuple[int, int, regulator_pb2.TimelineEvent]] = []

    def step(ms: int, kind: int, detail: str, party_id: str = "") -> None:
        event = regulator_pb2.TimelineEvent(kind=kind, party_id=party_id, detail=detail)
        event.time.FromMilliseconds(ms)
        steps.append((ms, len(steps), event))

    received_ms = complaint.received_time.ToMilliseconds()
    if assessment.opt_out_event_id:
        scope = "tous les messages" if assessment.opt_out_scope == "*" else assessment.opt_out_scope
        if proof is not None and proof.HasField("action_time"):
            step(
                proof.action_time.ToMilliseconds(),
                regulator_pb2.TIMELINE_EVENT_KIND_OPT_OUT_REQUESTED,
                f"Le citoyen demande l'arrêt ({scope}), référence {assessment.opt_out_event_id}",
                proof.origin_party_id,
            )
        step(
            assessment.opt_out_decided_time.ToMilliseconds(),
            regulator_pb2.TIMELINE_EVENT_KIND_OPT_OUT_DECIDED,
            f"StopSMS enregistre l'opposition ({scope}), "
            f"{_gap(assessment.decided_before_message_ms)} avant le message",
        )
        for applied in assessment.applied:
            if not applied.HasField("applied_time"):
                continue
            before = applied.applied_before_message_ms
            when = "avant" if before >= 0 else "après"
            step(
                applied.applied_time.ToMilliseconds(),
                regulator_pb2.TIMELINE_EVENT_KIND_PARTY_APPLIED,
                f"{applied.party_id} applique l'opposition, {_gap(before)} {when} le message",
                applied.party_id,
            )
    origin = complaint.sender_id or ("un numéro de téléphone" if complaint.origin_subject else "?")
    step(
        received_ms,
        regulator_pb2.TIMELINE_EVENT_KIND_MESSAGE_RECEIVED,
        f"Le message de {origin} arrive au citoyen",
    )
    step(
        complaint.filed_time.ToMilliseconds(),
        regulator_pb2.TIMELINE_EVENT_KIND_COMPLAINT_FILED,
        f"Plainte {complaint.reference} : {FINDING_LABELS.get(assessment.finding, '?')}",
        complaint.party_id,
    )
    return [event for _, _, event in sorted(steps, key=lambda s: (s[0], s[1]))]


def pack_json(
    case: events_pb2.Case,
    complaints: Sequence[regulator_pb2.CaseComplaint],
    *,
    generated_ms: int,
    generated_by: str,
    key_id: str,
    full_numbers: bool,
) -> bytes:
    """The evidence pack as canonical JSON (sorted keys, UTF-8, one trailing newline)."""
    document = {
        "format": "stopsms.evidence-pack.v1",
        "generated_time": _ts(generated_ms),
        "generated_by": generated_by,
        "signing_key_id": key_id,
        "numbers": "full" if full_numbers else "masked",
        "case": MessageToDict(case, preserving_proto_field_name=True),
        "complaints": [MessageToDict(c, preserving_proto_field_name=True) for c in complaints],
    }
    return (json.dumps(document, ensure_ascii=False, sort_keys=True, indent=1) + "\n").encode()


def pack_lines(
    case: events_pb2.Case,
    complaints: Sequence[regulator_pb2.CaseComplaint],
    *,
    generated_ms: int,
    generated_by: str,
    key_id: str,
    full_numbers: bool,
) -> list[str]:
    """The evidence pack as the lines of the PDF (French)."""
    kind = (
        "Expéditeur déclaré"
        if case.kind == events_pb2.CASE_KIND_DECLARED_SENDER
        else "Secteur informel (expéditeur non déclaré)"
    )
    opened = (
        "une plainte pour un message reçu après l'opposition"
        if case.opened_by == events_pb2.CASE_OPENING_SENT_AFTER_OPT_OUT
        else "le seuil de plaintes atteint"
    )
    lines = [
        f"# StopSMS - dossier {case.reference}",
        "",
        f"Dossier : {case.case_id}",
        f"Nature : {kind}",
        f"Expéditeur : {case.sender_id or 'numéro de téléphone (masqué)'}",
        f"Parties concernées : {', '.join(case.party_ids) or '-'}",
        f"Ouvert le {_ts(case.opened_time.ToMilliseconds())} par {opened}",
        f"Plaintes : {case.complaint_count}",
    ]
    for count in case.findings:
        lines.append(f"  - {FINDING_LABELS.get(count.finding, '?')} : {count.count}")
    lines += [
        f"Numéros : {'en clair (copie du parquet)' if full_numbers else 'masqués'}",
        f"Établi le {_ts(generated_ms)} pour {generated_by}, signé (clé {key_id})",
    ]
    for complaint in complaints:
        assessed = complaint.assessment
        lines += [
            "",
            f"## Plainte {assessed.reference}",
            f"Plaignant : {complaint.complainant}   Origine : {complaint.origin}",
            f"Reçue par : {complaint.party_id}   Canal : "
            f"{events_pb2.Channel.Name(complaint.channel).removeprefix('CHANNEL_')}",
            f"Constat : {', '.join(FINDING_LABELS.get(f, '?') for f in assessed.findings)}",
            f"Mention StopSMS : {'oui' if assessed.mention_present else 'non'}   "
            f"Lien StopSMS valide : {'oui' if assessed.link_valid else 'non'}",
            f"Texte : {complaint.text}",
        ]
        if complaint.screenshot_sha256:
            lines.append(f"Capture d'écran (SHA-256) : {complaint.screenshot_sha256}")
        lines.append("Chronologie :")
        for event in complaint.timeline:
            lines.append(f"  {_ts(event.time.ToMilliseconds())}  {event.detail}")
    return lines


# --- the PDF ------------------------------------------------------------------------------


def _pdf_text(text: str) -> bytes:
    """A line as a PDF string in WinAnsi (Latin-1 plus the bullet); other letters as '?'."""
    out = bytearray()
    for char in text:
        if char == MASK:
            out.append(0x95)  # the bullet in WinAnsiEncoding
        elif ord(char) < 256:
            out.append(ord(char))
        else:
            out.append(ord("?"))
    return bytes(out).replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)")


def _wrapped(lines: Iterable[str], width: int = 95) -> list[str]:
    """Long lines cut at spaces so that each fits the page."""
    out: list[str] = []
    for line in lines:
        indent = len(line) - len(line.lstrip())
        while len(line) > width:
            cut = line.rfind(" ", indent + 1, width)
            cut = cut if cut > indent else width
            out.append(line[:cut])
            line = " " * (indent + 4) + line[cut:].lstrip()
        out.append(line)
    return out


def pdf_document(lines: Sequence[str], title: str) -> bytes:
    """A plain A4 PDF of text lines: Helvetica 9 pt, 64 lines a page; ``# `` lines as titles.

    Written by hand (the PDF 1.4 structure is small) so that the pack needs no rendering
    library and the same evidence always gives the same bytes. Text other than Latin-1
    (Arabic) is replaced by '?' in the PDF; the JSON beside it holds it exactly.
    """
    per_page, pages = 64, []
    wrapped = _wrapped(lines)
    for start in range(0, max(len(wrapped), 1), per_page):
        pages.append(wrapped[start : start + per_page])
    objects: list[bytes] = []
    n_pages = len(pages)
    # 1: catalog, 2: pages, 3: font, 4: bold font, then per page: page, content; last: info
    kids = " ".join(f"{5 + 2 * i} 0 R" for i in range(n_pages))
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {n_pages} >>".encode())
    objects.append(
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>"
    )
    objects.append(
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica-Bold /Encoding /WinAnsiEncoding >>"
    )
    for number, page in enumerate(pages, start=1):
        stream = bytearray(b"BT\n")
        y = 800
        for line in page:
            bold = line.startswith("#")
            text = line.lstrip("#").strip() if bold else line
            font = b"/F2 11" if bold else b"/F1 9"
            stream += b"%s Tf 1 0 0 1 40 %d Tm (%s) Tj\n" % (font, y, _pdf_text(text))
            y -= 12
        stream += b"/F1 8 Tf 1 0 0 1 40 30 Tm (%s) Tj\nET" % _pdf_text(
            f"{title} - page {number}/{n_pages}"
        )
        content_ref = 6 + 2 * (number - 1)
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] "
            b"/Resources << /Font << /F1 3 0 R /F2 4 0 R >> >> /Contents %d 0 R >>" % content_ref
        )
        objects.append(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), bytes(stream)))
    objects.append(b"<< /Title (%s) /Producer (StopSMS) >>" % _pdf_text(title))
    info = len(objects)
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for index, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (index, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R /Info %d 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        info,
        xref,
    )
    return bytes(out)


# --- signatures ---------------------------------------------------------------------------


class SignatureError(ValueError):
    """A document does not match its signature, or the signature file is unreadable."""


@dataclass(frozen=True)
class ExportSigner:
    """The platform's export key: signs evidence packs; its public half verifies them."""

    key_id: str
    private_key: Ed25519PrivateKey

    @classmethod
    def load(cls, path: Path, *, generate: bool = False) -> ExportSigner:
        """Read the key (PEM, PKCS#8); with ``generate``, make one when the file is missing.

        The key id is the first 16 hex digits of the public key's SHA-256, so a verifier can
        tell which published key to use.
        """
        if not path.exists():
            if not generate:
                raise SignatureError(f"export signing key {path} does not exist")
            path.parent.mkdir(parents=True, exist_ok=True)
            pem = Ed25519PrivateKey.generate().private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            path.write_bytes(pem)
            path.chmod(0o600)
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise SignatureError(f"{path}: the export signing key must be Ed25519")
        return cls(key_id(key.public_key()), key)

    def public_pem(self) -> bytes:
        """The public key, PEM: what the regulator publishes for verifying packs."""
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def sign(self, document: bytes, name: str) -> bytes:
        """The detached signature file of ``document`` (JSON)."""
        signature = self.private_key.sign(document)
        return (
            json.dumps(
                {
                    "algorithm": SIGNATURE_ALGORITHM,
                    "document": name,
                    "key_id": self.key_id,
                    "sha256": hashlib.sha256(document).hexdigest(),
                    "signature": base64.b64encode(signature).decode(),
                },
                indent=1,
                sort_keys=True,
            )
            + "\n"
        ).encode()


def key_id(public_key: Ed25519PublicKey) -> str:
    """A public key's id: 16 hex digits of the SHA-256 of its raw bytes."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def load_public_key(pem: bytes) -> Ed25519PublicKey:
    """A published export key (PEM)."""
    key = serialization.load_pem_public_key(pem)
    if not isinstance(key, Ed25519PublicKey):
        raise SignatureError("the export key must be an Ed25519 public key")
    return key


def verify(document: bytes, signature_file: bytes, public_key: Ed25519PublicKey) -> str:
    """Check a document against its signature file; return the key id, or raise SignatureError."""
    try:
        signed = json.loads(signature_file)
        signature = base64.b64decode(signed["signature"], validate=True)
        algorithm, signed_key_id = signed["algorithm"], signed["key_id"]
    except (ValueError, KeyError, TypeError) as exc:
        raise SignatureError(f"the signature file is unreadable: {exc}") from exc
    if algorithm != SIGNATURE_ALGORITHM:
        raise SignatureError(f"unknown signature algorithm {algorithm!r}")
    if signed_key_id != key_id(public_key):
        raise SignatureError(
            f"signed with key {signed_key_id}, but the key given is {key_id(public_key)}"
        )
    try:
        public_key.verify(signature, document)
    except InvalidSignature as exc:
        digest = hashlib.sha256(document).hexdigest()
        changed = "" if digest == signed.get("sha256") else " (its SHA-256 differs)"
        raise SignatureError(f"the document does not match its signature{changed}") from exc
    return str(signed_key_id)
