"""Propagation sweep: how propagation, CPU and Kafka records grow with the offered rate.

For each offered rate (0, 25, 100, 200, 300, 400, 500 opt-outs/s by default, 45 s each), a fresh
platform runs — real Kafka and Redis, the three services with mutual TLS — with 3 operators and
50 PSVA streams in client processes of their own, and a load process submits opt-outs through
intake: 90 % for one sender, 10 % global, as :mod:`bench.propagation_load` does. Per rate:

* accepted per second; p50, p95 and p99 from the citizen's action to the proof's done time, a
  request not proven within the window (the load and ``--drain`` seconds after it) counting as
  the window, and saying so; the share proven within 1 s;
* where the time goes: decided (the change's time on the list), first and last party applied;
* CPU milliseconds per opt-out of each service and of the broker (``/proc/<pid>/stat`` over the
  load and its drain), and of the three services together; at rate 0, each one's share of a
  core (the idle floor, with the 53 parties connected);
* Kafka records the platform wrote per opt-out, over every topic of its namespace (changelogs
  included): end offsets before and after, divided by the accepted requests;
* the CPU of the benchmark's own clients (operators, PSVAs, load) and how busy the whole
  machine was, since everything shares its cores.

Each fresh platform is first warmed up (``--warmup`` seconds at 100/s, every request proven)
and measured only then: a new broker's JIT compilers otherwise take a quarter of a core for
its first two minutes (per-thread CPU of the broker, C1/C2 compiler threads), a cost of
starting, not of the work. The idle window (rate 0) begins ``--idle-settle`` seconds after the
warm-up, once those compilers have finished with the warm-up's code: the floor is that of a
platform that has run, with its 53 parties connected.

In the same run, the raw baselines: a produce→consume round trip on the same broker, and the
CPU per record of a bare aiokafka consume→produce loop. Then one more run at 100/s with 200
PSVAs in the directory (50 of them streaming): records per opt-out must not grow with parties.

    python -m bench.propagation_sweep [--rates 0,25,100,...] [--seconds 45] [--psvas 50]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from kafka import KafkaConsumer
from kafka import TopicPartition as KafkaTopicPartition

from bench.propagation import kafka_round_trips
from bench.propagation_load import OPERATORS, write_parties
from bench.results import SMOKE, figure, percentile, record
from stopsms.adapters.kafka import Record, follow_topic, read_topic
from stopsms.domain.topics import Topics
from stopsms.tools.launcher import LocalInfrastructure, start_process, stop_process
from stopsms.tools.local_platform import DEFAULT_PORTS, LocalPlatform
from stopsms.tools.verify import read_ledger
from stopsms.v1 import events_pb2

SERVICES = ("intake", "registry", "notifier")
TICK = os.sysconf("SC_CLK_TCK")
#: The rate of the warm-up before each measured window.
WARMUP_RATE = 20.0 if SMOKE else 100.0


def machine_busy() -> tuple[float, float]:
    """CPU seconds the whole machine spent busy, and its seconds of capacity (``/proc/stat``)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle and iowait
    return (sum(fields[:8]) - idle) / TICK, sum(fields[:8]) / TICK


