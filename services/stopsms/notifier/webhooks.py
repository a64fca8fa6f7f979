"""Webhooks: changes POSTed to the PSVAs that prefer HTTP, signed, retried, and receipted.

For each PSVA with a ``webhook`` in the parties directory, one notifier replica reads
``stopsms.suppressions.v1`` from the PSVA's durable cursor (the same one ``Acknowledge`` moves),
keeps the changes the PSVA is entitled to, and POSTs them in batches: a JSON body (the protobuf
JSON mapping of a :class:`WebhookBatch`) with ``X-StopSMS-Signature: t=<unix seconds>,v1=<hex
HMAC-SHA-256 of "<t>.<body>">`` under the PSVA's secret (read from the file the directory names,
mounted from a Secret). A 2xx answer is the receipt: the cursor is acknowledged, exactly as a
stream PSVA's ``Acknowledge`` is, and that progress is what the proof reads.

Anything else is retried with exponential backoff and full jitter, the same batch again, so a
receiver that comes back gets everything it missed, in order. After a few failures in a row
the receiver is marked degraded: an error in the log and ``stopsms_webhook_degraded`` at 1,
which an alert watches. Which replica delivers to which PSVA follows the notifier's
partition assignment (the PSVA's id hashed onto a partition), so each delivery happens once.

The cases that concern the PSVA (:mod:`stopsms.notifier.cases`) go to the same URL, signed the
same way, as a ``WebhookBatch`` of ``cases`` with no change and no cursor (at least once).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import random
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import aiohttp
import mode
from google.protobuf import json_format
from prometheus_client import Counter, Gauge

from stopsms.adapters.bus import Bus
from stopsms.adapters.settings import NotifierSettings
from stopsms.domain.cursor import encode_cursor
from stopsms.domain.parties import PartiesDirectory, Party
from stopsms.domain.privacy import Pseudonymiser
from stopsms.domain.topics import Topics, is_key_change
from stopsms.notifier.cases import CaseFeed
from stopsms.notifier.changes import to_change
from stopsms.notifier.progress import Acknowledgements
from stopsms.v1 import events_pb2, notifier_pb2

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-StopSMS-Signature"
#: Receivers should refuse a signature older than this (a replayed request).
SIGNATURE_TOLERANCE_S = 300
#: Changes per POST at most.
BATCH_CHANGES = 500
POST_TIMEOUT_S = 10.0

DELIVERIES = Counter(
    "stopsms_webhook_deliveries_total",
    "Webhook POSTs, by PSVA and outcome (delivered: a 2xx answer).",
    ["party", "outcome"],
)
RETRIES = Counter(
    "stopsms_webhook_retries_total", "Webhook POSTs that had to be retried, by PSVA.", ["party"]
)
CHANGES_DELIVERED = Counter(
    "stopsms_webhook_changes_delivered_total", "Changes accepted by webhook receivers.", ["party"]
)
DEGRADED = Gauge(
    "stopsms_webhook_degraded", "1 while a PSVA's webhook keeps failing, else 0.", ["party"]
)


class SignatureError(ValueError):
    """A webhook request whose signature is missing, malformed, wrong or too old."""


def sign(secret: bytes, body: bytes, timestamp: int) -> str:
    """The ``X-StopSMS-Signature`` value of ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret, str(timestamp).encode() + b"." + body, "sha256").hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(
    secret: bytes,
    header: str,
    body: bytes,
    *,
    now: float | None = None,
    tolerance_s: int = SIGNATURE_TOLERANCE_S,
) -> int:
    """Check a webhook's signature as a receiver must; returns its timestamp.

    Several ``v1=`` values may be present while a secret is being rotated; one must match.
    """
    fields = [part.strip().partition("=") for part in header.split(",")]
    stamps = [value for key, _, value in fields if key == "t"]
    macs = [value for key, _, value in fields if key == "v1"]
    if len(stamps) != 1 or not stamps[0].isdigit() or not macs:
        raise SignatureError("malformed signature header")
    timestamp = int(stamps[0])
    if abs((time.time() if now is None else now) - timestamp) > tolerance_s:
        raise SignatureError("stale signature")
    expected = sign(secret, body, timestamp).partition(",v1=")[2]
    if not any(hmac.compare_digest(expected, mac) for mac in macs):
        raise SignatureError("signature does not match")
    return timestamp


def load_secret(path: str) -> bytes:
    """A webhook secret from its file (mounted from a Secret); the whole file, stripped."""
    secret = Path(path).read_bytes().strip()
    if len(secret) < 16:
        raise ValueError(f"webhook secret in {path} is shorter than 16 bytes")
    return secret


def owner_partition(party_id: str, partitions: int) -> int:
    """The partition whose owner delivers this PSVA's webhooks."""
    return zlib.crc32(party_id.encode()) % partitions


