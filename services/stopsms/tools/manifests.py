"""Render the Kubernetes overlays of k8s/ offline, as a cluster would receive them.

Used by the tests (every overlay renders, every object validates) and by SREs who want to
read what an overlay produces before applying it::

    python -m stopsms.tools.manifests dev      # the rendered YAML on stdout

Rendering needs kustomize: ``STOPSMS_KUSTOMIZE``, a ``kustomize`` on the PATH or in Go's bin
folder (``deploy/bootstrap.sh`` installs the pinned version there), or ``kubectl kustomize``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[3]
K8S = ROOT / "k8s"
OVERLAYS = ("dev", "prod")
#: The version deploy/bootstrap.sh installs (go install sigs.k8s.io/kustomize/kustomize/v5).
KUSTOMIZE_VERSION = "v5.7.1"


class ManifestError(RuntimeError):
    """kustomize is missing or an overlay does not render."""


def kustomize_command() -> list[str]:
    """How to render a kustomization on this machine: the command, to which the folder is added."""
    configured = os.environ.get("STOPSMS_KUSTOMIZE")
    if configured:
        return [configured, "build"]
    found = shutil.which("kustomize")
    if found:
        return [found, "build"]
    go = shutil.which("go")
    if go:
        gopath = subprocess.run(  # noqa: S603
            [go, "env", "GOPATH"], capture_output=True, text=True, check=False
        ).stdout.strip()
        candidate = Path(gopath or Path.home() / "go") / "bin" / "kustomize"
        if candidate.is_file():
            return [str(candidate), "build"]
    if (Path.home() / "go" / "bin" / "kustomize").is_file():
        return [str(Path.home() / "go" / "bin" / "kustomize"), "build"]
    kubectl = shutil.which("kubectl")
    if kubectl:  # kubectl's built-in kustomize takes the folder directly ("kubectl kustomize DIR")
        return [kubectl, "kustomize"]
    raise ManifestError(
        "kustomize is not installed: run deploy/bootstrap.sh (it runs `go install "
        f"sigs.k8s.io/kustomize/kustomize/v5@{KUSTOMIZE_VERSION}`) or set STOPSMS_KUSTOMIZE"
    )


def render(overlay: str) -> list[dict[str, Any]]:
    """Every object of one overlay (``dev``, ``prod``) as kustomize renders it."""
    folder = K8S / "overlays" / overlay
    if not folder.is_dir():
        raise ManifestError(f"no overlay {overlay!r}; there are {', '.join(OVERLAYS)}")
    result = subprocess.run(  # noqa: S603
        [*kustomize_command(), str(folder)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise ManifestError(f"kustomize build {folder} failed:\n{result.stderr}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def main(argv: list[str] | None = None) -> int:
    """Print an overlay's rendered objects."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(f"usage: python -m stopsms.tools.manifests {{{','.join(OVERLAYS)}}}", file=sys.stderr)
        return 2
    try:
        print(yaml.safe_dump_all(render(args[0]), sort_keys=False), end="")
    except ManifestError as exc:
        print(exc, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