def children_cpu() -> float:
    """CPU seconds of this process's reaped children (the load processes)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def cpu_seconds(pid: int) -> float:
    """User and system CPU of one process so far (``/proc/<pid>/stat``, fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def end_offsets_of(bootstrap: str, namespace: str) -> dict[tuple[str, int], int]:
    """The end offset of every partition of every topic of the namespace (changelogs too)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    try:
        names = [t for t in consumer.topics() if t.startswith(namespace)]
        tps = [
            KafkaTopicPartition(t, p) for t in names for p in consumer.partitions_for_topic(t) or ()
        ]
        ends = consumer.end_offsets(tps)
    finally:
        consumer.close()
    return {(tp.topic, tp.partition): offset for tp, offset in ends.items()}


async def bare_loop_cpu_per_record(bootstrap: str, count: int) -> float:
    """CPU seconds per record of a bare aiokafka consume→produce loop (the stream baseline)."""
    source, sink = "bench.bare.source", "bench.bare.sink"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(t, 1, 1) for t in (source, sink)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    for i in range(count):
        await producer.send(source, key=b"%d" % i, value=b"x" * 120)
    await producer.flush()
    consumer = AIOKafkaConsumer(
        source, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    started = time.process_time()
    seen = 0
    try:
        while seen < count:
            batches = await consumer.getmany(timeout_ms=1000, max_records=2000)
            futures = []
            for messages in batches.values():
                for m in messages:
                    futures.append(await producer.send(sink, key=m.key, value=m.value))
                    seen += 1
            await asyncio.gather(*futures)
    finally:
        spent = time.process_time() - started
        await consumer.stop()
        await producer.stop()
    return spent / count


async def collect(
    bootstrap: str, topic: str, wanted: set[str], deadline: float
) -> dict[str, events_pb2.PropagationRecord]:
    """The done proof of every wanted request proven before the monotonic ``deadline``."""
    done: dict[str, events_pb2.PropagationRecord] = {}

    def on_batch(batch: list[Record]) -> None:
        for rec in batch:
            proof = events_pb2.PropagationRecord.FromString(rec.value)
            if proof.done and proof.event_id in wanted:
                done.setdefault(proof.event_id, proof)

    await follow_topic(
        bootstrap, topic, on_batch, done=lambda: len(done) >= len(wanted), deadline=deadline
    )
    return done


async def decided_delays(bootstrap: str, topic: str, wanted: set[str]) -> list[float]:
    """Seconds from the action to the change's time on the list."""
    delays = []
    for rec in await read_topic(bootstrap, topic):
        change = events_pb2.SuppressionChanged.FromString(rec.value)
        if change.event_id in wanted:
            delays.append((rec.timestamp_ms - change.action_time.ToMilliseconds()) / 1000)
    return delays


@dataclass
class RateResult:
    """What one offered rate measured."""

    offered: float
    accepted_per_s: float = 0.0
    accepted: int = 0
    proven: int = 0
    times: list[float] = field(default_factory=list)
    stages: dict[str, float] = field(default_factory=dict)
    cpu_s: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    records: int = 0
    #: share of the machine's cores busy over the window (everything, not only the platform)
    machine_busy: float = 0.0

    @property
    def p(self) -> dict[int, float]:
        """p50, p95 and p99 of action to done (unproven requests count as the window)."""
        return {q: percentile(self.times, q) if self.times else 0.0 for q in (50, 95, 99)}

    def cpu_ms_per_optout(self, name: str) -> float:
        """CPU milliseconds per accepted opt-out of one process (or ``services``)."""
        spent = sum(self.cpu_s[s] for s in SERVICES) if name == "services" else self.cpu_s[name]
        # "clients": the benchmark's operators, PSVAs and load, for where the cores go
        return spent * 1000 / max(self.accepted, 1)


def py_spy() -> str:
    """The py-spy sampling profiler, installed here when missing (profiles are optional)."""
    found = shutil.which("py-spy")
    if found is None:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "py-spy"], check=True)
        found = shutil.which("py-spy")
    assert found is not None, "py-spy could not be installed"
    return found


def start_profiles(
    pids: dict[str, int], seconds: float, folder: Path
) -> list[subprocess.Popen[bytes]]:
    """Sample each service for ``seconds`` (collapsed stacks, ``<service>.txt``)."""
    folder.mkdir(parents=True, exist_ok=True)
    spy = py_spy()
    return [
        start_process(
            [spy, "record", "--nonblocking", "-r", "50", "-d", str(int(seconds)), "-f", "raw",
             "-p", str(pids[name]), "-o", str(folder / f"{name}.txt")],
            folder / f"{name}.log",
        )
        for name in SERVICES
    ]  # fmt: skip


def top_functions(path: Path, count: int = 12) -> list[tuple[float, str]]:
    """The functions where a profile's samples sit (self time), as shares of all samples."""
    own: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        if not stack or not samples.isdigit():
            continue
        leaf = stack.split(";")[-1]
        own[leaf] = own.get(leaf, 0) + int(samples)
        total += int(samples)
    return sorted(((n / max(total, 1), f) for f, n in own.items()), reverse=True)[:count]


