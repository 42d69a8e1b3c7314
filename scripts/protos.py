"""Generate the Python stubs in shared/treadle/api/ from protos/ (`make protos`).

With --check, generate into a temporary folder and fail when the checked-in
stubs differ from it (CI runs this).
"""

from __future__ import annotations

import argparse
import filecmp
import sys
import tempfile
from pathlib import Path

import grpc_tools
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
OUT = ROOT / "shared"
GENERATED = Path("treadle/api/v1")


def generate(out: Path) -> None:
    include = Path(grpc_tools.__file__).parent / "_proto"
    sources = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    bindir = Path(sys.executable).parent
    args = [
        "protoc",
        f"--plugin=protoc-gen-mypy={bindir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bindir / 'protoc-gen-mypy_grpc'}",
        f"-I{PROTOS}",
        f"-I{include}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        *sources,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="only compare; change nothing")
    args = parser.parse_args()
    if not args.check:
        target = OUT / GENERATED
        for old in target.glob("*_pb2*"):
            old.unlink()
        generate(OUT)
        print(f"generated stubs in {target.relative_to(ROOT)}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        fresh, current = Path(tmp) / GENERATED, OUT / GENERATED
        names = {p.name for p in fresh.glob("*_pb2*")} | {p.name for p in current.glob("*_pb2*")}
        stale = sorted(
            n
            for n in names
            if not (fresh / n).exists()
            or not (current / n).exists()
            or not filecmp.cmp(fresh / n, current / n, shallow=False)
        )
    if stale:
        print("stale generated stubs (run `make protos`): " + ", ".join(stale), file=sys.stderr)
        return 1
    print("generated stubs are up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
