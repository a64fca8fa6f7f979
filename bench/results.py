"""bench/results.json: one list of figures that every benchmark adds to or updates by name."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import yaml

from stopsms.adapters.settings import PACKAGE_CONFIG

RESULTS = Path(__file__).resolve().parent / "results.json"
#: Set by ``make bench-smoke`` (CI): tiny sizes, figures printed but never recorded.
SMOKE = os.environ.get("STOPSMS_BENCH_SMOKE") == "1"


def capacity_directory(path: Path, callers: tuple[str, ...]) -> Path:
    """The packaged directory with the benchmark's ``callers`` free of their default rate limit.

    A benchmark measures what the service can answer, not the share a party is allowed.
    """
    document = yaml.safe_load((PACKAGE_CONFIG / "parties.yaml").read_text())
    for party in document["parties"]:
        if party["id"] in callers:
            party["rate_limit"] = 1_000_000
    path.write_text(yaml.safe_dump(document))
    return path


def measured_at() -> dict[str, str]:
    """The commit (``+changes`` when the tree differs from it) and the date of a measurement."""
    root = Path(__file__).resolve().parents[1]

    def git(*args: str) -> str:
        command = ["git", *args]
        result = subprocess.run(command, cwd=root, capture_output=True, text=True, check=False)  # noqa: S603
        return result.stdout.strip()

    commit = git("rev-parse", "--short=12", "HEAD") or "unknown"
    # The results file itself changes as the benchmarks of one `make bench` record.
    if git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench/results.json"):
        commit += "+changes"
    return {"commit": commit, "measured": datetime.now(UTC).strftime("%Y-%m-%d")}


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation."""
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(sorted(values), n=100, method="inclusive")[int(q) - 1]


def figure(name: str, value: float, unit: str, baseline: float | None = None) -> dict[str, object]:
    """One figure, with its ratio to a raw baseline measured in the same run."""
    ratio = round(value / baseline, 3) if baseline else None
    return {
        "name": name,
        "value": round(value, 6),
        "unit": unit,
        "baseline": round(baseline, 6) if baseline is not None else None,
        "ratio": ratio,
    }


def record(figures: list[dict[str, object]], short_of: str | None = None) -> None:
    """Merge figures into bench/results.json (replacing those with the same name) and print them.

    Each figure records the commit and the date it was measured at. A smoke run (CI) only
    prints: its tiny sizes say nothing about speed; nor does a run ``short_of`` the size its
    figures are named for (the reason is printed).
    """
    stamp = measured_at()
    figures = [{**f, **stamp} for f in figures]
    writing = not SMOKE and short_of is None
    if writing:
        existing = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
        names = {f["name"] for f in figures}
        merged = [f for f in existing if f["name"] not in names] + figures
        RESULTS.write_text(json.dumps(merged, indent=2) + "\n")
    print(f"{'figure':<28}{'value':>12} {'unit':<6}{'baseline':>12}{'ratio':>9}")
    for f in figures:
        baseline = "" if f["baseline"] is None else f"{f['baseline']:.4f}"
        ratio = "" if f["ratio"] is None else f"{f['ratio']:.2f}"
        print(f"{f['name']:<28}{f['value']:>12.4f} {f['unit']:<6}{baseline:>12}{ratio:>9}")
    if writing:
        print(f"written to {RESULTS}")
    else:
        print("smoke run: nothing recorded" if SMOKE else f"{short_of}: nothing recorded")