class WebhookSender(mode.Service):
    """Delivers to every webhook PSVA whose owner partition this replica holds."""

    def __init__(
        self,
        mine: Callable[[], set[int]],
        settings: NotifierSettings,
        directory: PartiesDirectory,
        acknowledgements: Acknowledgements,
        pseudonymiser: Pseudonymiser,
        *,
        bus: Bus,
        cases: CaseFeed | None = None,
        **kwargs: object,
    ) -> None:
        self.mine = mine
        self.cases = cases
        self.bus = bus
        self.settings = settings
        self.directory = directory
        self.acks = acknowledgements
        self.pseudonymiser = pseudonymiser
        self.topics = Topics(settings.topic_namespace)
        self._loops: dict[str, asyncio.Task[None]] = {}
        self._serving: dict[str, Party] = {}
        self._session: aiohttp.ClientSession | None = None
        super().__init__(**kwargs)  # type: ignore[arg-type]

    async def on_start(self) -> None:
        """Open the HTTP client."""
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=POST_TIMEOUT_S))

    async def on_stop(self) -> None:
        """Stop every delivery loop and close the HTTP client."""
        for task in self._loops.values():
            task.cancel()
        await asyncio.gather(*self._loops.values(), return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    def _owned(self) -> set[str]:
        mine = self.mine()
        return {
            party.id
            for party in self.directory
            if party.is_psva
            and party.webhook is not None
            and owner_partition(party.id, self.settings.partitions) in mine
        }

    @mode.Service.task
    async def _supervise(self) -> None:
        """Start and stop delivery loops as partitions move between replicas."""
        while not self.should_stop:
            owned = self._owned()
            for party_id in set(self._loops) - owned:
                self._loops.pop(party_id).cancel()
                log.info("webhooks of %s are now delivered by another replica", party_id)
            for party_id, task in list(self._loops.items()):
                # a loop that failed (say, a missing secret) starts again, and one whose party
                # changed in a reloaded directory starts again with the new settings
                if task.done() or self.directory.get(party_id) != self._serving.get(party_id):
                    task.cancel()
                    del self._loops[party_id]
            for party_id in owned - set(self._loops):
                party = self.directory.get(party_id)
                if party is not None:
                    self._serving[party_id] = party
                    self._loops[party_id] = asyncio.create_task(self._deliver_forever(party))
            await self.sleep(1.0)

    async def _deliver_forever(self, party: Party) -> None:
        assert party.webhook is not None
        try:
            secret = load_secret(party.webhook.secret_file)
        except (OSError, ValueError) as exc:
            log.error("webhook of %s cannot be signed: %s", party.id, exc)
            DEGRADED.labels(party.id).set(1)
            await asyncio.sleep(30)
            return
        if self.cases is not None:
            notices = asyncio.create_task(self._deliver_cases(party, secret))
        try:
            await self._deliver_changes(party, secret)
        finally:
            if self.cases is not None:
                notices.cancel()

    async def _deliver_cases(self, party: Party, secret: bytes) -> None:
        """POST each case that concerns the PSVA, in a batch of cases (at least once)."""
        assert self.cases is not None
        cases = self.cases.cases_of(party.id)
        try:
            async for case in cases:
                await self._post_until_accepted(
                    party, secret, notifier_pb2.WebhookBatch(party_id=party.id, cases=[case])
                )
                log.info("case %s posted to %s", case.reference, party.id)
        finally:
            await cases.aclose()  # type: ignore[attr-defined]

    async def _deliver_changes(self, party: Party, secret: bytes) -> None:
        """POST the changes the PSVA is entitled to, from its durable cursor, acknowledging each."""
        topic = self.topics.suppressions
        positions = await self.acks.durable(party.id)
        reader = self.bus.reader(
            topic,
            start_offsets=positions,
            client_id=f"stopsms-webhook-{party.id}",
            max_records=BATCH_CHANGES,
        )
        await reader.start()
        log.info("delivering webhooks to %s from %s", party.id, positions or "the beginning")
        try:
            while True:
                records = await reader.read(timeout_ms=200)
                if not records:
                    continue
                changes = []
                for record in records:
                    positions[record.partition] = record.offset + 1
                    if record.value is None:
                        continue
                    change = events_pb2.SuppressionChanged.FromString(record.value)
                    if is_key_change(change.subject):
                        continue  # for operators, who unseal; a PSVA receives numbers in clear
                    if party.is_concerned_by(change.sender_id):
                        changes.append(to_change(change, self.pseudonymiser))
                if changes:
                    batch = notifier_pb2.WebhookBatch(
                        party_id=party.id, changes=changes, cursor=encode_cursor(positions)
                    )
                    await self._post_until_accepted(party, secret, batch)
                # Acknowledged only now: what is not accepted is sent again, from here.
                await self.acks.acknowledge(party, dict(positions))
        finally:
            await reader.stop()

    async def _post_until_accepted(
        self, party: Party, secret: bytes, batch: notifier_pb2.WebhookBatch
    ) -> None:
        assert party.webhook is not None and self._session is not None
        body = json_format.MessageToJson(batch, indent=None).encode()
        failures = 0
        while True:
            timestamp = int(time.time())
            headers = {
                "Content-Type": "application/json",
                SIGNATURE_HEADER: sign(secret, body, timestamp),
            }
            try:
                async with self._session.post(
                    party.webhook.url, data=body, headers=headers
                ) as response:
                    accepted = 200 <= response.status < 300
                    why = f"HTTP {response.status}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                accepted, why = False, f"{type(exc).__name__}"
            if accepted:
                DELIVERIES.labels(party.id, "delivered").inc()
                CHANGES_DELIVERED.labels(party.id).inc(len(batch.changes))
                if failures >= self.settings.webhook_degraded_after:
                    log.warning("webhook of %s is back: caught up", party.id)
                DEGRADED.labels(party.id).set(0)
                return
            failures += 1
            DELIVERIES.labels(party.id, "failed").inc()
            RETRIES.labels(party.id).inc()
            if failures == self.settings.webhook_degraded_after:
                DEGRADED.labels(party.id).set(1)
                log.error(
                    "webhook of %s failed %d times in a row (%s): marked degraded; retrying",
                    party.id,
                    failures,
                    why,
                )
            else:
                log.info("webhook of %s failed (%s); retry %d", party.id, why, failures)
            ceiling = min(
                self.settings.webhook_retry_cap_seconds,
                self.settings.webhook_retry_base_seconds * 2**failures,
            )
            await asyncio.sleep(random.uniform(0, ceiling))  # full jitter
