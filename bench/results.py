"""bench/results.json: one list of figures that every benchmark adds to or updates by name."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results.json"


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


def record(figures: list[dict[str, object]]) -> None:
    """Merge figures into bench/results.json (replacing those with the same name) and print them."""
    existing = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    names = {f["name"] for f in figures}
    merged = [f for f in existing if f["name"] not in names] + figures
    RESULTS.write_text(json.dumps(merged, indent=2) + "\n")
    print(f"{'figure':<28}{'value':>12} {'unit':<6}{'baseline':>12}{'ratio':>9}")
    for f in figures:
        baseline = "" if f["baseline"] is None else f"{f['baseline']:.4f}"
        ratio = "" if f["ratio"] is None else f"{f['ratio']:.2f}"
        print(f"{f['name']:<28}{f['value']:>12.4f} {f['unit']:<6}{baseline:>12}{ratio:>9}")
    print(f"written to {RESULTS}")
