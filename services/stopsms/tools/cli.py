"""``stopsms``: run the platform locally and try it from the terminal.

    stopsms up                          Kafka, Redis and the four services; Ctrl-C stops all
    stopsms link 0612345678 --sender JUMIA --party atlas-sms
    stopsms optout 0612345678 --sender JUMIA --party iam
    stopsms check 0612345678 --sender JUMIA --party iam
    stopsms propagation <request id> --party iam
    stopsms operator-feed --party iam   follow the suppression list as an operator would
    stopsms certs                       development CA and one client certificate per party
    stopsms scrub campaign.csv --sender JUMIA --party atlas-sms
                                        clean and suppressed lists of a campaign
    stopsms registry rebuild            rebuild the registry's view from the topic, verified
    stopsms check-campaign campaign.txt --sender JUMIA --party atlas-sms
                                        every text of a campaign checked before it is sent
    stopsms senders migrate             the directory's senders lists become register records
    stopsms cases --party cndp          the cases citizens' complaints opened, most serious first
    stopsms export-case CASE-1A2B3C4D --party cndp
                                        a case's signed evidence pack (PDF, JSON, signatures)
    stopsms verify-export CASE-....pdf  check a pack against the platform's export key
    stopsms keys reseal --wait 3600     follow the re-sealing under the current data key, then
                                        announce the retired key to operators
    stopsms keys rotate-pseudonyms --wait 172800 --ledger ledger.txt
                                        follow the re-keying of every subject under the current
                                        pseudonym key; the ledger check before and after

Calls use the party's client certificate from ``.stopsms/tls`` (mutual TLS); with
``STOPSMS_INSECURE_IDENTITY=true`` they name the party in a header instead.

The commands after ``up`` find the platform through ``.stopsms/endpoints.json`` (written by
``up``), or through ``STOPSMS_*`` variables.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
from google.protobuf import json_format

from stopsms.adapters.clients import Metadata, party_channel_sync
from stopsms.adapters.kafka_access import KafkaAccess
from stopsms.tools.launcher import InfrastructureError
from stopsms.v1 import (
    events_pb2,
    intake_pb2,
    intake_pb2_grpc,
    notifier_pb2,
    notifier_pb2_grpc,
    registry_pb2,
    registry_pb2_grpc,
)

if TYPE_CHECKING:
    from collections.abc import Iterable

    from stopsms.adapters.settings import Settings
    from stopsms.tools.reseal import SealCount
    from stopsms.tools.senders import Migration
    from stopsms.tools.verify import LedgerReport
    from stopsms.v1 import senders_pb2

DATA_DIR = Path(os.environ.get("STOPSMS_DATA_DIR", ".stopsms"))
ENDPOINTS_FILE = DATA_DIR / "endpoints.json"
DEMO_NUMBER = "0612345678"


def _kafka(settings: Settings) -> KafkaAccess:
    """Kafka as the local platform publishes it, with the credentials of STOPSMS_KAFKA_*."""
    return dataclasses.replace(settings.kafka, bootstrap=_endpoints()["kafka"])


def _endpoints() -> dict[str, str]:
    found = json.loads(ENDPOINTS_FILE.read_text()) if ENDPOINTS_FILE.exists() else {}
    defaults = {
        "intake_grpc": ("STOPSMS_INTAKE_GRPC_ADDRESS", "127.0.0.1:50051"),
        "registry_grpc": ("STOPSMS_REGISTRY_GRPC_ADDRESS", "127.0.0.1:50052"),
        "notifier_grpc": ("STOPSMS_NOTIFIER_GRPC_ADDRESS", "127.0.0.1:50053"),
        "console_grpc": ("STOPSMS_CONSOLE_GRPC_ADDRESS", "127.0.0.1:50054"),
        "kafka": ("STOPSMS_KAFKA_BOOTSTRAP", "127.0.0.1:9092"),
        "redis": ("STOPSMS_REDIS_URL", "redis://127.0.0.1:6379/0"),
        "tls_folder": ("STOPSMS_TLS_DIR", str(DATA_DIR / "tls")),
    }
    return {
        name: os.environ.get(variable, found.get(name, default))
        for name, (variable, default) in defaults.items()
    }


def _channel(service: str, party: str) -> tuple[grpc.Channel, Metadata]:
    """A channel to a service as ``party`` (its certificate, or the development header)."""
    ends = _endpoints()
    return party_channel_sync(ends[f"{service}_grpc"], party, _tls_folder(ends))


def _tls_folder(ends: dict[str, str]) -> Path | None:
    """The client certificates' folder, or None in the development mode (or without TLS)."""
    insecure = os.environ.get("STOPSMS_INSECURE_IDENTITY", "").lower() in {"1", "true", "yes"}
    # `stopsms up --insecure` records an empty TLS folder: the platform runs without TLS.
    return None if insecure or not ends["tls_folder"] else Path(ends["tls_folder"])


