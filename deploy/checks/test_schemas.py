"""The deployment files against their published schemas (run on its own: `make check-schemas`).

The schemas are not part of the repository: ``STOPSMS_SCHEMAS`` points at a folder holding
``compose/compose-spec.json`` (the Compose specification's JSON schema); CI has it beside the
clone (``../shared/schemas``). Without it the check fails rather than pass unchecked.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = Path(os.environ.get("STOPSMS_SCHEMAS", ROOT.parent / "shared" / "schemas"))


def test_docker_compose_follows_the_compose_specification() -> None:
    """docker-compose.yml is valid under the Compose specification's JSON schema."""
    schema_file = SCHEMAS / "compose" / "compose-spec.json"
    assert schema_file.is_file(), f"no Compose schema at {schema_file} (set STOPSMS_SCHEMAS)"
    schema = json.loads(schema_file.read_text())
    document = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    # The schema says draft-07 (in a spelling jsonschema does not look up by itself).
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(document), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)
