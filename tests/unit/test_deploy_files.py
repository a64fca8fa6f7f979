"""The deployment files hold together: what compose references exists, images are pinned."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = ("intake", "registry", "notifier", "console")
HEALTH_PORTS = {"intake": 50061, "registry": 50062, "notifier": 50063, "console": 50064}


def test_every_dependency_and_named_volume_exists() -> None:
    services = COMPOSE["services"]
    declared = set(COMPOSE.get("volumes") or {})
    for name, service in services.items():
        for target in service.get("depends_on") or {}:
            assert target in services, f"{name} depends on unknown service {target}"
        for mount in service.get("volumes") or []:
            source = mount.split(":", 1)[0]
            if not source.startswith((".", "/")):
                assert source in declared, f"{name} mounts undeclared volume {source}"


def test_every_variable_has_a_default_and_every_image_is_pinned() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    for match in re.finditer(r"\$\{([^}]+)\}", text):
        assert ":-" in match.group(1), f"${{{match.group(1)}}} has no default"
    for name, service in COMPOSE["services"].items():
        image = re.sub(r"\$\{[^:}]+:-([^}]+)\}", r"\1", service["image"])
        repository, _, tag = image.rpartition(":")
        assert repository and tag and tag != "latest" or "@sha256:" in image, (name, image)


def test_each_service_runs_its_module_with_a_grpc_health_check() -> None:
    for name in SERVICES:
        service = COMPOSE["services"][name]
        assert service["command"] == [f"stopsms.{name}"]
        check = service["healthcheck"]["test"]
        assert check[:4] == ["CMD", "python", "-m", "stopsms.tools.health"]
        assert check[4] == f"127.0.0.1:{HEALTH_PORTS[name]}"
        assert service["environment"][f"STOPSMS_{name.upper()}_HEALTH_ADDRESS"].endswith(
            f":{HEALTH_PORTS[name]}"
        )
    for name, service in COMPOSE["services"].items():
        command = service.get("command")
        if "build" in service and command:
            assert importlib.util.find_spec(command[0]) is not None, (name, command[0])


def test_the_image_runs_unprivileged_without_build_tools() -> None:
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    final = dockerfile.split("\nFROM ")[-1]
    assert "build-essential" not in final and "USER 10001" in final
    assert "--no-cache-dir" in final