def offer(
    command: list[str], intake: str, tls: str, rate: float, seconds: float, work: Path, name: str
) -> tuple[set[str], float]:
    """Submit ``rate`` opt-outs a second for ``seconds`` through intake.

    Returns the accepted event ids and how long the load took.
    """
    ledger = work / f"{name}.ledger"
    started = time.monotonic()
    subprocess.run(
        [
            *command,
            "load",
            intake,
            tls,
            f"--rate={rate}",
            f"--count={max(1, int(rate * seconds))}",
            f"--senders={work / 'senders'}",
            f"--ledger={ledger}",
        ],
        check=True,
    )
    return set(read_ledger(ledger)), time.monotonic() - started


def run_rate(
    rate: float,
    seconds: float,
    drain: float,
    psvas: int,
    streaming: int,
    work: Path,
    profile: Path | None = None,
    *,
    warmup: float = 0.0,
    ack_seconds: float = 0.1,
    idle_settle: float = 0.0,
) -> RateResult:
    """One fresh platform at one offered rate (profiled when ``profile`` names a folder)."""
    work.mkdir(parents=True)
    ids = write_parties(work / "parties.yaml", psvas)[:streaming]
    (work / "senders").write_text("SHOP01 9\n* 1\n")
    platform = LocalPlatform(
        work / "platform",
        preferred_ports={name: 0 for name in DEFAULT_PORTS},
        parties_file=work / "parties.yaml",
        senders_seed=None,  # the benchmark's directory lists its senders
        # the propagation path; the console follows it (bench.complaints_load measures it)
        services=("registry", "notifier", "intake"),
        extra_env={"STOPSMS_NUMBER_REQUESTS_PER_MINUTE": "1000000"},
    )
    result = RateResult(rate)
    clients: list[subprocess.Popen[bytes]] = []
    with platform:
        ends = platform.endpoints
        topics = Topics(platform.namespace)
        tls = str(platform.tls_folder)
        command = [sys.executable, "-m", "bench.load_clients"]
        logs = work / "clients"
        logs.mkdir()
        clients.append(
            start_process(
                [*command, "operators", ends["kafka"], platform.namespace, *OPERATORS],
                logs / "operators.log",
            )
        )
        half = len(ids) // 2
        for i, group in enumerate((ids[:half], ids[half:])):
            if group:
                clients.append(
                    start_process(
                        [
                            *command,
                            "psvas",
                            ends["notifier_grpc"],
                            tls,
                            *group,
                            f"--ack-seconds={ack_seconds}",
                        ],
                        logs / f"psvas-{i}.log",
                    )
                )
        try:
            time.sleep(8)  # streams connected, groups joined, then the platform settles
            if warmup:
                warmed, _ = offer(
                    command, ends["intake_grpc"], tls, WARMUP_RATE, warmup, work, "warmup"
                )
                proven = asyncio.run(
                    collect(ends["kafka"], topics.propagation, warmed, time.monotonic() + 60)
                )
                print(f"   warm-up: {len(proven)} of {len(warmed)} proven", flush=True)
                time.sleep(3)  # the last acknowledgements and polls of the warm-up
            if not rate:
                # The floor of a platform that has run, not of one that just started: the
                # broker's JIT compilers work through the warm-up's code for a minute or two.
                time.sleep(idle_settle)
            assert platform.infra is not None and platform.infra.kafka.process is not None
            pids = {name: platform.processes[name].pid for name in SERVICES}
            pids["kafka"] = platform.infra.kafka.process.pid
            before_offsets = end_offsets_of(ends["kafka"], platform.namespace)
            before_cpu = {name: cpu_seconds(pid) for name, pid in pids.items()}
            before_clients = sum(cpu_seconds(c.pid) for c in clients) + children_cpu()
            before_machine = machine_busy()
            profilers = start_profiles(pids, seconds, profile) if profile else []
            started = time.monotonic()
            accepted: set[str] = set()
            if rate > 0:
                accepted, load_seconds = offer(
                    command, ends["intake_grpc"], tls, rate, seconds, work, "load"
                )
                proofs = asyncio.run(
                    collect(ends["kafka"], topics.propagation, accepted, time.monotonic() + drain)
                )
            else:
                time.sleep(seconds)
                load_seconds, proofs = seconds, {}
            result.seconds = time.monotonic() - started
            result.cpu_s = {name: cpu_seconds(pid) - before_cpu[name] for name, pid in pids.items()}
            result.cpu_s["clients"] = (
                sum(cpu_seconds(c.pid) for c in clients) + children_cpu() - before_clients
            )
            busy, capacity = machine_busy()
            result.machine_busy = (busy - before_machine[0]) / (capacity - before_machine[1])
            after_offsets = end_offsets_of(ends["kafka"], platform.namespace)
            result.records = sum(
                offset - before_offsets.get(tp, 0) for tp, offset in after_offsets.items()
            )
            result.accepted = len(accepted)
            result.accepted_per_s = len(accepted) / load_seconds if rate else 0.0
            result.proven = len(proofs)
            window = seconds + drain
            result.times = sorted(
                [
                    (p.done_time.ToMilliseconds() - p.action_time.ToMilliseconds()) / 1000
                    for p in proofs.values()
                ]
                + [window] * (len(accepted) - len(proofs))
            )
            if proofs:
                firsts = [
                    (
                        min(d.applied_time.ToMilliseconds() for d in p.deliveries)
                        - p.action_time.ToMilliseconds()
                    )
                    / 1000
                    for p in proofs.values()
                ]
                decided = asyncio.run(decided_delays(ends["kafka"], topics.suppressions, accepted))
                result.stages = {
                    "decided_p99": percentile(decided, 99),
                    "first_applied_p99": percentile(firsts, 99),
                    "last_applied_p99": percentile(result.times, 99),
                }
            for profiler in profilers:
                profiler.wait(timeout=60)
        finally:
            for client in clients:
                stop_process(client)
    if profile:
        for name in SERVICES:
            print(f"   where {name} spends its time at {rate:.0f}/s (self time, share of samples):")
            for share, function in top_functions(profile / f"{name}.txt"):
                print(f"     {share:6.1%}  {function}")
    return result


