"""Fault tests: kill anything, at any moment; no acknowledged opt-out is lost or applied twice.

Each scenario runs the whole platform (real Kafka and Redis, the three services with mutual
TLS), two operators that consume and commit, and two PSVAs that watch and acknowledge, all in
processes of their own. A separate process submits opt-outs through intake at a steady rate,
retrying unanswered ones with the same request id, and records every acknowledged id in a
ledger. Half way through, the scenario's fault is injected. Then:

* recovery: from the end of the fault until eight new opt-outs (spread over the partitions)
  are proven applied by every party;
* the ledger check (:mod:`stopsms.tools.verify`): nothing lost, duplicated, divergent or unapplied;
* each PSVA received every change it is entitled to, and none again after acknowledging it.

Like an orchestrator, the harness restarts a service whose process exited (a broker outage
may make a stream processor give up); the report says so.

    python -m chaos [--optouts 5000] [--rate 100] [--only NAME[,NAME]]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import yaml
from grpc_health.v1 import health_pb2

from stopsms.adapters.deadlines import deadline
from stopsms.adapters.kafka import TopicReader
from stopsms.adapters.settings import PACKAGE_CONFIG
from stopsms.adapters.view import RedisSuppressionView
from stopsms.domain.topics import Topics
from stopsms.domain.viewcodec import ViewLayout
from stopsms.tools.health import health_status
from stopsms.tools.launcher import LocalInfrastructure, start_process, stop_process
from stopsms.tools.local_platform import DEFAULT_PORTS, SERVICES, LocalPlatform
from stopsms.tools.verify import LedgerReport, read_ledger, verify
from stopsms.v1 import events_pb2, intake_pb2, intake_pb2_grpc, notifier_pb2, notifier_pb2_grpc

OPERATORS = {"iam": ["IAM"], "orange": ["ORANGE", "SHOP03"]}
PSVAS = {"psva-a": ["SHOP01"], "psva-b": ["SHOP02"]}
#: Sender and weight of the load's opt-outs; ``*`` is global (every party is concerned).
SENDERS = "SHOP01 4\nSHOP02 3\nSHOP03 1\n* 2\n"
#: Faust's session timeout in these tests: the failover time after a crash or a pause.
SESSION_TIMEOUT_S = 10
#: A stream processor that commits nothing this long while work waits exits (and is restarted).
STALL_EXIT_S = 45
#: A scenario fails when a new opt-out is not proven applied this long after the fault.
RECOVERY_BOUND_S = 120.0
#: The ledger check's allowance for the view and the proofs to catch up.
CATCH_UP_BOUND_S = 180.0
#: How long a scenario's platform and clients may take to start.
START_BOUND_S = 300.0
#: How long injecting a fault may take (a kill and restart, an outage, a pause).
FAULT_BOUND_S = 240.0
#: Kubernetes' default termination grace period: a SIGTERM'd service must exit within it.
GRACE_BOUND_S = 30.0
RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
#: New opt-outs whose proofs measure the recovery (spread over the partitions).
PROBES = 8


@dataclass
class Run:
    """One scenario's platform, clients and findings."""

    platform: LocalPlatform
    work: Path
    ledger: Path
    notes: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    revived: list[str] = field(default_factory=list)

    @property
    def infra(self) -> LocalInfrastructure:
        """The shared Kafka and Redis."""
        assert self.platform.infra is not None
        return self.platform.infra

    def acknowledged(self) -> int:
        """Lines of the ledger so far."""
        return len(self.ledger.read_text().splitlines()) if self.ledger.exists() else 0

    def revive(self) -> None:
        """Restart any service whose process exited, as an orchestrator would."""
        for name, process in list(self.platform.processes.items()):
            if process.poll() is not None:
                service = name.split("-")[0]
                self.revived.append(f"{name} (exit {process.returncode})")
                if name in SERVICES:
                    self.platform.start_service(name)
                else:
                    self.platform.start_replica(service, name)

    def restart(self, name: str) -> None:
        """Start a service again after it was killed."""
        self.platform.start_service(name)


# --- the faults ----------------------------------------------------------------------------


def kill_and_restart(service: str) -> Callable[[Run], None]:
    """A crash of ``service`` (SIGKILL), then a start."""

    def fault(run: Run) -> None:
        run.platform.kill(service)
        time.sleep(1)
        run.restart(service)

    return fault


