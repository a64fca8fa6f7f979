"""A PSVA's client: scrub a list before a campaign, then follow and acknowledge changes.

python examples/psva_client.py --party atlas-sms --sender JUMIA 0612345678 0700000000
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from stopsms.adapters.clients import party_channel
from stopsms.v1 import (
    notifier_pb2,
    notifier_pb2_grpc,
    registry_pb2,
    registry_pb2_grpc,
)


async def main() -> None:
    parser = argparse.ArgumentParser(description="Scrub a list, then follow changes.")
    parser.add_argument("--registry", default="127.0.0.1:50052")
    parser.add_argument("--notifier", default="127.0.0.1:50053")
    parser.add_argument("--party", default="atlas-sms")
    parser.add_argument("--sender", default="JUMIA")
    parser.add_argument(
        "--tls", type=Path, default=Path(".stopsms/tls"), help="CA and certificates"
    )
    parser.add_argument("numbers", nargs="*")
    args = parser.parse_args()

    channel, metadata = party_channel(args.registry, args.party, args.tls)
    async with channel:
        registry = registry_pb2_grpc.RegistryServiceStub(channel)

        async def chunks():
            for start in range(0, len(args.numbers), 10_000):
                yield registry_pb2.CheckBatchRequest(
                    sender_id=args.sender, msisdns=args.numbers[start : start + 10_000]
                )

        offset = 0
        async for reply in registry.CheckBatch(chunks(), metadata=metadata):
            for result in reply.results:
                print(args.numbers[offset], registry_pb2.Verdict.Name(result.verdict))
                offset += 1

    channel, metadata = party_channel(args.notifier, args.party, args.tls)
    async with channel:
        notifier = notifier_pb2_grpc.NotifierServiceStub(channel)
        async for response in notifier.WatchChanges(
            notifier_pb2.WatchChangesRequest(), metadata=metadata
        ):
            if response.HasField("change"):
                change = response.change
                print("change:", change.msisdn, change.sender_id or "*", change.state)
            # Apply the change to the campaign system first, then acknowledge. (A PSVA that
            # acknowledges many times a second writes its cursors on one AcknowledgeStream call.)
            await notifier.Acknowledge(
                notifier_pb2.AcknowledgeRequest(cursor=response.cursor), metadata=metadata
            )


if __name__ == "__main__":
    asyncio.run(main())
