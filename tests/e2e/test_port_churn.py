"""The secured platform starts while thousands of outgoing connections churn the ports.

A port probed with ``bind(0)`` lies in the kernel's ephemeral range; while Kafka clients and
the rest of the machine open connections, one of them could take it before the service bound
it, and CI failed at random ("Address already in use"). Here another process opens and
closes outgoing loopback connections the whole time (each leaves its port in TIME_WAIT), and
the secured platform must start, serve and answer all the same.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from stopsms.adapters.clients import STUBS
from stopsms.tools.launcher import LocalInfrastructure
from stopsms.tools.local_platform import DEFAULT_PORTS, LocalPlatform
from stopsms.v1 import events_pb2, intake_pb2, registry_pb2

from ..conftest import until
from .conftest import KAFKA_USERS, SECURITY_PARTIES

pytestmark = pytest.mark.e2e

#: Opens and closes loopback connections for at most argv[1] seconds and argv[2] connections.
CHURN = textwrap.dedent(
    """
    import socket, sys, time
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1024)
    port = server.getsockname()[1]
    ends, most, opened = time.monotonic() + float(sys.argv[1]), int(sys.argv[2]), 0
    print("churning", flush=True)
    while time.monotonic() < ends and opened < most:
        client = socket.create_connection(("127.0.0.1", port))
        peer, _ = server.accept()
        client.close()
        peer.close()
        opened += 1
        if opened % 1000 == 0:
            print(opened, flush=True)
    print("opened", opened, flush=True)
    """
)


async def test_the_secured_platform_starts_and_serves_while_ports_churn(
    infra: LocalInfrastructure, tmp_path: Path
) -> None:
    with subprocess.Popen(  # noqa: S603
        [sys.executable, "-c", CHURN, "240", "25000"],
        stdout=subprocess.PIPE,
        text=True,
    ) as churn:
        assert churn.stdout is not None
        assert churn.stdout.readline().strip() == "churning"
        platform = LocalPlatform(
            tmp_path / "platform",
            namespace=f"c{uuid.uuid4().hex[:10]}.",
            shared_infra=infra,
            parties_file=SECURITY_PARTIES,
            senders_seed=None,  # the directory lists its own senders
            kafka_users=KAFKA_USERS,
            preferred_ports={name: 0 for name in DEFAULT_PORTS},
        )
        try:
            platform.start()
            intake_channel, intake_md = platform.channel("intake", "iam")
            registry_channel, registry_md = platform.channel("registry", "cndp")
            await STUBS["intake"](intake_channel).SubmitOptOut(
                intake_pb2.SubmitOptOutRequest(
                    request_id="churn-1",
                    msisdn="0612345678",
                    sender_id="JUMIA",
                    channel=events_pb2.CHANNEL_WEB,
                ),
                metadata=intake_md,
            )
            registry = STUBS["registry"](registry_channel)

            async def suppressed() -> bool:
                answer = await registry.Check(
                    registry_pb2.CheckRequest(msisdn="0612345678", sender_id="JUMIA"),
                    metadata=registry_md,
                )
                return answer.verdict == registry_pb2.VERDICT_SUPPRESSED

            await until(suppressed, "the opt-out made while ports churn suppressing the number")
            await intake_channel.close()
            await registry_channel.close()
        finally:
            platform.stop()
            churn.terminate()
        opened = [line for line in churn.stdout.read().splitlines() if line.strip()]
    # The platform started while the churn ran: thousands of ports went through TIME_WAIT.
    assert opened and int(opened[-1].split()[-1]) >= 2000, opened[-3:]
