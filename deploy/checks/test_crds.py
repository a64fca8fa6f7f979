"""Strimzi's and KEDA's objects of every overlay against their CRD schemas (strict).

The CRDs live beside the clone (``STOPSMS_SCHEMAS``, default ``../shared/schemas``:
``strimzi/*.yaml``, ``keda/*.yaml``). A cluster's API server prunes fields its schema does
not know, so a misspelt field would vanish silently there; here every object that has a
``properties`` list without ``additionalProperties`` or ``x-kubernetes-preserve-unknown-fields``
is closed, and an unknown field fails the check.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from stopsms.tools.manifests import OVERLAYS, render

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = Path(os.environ.get("STOPSMS_SCHEMAS", ROOT.parent / "shared" / "schemas"))
#: Custom kinds the platform uses that no schema in STOPSMS_SCHEMAS covers; checked by the
#: platform's own rules in tests/unit/test_k8s_manifests.py only.
WITHOUT_SCHEMA = {("keda.sh/v1alpha1", "TriggerAuthentication")}


def closed(schema: Any) -> Any:
    """The schema with every object closed to fields it does not name."""
    if isinstance(schema, dict):
        result = {key: closed(value) for key, value in schema.items()}
        if (
            "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            result["additionalProperties"] = False
        return result
    if isinstance(schema, list):
        return [closed(item) for item in schema]
    return schema


def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> the version's openAPIV3Schema, for every CRD found."""
    files = sorted(SCHEMAS.glob("strimzi/*.yaml")) + sorted(SCHEMAS.glob("keda/*.yaml"))
    assert files, f"no CRDs under {SCHEMAS} (set STOPSMS_SCHEMAS)"
    schemas = {}
    for path in files:
        for crd in yaml.safe_load_all(path.read_text()):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                schema = version["schema"]["openAPIV3Schema"]
                schemas[(f"{group}/{version['name']}", kind)] = closed(schema)
    return schemas


@pytest.fixture(scope="module")
def schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """Every CRD schema of STOPSMS_SCHEMAS, closed."""
    return crd_schemas()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_strimzi_and_keda_objects_follow_their_crds(
    overlay: str, schemas: dict[tuple[str, str], dict[str, Any]]
) -> None:
    """Every Kafka, node pool, topic, user and scaled object of the overlay is valid."""
    checked = 0
    for document in render(overlay):
        key = (document["apiVersion"], document["kind"])
        if key[0].split("/")[0] not in ("kafka.strimzi.io", "keda.sh") or key in WITHOUT_SCHEMA:
            continue
        assert key in schemas, f"{overlay}: no CRD schema for {key}"
        validator = jsonschema.Draft7Validator(schemas[key])
        errors = sorted(validator.iter_errors(document), key=lambda e: list(e.path))
        name = document["metadata"]["name"]
        assert not errors, f"{overlay}: {key[1]} {name}:\n" + "\n".join(
            f"  {list(e.path)}: {e.message}" for e in errors
        )
        checked += 1
    # Kafka, its node pools (1 in dev, 2 in prod), 8 topics, 7 users, 2 scaled objects.
    expected = 19 if overlay == "dev" else 20
    assert checked >= expected, f"{overlay}: only {checked} custom objects checked"


def test_an_unknown_field_fails_the_check(schemas: dict[tuple[str, str], dict[str, Any]]) -> None:
    """The closed schemas catch a misspelt field (``replica`` for ``replicas``)."""
    topic = {
        "apiVersion": "kafka.strimzi.io/v1",
        "kind": "KafkaTopic",
        "metadata": {"name": "t"},
        "spec": {"partitions": 12, "replica": 3},
    }
    validator = jsonschema.Draft7Validator(schemas[("kafka.strimzi.io/v1", "KafkaTopic")])
    assert any("replica" in e.message for e in validator.iter_errors(topic))
