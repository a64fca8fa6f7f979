"""Complaints under the normal opt-out load, on the whole platform.

The four services run as processes (real Kafka and Redis, mutual TLS), with stand-ins for
every operator and PSVA applying and acknowledging what concerns them. For ``--seconds``, the
operator ``iam`` submits opt-outs through intake at ``--optouts`` per second (the normal load)
and forwards complaints at ``--rate`` per second: half about JUMIA messages to citizens who
opted out a moment before (so each assessment waits for, and is re-made on, a real proof),
half about an undeclared sender. Figures:

* complaint acknowledged by intake → its assessment readable on
  ``stopsms.complaint-assessments.v1`` (the first one, and the final one once the proof is
  done), p50 and p99, beside a bare Kafka round trip on the same broker;
* the console's CPU per complaint and per opt-out it follows (``/proc/<pid>/stat``), and how
  much of a core it takes at that load.

    python -m bench.complaints_load [--optouts 50] [--rate 50] [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import tempfile
import time
from pathlib import Path

from bench.propagation import kafka_round_trips
from bench.results import SMOKE, figure, percentile, record
from stopsms.adapters.bus import CompactedTopicIndex, KafkaBus
from stopsms.adapters.clients import STUBS
from stopsms.domain.topics import Topics
from stopsms.tools.demo_parties import DemoParties
from stopsms.tools.local_platform import DEFAULT_PORTS, LocalPlatform
from stopsms.v1 import events_pb2, intake_pb2


def process_cpu_seconds(pid: int) -> float:
    """User and system CPU of a process so far (``/proc/<pid>/stat``, fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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
    base = random.randrange(10**7) * 10
    first: list[float] = []
    final: list[float] = []
    waiting: dict[str, tuple[float, bool]] = {}  # complaint id → (acknowledged at, first seen)
    filed = accepted = 0

    async def opt_outs() -> None:
        nonlocal accepted
        pace, i = time.perf_counter(), 0
        while time.perf_counter() < stop_at:
            pace += 1 / optouts
            await intake.SubmitOptOut(
                intake_pb2.SubmitOptOutRequest(
                    request_id=f"load-{base}-{i}",
                    msisdn=number(base + i),
                    sender_id="JUMIA" if i % 2 else "",
                    channel=events_pb2.CHANNEL_WEB,
                ),
                metadata=metadata,
            )
            accepted += 1
            i += 1
            await asyncio.sleep(max(0.0, pace - time.perf_counter()))

    async def complaints() -> None:
        nonlocal filed
        pace, i = time.perf_counter(), 0
        while time.perf_counter() < stop_at:
            pace += 1 / rate
            breach = i % 2 == 0
            # a citizen who opted out (of JUMIA or of all) a moment ago, or an informal sender
            msisdn = number(base + max(0, accepted - 5)) if breach else number(base + 10**6 + i)
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
            filed += 1
            i += 1
            await asyncio.sleep(max(0.0, pace - time.perf_counter()))

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
                if found.final:
                    final.append(now - at)
                    del waiting[complaint_id]
            await asyncio.sleep(0.002)

    print(
        f"{optouts:.0f} opt-outs/s and {rate:.0f} complaints/s for {seconds:.0f} s...", flush=True
    )
    cpu_before, wall_before = process_cpu_seconds(console), time.perf_counter()
    stop_at = time.perf_counter() + seconds
    watcher = asyncio.create_task(watch())
    await asyncio.gather(opt_outs(), complaints())
    deadline = time.perf_counter() + 60
    while waiting and time.perf_counter() < deadline:
        await asyncio.sleep(0.05)
    watcher.cancel()
    cpu = process_cpu_seconds(console) - cpu_before
    wall = time.perf_counter() - wall_before
    await assessments.stop()
    await channel.close()
    if waiting:
        raise SystemExit(f"{len(waiting)} of {filed} complaints not finally assessed in 60 s")
    raw = await kafka_round_trips(ends["kafka"], topics.dlq, 50)
    raw_p50 = percentile(raw, 50)
    p50, p99 = percentile(first, 50), percentile(first, 99)
    final_p50, final_p99 = percentile(final, 50), percentile(final, 99)
    per_complaint_ms = cpu * 1000 / filed
    print(
        f"{filed} complaints and {accepted} opt-outs accepted\n"
        f"complaint to first assessment: p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms; "
        f"to the final one (the opt-out's proof done): p50 {final_p50 * 1000:.1f} ms, "
        f"p99 {final_p99 * 1000:.1f} ms; a bare Kafka round trip: p50 {raw_p50 * 1000:.1f} ms "
        f"(ratio {p50 / raw_p50:.1f})\n"
        f"the console: {cpu:.2f} s CPU over {wall:.1f} s ({cpu / wall:.2f} of a core), "
        f"{per_complaint_ms:.2f} ms per complaint with the opt-outs it follows counted in"
    )
    return [
        figure("loaded_complaint_to_assessment_p50_s", p50, "s", raw_p50),
        figure("loaded_complaint_to_assessment_p99_s", p99, "s", raw_p50),
        figure("loaded_complaint_to_final_assessment_p99_s", final_p99, "s", raw_p50),
        figure("loaded_console_cpu_ms_per_complaint", per_complaint_ms, "ms CPU"),
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
            parties = DemoParties.for_platform(platform).start()
            try:
                figures = asyncio.run(run(platform, args.optouts, args.rate, args.seconds))
            finally:
                parties.stop()
    record(figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
