"""An installed stopsms needs no checkout: ``pip install .`` into a new virtual environment,
then ``stopsms up --help`` and a service started from a folder outside the source tree."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import running_service

pytestmark = pytest.mark.integration
CHECKOUT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new virtual environment with stopsms installed from the checkout (not editable).

    The environment sees the machine's site-packages for the dependencies, so pip needs no
    network; stopsms itself is built and installed into the new environment, and every test
    below checks that it is that copy which runs.
    """
    root = tmp_path_factory.mktemp("installed")
    # Built from a copy of what a source distribution holds, so the build writes nothing into
    # the checkout, and nothing but the package can leak into the wheel.
    source = root / "source"
    shutil.copytree(
        CHECKOUT / "services",
        source / "services",
        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"),
    )
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(CHECKOUT / name, source / name)
    wheels = root / "wheels"
    _pip(sys.executable, "wheel", "--no-deps", "--no-build-isolation", "-w", wheels, source)
    venv = root / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=120
    )
    _pip(venv / "bin" / "python", "install", *sorted(wheels.glob("stopsms-*.whl")))
    return venv


def _pip(python: str | Path, *args: str | Path) -> None:
    done = subprocess.run(
        [str(python), "-m", "pip", "--disable-pip-version-check", "-q", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=600,
        env=_outside_env(),
        cwd=Path(args[-1]).parent,
    )
    assert done.returncode == 0, f"pip {args[0]} failed:\n{done.stdout}\n{done.stderr}"


def _outside_env(**extra: str) -> dict[str, str]:
    """The environment without anything that points into the checkout."""
    env = {
        k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "STOPSMS_KAFKA_DEPLOY_DIR"}
    }
    return {**env, **extra}


def test_the_installed_package_is_not_the_checkout(installed: Path) -> None:
    where = subprocess.run(
        [str(installed / "bin" / "python"), "-c", "import stopsms; print(stopsms.__file__)"],
        capture_output=True,
        text=True,
        timeout=60,
        env=_outside_env(),
        cwd=installed.parent,
    )
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(installed), where.stdout
    assert not Path(where.stdout.strip()).is_relative_to(CHECKOUT)


def test_stopsms_up_help_runs_from_the_installed_script(installed: Path) -> None:
    shown = subprocess.run(
        [str(installed / "bin" / "stopsms"), "up", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env=_outside_env(),
        cwd=installed.parent,
    )
    assert shown.returncode == 0, shown.stderr
    assert "usage: stopsms up" in shown.stdout


def test_the_launcher_finds_the_kafka_build_inside_the_package(installed: Path) -> None:
    found = subprocess.run(
        [
            str(installed / "bin" / "python"),
            "-c",
            "from stopsms.tools.launcher import KAFKA_DEPLOY_DIR as d; "
            "print(d); assert all((d / f).is_file() for f in "
            "('pom.xml', 'server.properties.template', 'log4j2.properties'))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=_outside_env(),
        cwd=installed.parent,
    )
    assert found.returncode == 0, found.stderr
    assert Path(found.stdout.strip()).is_relative_to(installed)


def test_an_installed_service_starts_and_serves(
    installed: Path, service_env: dict[str, str], tmp_path: Path
) -> None:
    env = _outside_env(**{k: v for k, v in service_env.items() if k.startswith("STOPSMS_")})
    with running_service(
        "registry", env, tmp_path / "logs", python=str(installed / "bin" / "python"), cwd=tmp_path
    ) as registry:
        assert registry.address
    log = (tmp_path / "logs" / "registry.log").read_text()
    assert str(CHECKOUT / "services") not in log
