"""An operator's consumer of the StopSMS suppression list (kafka-python).

Reads ``stopsms.suppressions.v1`` with the group ``stopsms.operator.<id>`` from offset 0 (the
compacted topic is the full current list), unseals each number with the data key the operator
received at onboarding, applies the change to its own store, and commits only after applying:
the committed offset is the operator's receipt.

    python examples/operator_consumer.py --bootstrap 127.0.0.1:9092 --operator iam \
        --data-key .stopsms/keys/data.key
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from kafka import KafkaConsumer

from stopsms.v1 import events_pb2


def main() -> None:
    parser = argparse.ArgumentParser(description="Follow the StopSMS suppression list.")
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--operator", default="iam")
    parser.add_argument("--data-key", type=Path, default=Path(".stopsms/keys/data.key"))
    args = parser.parse_args()

    key_id, _, secret = args.data_key.read_text().strip().partition(":")
    cipher = AESGCM(bytes.fromhex(secret))
    suppressed: dict[tuple[str, str], bool] = {}  # the operator's own store, here in memory

    consumer = KafkaConsumer(
        "stopsms.suppressions.v1",
        bootstrap_servers=args.bootstrap,
        group_id=f"stopsms.operator.{args.operator}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    try:
        while True:
            batch = consumer.poll(timeout_ms=1000)
            for records in batch.values():
                for record in records:
                    if record.value is None:  # erasure at the end of retention
                        continue
                    change = events_pb2.SuppressionChanged.FromString(record.value)
                    sealed = change.sealed_msisdn
                    if sealed.key_id != key_id:
                        raise SystemExit(f"change sealed with unknown key {sealed.key_id}")
                    msisdn = cipher.decrypt(sealed.nonce, sealed.ciphertext, None).decode()
                    scope = change.sender_id or "*"
                    suppressed[(msisdn, scope)] = change.state == events_pb2.STATE_SUPPRESSED
                    print(f"{msisdn} {scope} {events_pb2.State.Name(change.state)}", flush=True)
            if batch:
                consumer.commit()  # after applying: this is the receipt
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()


if __name__ == "__main__":
    main()