def kill_broker(run: Run) -> None:
    """Kafka crashes (SIGKILL); while it is down, intake must answer UNAVAILABLE, never OK.

    New opt-outs are sent during the first seconds of the outage, and the broker stays down
    until every one is answered (intake gives Kafka 10 s), so each answer is one given while
    Kafka was down.
    """
    run.infra.kafka.kill()

    async def during_outage() -> list[str]:
        calls = []
        for _ in range(8):
            calls.append(asyncio.create_task(submit_once(run.platform, timeout=30)))
            await asyncio.sleep(0.5)
        return await asyncio.gather(*calls)

    answers: dict[str, int] = {}
    for code in asyncio.run(during_outage()):
        answers[code] = answers.get(code, 0) + 1
    run.notes.append(f"while the broker was down intake answered {answers}")
    if answers.get("OK"):
        run.failures.append(f"intake said OK {answers['OK']} times while Kafka was down")
    if answers.get("UNAVAILABLE", 0) != sum(answers.values()):
        run.failures.append("intake answered other than UNAVAILABLE while Kafka was down")
    run.infra.kafka.start()


def empty_redis(run: Run) -> None:
    """Redis killed and restarted empty: NOT_SERVING until the view is rebuilt and verified."""
    run.infra.redis.kill()
    run.infra.redis.start()
    address = run.platform.health["registry"]
    seen: list[int | None] = []
    deadline = time.monotonic() + RECOVERY_BOUND_S
    while time.monotonic() < deadline:
        status = health_status(address, "stopsms.v1.RegistryService")
        if not seen or seen[-1] != status:
            seen.append(status)
        if status == health_pb2.HealthCheckResponse.SERVING and len(seen) > 1:
            break
        time.sleep(0.1)
    names = [
        health_pb2.HealthCheckResponse.ServingStatus.Name(s) if s is not None else "no answer"
        for s in seen
    ]
    run.notes.append(f"registry's lookup service went {' → '.join(names)}")
    if health_pb2.HealthCheckResponse.NOT_SERVING not in seen:
        run.failures.append("the registry never said NOT_SERVING while its view was rebuilt")


def kill_one_of_two_workers(run: Run) -> None:
    """Two registry workers in one group; kill -9 one (its partitions move: a rebalance)."""
    run.platform.kill("registry")
    run.platform.processes.pop("registry")
    run.notes.append("registry-2 took over the killed worker's partitions")


def pause_registry(run: Run) -> None:
    """SIGSTOP the registry past its session timeout, then SIGCONT."""
    run.platform.kill("registry", signal.SIGSTOP)
    time.sleep(SESSION_TIMEOUT_S + 5)
    run.platform.kill("registry", signal.SIGCONT)


def terminate_everything(run: Run) -> None:
    """SIGTERM every service under load: each drains and exits within the grace period."""
    started = time.monotonic()
    for name in SERVICES:
        run.platform.kill(name, signal.SIGTERM)
    exits = {}
    for name in SERVICES:
        process = run.platform.processes[name]
        try:
            process.wait(timeout=GRACE_BOUND_S + 5)
            exits[name] = time.monotonic() - started
        except subprocess.TimeoutExpired:
            run.failures.append(f"{name} did not exit within {GRACE_BOUND_S:.0f} s of SIGTERM")
            run.platform.kill(name)
        if process.returncode not in (0, -signal.SIGTERM):
            run.failures.append(f"{name} exited with {process.returncode} after SIGTERM")
    run.notes.append(
        "exited after SIGTERM in " + ", ".join(f"{n} {s:.1f} s" for n, s in exits.items())
    )
    for name in exits:
        if exits[name] > GRACE_BOUND_S:
            run.failures.append(f"{name} took {exits[name]:.1f} s to exit")
    for name in SERVICES:
        run.restart(name)


@dataclass(frozen=True)
class Scenario:
    """A fault, injected half way through the load."""

    name: str
    title: str
    fault: Callable[[Run], None]
    registry_replicas: int = 1


SCENARIOS = [
    Scenario("registry-kill", "kill -9 the registry, restart it", kill_and_restart("registry")),
    Scenario("notifier-kill", "kill -9 the notifier, restart it", kill_and_restart("notifier")),
    Scenario("intake-kill", "kill -9 intake mid-load, restart it", kill_and_restart("intake")),
    Scenario("broker-kill", "kill -9 the Kafka broker, restart it", kill_broker),
    Scenario("redis-empty", "Redis killed and restarted empty", empty_redis),
    Scenario(
        "registry-rebalance",
        "two registry workers, one killed",
        kill_one_of_two_workers,
        registry_replicas=2,
    ),
    Scenario("registry-pause", "SIGSTOP the registry past its session", pause_registry),
    Scenario("terminate-all", "SIGTERM every service under load", terminate_everything),
]


