"""Property-based fuzzing of every gRPC method and the link page, over mutual TLS.

Requests are generated at the wire level from each method's descriptor: known and unknown
field numbers, right and wrong wire types, unknown enum values, duplicated fields, invalid
UTF-8, huge strings, empty messages, random bytes. Whatever arrives, a service answers with a
status that names the caller's mistake (never UNKNOWN or INTERNAL, never a 5xx page), does not
hang, and keeps serving. ``STOPSMS_FUZZ_EXAMPLES`` sets the examples per method (2,000 here).
"""

from __future__ import annotations

import http.client
import os
import urllib.parse
from collections.abc import Iterator
from itertools import chain

import grpc
import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stopsms.adapters.clients import party_channel_sync
from stopsms.tools.local_platform import LocalPlatform
from stopsms.v1 import intake_pb2, notifier_pb2, registry_pb2, regulator_pb2

pytestmark = pytest.mark.e2e
EXAMPLES = int(os.environ.get("STOPSMS_FUZZ_EXAMPLES", "2000"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)
ACCEPTABLE = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.UNAUTHENTICATED,
}
HUGE = "9" * 300_000
PLAUSIBLE = [
    "0612345678",
    "+212712345678",
    "06 12 34 56 78",
    "00212612345678",
    "0522123456",
    "+33612345678",
    "JUMIA",
    "KITEA",
    "IAM",
    "STOPSMS",
    "STOP",
    "stop all",
    "START",
    "",
    "c1.MDow",
    "c1.",
    "a" * 129,
]


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


#: A message's wire bytes in pieces, joined once when the request is sent. A huge string
#: is drawn often; concatenating at every level copied its 300 kB six or eight times per
#: example, and that copying was most of the fuzzers' time. The pieces give the same bytes.
Wire = tuple[bytes, ...]


def _field(number: int, wire: int, payload: Wire) -> Wire:
    return (_varint((number << 3) | wire), *payload)


def _delimited(payload: Wire) -> Wire:
    return (_varint(sum(map(len, payload))), *payload)


HUGE_UTF8 = HUGE.encode("utf-8")


def _utf8(text: str) -> bytes:
    return HUGE_UTF8 if text is HUGE else text.encode("utf-8", "surrogatepass")


texts = st.one_of(st.sampled_from(PLAUSIBLE), st.text(max_size=40), st.just(HUGE)).map(_utf8)
invalid_utf8 = st.binary(min_size=1, max_size=20).map(lambda b: b"\xff\xfe" + b)
length_delimited = st.one_of(texts, invalid_utf8, st.binary(max_size=50)).map(
    lambda b: _delimited((b,))
)
varints = st.integers(min_value=-(2**63), max_value=2**64 - 1).map(lambda v: (_varint(v),))
any_wire = st.one_of(
    st.tuples(st.just(0), varints),
    st.tuples(st.just(1), st.binary(min_size=8, max_size=8).map(lambda b: (b,))),
    st.tuples(st.just(2), length_delimited),
    st.tuples(st.just(5), st.binary(min_size=4, max_size=4).map(lambda b: (b,))),
)


def message_wire(descriptor: Descriptor, depth: int = 2) -> st.SearchStrategy[Wire]:
    """Wire-level messages of ``descriptor``: mostly well-typed fields, some anything at all."""
    numbers = [f.number for f in descriptor.fields] + [99, 1000]

    def well_typed(field: FieldDescriptor) -> st.SearchStrategy[Wire]:
        if field.type == FieldDescriptor.TYPE_STRING:
            return st.one_of(
                texts.map(lambda b: _delimited((b,))),
                invalid_utf8.map(lambda b: _delimited((b,))),
            ).map(lambda payload: _field(field.number, 2, payload))
        if field.type == FieldDescriptor.TYPE_MESSAGE and depth > 0:
            return message_wire(field.message_type, depth - 1).map(
                lambda inner: _field(field.number, 2, _delimited(inner))
            )
        return varints.map(lambda payload: _field(field.number, 0, payload))

    anything = st.tuples(st.sampled_from(numbers), any_wire).map(
        lambda t: _field(t[0], t[1][0], t[1][1])
    )
    entries = (
        st.one_of(*(well_typed(f) for f in descriptor.fields), anything)
        if descriptor.fields
        else anything
    )
    return st.lists(entries, max_size=8).map(lambda parts: tuple(chain.from_iterable(parts)))


