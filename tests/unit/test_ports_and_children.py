"""Ports no client connection can take, and children that start safely and die with us.

Two defects stopped CI at random: a port probed with ``bind(0)`` lies in the kernel's
ephemeral range, where any outgoing connection could take it before the service bound it; and
``preexec_fn`` ran Python between fork and exec in a parent with threads, which can hang the
fork for ever. These tests hold both fixes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from stopsms.adapters.deadlines import PhaseOverran, deadline
from stopsms.tools.launcher import ephemeral_port_range, failed_to_bind, free_port

REPO = Path(__file__).resolve().parents[2]


def test_drawn_ports_lie_outside_the_ephemeral_range_and_are_never_handed_out_twice() -> None:
    low, high = ephemeral_port_range()
    ports = [free_port() for _ in range(300)]
    assert not [p for p in ports if low <= p <= high]
    assert len(set(ports)) == len(ports)


def test_bind_failures_are_recognised_in_each_servers_words() -> None:
    assert failed_to_bind("OSError: [Errno 98] Address already in use")
    assert failed_to_bind("RuntimeError: Failed to bind to address 127.0.0.1:1234")
    assert failed_to_bind("KafkaException: Socket server failed to bind: Address already in use")
    assert not failed_to_bind("connection refused")


def _run(script: str, timeout: float) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'services'}:{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.run(  # noqa: S603
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def test_many_children_start_from_a_parent_whose_threads_import_and_allocate(
    tmp_path: Path,
) -> None:
    # The situation that hung the fault harness: clients' threads busy while children start.
    script = f"""
        import importlib, sys, threading
        from pathlib import Path
        from stopsms.tools.launcher import start_process

        stop = threading.Event()
        MODULES = ["json", "decimal", "fractions", "statistics", "csv", "difflib", "ipaddress"]

        def busy() -> None:
            kept = []
            while not stop.is_set():
                for name in MODULES:
                    sys.modules.pop(name, None)
                    importlib.import_module(name)
                kept = [bytearray(4096) for _ in range(200)]
            del kept

        threads = [threading.Thread(target=busy, daemon=True) for _ in range(4)]
        for thread in threads:
            thread.start()
        for i in range(300):
            child = start_process(["/bin/true"], Path({str(tmp_path)!r}) / "child.log")
            assert child.wait(10) == 0
        stop.set()
        print("started 300 children")
    """
    result = _run(script, timeout=240)
    assert result.returncode == 0, result.stderr
    assert "started 300 children" in result.stdout


def test_a_child_dies_when_its_parent_is_killed(tmp_path: Path) -> None:
    script = f"""
        import time
        from pathlib import Path
        from stopsms.tools.launcher import start_process

        child = start_process(["sleep", "300"], Path({str(tmp_path)!r}) / "sleep.log")
        print(child.pid, flush=True)
        time.sleep(300)
    """
    with subprocess.Popen(  # noqa: S603
        [sys.executable, "-c", textwrap.dedent(script)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO / "services")},
    ) as parent:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
    deadline_at = time.monotonic() + 20
    while _alive(child):
        assert time.monotonic() < deadline_at, "the child outlived its killed parent"
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting for its new parent to reap it counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def test_a_phase_that_overruns_fails_naming_itself() -> None:
    started = time.monotonic()
    try:
        with deadline("outer", 30), deadline("load", 0.3):
            time.sleep(10)
    except PhaseOverran as exc:
        assert "'load'" in str(exc)
    else:
        raise AssertionError("the phase was not interrupted")
    assert time.monotonic() - started < 5
    with deadline("quick", 5):  # a phase that finishes leaves no alarm behind
        pass
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_a_child_whose_parent_died_before_its_death_signal_was_set_does_not_run(
    tmp_path: Path,
) -> None:
    # The parent killed between the fork and setpriv's prctl sends no death signal: the child
    # finds itself adopted (its parent is not the process that started it) and stops.
    from stopsms.tools.launcher import _with_parent_death_signal

    args = _with_parent_death_signal(["touch", str(tmp_path / "ran")])
    assert args[0] != "touch", "setpriv (util-linux) is missing: no child hears its parent die"
    args[args.index(str(os.getpid()))] = "1"  # started, as it were, by a process now gone
    assert subprocess.run(args, timeout=10).returncode == 1  # noqa: S603
    assert not (tmp_path / "ran").exists()
    assert (
        subprocess.run(
            _with_parent_death_signal(["touch", str(tmp_path / "ran")]), timeout=10
        ).returncode
        == 0
    )  # noqa: S603
    assert (tmp_path / "ran").exists()