# --- probes and checks ---------------------------------------------------------------------


async def submit_once(platform: LocalPlatform, timeout: float) -> str:
    """One new opt-out; the status code's name (OK when intake accepted it)."""
    channel, metadata = platform.channel("intake", "iam")
    async with channel:
        try:
            await intake_pb2_grpc.IntakeServiceStub(channel).SubmitOptOut(
                intake_pb2.SubmitOptOutRequest(
                    request_id=f"outage-{uuid.uuid4()}",
                    msisdn=f"06{random.randrange(10**8):08d}",
                    channel=events_pb2.CHANNEL_API,
                ),
                metadata=metadata,
                timeout=timeout,
            )
            return "OK"
        except grpc.aio.AioRpcError as exc:
            return exc.code().name


async def probe(run: Run, probes: Path) -> float:
    """Seconds until new global opt-outs are accepted and proven applied by every party.

    Several, for different numbers, so that every worker's partitions are in the measure (a
    single probe could land on a worker that was never touched).
    """
    started = time.monotonic()
    done = await asyncio.gather(*(probe_one(run, probes, started) for _ in range(PROBES)))
    return max(done)


async def probe_one(run: Run, probes: Path, started: float) -> float:
    """One probe opt-out: submitted until accepted, then followed until its proof is done."""
    request_id = f"probe-{uuid.uuid4()}"
    request = intake_pb2.SubmitOptOutRequest(
        request_id=request_id,
        msisdn=f"06{random.randrange(10**8):08d}",
        channel=events_pb2.CHANNEL_API,
    )
    while True:
        if time.monotonic() - started > RECOVERY_BOUND_S:
            raise TimeoutError("no new opt-out was accepted")
        run.revive()
        channel, metadata = run.platform.channel("intake", "iam")
        async with channel:
            try:
                reply = await intake_pb2_grpc.IntakeServiceStub(channel).SubmitOptOut(
                    request, metadata=metadata, timeout=5
                )
                break
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in RETRYABLE:
                    raise
        await asyncio.sleep(0.5)
    with probes.open("a") as ledger:
        ledger.write(f"{request_id} {reply.event_id}\n")
    while time.monotonic() - started < RECOVERY_BOUND_S:
        run.revive()
        channel, metadata = run.platform.channel("notifier", "iam")
        async with channel:
            try:
                proof = await notifier_pb2_grpc.NotifierServiceStub(channel).GetPropagation(
                    notifier_pb2.GetPropagationRequest(event_id=reply.event_id),
                    metadata=metadata,
                    timeout=5,
                )
                if proof.propagation.done:
                    return time.monotonic() - started
            except grpc.aio.AioRpcError:
                pass
        await asyncio.sleep(0.2)
    raise TimeoutError(f"probe {reply.event_id} was accepted but not proven applied")


async def entitled_changes(bootstrap: str, topics: Topics) -> dict[str, set[str]]:
    """For each PSVA, the event ids of every change it must receive (its senders and global)."""
    wanted: dict[str, set[str]] = {p: set() for p in PSVAS}
    reader = TopicReader(bootstrap, topics.suppressions)
    await reader.start()
    try:
        async for batch in reader.read_to_end():
            for record in batch:
                if record.value is None:
                    continue
                change = events_pb2.SuppressionChanged.FromString(record.value)
                for party, senders in PSVAS.items():
                    if change.sender_id in ("", *senders):
                        wanted[party].add(change.event_id)
    finally:
        await reader.stop()
    return wanted


async def ledger_check(run: Run, ids: list[str]) -> LedgerReport:
    """The ledger check against this run's topics and view.

    The orchestrator keeps watching while the check waits for late work: a stream processor
    that exits then (its stall watchdog, for one) is restarted, as Kubernetes would.
    """
    platform = run.platform
    view = RedisSuppressionView.from_url(run.infra.redis.url, platform.namespace, ViewLayout())

    async def keep_reviving() -> None:
        while True:
            run.revive()
            await asyncio.sleep(0.5)

    orchestrator = asyncio.create_task(keep_reviving())
    try:
        return await verify(
            ids,
            bootstrap=run.infra.kafka.bootstrap,
            topics=Topics(platform.namespace),
            view=view,
            wait_seconds=CATCH_UP_BOUND_S,
        )
    finally:
        orchestrator.cancel()
        await view.close()


# --- one scenario --------------------------------------------------------------------------


