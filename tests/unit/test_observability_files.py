"""The dashboard and the alert rules speak of metrics the services actually export."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
OBSERVABILITY = ROOT / "deploy" / "observability"


def exported_metrics() -> set[str]:
    """Every stopsms_* metric declared in the package (histograms add their series)."""
    names = set()
    for source in (ROOT / "services" / "stopsms").rglob("*.py"):
        text = source.read_text()
        for kind, name in re.findall(r'(Counter|Gauge|Histogram)\(\s*"(stopsms_\w+)"', text):
            names.add(name)
            if kind == "Histogram":
                names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return names


def referenced(expression: str) -> set[str]:
    return set(re.findall(r"\bstopsms_\w+", expression))


def test_every_alert_has_a_runbook_and_uses_exported_metrics() -> None:
    rules = yaml.safe_load((OBSERVABILITY / "alerts.yml").read_text())
    alerts = [rule for group in rules["groups"] for rule in group["rules"]]
    names = {rule["alert"] for rule in alerts}
    assert {"StopSMSPartyLate", "StopSMSPartyLagGrowing", "StopSMSViewRebuilding"} <= names
    operations = (ROOT / "docs" / "operations.md").read_text().lower()
    for rule in alerts:
        assert referenced(rule["expr"]) <= exported_metrics(), rule["alert"]
        assert rule["labels"]["severity"] in {"page", "ticket"}
        anchor = rule["annotations"]["runbook"].split("#", 1)[1]
        heading = anchor.replace("-", " ")
        assert f"### {heading}" in operations, f"{rule['alert']}: no section '{heading}'"


def test_every_dashboard_panel_queries_exported_metrics() -> None:
    dashboard = json.loads((OBSERVABILITY / "grafana-dashboard.json").read_text())
    assert dashboard["uid"] == "stopsms" and dashboard["panels"]
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            assert referenced(target["expr"]) <= exported_metrics(), panel["title"]
