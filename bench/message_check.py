"""The campaign check: ``CheckMessages`` of 10,000 texts against the same regex work in a loop.

The service (intake's ``SenderRegistryService``, served over gRPC in this process, with the
register and the link directory in memory as every replica holds them) checks a campaign of
10,000 texts: French and Arabic, with the reply mention, a StopSMS link issued for the sender,
another sender's link, or no mention at all. The raw baseline is a bare loop doing the same
regex work on the same texts (the mention forms, the URL scan, the GSM-7 test): what the check
costs at the least. Goal (the sender-register issue): ``message_checks_per_s`` ≥ 0.5 of it.

    python -m bench.message_check [--texts 10000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import time

import grpc

from bench.results import figure, record
from stopsms.adapters.bus import InMemoryBus, InMemoryPublisher
from stopsms.adapters.identity import PARTY_HEADER, AuditTrail, Authenticator
from stopsms.adapters.link_store import InMemoryLinkStore, LinkDirectory, LinkSealer
from stopsms.adapters.sender_register import SenderRegisterFollower
from stopsms.adapters.serving import GrpcEndpoint, servicer_registration
from stopsms.domain import message_check, messages
from stopsms.domain.message_check import LinkSite
from stopsms.domain.privacy import Key, Pseudonymiser
from stopsms.domain.topics import Topics
from stopsms.intake.answers import InMemoryAnswerStore
from stopsms.intake.links import new_code
from stopsms.intake.senders import SenderRegistryServicer
from stopsms.tools.senders import local_directory
from stopsms.v1 import events_pb2, senders_pb2, senders_pb2_grpc

SITE = "https://stopsms.ma/"


def campaign(count: int, own: list[str], foreign: str) -> list[str]:
    """``count`` texts of a realistic campaign, varied so no two are equal."""
    forms = [
        "Bonjour {i}, -30% sur les smartphones chez Jumia ce week-end ! STOP au 3030",
        "Jumia: livraison offerte pour la commande {i}. StopSMS : " + SITE + "{own}",
        "تخفيضات كبيرة عند جوميا على الطلب {i}، للتوقف أرسل STOP إلى 3030",
        "Jumia: offre {i} valable jusqu'a dimanche. StopSMS : " + SITE + "{foreign}",
        "Jumia: -50% sur la mode, offre {i}, profitez-en vite !",
    ]
    return [
        forms[i % len(forms)].format(i=i, own=own[i % len(own)], foreign=foreign)
        for i in range(count)
    ]


def bare_loop(texts: list[str]) -> float:
    """Seconds for the regex work of the check alone, over ``texts``."""
    mention = message_check._REPLY_MENTION  # noqa: SLF001 - the very regexes the check uses
    url = message_check._URL  # noqa: SLF001
    gsm7 = messages._GSM7_BASIC | messages._GSM7_EXTENSION  # noqa: SLF001
    started = time.perf_counter()
    for text in texts:
        bool(mention.search(text))
        [m.group() for m in url.finditer(text)]
        gsm7.issuperset(text)
    return time.perf_counter() - started


async def served(texts: list[str], rounds: int, links: list[events_pb2.StopLink]) -> float:
    """Best seconds of one CheckMessages call over ``texts``, served over gRPC."""
    bus = InMemoryBus()
    publisher = InMemoryPublisher(bus)
    topics = Topics()
    directory = local_directory()
    register = SenderRegisterFollower(bus, topics.senders, directory)
    # The links as intake's fillers would have stored them (the store is what CheckMessages reads).
    keys = Pseudonymiser(Key("pk1", bytes(32)), [Key("dk1", bytes(range(32)))])
    sealer, store = LinkSealer.of(keys), InMemoryLinkStore()
    store.entries.update(
        (link.code, sealer.pack(link.code, link.sender_id, 4_000_000_000, "+212612345678"))
        for link in links
    )
    link_directory = LinkDirectory(bus, topics.links, store, keys, fill=False)
    await link_directory.start()
    servicer = SenderRegistryServicer(
        register=register,
        links=link_directory,
        publisher=publisher,
        auth=Authenticator(directory, insecure=True, audit=AuditTrail(None, topics.audit)),
        answers=InMemoryAnswerStore(),
        topics=topics,
        link_site=LinkSite(SITE),
    )
    endpoint = GrpcEndpoint(
        "127.0.0.1:0",
        [
            servicer_registration(
                servicer, senders_pb2.DESCRIPTOR.services_by_name["SenderRegistryService"]
            )
        ],
        ["stopsms.v1.SenderRegistryService"],
    )
    await endpoint.start()
    best = float("inf")
    try:
        async with grpc.aio.insecure_channel(
            f"127.0.0.1:{endpoint.port}",
            options=[("grpc.max_receive_message_length", 64 << 20)],
        ) as channel:
            stub = senders_pb2_grpc.SenderRegistryServiceStub(channel)
            request = senders_pb2.CheckMessagesRequest(sender_id="JUMIA", texts=texts)
            for _ in range(rounds):
                started = time.perf_counter()
                reply = await stub.CheckMessages(
                    request, metadata=((PARTY_HEADER, "atlas-sms"),), timeout=120
                )
                best = min(best, time.perf_counter() - started)
                assert len(reply.checks) == len(texts)
                failing = sum(not c.ok for c in reply.checks)
                assert failing == 2 * len(texts) // 5, failing  # the foreign link, no mention
    finally:
        await endpoint.stop(0)
        await link_directory.stop()
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--texts", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    own = [events_pb2.StopLink(code=new_code(), sender_id="JUMIA", subject="s") for _ in range(100)]
    foreign = events_pb2.StopLink(code=new_code(), sender_id="KITEA", subject="s")
    texts = campaign(args.texts, [link.code for link in own], foreign.code)
    bare = min(bare_loop(texts) for _ in range(args.rounds))
    service = asyncio.run(served(texts, args.rounds, [*own, foreign]))
    checks_per_s, bare_per_s = len(texts) / service, len(texts) / bare
    print(
        f"CheckMessages of {len(texts):,} texts: {service * 1000:.0f} ms "
        f"({checks_per_s:,.0f} texts/s); the bare regex loop: {bare * 1000:.0f} ms "
        f"({bare_per_s:,.0f} texts/s); ratio {checks_per_s / bare_per_s:.2f} (goal ≥ 0.5)"
    )
    record([figure("message_checks_per_s", checks_per_s, "texts/s", bare_per_s)])


if __name__ == "__main__":
    main()