def write_parties(path: Path) -> None:
    """Two operators, two PSVAs and the platform's own identities."""
    default = yaml.safe_load((PACKAGE_CONFIG / "parties.yaml").read_text())
    keep = [p for p in default["parties"] if p["kind"] in ("platform", "regulator")]
    parties = [{"id": o, "kind": "operator", "senders": s} for o, s in OPERATORS.items()]
    parties += [{"id": p, "kind": "psva", "senders": s} for p, s in PSVAS.items()]
    path.write_text(yaml.safe_dump({"parties": parties + keep}))


@dataclass
class Outcome:
    """What one scenario showed."""

    scenario: str
    passed: bool
    acknowledged: int = 0
    recovery_s: float = 0.0
    catch_up_s: float = 0.0
    report: LedgerReport | None = None
    notes: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def run_scenario(
    scenario: Scenario, infra: LocalInfrastructure, optouts: int, rate: float, work: Path
) -> Outcome:
    """Load, the fault half way, recovery, the checks."""
    work.mkdir(parents=True)
    write_parties(work / "parties.yaml")
    (work / "senders").write_text(SENDERS)
    received = work / "received"
    received.mkdir()
    platform = LocalPlatform(
        work / "platform",
        namespace=f"chaos{uuid.uuid4().hex[:8]}.",
        preferred_ports={name: 0 for name in DEFAULT_PORTS},
        parties_file=work / "parties.yaml",
        senders_seed=None,  # the directory lists its own senders
        shared_infra=infra,
        extra_env={
            "STOPSMS_KAFKA_SESSION_TIMEOUT_SECONDS": str(SESSION_TIMEOUT_S),
            "STOPSMS_STALL_EXIT_SECONDS": str(STALL_EXIT_S),
            "STOPSMS_NUMBER_REQUESTS_PER_MINUTE": "1000000",
        },
    )
    run = Run(platform, work, work / "ledger")
    outcome = Outcome(scenario.name, passed=False)
    try:
        with deadline("start", START_BOUND_S):
            platform.start()
        try:
            drive(scenario, run, outcome, optouts, rate, received)
        finally:
            platform.stop()
    except Exception as exc:  # noqa: BLE001 - the scenario fails with the reason
        run.failures.append(f"{type(exc).__name__}: {exc}")
    if run.revived:
        run.notes.append("restarted after exiting: " + ", ".join(run.revived))
    outcome.notes, outcome.failures = run.notes, run.failures
    outcome.passed = not run.failures
    return outcome


def drive(
    scenario: Scenario, run: Run, outcome: Outcome, optouts: int, rate: float, received: Path
) -> None:
    """The clients, the load, the fault half way, recovery and the checks, each phase bounded.

    A phase that overruns its deadline fails the scenario with the phase's name (see
    :mod:`stopsms.adapters.deadlines`) instead of waiting for ever.
    """
    platform, work = run.platform, run.work
    ends, tls = platform.endpoints, str(platform.tls_folder)
    command = [sys.executable, "-m", "bench.load_clients"]
    clients: list[subprocess.Popen[bytes]] = []
    try:
        with deadline("start", START_BOUND_S):
            clients.append(
                start_process(
                    [*command, "operators", ends["kafka"], platform.namespace, *OPERATORS],
                    work / "operators.log",
                )
            )
            clients.append(
                start_process(
                    [*command, "psvas", ends["notifier_grpc"], tls, *PSVAS, f"--record={received}"],
                    work / "psvas.log",
                )
            )
            for i in range(2, scenario.registry_replicas + 1):
                platform.serve_replica("registry", f"registry-{i}", 120)
            time.sleep(3)  # streams open, groups joined
        with deadline("load", optouts / 2 / rate + RECOVERY_BOUND_S):
            load = start_process(
                [
                    *command,
                    "load",
                    ends["intake_grpc"],
                    tls,
                    f"--rate={rate}",
                    f"--count={optouts}",
                    f"--senders={work / 'senders'}",
                    f"--ledger={run.ledger}",
                    f"--numbers={max(optouts // 2, 1)}",  # some numbers opt out twice
                ],
                work / "load.log",
            )
            while run.acknowledged() < optouts // 2 and load.poll() is None:
                time.sleep(0.1)
        with deadline("fault", FAULT_BOUND_S):
            scenario.fault(run)
        with deadline("recovery", RECOVERY_BOUND_S + 60):
            outcome.recovery_s = asyncio.run(probe(run, work / "probes"))
        with deadline("load", optouts / rate + RECOVERY_BOUND_S + 60):
            finish = time.monotonic() + optouts / rate + RECOVERY_BOUND_S
            while load.poll() is None and time.monotonic() < finish:
                run.revive()
                time.sleep(0.5)
            if load.poll() is None:
                run.failures.append("the load did not finish")
                stop_process(load)
            run.notes.append((work / "load.log").read_text().strip().splitlines()[-1])
        with deadline("checks", CATCH_UP_BOUND_S + 120):
            ids = read_ledger(run.ledger) + read_ledger(work / "probes")
            report = asyncio.run(ledger_check(run, ids))
            outcome.report, outcome.acknowledged = report, report.acknowledged
            outcome.catch_up_s = report.seconds
            if not report.ok:
                run.failures.append("ledger check failed:\n" + report.summary())
            wanted = asyncio.run(entitled_changes(ends["kafka"], Topics(platform.namespace)))
            for party, ids_wanted in wanted.items():
                got = set((received / f"{party}.received").read_text().split())
                missing = ids_wanted - got
                repeats = (received / f"{party}.repeats").read_text().split()
                run.notes.append(
                    f"{party} received {len(got)} changes, entitled to {len(ids_wanted)}"
                )
                if missing:
                    run.failures.append(f"{party} never received {len(missing)} changes")
                if repeats:
                    run.failures.append(f"{party} was sent {len(repeats)} acknowledged changes")
    finally:
        for client in clients:
            stop_process(client)


