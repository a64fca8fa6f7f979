"""Generate the Python code of the public protos, or check that the committed code is current.

The generated modules live in ``services/stopsms/v1`` and are committed, so that installing the
package needs no code generator. ``check`` regenerates into a temporary folder and fails on any
difference, which keeps a hand edit or a forgotten regeneration out of main.
"""

from __future__ import annotations

import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parents[3]
PROTO_ROOT = ROOT / "protos"
SOURCE_ROOT = ROOT / "services"
PACKAGE = Path("stopsms") / "v1"
INIT_TEXT = '"""Generated protobuf and gRPC code of the stopsms.v1 contract. Do not edit."""\n'


def _generate_into(out_root: Path) -> None:
    """Run protoc (from the pinned grpcio-tools) over every proto into ``out_root``."""
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / PACKAGE).glob("*.proto"))
    include = str(Path(protoc.__file__).parent / "_proto")
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out_root}",
        f"--grpc_python_out={out_root}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    (out_root / PACKAGE / "__init__.py").write_text(INIT_TEXT)


def generate() -> None:
    """Regenerate the committed package in place."""
    target = SOURCE_ROOT / PACKAGE
    with tempfile.TemporaryDirectory() as tmp:
        _generate_into(Path(tmp))
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(Path(tmp) / PACKAGE, target)
    print(f"generated {target.relative_to(ROOT)}")


def check() -> int:
    """Return 1 (and say which files) when the committed code differs from a regeneration."""
    target = SOURCE_ROOT / PACKAGE
    with tempfile.TemporaryDirectory() as tmp:
        _generate_into(Path(tmp))
        fresh = Path(tmp) / PACKAGE
        names = {p.name for p in fresh.iterdir()} | {
            p.name for p in target.iterdir() if p.suffix in {".py", ".pyi"}
        }
        stale = sorted(
            n
            for n in names
            if not (fresh / n).exists()
            or not (target / n).exists()
            or not filecmp.cmp(fresh / n, target / n, shallow=False)
        )
    if stale:
        print("generated code is stale; run `make protos`: " + ", ".join(stale), file=sys.stderr)
        return 1
    print("generated code is current")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``generate`` or ``check``."""
    command = (argv if argv is not None else sys.argv[1:]) or ["check"]
    if command[0] == "generate":
        generate()
        return 0
    if command[0] == "check":
        return check()
    print("usage: python -m stopsms.tools.protogen generate|check", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