def knee(results: list[RateResult]) -> float:
    """The highest offered rate whose p99 ≤ 1 s with at least 99.9 % proven."""
    best = 0.0
    for r in results:
        if r.offered and r.proven >= 0.999 * r.accepted and r.p[99] <= 1.0:
            best = max(best, r.offered)
    return best


def print_table(results: list[RateResult], raw_p50: float, bare_ms: float) -> None:
    """The sweep as a markdown table, for the closing note and docs."""
    print(
        "\n| offered/s | accepted/s | p50 | p95 | p99 | ≤1 s | decided p99 | first applied p99 "
        "| CPU ms/opt-out: intake / registry / notifier / services / broker / clients "
        "| machine busy | records/opt-out |"
    )
    print("| --- " * 11 + "|")
    for r in results:
        if not r.offered:
            shares = " / ".join(
                f"{r.cpu_s[n] / r.seconds:.3f}" for n in (*SERVICES, "kafka", "clients")
            )
            print(
                f"| 0 (idle) | — | — | — | — | — | — | — | core share: {shares} "
                f"| {r.machine_busy:.0%} | — |"
            )
            continue
        within = sum(1 for t in r.times if t <= 1.0) / max(len(r.times), 1)
        cpu = " / ".join(
            f"{r.cpu_ms_per_optout(n):.2f}" for n in (*SERVICES, "services", "kafka", "clients")
        )
        missing = r.accepted - r.proven
        print(
            f"| {r.offered:.0f} | {r.accepted_per_s:.0f} | {r.p[50]:.2f} s | {r.p[95]:.2f} s "
            f"| {r.p[99]:.2f} s{' (' + str(missing) + ' unproven)' if missing else ''} "
            f"| {within:.1%} | {r.stages.get('decided_p99', 0):.2f} s "
            f"| {r.stages.get('first_applied_p99', 0):.2f} s | {cpu} | {r.machine_busy:.0%} "
            f"| {r.records / max(r.accepted, 1):.2f} |"
        )
    print(f"\nraw Kafka round trip p50 {raw_p50 * 1000:.1f} ms; bare aiokafka consume→produce "
          f"loop {bare_ms:.3f} ms CPU per record")  # fmt: skip