def main() -> int:
    """Entry point: ``python -m chaos``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--optouts", type=int, default=5000, help="per scenario")
    parser.add_argument("--rate", type=float, default=100.0, help="opt-outs per second")
    parser.add_argument("--only", help="comma-separated scenario names")
    parser.add_argument("--results", type=Path, help="write the figures to this JSON file")
    args = parser.parse_args()
    chosen = [s for s in SCENARIOS if not args.only or s.name in args.only.split(",")]
    if not chosen:
        parser.error(f"no such scenario; choose among {', '.join(s.name for s in SCENARIOS)}")
    outcomes = []
    tmp = tempfile.mkdtemp(prefix="stopsms-chaos-")  # kept when a scenario fails: its logs
    print(f"starting Kafka and Redis (work folder {tmp})...", flush=True)
    with LocalInfrastructure(Path(tmp) / "infra") as infra:
        for i, scenario in enumerate(chosen, 1):
            print(
                f"[{i}/{len(chosen)}] {scenario.name}: {scenario.title}, "
                f"{args.optouts} opt-outs at {args.rate:.0f}/s...",
                flush=True,
            )
            outcome = run_scenario(
                scenario, infra, args.optouts, args.rate, Path(tmp) / scenario.name
            )
            outcomes.append(outcome)
            verdict = "PASSED" if outcome.passed else "FAILED"
            print(
                f"  {verdict}: recovered in {outcome.recovery_s:.1f} s, "
                f"ledger checked in {outcome.catch_up_s:.1f} s",
                flush=True,
            )
            if outcome.report:
                print("  " + outcome.report.summary().replace("\n", "\n  "), flush=True)
            for line in outcome.notes:
                print(f"  · {line}", flush=True)
            for line in outcome.failures:
                print(f"  ✗ {line}", flush=True)
    print()
    print(f"{'scenario':<20} {'result':<7} {'acked':>6} {'recovery':>9} {'ledger':>7}  defects")
    for o in outcomes:
        r = o.report
        defects = (
            f"lost {len(r.lost)} dup {len(r.duplicated)} div {len(r.divergent)} "
            f"unapplied {len(r.unapplied)}"
            if r
            else "-"
        )
        print(
            f"{o.scenario:<20} {'pass' if o.passed else 'FAIL':<7} {o.acknowledged:>6} "
            f"{o.recovery_s:>8.1f}s {o.catch_up_s:>6.1f}s  {defects}"
        )
    if args.results:
        args.results.write_text(
            json.dumps(
                [
                    {
                        "scenario": o.scenario,
                        "passed": o.passed,
                        "acknowledged": o.acknowledged,
                        "recovery_s": round(o.recovery_s, 2),
                        "ledger_check_s": round(o.catch_up_s, 2),
                        "notes": o.notes,
                        "failures": o.failures,
                    }
                    for o in outcomes
                ],
                indent=2,
            )
        )
    if all(o.passed for o in outcomes):
        shutil.rmtree(tmp, ignore_errors=True)
        return 0
    print(f"logs of the failed scenarios: {tmp}")
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
