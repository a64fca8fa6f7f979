"""The registry's Check and CheckBatch over an in-memory view filled as the materialiser does."""

import grpc
import pytest

from stopsms.adapters.identity import PARTY_HEADER, Authenticator
from stopsms.adapters.kafka import Record
from stopsms.adapters.serving import GrpcEndpoint, servicer_registration
from stopsms.adapters.view import InMemorySuppressionView
from stopsms.domain.privacy import Key, Pseudonymiser
from stopsms.domain.viewcodec import ScopeEntry, ViewUpdate
from stopsms.registry.hashing import HashPool
from stopsms.registry.lookup import BatchChecker
from stopsms.registry.server import SERVICE_NAME, RegistryServicer
from stopsms.tools.senders import local_directory
from stopsms.v1 import events_pb2, registry_pb2, registry_pb2_grpc

PSEUDONYMISER = Pseudonymiser(Key("pk1", bytes(32)), [Key("dk1", bytes(range(32)))])


def suppression(offset: int, msisdn: str, sender: str, state: int, version: int) -> Record:
    change = events_pb2.SuppressionChanged(
        subject=PSEUDONYMISER.subject(msisdn), sender_id=sender, state=state, version=version
    )
    change.action_time.FromMilliseconds(1_000 * version)
    return Record("stopsms.suppressions.v1", 0, offset, b"", change.SerializeToString(), 0)


@pytest.fixture
async def registry():
    view = InMemorySuppressionView()
    records = [
        suppression(0, "+212612345678", "", events_pb2.STATE_SUPPRESSED, 1),
        suppression(1, "+212612345678", "JUMIA", events_pb2.STATE_ALLOWED, 2),
    ]
    changes = [events_pb2.SuppressionChanged.FromString(r.value) for r in records]
    await view.apply(
        [
            ViewUpdate(
                c.subject,
                c.sender_id,
                ScopeEntry(c.state, c.version, c.action_time.ToMilliseconds()),
            )
            for c in changes
        ],
        {0: 2},
    )
    directory = local_directory()
    servicer = RegistryServicer(
        lookups=BatchChecker(view, HashPool(PSEUDONYMISER.pseudonym_key, 0), "pk1"),
        auth=Authenticator(directory, insecure=True),
    )
    endpoint = GrpcEndpoint(
        "127.0.0.1:0",
        [
            servicer_registration(
                servicer, registry_pb2.DESCRIPTOR.services_by_name["RegistryService"]
            )
        ],
        [SERVICE_NAME],
    )
    await endpoint.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{endpoint.port}")
    stub = registry_pb2_grpc.RegistryServiceStub(channel)
    stub.raw_channel = channel  # type: ignore[attr-defined]
    yield stub
    await channel.close()
    await endpoint.stop(0)


async def test_check_applies_the_rules_and_says_what_it_answers_as_of(registry) -> None:
    md = ((PARTY_HEADER, "cndp"),)
    jumia = await registry.Check(
        registry_pb2.CheckRequest(msisdn="0612345678", sender_id="JUMIA"), metadata=md
    )
    assert jumia.verdict == registry_pb2.VERDICT_ALLOWED
    assert jumia.matched_scope == registry_pb2.MATCHED_SCOPE_SENDER
    kitea = await registry.Check(
        registry_pb2.CheckRequest(msisdn="0612345678", sender_id="KITEA"), metadata=md
    )
    assert kitea.verdict == registry_pb2.VERDICT_SUPPRESSED
    assert kitea.matched_scope == registry_pb2.MATCHED_SCOPE_GLOBAL
    assert kitea.since.ToMilliseconds() == 1_000
    assert [(o.partition, o.offset) for o in kitea.as_of] == [(0, 2)]


async def test_a_psva_checks_its_own_senders_and_global_only(registry) -> None:
    md = ((PARTY_HEADER, "atlas-sms"),)
    own = await registry.Check(
        registry_pb2.CheckRequest(msisdn="0612345678", sender_id="JUMIA"), metadata=md
    )
    assert own.verdict == registry_pb2.VERDICT_ALLOWED
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await registry.Check(
            registry_pb2.CheckRequest(msisdn="0612345678", sender_id="KITEA"), metadata=md
        )
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_a_batch_answers_each_chunk_in_order_and_marks_bad_numbers(registry) -> None:
    async def chunks():
        yield registry_pb2.CheckBatchRequest(
            sender_id="MARJANE", msisdns=["0612345678", "nope", "0700000000"]
        )

    [reply] = [r async for r in registry.CheckBatch(chunks(), metadata=((PARTY_HEADER, "iam"),))]
    assert [r.verdict for r in reply.results] == [
        registry_pb2.VERDICT_SUPPRESSED,
        registry_pb2.VERDICT_INVALID_NUMBER,
        registry_pb2.VERDICT_ALLOWED,
    ]


@pytest.mark.parametrize(
    "raw",
    [b"\x0a\x02\xff\xfe", b"\xff\xff\xff", b"\x12\x05JUM"],
    ids=["invalid-utf8", "corrupt", "truncated"],
)
async def test_bytes_that_are_not_a_request_are_invalid_argument(registry, raw: bytes) -> None:
    # The same server, called without the client's serializer.
    check = registry.raw_channel.unary_unary("/stopsms.v1.RegistryService/Check")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await check(raw, metadata=((PARTY_HEADER, "iam"),))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details().startswith("request: not a valid stopsms.v1.CheckRequest")


async def test_a_refused_batch_answers_its_own_reason_though_bad_bytes_follow(
    registry, caplog: pytest.LogCaptureFixture
) -> None:
    # The call is refused for its first chunk's sender; the client goes on writing a message
    # that does not parse. The server reads the rest before answering (DrainBeforeAbort),
    # and what it reads must not end the call a second time.
    check_batch = registry.raw_channel.stream_stream("/stopsms.v1.RegistryService/CheckBatch")
    first = registry_pb2.CheckBatchRequest(sender_id="!!", msisdns=["0612345678"])
    messages = [first.SerializeToString(), b"\xff\xff\xff"]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in check_batch(iter(messages), metadata=((PARTY_HEADER, "iam"),)):
            pass
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details().startswith("sender_id:"), caught.value.details()
    assert "Abort already called" not in caplog.text


async def test_records_written_before_canonical_ids_answer_every_spelling(registry) -> None:
    # The fixture's records were written as before: "JUMIA". Callers may write it any way.
    md = ((PARTY_HEADER, "atlas-sms"),)
    for written in ["JUMIA", "Jumia", " jumia ", "\uff2a\uff35\uff2d\uff29\uff21"]:
        answer = await registry.Check(
            registry_pb2.CheckRequest(msisdn="0612345678", sender_id=written), metadata=md
        )
        assert answer.verdict == registry_pb2.VERDICT_ALLOWED, written
        assert answer.matched_scope == registry_pb2.MATCHED_SCOPE_SENDER, written

    async def chunks():
        yield registry_pb2.CheckBatchRequest(sender_id="jumia", msisdns=["0612345678"])

    [reply] = [r async for r in registry.CheckBatch(chunks(), metadata=md)]
    assert [r.verdict for r in reply.results] == [registry_pb2.VERDICT_ALLOWED]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await registry.Check(
            registry_pb2.CheckRequest(msisdn="0612345678", sender_id="ju*mia"), metadata=md
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details().startswith("sender_id")