def requests_of(message_class) -> st.SearchStrategy[bytes]:
    return st.one_of(message_wire(message_class.DESCRIPTOR).map(b"".join), st.binary(max_size=200))


#: Who calls each service in the fuzzing (the regulator's service: its two identities).
CALLERS = {"": ("iam", "atlas-sms"), "console": ("cndp", "cndp-parquet")}


@pytest.fixture(scope="module")
def channels(
    secure_platform: LocalPlatform,
) -> Iterator[dict[str, dict[str, tuple[grpc.Channel, tuple]]]]:
    ends = secure_platform.endpoints
    made = {
        service: {
            party: party_channel_sync(ends[f"{service}_grpc"], party, secure_platform.tls_folder)
            for party in CALLERS.get(service, CALLERS[""])
        }
        for service in ("intake", "registry", "notifier", "console")
    }
    yield made
    for by_party in made.values():
        for channel, _ in by_party.values():
            channel.close()


def _assert_acceptable(exc: grpc.RpcError, streaming: bool = False) -> None:
    code = exc.code()  # type: ignore[attr-defined]
    allowed = ACCEPTABLE | ({grpc.StatusCode.DEADLINE_EXCEEDED} if streaming else set())
    assert code in allowed, f"{code}: {exc.details()}"  # type: ignore[attr-defined]


UNARY = [
    ("intake", "/stopsms.v1.IntakeService/SubmitOptOut", intake_pb2.SubmitOptOutRequest),
    ("intake", "/stopsms.v1.IntakeService/SubmitKeyword", intake_pb2.SubmitKeywordRequest),
    ("intake", "/stopsms.v1.IntakeService/IssueStopLink", intake_pb2.IssueStopLinkRequest),
    ("intake", "/stopsms.v1.IntakeService/IssueStopLinks", intake_pb2.IssueStopLinksRequest),
    ("intake", "/stopsms.v1.IntakeService/SubmitComplaint", intake_pb2.SubmitComplaintRequest),
    ("registry", "/stopsms.v1.RegistryService/Check", registry_pb2.CheckRequest),
    ("notifier", "/stopsms.v1.NotifierService/Acknowledge", notifier_pb2.AcknowledgeRequest),
    ("notifier", "/stopsms.v1.NotifierService/GetPropagation", notifier_pb2.GetPropagationRequest),
    ("console", "/stopsms.v1.RegulatorService/ListCases", regulator_pb2.ListCasesRequest),
    ("console", "/stopsms.v1.RegulatorService/GetCase", regulator_pb2.GetCaseRequest),
    ("console", "/stopsms.v1.RegulatorService/SearchRequests", regulator_pb2.SearchRequestsRequest),
    (
        "console",
        "/stopsms.v1.RegulatorService/PartyCompliance",
        regulator_pb2.PartyComplianceRequest,
    ),
    ("console", "/stopsms.v1.RegulatorService/ExportCase", regulator_pb2.ExportCaseRequest),
]


@pytest.mark.parametrize(
    ("service", "method", "message_class"), UNARY, ids=[m.rsplit("/", 1)[1] for _, m, _ in UNARY]
)
def test_unary_methods_answer_every_request_sensibly(
    channels, service, method, message_class
) -> None:
    @FUZZ
    @given(party=st.sampled_from(CALLERS.get(service, CALLERS[""])), raw=requests_of(message_class))
    def run(party: str, raw: bytes) -> None:
        channel, metadata = channels[service][party]
        try:
            channel.unary_unary(method)(raw, metadata=metadata, timeout=10)
        except grpc.RpcError as exc:
            _assert_acceptable(exc)

    run()


STREAMING = [
    ("registry", "/stopsms.v1.RegistryService/CheckBatch", registry_pb2.CheckBatchRequest),
    (
        "notifier",
        "/stopsms.v1.NotifierService/AcknowledgeStream",
        notifier_pb2.AcknowledgeStreamRequest,
    ),
]


