r"""An operator's consumer of the StopSMS suppression list (kafka-python), as in docs/operators.md.

Reads ``stopsms.suppressions.v1`` with the group ``stopsms.operator.<id>``. A new group starts
at offset 0: the topic is compacted, so reading it from the start bootstraps the full current
list. Each number is unsealed with the data key the operator received at onboarding, and the
change is applied to a local SQLite store; a tombstone (an erasure, at the end of a person's
retention) removes the entry its key names. Only after the store's transaction has committed is
the Kafka offset committed: the committed offset is the operator's receipt, so the platform
never counts a change as applied that is not applied. When StopSMS retires a data key, it
re-publishes the decisions sealed under it under the current key (same versions), then a
key-change record (``key_change`` set) says from when the old key may be dropped. When StopSMS
re-keys its pseudonyms, every decision in force is published again under its new subject (same
version, ``previous_subject`` set): the row stays, only its record key moves, and the old
subject's tombstones at the end of the re-keying then name no row.

    python examples/operator_consumer.py --bootstrap 127.0.0.1:9092 --operator iam \
        --data-key .stopsms/keys/data.key --store suppressions.db
    # against the platform's TLS listener:
    python examples/operator_consumer.py --bootstrap kafka.stopsms.ma:9093 --operator iam \
        --data-key /secrets/data.key --tls-ca ca.pem --tls-cert iam.pem --tls-key iam.key
"""

from __future__ import annotations

import argparse
import signal
import sqlite3
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from kafka import KafkaConsumer

from stopsms.v1 import events_pb2

SCHEMA = """
CREATE TABLE IF NOT EXISTS suppression (
    msisdn TEXT NOT NULL,           -- E.164
    sender_id TEXT NOT NULL,        -- '' for every marketing sender (global)
    suppressed INTEGER NOT NULL,    -- 1: do not send; 0: an explicit opt-back-in
    version INTEGER NOT NULL,       -- the registry's per-subject version: newer wins
    since_ms INTEGER NOT NULL,
    record_key TEXT NOT NULL,       -- the record's Kafka key: an erasure names only this
    PRIMARY KEY (msisdn, sender_id)
);
CREATE INDEX IF NOT EXISTS suppression_by_key ON suppression (record_key);
"""

UPSERT = """
INSERT INTO suppression VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (msisdn, sender_id) DO UPDATE SET
    suppressed = excluded.suppressed, version = excluded.version, since_ms = excluded.since_ms,
    record_key = excluded.record_key
WHERE excluded.version > suppression.version
   OR (excluded.version = suppression.version AND ?)
"""

#: An erasure: a record with a key and no value (a tombstone). StopSMS writes one for each
#: scope of a person whose retention ended with no opt-out in force; the entry is forgotten.
ERASE = "DELETE FROM suppression WHERE record_key = ?"


def may_send(store: sqlite3.Connection, msisdn: str, sender_id: str) -> bool:
    """The rule of DOMAIN.md: the sender's record, else the global one if it is newer."""
    rows = dict(
        ((s, (sup, v)) for s, sup, v in store.execute(
            "SELECT sender_id, suppressed, version FROM suppression "
            "WHERE msisdn = ? AND sender_id IN (?, '')",
            (msisdn, sender_id),
        ))
    )  # fmt: skip
    own, everyone = rows.get(sender_id), rows.get("")
    if own and own[0]:
        return False
    return not (everyone and everyone[0] and (own is None or own[1] < everyone[1]))


def announce_key_change(change: events_pb2.KeyChange) -> None:
    """A data key is retired: no decision in force is sealed under it any more.

    Records re-sealed under the current key arrive before this one (same version: applying
    them changes nothing). Older records sealed under the retired key stay on the topic until
    compaction removes them, so keep the key until ``retire_after``: a new consumer reading the
    topic from the start may still meet them.
    """
    after = change.retire_after.ToDatetime().date().isoformat()
    print(
        f"data key {change.retired_key_id} retired ({change.resealed} decisions re-sealed under "
        f"{change.current_key_id}); drop it from your secret store after {after}",
        flush=True,
    )


def main() -> None:
    """Follow the list until interrupted."""
    parser = argparse.ArgumentParser(description="Follow the StopSMS suppression list.")
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--operator", default="iam")
    parser.add_argument("--topic", default="stopsms.suppressions.v1")
    parser.add_argument(
        "--data-key",
        type=Path,
        action="append",
        help="a data key file (repeat it after a rotation: old records keep the old key)",
    )
    parser.add_argument("--store", type=Path, default=Path("suppressions.db"))
    parser.add_argument("--tls-ca", help="the platform's CA (PEM), for its TLS listener")
    parser.add_argument("--tls-cert", help="this operator's client certificate (PEM)")
    parser.add_argument("--tls-key", help="this operator's private key (PEM)")
    args = parser.parse_args()

    ciphers = {}
    for path in args.data_key or [Path(".stopsms/keys/data.key")]:
        key_id, _, secret = path.read_text().strip().partition(":")
        ciphers[key_id] = AESGCM(bytes.fromhex(secret))
    store = sqlite3.connect(args.store)
    store.executescript(SCHEMA)
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
        group_id=f"stopsms.operator.{args.operator}",
        auto_offset_reset="earliest",  # a new operator bootstraps the whole list
        enable_auto_commit=False,
        **tls,
    )
    # Ctrl-C or SIGTERM stops between two polls, never inside the client's network I/O, so
    # the store's last transaction and the last commit are whole and close() is prompt.
    stopping: list[int] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: stopping.append(signum))
    applied = 0
    try:
        while not stopping:
            batches = consumer.poll(timeout_ms=500, max_records=5000)
            if not batches:
                continue
            with store:  # one transaction per poll
                for records in batches.values():
                    for record in records:
                        if record.value is None:  # erasure: forget what the key named
                            store.execute(ERASE, (record.key.decode(),))
                            applied += 1
                            continue
                        change = events_pb2.SuppressionChanged.FromString(record.value)
                        if change.HasField("key_change"):
                            announce_key_change(change.key_change)
                            continue
                        sealed = change.sealed_msisdn
                        cipher = ciphers.get(sealed.key_id)
                        if cipher is None:
                            raise SystemExit(f"data key {sealed.key_id!r} needed; ask StopSMS")
                        msisdn = cipher.decrypt(sealed.nonce, sealed.ciphertext, None).decode()
                        store.execute(
                            UPSERT,
                            (
                                msisdn,
                                change.sender_id,
                                int(change.state == events_pb2.STATE_SUPPRESSED),
                                change.version,
                                change.action_time.ToMilliseconds(),
                                record.key.decode(),
                                # A moved decision (same version, new subject) takes the row
                                # over, so the old subject's tombstone at the end of a
                                # pseudonym re-keying erases nothing.
                                bool(change.previous_subject),
                            ),
                        )
                        applied += 1
            consumer.commit()  # after the store committed: this is the receipt
            print(f"{applied} changes applied", flush=True)
    finally:
        consumer.close()
        store.close()


if __name__ == "__main__":
    main()
