"""Complaints under the normal opt-out load, on the whole platform.

The four services run as processes (real Kafka and Redis, mutual TLS), and the directory's
three operators and two PSVAs apply and acknowledge what concerns them from client processes
of their own (``bench.load_clients``). For ``--seconds``, the
operator ``iam`` submits opt-outs through intake at ``--optouts`` per second (the normal load)
and forwards complaints at ``--rate`` per second: half about JUMIA messages to citizens who
opted out a moment before (so each assessment waits for, and is re-made on, a real proof),
half about an undeclared sender. Figures:

* complaint accepted → assessed by the platform's own stamps, and complaint acknowledged →
  its assessment read back by this process from ``stopsms.complaint-assessments.v1`` (the
  first one, and the final one once the proof is done), p50 and p99, beside a bare Kafka
  round trip on the same broker;
* the console's CPU (``/proc/<pid>/stat``): per opt-out it follows (a first phase of the
  opt-out load alone), per complaint beyond that (the second phase), and how much of a core
  it takes at that load. Calls are offered open loop, at the rate, whatever each one takes.

    python -m bench.complaints_load [--optouts 50] [--rate 50] [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from bench.propagation import kafka_round_trips
from bench.propagation_sweep import cpu_seconds
from bench.results import SMOKE, figure, percentile, record
from stopsms.adapters.bus import CompactedTopicIndex, KafkaBus
from stopsms.adapters.clients import STUBS
from stopsms.domain.topics import Topics
from stopsms.tools.launcher import start_process, stop_process
from stopsms.tools.local_platform import DEFAULT_PORTS, LocalPlatform
from stopsms.v1 import events_pb2, intake_pb2

#: The local directory's operators and PSVAs (services/stopsms/config/parties.yaml).
OPERATORS = ("iam", "orange", "inwi")
PSVAS = ("atlas-sms", "sahara-push")


def number(i: int) -> str:
    return f"+2126{i:08d}"


async def run(
    platform: LocalPlatform, optouts: float, rate: float, seconds: float
) -> list[dict[str, object]]:
    ends = platform.endpoints
    topics = Topics(platform.namespace)
    channel, metadata = platform.channel("intake", "iam")
    intake = STUBS["intake"](channel)
    assessments: CompactedTopicIndex[events_pb2.ComplaintAssessed] = CompactedTopicIndex(
        KafkaBus(ends["kafka"]),
        topics.complaint_assessments,
        events_pb2.ComplaintAssessed.FromString,
    )
    await assessments.start()
    console = platform.processes["console"].pid
    # below 9 × 10⁷: an informal sender's numbers (base + 10⁶ + i) keep eight digits
    base = random.randrange(9 * 10**6) * 10
    first: list[float] = []
    final: list[float] = []
    stamped: list[float] = []  # the platform's own stamps: accepted by intake → assessed
    waiting: dict[str, tuple[float, bool]] = {}  # complaint id → (acknowledged at, first seen)
    counts = {"opt-outs": 0, "complaints": 0}

    async def opt_out(i: int) -> None:
        await intake.SubmitOptOut(
            intake_pb2.SubmitOptOutRequest(
                request_id=f"load-{base}-{i}",
                msisdn=number(base + i),
                sender_id="JUMIA" if i % 2 else "",
                channel=events_pb2.CHANNEL_WEB,
            ),
            metadata=metadata,
        )
        counts["opt-outs"] += 1

    async def complaint(i: int) -> None:
        breach = i % 2 == 0
        # a citizen who opted out (of JUMIA or of all) a moment ago, or an informal sender
        opted = max(0, counts["opt-outs"] - 5)
        msisdn = number(base + opted) if breach else number(base + 10**6 + i)
        reply = await intake.SubmitComplaint(
            intake_pb2.SubmitComplaintRequest(
                request_id=f"complaint-{base}-{i}",
                msisdn=msisdn,
                from_address="JUMIA" if breach else "PROMOCASH",
                text="SPAM Soldes chez Jumia -30%" if breach else "SPAM Credit rapide",
            ),
            metadata=metadata,
        )
        waiting[reply.complaint_id] = (time.perf_counter(), False)
        counts["complaints"] += 1

    async def offered(
        call: Callable[[int], Awaitable[None]], per_s: float, until_s: float, start: int = 0
    ) -> None:
        """Open loop: one call every 1/per_s seconds, whatever the earlier ones take."""
        calls, pace, i = [], time.perf_counter(), start
        while time.perf_counter() < until_s:
            calls.append(asyncio.create_task(call(i)))
            i += 1
            pace += 1 / per_s
            await asyncio.sleep(max(0.0, pace - time.perf_counter()))
        await asyncio.gather(*calls)

    async def watch() -> None:
        while True:
            now = time.perf_counter()
            for complaint_id, (at, seen) in list(waiting.items()):
                found = assessments.peek(complaint_id)
                if found is None:
                    continue
                if not seen:
                    first.append(now - at)
                    waiting[complaint_id] = (at, True)
                    took_ms = (
                        found.assessed_time.ToMilliseconds() - found.received_time.ToMilliseconds()
                    )
                    stamped.append(took_ms / 1000)
                if found.final:
                    final.append(now - at)
                    del waiting[complaint_id]
            await asyncio.sleep(0.002)

    # Phase 1: the opt-out load alone, for what the console spends following it.
    print(f"{optouts:.0f} opt-outs/s alone for {seconds / 2:.0f} s...", flush=True)
    cpu_before, wall_before = cpu_seconds(console), time.perf_counter()
    await offered(opt_out, optouts, time.perf_counter() + seconds / 2)
    alone_cpu = cpu_seconds(console) - cpu_before
    alone_wall = time.perf_counter() - wall_before
    alone_count = counts["opt-outs"]
    per_opt_out_ms = alone_cpu * 1000 / max(alone_count, 1)

    # Phase 2: the same load, and complaints.
    print(
        f"{optouts:.0f} opt-outs/s and {rate:.0f} complaints/s for {seconds:.0f} s...", flush=True
    )
    watcher = asyncio.create_task(watch())
    cpu_before, wall_before = cpu_seconds(console), time.perf_counter()
    stop_at = time.perf_counter() + seconds
    await asyncio.gather(
        offered(opt_out, optouts, stop_at, start=alone_count),
        offered(complaint, rate, stop_at),
    )
    deadline = time.perf_counter() + 60
    while waiting and time.perf_counter() < deadline:
        await asyncio.sleep(0.05)
    watcher.cancel()
    cpu = cpu_seconds(console) - cpu_before
    wall = time.perf_counter() - wall_before
    await assessments.stop()
    await channel.close()
    filed = counts["complaints"]
    if waiting:
        raise SystemExit(f"{len(waiting)} of {filed} complaints not finally assessed in 60 s")
    loaded_opt_outs = counts["opt-outs"] - alone_count
    per_complaint_ms = max(0.0, cpu * 1000 - loaded_opt_outs * per_opt_out_ms) / max(filed, 1)
    raw = await kafka_round_trips(ends["kafka"], topics.dlq, 50)
    raw_p50 = percentile(raw, 50)
    p50, p99 = percentile(first, 50), percentile(first, 99)
    final_p50, final_p99 = percentile(final, 50), percentile(final, 99)
    stamped_p50, stamped_p99 = percentile(stamped, 50), percentile(stamped, 99)
    print(
        f"phase 1: {alone_count} opt-outs in {alone_wall:.1f} s; the console spent "
        f"{per_opt_out_ms:.2f} ms CPU per opt-out it follows ({alone_cpu / alone_wall:.2f} of a "
        f"core)\nphase 2: {filed} complaints and {loaded_opt_outs} opt-outs in {wall:.1f} s\n"
        f"complaint to first assessment: p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms; "
        f"to the final one (the opt-out's proof done): p50 {final_p50 * 1000:.1f} ms, "
        f"p99 {final_p99 * 1000:.1f} ms; a bare Kafka round trip: p50 {raw_p50 * 1000:.1f} ms "
        f"(ratio {p50 / raw_p50:.1f})\n"
        f"by the platform's own stamps (intake accepted → assessed): p50 "
        f"{stamped_p50 * 1000:.1f} ms, p99 {stamped_p99 * 1000:.1f} ms\n"
        f"the console: {cpu / wall:.2f} of a core; {per_complaint_ms:.2f} ms CPU per complaint "
        "beyond what the opt-outs cost"
    )
    return [
        figure("loaded_complaint_accepted_to_assessed_p50_s", stamped_p50, "s", raw_p50),
        figure("loaded_complaint_accepted_to_assessed_p99_s", stamped_p99, "s", raw_p50),
        figure("loaded_complaint_to_assessment_p50_s", p50, "s", raw_p50),
        figure("loaded_complaint_to_assessment_p99_s", p99, "s", raw_p50),
        figure("loaded_complaint_to_final_assessment_p99_s", final_p99, "s", raw_p50),
        figure("loaded_console_cpu_ms_per_complaint", per_complaint_ms, "ms CPU"),
        figure("loaded_console_cpu_ms_per_opt_out", per_opt_out_ms, "ms CPU"),
        figure("loaded_console_cores", cpu / wall, "cores"),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--optouts", type=float, default=50.0)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--seconds", type=float, default=3.0 if SMOKE else 20.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="stopsms-bench-") as tmp:
        print("starting the platform...", flush=True)
        platform = LocalPlatform(
            Path(tmp) / "platform",
            preferred_ports={name: 0 for name in DEFAULT_PORTS},
            extra_env={"STOPSMS_NUMBER_REQUESTS_PER_MINUTE": "1000000"},
        )
        with platform:
            # the operators and PSVAs apply and acknowledge from processes of their own
            ends, logs = platform.endpoints, Path(tmp) / "clients"
            logs.mkdir()
            command = [sys.executable, "-m", "bench.load_clients"]
            clients = [
                start_process(
                    [*command, "operators", ends["kafka"], platform.namespace, *OPERATORS],
                    logs / "operators.log",
                ),
                start_process(
                    [*command, "psvas", ends["notifier_grpc"], str(platform.tls_folder), *PSVAS],
                    logs / "psvas.log",
                ),
            ]
            try:
                figures = asyncio.run(run(platform, args.optouts, args.rate, args.seconds))
            finally:
                for client in clients:
                    stop_process(client)
    record(figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