def _print_message(message: object) -> None:
    print(json_format.MessageToJson(message, indent=2))  # type: ignore[arg-type]


def cmd_up(args: argparse.Namespace) -> int:
    """Run the platform until Ctrl-C."""
    from stopsms.tools.demo_parties import DemoParties
    from stopsms.tools.local_platform import LocalPlatform

    platform = LocalPlatform(
        DATA_DIR.resolve(), kafka_port=9092, redis_port=6379, insecure=args.insecure
    )
    if args.insecure:
        print("WARNING: development identity (x-stopsms-party header), no TLS", file=sys.stderr)
    print(
        "starting Kafka, Redis and the services (the first run fetches the Kafka jars)...",
        flush=True,
    )
    stop = False

    def _stop(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    try:
        platform.start()
    except InfrastructureError as exc:
        print(f"stopsms up failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        platform.stop()
        return 130
    signal.signal(signal.SIGINT, _stop)
    demo = None
    try:
        platform.write_endpoints(ENDPOINTS_FILE.resolve())
        ends = platform.endpoints
        print(f"kafka bootstrap {ends['kafka']}")
        print(f"redis url {ends['redis']}")
        print(f"intake grpc {ends['intake_grpc']}")
        print(f"intake http {ends['intake_http']}")
        print(f"registry grpc {ends['registry_grpc']}")
        print(f"notifier grpc {ends['notifier_grpc']}")
        print(f"console grpc {ends['console_grpc']} (the regulator's: stopsms cases --party cndp)")
        print(
            f"console pages {ends['console_http']} (the CNDP's: import the regulator's "
            "certificate into the browser first, README: The regulator's side)"
        )
        if not args.no_demo_parties:
            demo = DemoParties.for_platform(platform).start()
            print("stand-ins for every operator and PSVA are applying and acknowledging changes")
        link = _issue_link(DEMO_NUMBER, "JUMIA", "atlas-sms")
        print(f"click this StopSMS link (number {DEMO_NUMBER}, sender JUMIA): {link}")
        print(
            f"or see your own preferences: {ends['intake_http']}preferences "
            "(the code sent by SMS is printed here by the stand-in operator)"
        )
        print("Ctrl-C stops everything; logs are in", DATA_DIR / "logs", flush=True)
        while not stop:
            for name, process in platform.processes.items():
                if process.poll() is not None:
                    print(
                        f"{name} exited; see {DATA_DIR / 'logs' / (name + '.log')}", file=sys.stderr
                    )
                    stop = True
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        print("stopping...", flush=True)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not orphan anything
        if demo is not None:
            demo.stop()
        platform.stop()
        ENDPOINTS_FILE.unlink(missing_ok=True)
    return 0


def _issue_link(msisdn: str, sender: str, party: str) -> str:
    channel, metadata = _channel("intake", party)
    with channel:
        reply = intake_pb2_grpc.IntakeServiceStub(channel).IssueStopLink(
            intake_pb2.IssueStopLinkRequest(msisdn=msisdn, sender_id=sender),
            metadata=metadata,
            timeout=10,
        )
    return str(reply.url)


def cmd_link(args: argparse.Namespace) -> int:
    """Issue a StopSMS link."""
    print(_issue_link(args.msisdn, args.sender, args.party))
    return 0


def cmd_optout(args: argparse.Namespace) -> int:
    """Submit an opt-out as an operator or PSVA would."""
    request_id = args.request_id or f"cli-{uuid.uuid4()}"
    channel, metadata = _channel("intake", args.party)
    with channel:
        reply = intake_pb2_grpc.IntakeServiceStub(channel).SubmitOptOut(
            intake_pb2.SubmitOptOutRequest(
                request_id=request_id,
                msisdn=args.msisdn,
                sender_id=args.sender or "",
                channel=events_pb2.CHANNEL_API,
            ),
            metadata=metadata,
            timeout=15,
        )
    _print_message(reply)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """Check a number for a sender."""
    channel, metadata = _channel("registry", args.party)
    with channel:
        reply = registry_pb2_grpc.RegistryServiceStub(channel).Check(
            registry_pb2.CheckRequest(msisdn=args.msisdn, sender_id=args.sender or ""),
            metadata=metadata,
            timeout=10,
        )
    _print_message(reply)
    return 0


def cmd_propagation(args: argparse.Namespace) -> int:
    """Show the proof of propagation of a request."""
    channel, metadata = _channel("notifier", args.party)
    with channel:
        reply = notifier_pb2_grpc.NotifierServiceStub(channel).GetPropagation(
            notifier_pb2.GetPropagationRequest(
                request_id=args.request_id or "", event_id=args.event_id or ""
            ),
            metadata=metadata,
            timeout=10,
        )
    _print_message(reply)
    return 0


def cmd_operator_feed(args: argparse.Namespace) -> int:
    """Follow the suppression list as an operator: print each change, commit after applying."""
    from stopsms.adapters.settings import Settings
    from stopsms.tools.operator_feed import follow

    settings = Settings.from_env(data_dir=DATA_DIR)
    follow(_kafka(settings), args.party, settings.pseudonymiser(), settings.topic_namespace)
    return 0


def cmd_certs(args: argparse.Namespace) -> int:
    """Make the development CA, the services' certificate and one per party of the directory."""
    from stopsms.adapters.settings import Settings
    from stopsms.domain.parties import PartiesDirectory
    from stopsms.tools.certificates import ca_key_folder, create_tls_folder

    settings = Settings.from_env(data_dir=DATA_DIR)
    folder = Path(args.out) if args.out else settings.tls_folder
    parties = PartiesDirectory.load(settings.parties_file)
    ca_folder = Path(args.ca_out) if args.ca_out else None
    written = create_tls_folder(folder, [p.id for p in parties], args.server_name, ca_folder)
    print(
        f"{folder}: {len(written)} files written" + (f" ({', '.join(written)})" if written else "")
    )
    print(f"the CA's private key is in {ca_folder or ca_key_folder(folder)}: keep it apart")
    return 0


def cmd_scrub(args: argparse.Namespace) -> int:
    """Split a campaign CSV into the numbers the sender may message and those it may not."""
    import asyncio

    from rich.console import Console

    from stopsms.adapters.clients import party_channel
    from stopsms.tools.scrub import scrub_csv

    console = Console(stderr=True)
    path = Path(args.csv)
    if not path.is_file():
        console.print(f"stopsms scrub: {path}: no such file")
        return 2
    ends = _endpoints()
    tls = _tls_folder(ends)

    async def run() -> object:
        channel, metadata = party_channel(ends["registry_grpc"], args.party, tls)
        async with channel:
            return await scrub_csv(
                channel,
                metadata,
                path,
                args.sender,
                out_dir=Path(args.out_dir) if args.out_dir else None,
                console=console,
            )

    try:
        summary = asyncio.run(run())
    except grpc.aio.AioRpcError as exc:
        console.print(f"stopsms scrub: {exc.code().name}: {exc.details()}")
        return 1
    from stopsms.tools.scrub import ScrubSummary

    assert isinstance(summary, ScrubSummary)
    console.print(
        f"{summary.numbers:,} numbers in {summary.seconds:.1f} s ({summary.rate:,.0f}/s): "
        f"{summary.clean:,} clean, {summary.suppressed:,} suppressed, "
        f"{summary.rejected:,} rejected"
    )
    console.print(f"clean list: {summary.clean_path}")
    console.print(f"suppressed: {summary.suppressed_path}")
    console.print(f"rejects:    {summary.rejects_path}")
    return 0


def cmd_check_campaign(args: argparse.Namespace) -> int:
    """Check every text of a campaign file; exit 1 when any text has a problem."""
    import asyncio

    from stopsms.adapters.clients import party_channel
    from stopsms.tools.campaign_check import CampaignReport, check_campaign

    path = Path(args.file)
    if not path.is_file():
        print(f"stopsms check-campaign: {path}: no such file", file=sys.stderr)
        return 2
    ends = _endpoints()
    tls = _tls_folder(ends)

    async def run() -> CampaignReport:
        channel, metadata = party_channel(ends["intake_grpc"], args.party, tls)
        async with channel:
            return await check_campaign(channel, metadata, path, args.sender)

    try:
        report = asyncio.run(run())
    except grpc.aio.AioRpcError as exc:
        print(f"stopsms check-campaign: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    failing = len({line for line, _, _ in report.problems})
    print(
        f"{report.texts:,} texts: {report.ok:,} ok, {failing:,} with problems; "
        f"{report.segments:,} SMS segments in all"
    )
    return 0 if failing == 0 else 1


def _publish_senders(settings: Settings, records: Iterable[senders_pb2.Sender]) -> Migration:
    """Import sender records into the register on the configured Kafka (once per id)."""
    import asyncio

    from stopsms.adapters.bus import KafkaBus
    from stopsms.adapters.kafka import KafkaPublisher
    from stopsms.domain.topics import Topics
    from stopsms.tools.senders import import_senders

    kafka = _kafka(settings)

    async def run() -> Migration:
        publisher = KafkaPublisher(kafka, client_id="stopsms-senders-import")
        await publisher.start()
        try:
            return await import_senders(
                records, KafkaBus(kafka), publisher, Topics(settings.topic_namespace)
            )
        finally:
            await publisher.stop()

    return asyncio.run(run())


def _print_import(done: Migration) -> None:
    print(
        f"imported {len(done.imported)} sender(s): {', '.join(done.imported) or '-'}; "
        f"already in the register: {', '.join(done.already) or '-'}"
    )


def cmd_senders_import(args: argparse.Namespace) -> int:
    """Import a file of sender records (a reviewed list the CNDP handed over), once per id."""
    from stopsms.adapters.settings import IntakeSettings
    from stopsms.tools.senders import SeedError, load_seed

    try:
        records = load_seed(Path(args.file))
    except SeedError as exc:
        print(f"stopsms senders import: {exc}", file=sys.stderr)
        return 2
    _print_import(_publish_senders(IntakeSettings.from_env(data_dir=DATA_DIR), records))
    return 0


def cmd_senders_migrate(args: argparse.Namespace) -> int:
    """Import the directory's senders lists into the register, once; optionally strip them."""
    from stopsms.adapters.settings import IntakeSettings
    from stopsms.domain.parties import DirectoryError, PartiesDirectory
    from stopsms.domain.senders import migrated_from
    from stopsms.tools.senders import parties_only

    settings = IntakeSettings.from_env(data_dir=DATA_DIR)
    source = Path(args.parties) if args.parties else settings.parties_file
    try:
        directory = PartiesDirectory.load(source)
    except DirectoryError as exc:
        print(f"stopsms senders migrate: {exc}", file=sys.stderr)
        return 2
    _print_import(_publish_senders(settings, migrated_from(directory)))
    if args.write_parties:
        Path(args.write_parties).write_text(parties_only(source.read_text()))
        print(f"the directory without its senders lists: {args.write_parties}")
    return 0


def cmd_registry_rebuild(args: argparse.Namespace) -> int:
    """Rebuild the registry's Redis view from stopsms.suppressions.v1 and verify it."""
    import asyncio

    from rich.console import Console
    from rich.progress import (
        BarColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from stopsms.adapters.settings import RegistrySettings
    from stopsms.adapters.view import RedisSuppressionView
    from stopsms.domain.topics import Topics
    from stopsms.domain.viewcodec import ViewLayout
    from stopsms.registry.rebuild import Progress as RebuildProgress
    from stopsms.registry.rebuild import ViewVerificationError, rebuild_in_parallel

    console = Console(stderr=True)
    ends = _endpoints()
    settings = RegistrySettings.from_env(data_dir=DATA_DIR)
    view = RedisSuppressionView.from_url(
        ends["redis"], settings.topic_namespace, ViewLayout(settings.view_bucket_bits)
    )

    async def run() -> RebuildProgress:
        with Progress(
            TextColumn("[bold]rebuilding the view[/]"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn(
                "{task.completed:,.0f}/{task.total:,.0f} records read · {task.fields[rate]}"
                " · {task.fields[written]:,.0f} in the view"
            ),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
        ) as bar:
            task = bar.add_task("rebuild", total=1, rate="", written=0)

            def show(progress: RebuildProgress) -> None:
                # Read records lead; the view takes them a window of millions at a time.
                rate = progress.entries_read / max(progress.seconds, 1e-9)
                bar.update(
                    task,
                    total=max(progress.target_records, 1),
                    completed=progress.entries_read,
                    rate=f"{rate:,.0f} entries/s",
                    written=progress.applied_records,
                )

            try:
                return await rebuild_in_parallel(
                    _kafka(settings),
                    Topics(settings.topic_namespace).suppressions,
                    view,
                    ends["redis"],
                    settings.topic_namespace,
                    args.workers or settings.rebuild_workers,
                    show,
                )
            finally:
                await view.close()

    try:
        progress = asyncio.run(run())
    except ViewVerificationError as exc:
        console.print(f"stopsms registry rebuild: the view does not match the topic: {exc}")
        return 1
    seconds = progress.seconds
    rate = progress.entries_read / max(seconds, 1e-9)
    how = (
        f"view rebuilt and verified: {progress.verified}"
        if progress.verified
        else "view rebuilt; another registry wrote it meanwhile, so it verifies it"
    )
    console.print(
        f"{how}; {progress.entries_read:,} records in {seconds:.1f} s ({rate:,.0f} entries/s, "
        f"verification {progress.verify_seconds:.1f} s)"
    )
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    """The ledger check: exit 0 only when nothing acknowledged is lost, doubled or unapplied."""
    ledger = Path(args.ledger)
    if not ledger.is_file():
        print(f"stopsms verify: {ledger} is not a file", file=sys.stderr)
        return 2
    report = _ledger_check(ledger, args.wait)
    print(report.summary())
    if args.report:
        Path(args.report).write_text(report.to_json())
    return 0 if report.ok else 1


def _ledger_check(ledger: Path, wait_s: float) -> LedgerReport:
    """Run the ledger check of ``stopsms verify`` on a ledger file."""
    import asyncio

    from stopsms.adapters.settings import RegistrySettings
    from stopsms.adapters.view import RedisSuppressionView
    from stopsms.domain.topics import Topics
    from stopsms.domain.viewcodec import ViewLayout
    from stopsms.tools.verify import read_ledger, verify

    ends = _endpoints()
    settings = RegistrySettings.from_env(data_dir=DATA_DIR)
    acknowledged = read_ledger(ledger)
    view = RedisSuppressionView.from_url(
        ends["redis"], settings.topic_namespace, ViewLayout(settings.view_bucket_bits)
    )

    async def run() -> LedgerReport:
        try:
            return await verify(
                acknowledged,
                bootstrap=_kafka(settings),
                topics=Topics(settings.topic_namespace),
                view=view,
                wait_seconds=wait_s,
            )
        finally:
            await view.close()

    print(f"checking {len(acknowledged)} acknowledged requests...", file=sys.stderr)
    return asyncio.run(run())


def cmd_keys_rotate_pseudonyms(args: argparse.Namespace) -> int:
    """Follow the registry's pseudonym re-keying to its end; the ledger check before and after."""
    import asyncio

    from stopsms.adapters.bus import KafkaBus
    from stopsms.adapters.settings import RegistrySettings
    from stopsms.domain.topics import Topics
    from stopsms.tools.rekey import describe, follow_rekeying, left_under_other_keys

    settings = RegistrySettings.from_env(data_dir=DATA_DIR)
    pseudonymiser = settings.pseudonymiser()
    current = pseudonymiser.pseudonym_key.key_id
    previous = pseudonymiser.previous_pseudonym_key
    ledger = Path(args.ledger) if args.ledger else None
    if ledger is not None and not ledger.is_file():
        print(f"stopsms keys rotate-pseudonyms: {ledger} is not a file", file=sys.stderr)
        return 2
    if previous is None:
        print(
            f"stopsms keys rotate-pseudonyms: the current pseudonym key is {current} and no "
            "previous one is held (STOPSMS_PREVIOUS_PSEUDONYM_KEY_FILE): a re-keying starts "
            "when the registry holds both (docs/operations.md, 'Rotate the pseudonym key'); "
            "counting the list anyway",
            file=sys.stderr,
        )
    if ledger is not None:
        before = _ledger_check(ledger, args.ledger_wait)
        print(f"ledger check before: {before.summary()}")
        if not before.ok:
            print("stopsms keys rotate-pseudonyms: the ledger check fails before the re-keying; "
                  "resolve that first", file=sys.stderr)  # fmt: skip
            return 1

    def show(count: SealCount) -> None:
        left = left_under_other_keys(count, current)
        print(f"{describe(count)}; {left:,} left under other keys (read in {count.seconds:.1f} s)",
              file=sys.stderr, flush=True)  # fmt: skip

    outcome = asyncio.run(
        follow_rekeying(
            KafkaBus(_kafka(settings)),
            Topics(settings.topic_namespace),
            settings.partitions,
            current,
            wait_s=args.wait,
            show=show,
        )
    )
    if not outcome.complete:
        print(
            f"stopsms keys rotate-pseudonyms: {left_under_other_keys(outcome.count, current):,} "
            f"decisions in force are still under a pseudonym key other than {current}; the "
            "registry moves them at its next pass (STOPSMS_REKEY_PASS_SECONDS) and ends them "
            "after STOPSMS_REKEY_GRACE_SECONDS; run again, or with a longer --wait",
            file=sys.stderr,
        )
        return 1
    print(
        f"re-keying complete: every decision in force is under {current} "
        f"({outcome.at_start:,} were under other keys; followed for {outcome.seconds:.0f} s, "
        f"{outcome.seconds_per_million:.0f} s per million)"
    )
    if ledger is not None:
        after = _ledger_check(ledger, args.ledger_wait)
        print(f"ledger check after: {after.summary()}")
        if not after.ok:
            return 1
    if previous is not None:
        print(f"remove {previous.key_id} (STOPSMS_PREVIOUS_PSEUDONYM_KEY_FILE) from the registry "
              "and roll it")  # fmt: skip
    return 0


def cmd_keys_reseal(args: argparse.Namespace) -> int:
    """Follow the registry's re-sealing; announce the retired keys once nothing is left."""
    import asyncio

    from stopsms.adapters.bus import KafkaBus
    from stopsms.adapters.kafka import KafkaPublisher
    from stopsms.adapters.settings import RegistrySettings
    from stopsms.domain.topics import Topics
    from stopsms.tools.reseal import ResealOutcome, follow_resealing

    settings = RegistrySettings.from_env(data_dir=DATA_DIR)
    pseudonymiser = settings.pseudonymiser()
    current = pseudonymiser.data_key.key_id
    previous = [k.key_id for k in pseudonymiser.data_keys[1:]]
    kafka = _kafka(settings)
    if not previous:
        print(
            f"stopsms keys reseal: the current data key is {current} and no previous one is "
            "held (STOPSMS_PREVIOUS_DATA_KEY_FILES): the registry re-seals only from keys it "
            "holds; counting the list anyway",
            file=sys.stderr,
        )

    def show(count: SealCount) -> None:
        left = count.left(current)
        print(f"{count.describe()}; {left:,} left to re-seal (read in {count.seconds:.1f} s)",
              file=sys.stderr, flush=True)  # fmt: skip

    async def run() -> ResealOutcome:
        publisher = KafkaPublisher(kafka)
        await publisher.start()
        try:
            return await follow_resealing(
                KafkaBus(kafka),
                publisher,
                Topics(settings.topic_namespace),
                settings.partitions,
                pseudonymiser,
                wait_s=args.wait,
                show=show,
            )
        finally:
            await publisher.stop()

    outcome = asyncio.run(run())
    for key_id in outcome.announced:
        print(f"key change published: no decision in force is sealed under {key_id} any more")
    if not outcome.complete:
        print(
            f"stopsms keys reseal: {outcome.count.left(current):,} decisions in force are still "
            f"sealed under a key other than {current}; the registry re-seals them at its next "
            "pass (STOPSMS_RESEAL_PASS_SECONDS); run again, or with a longer --wait",
            file=sys.stderr,
        )
        return 1
    if not outcome.announced and previous:
        print(f"nothing left to re-seal; the key change of {', '.join(previous)} was published")
    return 0


def cmd_cases(args: argparse.Namespace) -> int:
    """List the cases, most serious first (regulator identities only)."""
    from stopsms.v1 import regulator_pb2, regulator_pb2_grpc

    channel, metadata = _channel("console", args.party)
    with channel:
        reply = regulator_pb2_grpc.RegulatorServiceStub(channel).ListCases(
            regulator_pb2.ListCasesRequest(page_size=args.limit), metadata=metadata, timeout=10
        )
    for case in reply.cases:
        findings = ", ".join(
            f"{events_pb2.ComplaintFinding.Name(f.finding).removeprefix('COMPLAINT_FINDING_')}"
            f" {f.count}"
            for f in case.findings
        )
        print(
            f"{case.reference}  {case.sender_id or '(phone number)':<14} "
            f"{case.complaint_count:>4} complaints  {findings}  parties: "
            f"{', '.join(case.party_ids)}"
        )
    print(f"{reply.total_size} cases")
    return 0


def cmd_export_case(args: argparse.Namespace) -> int:
    """Write a case's signed evidence pack: PDF, JSON and their signature files."""
    from stopsms.v1 import regulator_pb2, regulator_pb2_grpc

    channel, metadata = _channel("console", args.party)
    with channel:
        pack = regulator_pb2_grpc.RegulatorServiceStub(channel).ExportCase(
            regulator_pb2.ExportCaseRequest(case=args.case, full_numbers=args.full_numbers),
            metadata=metadata,
            timeout=30,
        )
    folder = Path(args.out)
    folder.mkdir(parents=True, exist_ok=True)
    for suffix, body in (
        (".pdf", pack.pdf),
        (".pdf.sig", pack.pdf_signature),
        (".json", pack.json),
        (".json.sig", pack.json_signature),
    ):
        path = folder / f"{pack.name}{suffix}"
        path.write_bytes(body)
        print(path)
    print(f"signed with key {pack.key_id}")
    return 0


def cmd_verify_export(args: argparse.Namespace) -> int:
    """Check an evidence pack document against its signature file and the export key."""
    from stopsms.adapters.settings import ConsoleSettings
    from stopsms.domain.evidence import (
        ExportSigner,
        SignatureError,
        load_public_key,
        verify,
    )

    document = Path(args.document)
    signature = (
        Path(args.signature) if args.signature else document.with_name(document.name + ".sig")
    )
    try:
        if args.public_key:
            public = load_public_key(Path(args.public_key).read_bytes())
        else:
            # the local platform's key (`stopsms up`); a deployment publishes its public key
            settings = ConsoleSettings.from_env(data_dir=DATA_DIR)
            public = ExportSigner.load(settings.export_key_path).private_key.public_key()
        key = verify(document.read_bytes(), signature.read_bytes(), public)
    except (OSError, SignatureError, ValueError) as exc:
        print(f"NOT VERIFIED: {document}: {exc}", file=sys.stderr)
        return 1
    print(f"verified: {document} is as the platform signed it (key {key})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="stopsms", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="run Kafka, Redis and the four services")
    up.add_argument(
        "--insecure",
        action="store_true",
        help="development identity from the x-stopsms-party header, without TLS",
    )
    up.add_argument(
        "--no-demo-parties",
        action="store_true",
        help="do not run stand-ins for the directory's operators and PSVAs",
    )
    up.set_defaults(func=cmd_up)
    link = sub.add_parser("link", help="issue a StopSMS link")
    link.add_argument("msisdn")
    link.add_argument("--sender", required=True)
    link.add_argument("--party", default="atlas-sms")
    link.set_defaults(func=cmd_link)
    optout = sub.add_parser("optout", help="submit an opt-out")
    optout.add_argument("msisdn")
    optout.add_argument("--sender", default="", help="empty: all marketing")
    optout.add_argument("--party", default="iam")
    optout.add_argument("--request-id")
    optout.set_defaults(func=cmd_optout)
    check = sub.add_parser("check", help="check a number for a sender")
    check.add_argument("msisdn")
    check.add_argument("--sender", default="")
    check.add_argument("--party", default="iam")
    check.set_defaults(func=cmd_check)
    prop = sub.add_parser("propagation", help="show a request's proof of propagation")
    prop.add_argument("request_id", nargs="?")
    prop.add_argument("--event-id")
    prop.add_argument("--party", default="iam")
    prop.set_defaults(func=cmd_propagation)
    certs = sub.add_parser("certs", help="make a development CA and the parties' certificates")
    certs.add_argument("--out", help="the TLS folder (default: .stopsms/tls)")
    certs.add_argument("--server-name", action="append", default=[], help="extra server SAN")
    certs.add_argument(
        "--ca-out", help="where the CA's private key goes (default: beside the TLS folder, -ca)"
    )
    certs.set_defaults(func=cmd_certs)
    feed = sub.add_parser("operator-feed", help="follow the suppression list as an operator")
    feed.add_argument("--party", default="iam")
    feed.set_defaults(func=cmd_operator_feed)
    scrub = sub.add_parser("scrub", help="split a campaign CSV into clean and suppressed lists")
    scrub.add_argument("csv", help="a CSV whose first column is the number")
    scrub.add_argument("--sender", required=True, help="the sender the campaign is for")
    scrub.add_argument("--party", default="atlas-sms", help="the PSVA (or operator) asking")
    scrub.add_argument("--out-dir", help="where the three lists go (default: beside the CSV)")
    scrub.set_defaults(func=cmd_scrub)
    registry = sub.add_parser("registry", help="registry maintenance")
    registry_sub = registry.add_subparsers(dest="registry_command", required=True)
    rebuild = registry_sub.add_parser(
        "rebuild", help="rebuild the Redis view from stopsms.suppressions.v1, then verify it"
    )
    rebuild.add_argument(
        "--workers", type=int, help="processes (default STOPSMS_REBUILD_WORKERS, 2)"
    )
    rebuild.set_defaults(func=cmd_registry_rebuild)
    campaign = sub.add_parser(
        "check-campaign", help="check every text of a campaign before it is sent"
    )
    campaign.add_argument("file", help="one text per line (\\n for a line break inside one)")
    campaign.add_argument("--sender", required=True, help="the sender the campaign is for")
    campaign.add_argument("--party", default="atlas-sms", help="the PSVA (or operator) asking")
    campaign.set_defaults(func=cmd_check_campaign)
    senders = sub.add_parser("senders", help="the register of declared senders")
    senders_sub = senders.add_subparsers(dest="senders_command", required=True)
    migrate = senders_sub.add_parser(
        "migrate", help="import the parties directory's senders lists as ACTIVE records, once"
    )
    migrate.add_argument("--parties", help="the directory file (default STOPSMS_PARTIES_FILE)")
    migrate.add_argument(
        "--write-parties", help="also write the directory without its senders lists here"
    )
    migrate.set_defaults(func=cmd_senders_migrate)
    seed = senders_sub.add_parser(
        "import", help="import a file of sender records (YAML, as config/senders.yaml), once per id"
    )
    seed.add_argument("file", help="a 'senders:' list of Sender records; status ACTIVE unless set")
    seed.set_defaults(func=cmd_senders_import)
    check_ledger = sub.add_parser(
        "verify", help="the ledger check: every acknowledged request decided once and applied"
    )
    check_ledger.add_argument("ledger", help="lines of '<request id> <event id>' intake accepted")
    check_ledger.add_argument(
        "--wait", type=float, default=120.0, help="seconds the view and the proofs get to catch up"
    )
    check_ledger.add_argument("--report", help="write every figure and id to this JSON file")
    check_ledger.set_defaults(func=cmd_verify)
    keys = sub.add_parser("keys", help="the platform's keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    reseal = keys_sub.add_parser(
        "reseal",
        help="follow the re-sealing of the list under the current data key; announce the "
        "retired key once nothing is sealed under it",
    )
    reseal.add_argument(
        "--wait", type=float, default=0.0,
        help="seconds to wait for the registry to re-seal what is left (default: count once)",
    )  # fmt: skip
    reseal.set_defaults(func=cmd_keys_reseal)
    rotate = keys_sub.add_parser(
        "rotate-pseudonyms",
        help="follow the registry's re-keying of every subject under the current pseudonym "
        "key to its end, with the ledger check before and after",
    )
    rotate.add_argument(
        "--wait", type=float, default=0.0,
        help="seconds to wait for the re-keying to end (default: count once)",
    )  # fmt: skip
    rotate.add_argument("--ledger", help="a ledger of acknowledged event ids to check")
    rotate.add_argument(
        "--ledger-wait", type=float, default=120.0,
        help="seconds each ledger check gives the view and the proofs to catch up",
    )  # fmt: skip
    rotate.set_defaults(func=cmd_keys_rotate_pseudonyms)
    cases = sub.add_parser("cases", help="the cases complaints opened (the regulator)")
    cases.add_argument("--party", default="cndp", help="a regulator identity")
    cases.add_argument("--limit", type=int, default=50)
    cases.set_defaults(func=cmd_cases)
    export = sub.add_parser("export-case", help="a case's signed evidence pack (the regulator)")
    export.add_argument("case", help="the case id or reference (CASE-XXXXXXXX)")
    export.add_argument("--party", default="cndp", help="a regulator identity")
    export.add_argument(
        "--full-numbers",
        action="store_true",
        help="the prosecutor's copy: numbers in full (needs the full-numbers permission)",
    )
    export.add_argument("--out", default=".", help="the folder to write the pack into")
    export.set_defaults(func=cmd_export_case)
    verify_export = sub.add_parser(
        "verify-export", help="check an evidence pack's PDF or JSON against its signature"
    )
    verify_export.add_argument("document", help="the .pdf or .json of a pack")
    verify_export.add_argument("--signature", help="its signature file (default: <document>.sig)")
    verify_export.add_argument(
        "--public-key",
        help="the platform's published export key (PEM); default: the local platform's",
    )
    verify_export.set_defaults(func=cmd_verify_export)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``stopsms`` command."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except grpc.RpcError as exc:
        print(f"{exc.code().name}: {exc.details()}", file=sys.stderr)  # type: ignore[attr-defined]
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