@pytest.mark.parametrize(
    ("service", "method", "message_class"),
    STREAMING,
    ids=[m.rsplit("/", 1)[1] for _, m, _ in STREAMING],
)
def test_streaming_methods_answer_every_stream_sensibly(
    channels, service, method, message_class
) -> None:
    @FUZZ
    @given(
        party=st.sampled_from(["iam", "atlas-sms"]),
        messages=st.lists(requests_of(message_class), max_size=3),
    )
    def run(party: str, messages: list[bytes]) -> None:
        channel, metadata = channels[service][party]
        try:
            list(channel.stream_stream(method)(iter(messages), metadata=metadata, timeout=10))
        except grpc.RpcError as exc:
            _assert_acceptable(exc)

    run()


def test_watch_changes_answers_every_request_sensibly(channels) -> None:
    @FUZZ
    @given(
        party=st.sampled_from(["iam", "atlas-sms"]),
        raw=requests_of(notifier_pb2.WatchChangesRequest),
    )
    def run(party: str, raw: bytes) -> None:
        channel, metadata = channels["notifier"][party]
        try:
            for _ in channel.unary_stream("/stopsms.v1.NotifierService/WatchChanges")(
                raw, metadata=metadata, timeout=0.1
            ):
                pass
        except grpc.RpcError as exc:
            _assert_acceptable(exc, streaming=True)  # a valid stream lasts until its deadline

    run()


def _http(
    platform: LocalPlatform, method: str, path: str, body: bytes = b"", content_type: str = ""
) -> int:
    url = urllib.parse.urlsplit(platform.endpoints["intake_http"])
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    try:
        headers = {"Content-Type": content_type} if content_type else {}
        connection.request(method, path, body=body, headers=headers)
        return connection.getresponse().status
    finally:
        connection.close()


paths = st.one_of(
    st.text(alphabet=st.characters(codec="ascii", exclude_characters="\r\n #?"), max_size=40),
    st.sampled_from(["", "healthz", "AbCdEfGhIjK", "a" * 5000, "..%2f..%2fetc", "%ff%fe"]),
).map(lambda p: "/" + urllib.parse.quote(p, safe="/%"))


def test_the_link_page_never_fails_with_a_server_error(secure_platform: LocalPlatform) -> None:
    @FUZZ
    @given(
        method=st.sampled_from(["GET", "POST", "HEAD"]),
        path=paths,
        body=st.one_of(
            st.binary(max_size=300),
            st.sampled_from([b"action=opt_out", b"action=%ff", b"action=" + b"x" * 9000]),
        ),
        content_type=st.sampled_from(
            [
                "",
                "application/x-www-form-urlencoded",
                "multipart/form-data; boundary=x",
                "text/plain",
            ]
        ),
    )
    def run(method: str, path: str, body: bytes, content_type: str) -> None:
        status = _http(
            secure_platform, method, path, body if method == "POST" else b"", content_type
        )
        assert status < 500, (method, path, status)

    run()


def test_the_services_still_serve_after_the_fuzzing(
    secure_platform: LocalPlatform, channels
) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    for name in ("intake", "registry", "notifier"):
        address = f"127.0.0.1:{secure_platform.ports[f'{name}_health']}"
        with grpc.insecure_channel(address) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    channel, metadata = channels["registry"]["iam"]
    answer = registry_pb2.CheckResponse.FromString(
        channel.unary_unary("/stopsms.v1.RegistryService/Check")(
            registry_pb2.CheckRequest(msisdn="0612345678", sender_id="JUMIA").SerializeToString(),
            metadata=metadata,
            timeout=10,
        )
    )
    assert answer.verdict in (registry_pb2.VERDICT_ALLOWED, registry_pb2.VERDICT_SUPPRESSED)
    for process in secure_platform.processes.values():
        assert process.poll() is None
    for name in secure_platform.processes:
        log = (secure_platform.data_dir / "logs" / f"{name}.log").read_text(errors="replace")
        crash = log.find("raised by servicer method")  # grpc's words for a handler's own fault
        assert crash < 0, f"{name} failed inside a handler: {log[crash - 200 : crash + 1500]}"
