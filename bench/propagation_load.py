"""Propagation under load: 500 opt-outs/s for 60 s, 3 operators and 50 PSVA streams.

The whole platform runs (real Kafka and Redis, the three services with mutual TLS). Three
operators consume the list with their groups and commit after each poll. Fifty PSVAs each
hold one stream and acknowledge the latest cursor every 100 ms, spread over two client
processes. A separate process submits opt-outs through intake at a steady rate: 90 % for one
sender (its PSVA and the three operators are concerned) and 10 % global (every party is
concerned). For each accepted request, the platform's own proof (``done_time - action_time``
of its propagation record) is the figure. In the same run, a raw produce-to-consume round trip
on the same broker is the baseline.

    python -m bench.propagation_load [--rate 500] [--seconds 60] [--psvas 50]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from bench.propagation import kafka_round_trips
from bench.results import figure, percentile, record
from stopsms.adapters.kafka import Record, follow_topic, read_topic
from stopsms.adapters.settings import PACKAGE_CONFIG
from stopsms.domain.topics import Topics
from stopsms.tools.launcher import start_process, stop_process
from stopsms.tools.local_platform import DEFAULT_PORTS, LocalPlatform
from stopsms.tools.verify import read_ledger
from stopsms.v1 import events_pb2

OPERATORS = ("iam", "orange", "inwi")
#: How long the proofs are waited for after the load.
COLLECT_S = 120


def write_parties(path: Path, psvas: int) -> list[str]:
    """The directory of the run: 3 operators, ``psvas`` PSVAs, the platform's identities."""
    default = yaml.safe_load((PACKAGE_CONFIG / "parties.yaml").read_text())
    keep = [p for p in default["parties"] if p["kind"] in ("platform", "regulator")]
    operators = [{"id": o, "kind": "operator", "senders": [o.upper()]} for o in OPERATORS]
    ids = [f"psva-{i:02d}" for i in range(1, psvas + 1)]
    psva_entries = [
        {"id": p, "kind": "psva", "senders": [f"SHOP{i:02d}"]} for i, p in enumerate(ids, 1)
    ]
    path.write_text(yaml.safe_dump({"parties": operators + psva_entries + keep}))
    return ids


async def stage_delays(bootstrap: str, topics: Topics, wanted: set[str]) -> dict[str, float]:
    """Where the time goes, in seconds after the citizen's action.

    The decision on the list, the PENDING receipt, the APPLIED receipts by party kind.
    """
    stages: dict[str, list[float]] = {}
    for topic, parse in (
        (topics.suppressions, events_pb2.SuppressionChanged.FromString),
        (topics.receipts, events_pb2.DeliveryReceipt.FromString),
    ):
        for rec in await read_topic(bootstrap, topic):
            message = parse(rec.value)
            if message.event_id not in wanted:
                continue
            delay = (rec.timestamp_ms - message.action_time.ToMilliseconds()) / 1000
            if topic == topics.suppressions:
                stage = "decided"
            elif message.status == events_pb2.DELIVERY_STATUS_PENDING:
                stage = "pending_receipt"
            else:
                stage = f"applied_{'operator' if message.party_kind == 1 else 'psva'}"
            stages.setdefault(stage, []).append(delay)
    for stage, delays in sorted(stages.items()):
        p50, p99 = percentile(delays, 50), percentile(delays, 99)
        print(f"  {stage:<18} p50 {p50:7.3f} s   p99 {p99:7.3f} s")
    return {stage: percentile(delays, 99) for stage, delays in stages.items()}


async def collect(
    bootstrap: str, topic: str, wanted: set[str], deadline_s: float
) -> dict[str, float]:
    """Seconds from action to done for every wanted request that got done in time."""
    done: dict[str, float] = {}

    def record(batch: list[Record]) -> None:
        for rec in batch:
            proof = events_pb2.PropagationRecord.FromString(rec.value)
            if proof.done and proof.event_id in wanted and proof.event_id not in done:
                ms = proof.done_time.ToMilliseconds() - proof.action_time.ToMilliseconds()
                done[proof.event_id] = ms / 1000

    await follow_topic(
        bootstrap,
        topic,
        record,
        done=lambda: len(done) >= len(wanted),
        deadline=time.monotonic() + deadline_s,
    )
    return done


