r"""An operator delivering StopSMS messages to its subscribers, as in docs/operators.md.

Reads ``stopsms.outbound.v1`` with the group ``stopsms.operator.<id>.outbound`` and delivers
each message that is this operator's: those naming it (it forwarded the citizen's reply), and
those naming no operator whose number it serves. The number, and the text of a one-time code,
are unsealed with the data key received at onboarding. A message past its ``expires_time`` is
dropped; a message already delivered (its ``message_id`` is in the local store) is not sent
again; the Kafka offset is committed after the poll's messages were delivered and recorded.

The SMS itself goes through a pluggable sender: replace :class:`ConsoleSender` with your SMSC
client (SMPP ``submit_sm`` from the platform's short code).

    python examples/operator_outbound.py --bootstrap 127.0.0.1:9092 --operator iam \
        --data-key .stopsms/keys/data.key --store outbound.db
"""

from __future__ import annotations

import argparse
import signal
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from kafka import KafkaConsumer

from stopsms.v1 import events_pb2

SCHEMA = "CREATE TABLE IF NOT EXISTS delivered (message_id TEXT PRIMARY KEY, at_ms INTEGER)"


class SmsSender(Protocol):
    """How the operator's network delivers one SMS to its subscriber."""

    def send(self, msisdn: str, text: str) -> None:
        """Send ``text`` to ``msisdn`` (E.164); raise if the network did not take it."""


class ConsoleSender:
    """A sender for trying the example: prints each SMS."""

    def send(self, msisdn: str, text: str) -> None:
        """Print the SMS."""
        print(f"SMS to {msisdn}: {text}", flush=True)


def deliver_forever(
    consumer: KafkaConsumer,
    operator_id: str,
    ciphers: dict[str, AESGCM],
    sender: SmsSender,
    store: sqlite3.Connection,
    serves: Callable[[str], bool],
    stopping: list[int],
) -> int:
    """Deliver this operator's messages until ``stopping`` is not empty; how many were sent."""

    def unseal(sealed: events_pb2.SealedMsisdn | events_pb2.SealedText) -> str:
        cipher = ciphers.get(sealed.key_id)
        if cipher is None:
            raise SystemExit(f"data key {sealed.key_id!r} needed; ask StopSMS")
        return cipher.decrypt(sealed.nonce, sealed.ciphertext, None).decode()

    sent = 0
    while not stopping:
        batches = consumer.poll(timeout_ms=500, max_records=500)
        if not batches:
            continue
        for records in batches.values():
            for record in records:
                if record.value is None:
                    continue
                message = events_pb2.OutboundMessage.FromString(record.value)
                if message.expires_time.seconds and message.expires_time.seconds < time.time():
                    continue  # a code that expired, a confirmation days late: not sent
                msisdn = unseal(message.sealed_msisdn)
                ours = message.operator_id == operator_id or (
                    not message.operator_id and serves(msisdn)
                )
                if not ours:
                    continue
                already = store.execute(
                    "SELECT 1 FROM delivered WHERE message_id = ?", (message.message_id,)
                ).fetchone()
                if already:
                    continue
                text = (
                    unseal(message.sealed_text) if message.HasField("sealed_text") else message.text
                )
                sender.send(msisdn, text)
                with store:
                    store.execute(
                        "INSERT INTO delivered VALUES (?, ?)",
                        (message.message_id, int(time.time() * 1000)),
                    )
                sent += 1
        consumer.commit()  # after every message of the poll was sent and recorded
    return sent


def main() -> None:
    """Deliver until interrupted."""
    parser = argparse.ArgumentParser(description="Deliver StopSMS's messages to subscribers.")
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--operator", default="iam")
    parser.add_argument("--topic", default="stopsms.outbound.v1")
    parser.add_argument("--data-key", type=Path, action="append")
    parser.add_argument("--store", type=Path, default=Path("outbound.db"))
    parser.add_argument(
        "--serves-prefix",
        action="append",
        help="E.164 prefixes this operator serves, for messages that name no operator "
        "(default: every number; a real operator asks its subscriber base)",
    )
    parser.add_argument("--tls-ca", help="the platform's CA (PEM), for its TLS listener")
    parser.add_argument("--tls-cert", help="this operator's client certificate (PEM)")
    parser.add_argument("--tls-key", help="this operator's private key (PEM)")
    args = parser.parse_args()

    ciphers = {}
    for path in args.data_key or [Path(".stopsms/keys/data.key")]:
        key_id, _, secret = path.read_text().strip().partition(":")
        ciphers[key_id] = AESGCM(bytes.fromhex(secret))
    prefixes = tuple(args.serves_prefix or ["+"])
    store = sqlite3.connect(args.store)
    store.execute(SCHEMA)
    tls = (
        {
            "security_protocol": "SSL",
            "ssl_cafile": args.tls_ca,
            "ssl_certfile": args.tls_cert,
            "ssl_keyfile": args.tls_key,
        }
        if args.tls_ca
        else {}
    )
    consumer = KafkaConsumer(
        args.topic,
        bootstrap_servers=args.bootstrap,
        group_id=f"stopsms.operator.{args.operator}.outbound",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **tls,
    )
    stopping: list[int] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: stopping.append(signum))
    try:
        sent = deliver_forever(
            consumer,
            args.operator,
            ciphers,
            ConsoleSender(),
            store,
            lambda msisdn: msisdn.startswith(prefixes),
            stopping,
        )
        print(f"{sent} messages delivered", flush=True)
    finally:
        consumer.close()
        store.close()


if __name__ == "__main__":
    main()