def main() -> int:
    """Entry point: ``python -m bench.propagation_sweep``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="0,25,100,200,300,400,500")
    parser.add_argument("--seconds", type=float, default=45.0)
    parser.add_argument("--drain", type=float, default=30.0)
    parser.add_argument("--psvas", type=int, default=50)
    parser.add_argument("--many-parties", type=int, default=200, help="0: skip that run")
    parser.add_argument(
        "--warmup", type=float, default=2.0 if SMOKE else 20.0, help="seconds at 100/s first"
    )
    parser.add_argument(
        "--ack-seconds", type=float, default=0.1, help="how often each PSVA acknowledges"
    )
    parser.add_argument(
        "--idle-settle",
        type=float,
        default=0.0 if SMOKE else 90.0,
        help="seconds between the warm-up and the idle window (rate 0)",
    )
    parser.add_argument(
        "--profile", type=float, action="append", default=[], help="profile at this rate (py-spy)"
    )
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    results = []
    with tempfile.TemporaryDirectory(prefix="stopsms-sweep-") as tmp:
        work = Path(tmp)
        for rate in rates:
            print(f"== {rate:.0f} opt-outs/s for {args.seconds:.0f} s, fresh platform", flush=True)
            profile = work / f"profile-{rate:.0f}" if rate in args.profile else None
            r = run_rate(
                rate,
                args.seconds,
                args.drain,
                args.psvas,
                args.psvas,
                work / f"r{rate}",
                profile,
                warmup=args.warmup,
                ack_seconds=args.ack_seconds,
                idle_settle=args.idle_settle,
            )
            results.append(r)
            print(
                f"   accepted {r.accepted}, proven {r.proven}, p99 {r.p[99]:.3f} s, "
                f"records {r.records}, CPU {r.cpu_s}",
                flush=True,
            )
        many = None
        if args.many_parties:
            print(f"== 100/s with {args.many_parties} PSVAs in the directory", flush=True)
            many = run_rate(
                100.0 if not SMOKE else rates[-1],
                args.seconds,
                args.drain,
                args.many_parties,
                args.psvas,
                work / "many",
                warmup=args.warmup,
                ack_seconds=args.ack_seconds,
            )
        print("== baselines on a broker of their own", flush=True)
        with LocalInfrastructure(work / "base") as infra:
            bootstrap = infra.kafka.bootstrap
            raw = asyncio.run(kafka_round_trips(bootstrap, Topics().dlq, 200))
            bare = asyncio.run(bare_loop_cpu_per_record(bootstrap, 2000 if SMOKE else 50_000))
    raw_p50 = percentile(raw, 50)
    print_table(results + ([many] if many else []), raw_p50, bare * 1000)
    idle = next((r for r in results if not r.offered), None)
    at = {r.offered: r for r in results}
    figures = [
        figure("propagation_knee_per_s", knee(results), "1/s"),
        figure("sweep_kafka_roundtrip_p50_s", raw_p50, "s"),
        figure("bare_loop_cpu_ms_per_record", bare * 1000, "ms"),
    ]
    if idle is not None:
        shares = sum(idle.cpu_s[n] for n in (*SERVICES, "kafka")) / idle.seconds  # not clients
        figures.append(figure("idle_cpu_share", shares, "core"))
    if 300.0 in at:
        r = at[300.0]
        figures += [
            figure("propagation_p99_s_at_300", r.p[99], "s", raw_p50),
            figure("propagation_p50_s_at_300", r.p[50], "s", raw_p50),
            figure(
                "platform_cpu_ms_per_optout_at_300",
                r.cpu_ms_per_optout("services"),
                "ms",
                bare * 1000,
            ),
            figure("broker_cpu_ms_per_optout_at_300", r.cpu_ms_per_optout("kafka"), "ms"),
            figure("kafka_records_per_optout_at_300", r.records / max(r.accepted, 1), "records"),
        ]
    if many is not None:
        figures.append(
            figure(
                "kafka_records_per_optout_200_parties",
                many.records / max(many.accepted, 1),
                "records",
            )
        )
    record(figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