def main() -> int:
    """Entry point: ``python -m bench.propagation_load``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--psvas", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="stopsms-bench-") as tmp:
        work = Path(tmp)
        psvas = write_parties(work / "parties.yaml", args.psvas)
        (work / "senders").write_text("SHOP01 9\n* 1\n")
        print("starting the platform...", flush=True)
        platform = LocalPlatform(
            work / "platform",
            preferred_ports={name: 0 for name in DEFAULT_PORTS},
            parties_file=work / "parties.yaml",
            senders_seed=None,  # the benchmark's directory lists its senders
            # the propagation path; the console follows it (bench.complaints_load measures it)
            services=("registry", "notifier", "intake"),
            extra_env={"STOPSMS_NUMBER_REQUESTS_PER_MINUTE": "1000000"},
        )
        clients: list[subprocess.Popen[bytes]] = []
        with platform:
            ends = platform.endpoints
            topics = Topics(platform.namespace)
            tls = str(platform.tls_folder)
            print("raw Kafka round trips...", flush=True)
            raw = asyncio.run(kafka_round_trips(ends["kafka"], topics.dlq, 200))
            logs = work / "clients"
            logs.mkdir()
            command = [sys.executable, "-m", "bench.load_clients"]
            clients.append(
                start_process(
                    [*command, "operators", ends["kafka"], platform.namespace, *OPERATORS],
                    logs / "operators.log",
                )
            )
            half = len(psvas) // 2
            for i, group in enumerate((psvas[:half], psvas[half:])):
                clients.append(
                    start_process(
                        [*command, "psvas", ends["notifier_grpc"], tls, *group],
                        logs / f"psvas-{i}.log",
                    )
                )
            try:
                time.sleep(8)  # streams connected, groups joined
                print(
                    f"{args.rate:.0f} opt-outs/s for {args.seconds:.0f} s, "
                    f"{len(OPERATORS)} operators, {len(psvas)} PSVA streams...",
                    flush=True,
                )
                accepted_file = work / "accepted"
                started = time.monotonic()
                subprocess.run(
                    [
                        *command,
                        "load",
                        ends["intake_grpc"],
                        tls,
                        f"--rate={args.rate}",
                        f"--count={int(args.rate * args.seconds)}",
                        f"--senders={work / 'senders'}",
                        f"--ledger={accepted_file}",
                    ],
                    check=True,
                )
                load_seconds = time.monotonic() - started
                accepted = set(read_ledger(accepted_file))
                print(f"collecting the proofs of {len(accepted)} requests...", flush=True)
                done = asyncio.run(collect(ends["kafka"], topics.propagation, accepted, COLLECT_S))
                print("where the time goes, after the citizen's action:", flush=True)
                asyncio.run(stage_delays(ends["kafka"], topics, accepted))
            finally:
                for client in clients:
                    stop_process(client)
    # A request not proven done within the collection window counts as the window's length:
    # the percentiles are then lower bounds, and say so, instead of describing only the fast.
    missing = len(accepted) - len(done)
    times = sorted([*done.values(), *[float(COLLECT_S)] * missing])
    if missing:
        print(
            f"warning: {missing} requests not proven done within {COLLECT_S} s; they count "
            f"as {COLLECT_S} s, so the percentiles below are lower bounds"
        )
    raw_p50, raw_p99 = percentile(raw, 50), percentile(raw, 99)
    print(
        f"propagated {len(done)}/{len(accepted)}; p50 {percentile(times, 50):.3f} s, "
        f"p99 {percentile(times, 99):.3f} s, max {times[-1]:.3f} s"
    )
    record(
        [
            figure("propagation_load_p50_s", percentile(times, 50), "s", raw_p50),
            figure("propagation_load_p95_s", percentile(times, 95), "s", raw_p50),
            figure("propagation_load_p99_s", percentile(times, 99), "s", raw_p99),
            figure("propagation_load_rate_per_s", len(accepted) / load_seconds, "1/s"),
            figure("propagation_load_done_share", len(done) / max(len(accepted), 1), "ratio"),
            figure("psva_streams", len(psvas), "streams"),
            figure("load_kafka_roundtrip_p99_s", raw_p99, "s"),
        ]
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
