"""A link never takes a live link's code: intake draws again the codes the link store holds."""

from collections.abc import Iterator, Sequence

import grpc
import pytest

from stopsms.adapters.bus import InMemoryPublisher
from stopsms.adapters.identity import PARTY_HEADER, Authenticator
from stopsms.adapters.link_store import StoreUnavailable
from stopsms.adapters.serving import GrpcEndpoint, servicer_registration
from stopsms.adapters.settings import IntakeSettings
from stopsms.domain.privacy import Key, Pseudonymiser
from stopsms.domain.topics import Topics
from stopsms.intake import server
from stopsms.intake.citizen_messages import CitizenMessages
from stopsms.intake.server import SERVICE_NAME, IntakeServicer
from stopsms.intake.submission import InMemoryRequestReferences, RequestSubmitter
from stopsms.tools.senders import local_directory
from stopsms.v1 import events_pb2, intake_pb2, intake_pb2_grpc

HELD = "bbbbbbbbbbb"


class Store:
    """The link store as intake asks it: which codes are held (or Redis away)."""

    def __init__(self, away: bool = False) -> None:
        self.away = away
        self.asked: list[list[str]] = []

    async def taken(self, codes: Sequence[str]) -> set[str]:
        self.asked.append(list(codes))
        if self.away:
            raise StoreUnavailable("link store: connection refused")
        return {code for code in codes if code == HELD}


def scripted(*draws: list[str]) -> Iterator[list[str]]:
    yield from draws


async def issue(store: Store, monkeypatch: pytest.MonkeyPatch, *draws: list[str]) -> list[str]:
    """Issue three links with the codes ``draws`` script; the codes the caller is given."""
    script = scripted(*draws)
    monkeypatch.setattr(server, "new_codes", lambda count: next(script)[:count])
    directory = local_directory()
    publisher = InMemoryPublisher()
    pseudonymiser = Pseudonymiser(Key("pk1", bytes(32)), [Key("dk1", bytes(range(32)))])
    servicer = IntakeServicer(
        IntakeSettings(public_base_url="https://stopsms.ma/"),
        submitter=RequestSubmitter(
            publisher, pseudonymiser, directory, Topics(), 12, InMemoryRequestReferences()
        ),  # fmt: skip
        citizens=CitizenMessages(publisher, pseudonymiser, Topics(), 12),
        publisher=publisher,
        auth=Authenticator(directory, insecure=True),
        links=store,  # type: ignore[arg-type]
    )
    endpoint = GrpcEndpoint(
        "127.0.0.1:0",
        [servicer_registration(servicer, intake_pb2.DESCRIPTOR.services_by_name["IntakeService"])],
        [SERVICE_NAME],
    )
    await endpoint.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{endpoint.port}") as channel:
            reply = await intake_pb2_grpc.IntakeServiceStub(channel).IssueStopLinks(
                intake_pb2.IssueStopLinksRequest(
                    requests=[
                        intake_pb2.IssueStopLinkRequest(msisdn=f"061234567{i}", sender_id="JUMIA")
                        for i in range(3)
                    ]
                ),
                metadata=((PARTY_HEADER, "atlas-sms"),),
            )
    finally:
        await endpoint.stop(0)
    published = [
        events_pb2.StopLink.FromString(value).code
        for _, value, _ in publisher.records["stopsms.links.v1"]
    ]
    codes = [link.url.rsplit("/", 1)[1] for link in reply.links]
    assert published == codes, "the caller is given the codes published"
    return codes


async def test_a_held_code_and_a_repeated_one_are_drawn_again(monkeypatch) -> None:
    store = Store()
    codes = await issue(
        store, monkeypatch, ["aaaaaaaaaaa", HELD, "aaaaaaaaaaa"], ["ccccccccccc", "ddddddddddd"]
    )
    assert codes == ["aaaaaaaaaaa", "ccccccccccc", "ddddddddddd"]
    assert len(store.asked) == 2, "the new codes are checked too"


async def test_without_the_store_links_are_issued_as_drawn(monkeypatch) -> None:
    codes = await issue(Store(away=True), monkeypatch, ["aaaaaaaaaaa", HELD, "eeeeeeeeeee"])
    assert codes == ["aaaaaaaaaaa", HELD, "eeeeeeeeeee"]
