"""Copy the web console's third-party browser assets from node_modules into the
gateway package (services/gateway/treadle/gateway/console/vendor/), where they are
committed and shipped in the wheel: the console and GraphiQL load nothing from a CDN.

The versions are the ones package-lock.json pins (package.json's "dependencies").
To update one: `npm install --save-exact <package>@<version>`, then run

    python scripts/vendor_assets.py          # npm ci, then copy
    python scripts/vendor_assets.py --check  # fails when vendor/ differs from node_modules

and commit package.json, package-lock.json and vendor/ together.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODULES = ROOT / "node_modules"
VENDOR = ROOT / "services" / "gateway" / "treadle" / "gateway" / "console" / "vendor"

#: vendor/ file name -> the file in node_modules it is a copy of.
FILES = {
    "react.production.min.js": "react/umd/react.production.min.js",
    "react-dom.production.min.js": "react-dom/umd/react-dom.production.min.js",
    "graphiql.min.js": "graphiql/graphiql.min.js",
    "graphiql.min.css": "graphiql/graphiql.min.css",
    "graphiql-plugin-explorer.umd.js": "@graphiql/plugin-explorer/dist/index.umd.js",
    "graphiql-plugin-explorer.css": "@graphiql/plugin-explorer/dist/style.css",
    "graphql-ws.min.js": "graphql-ws/umd/graphql-ws.min.js",
    "uPlot.esm.js": "uplot/dist/uPlot.esm.js",
    "uPlot.min.css": "uplot/dist/uPlot.min.css",
}
#: The packages whose licences are copied next to their files.
PACKAGES = ("react", "react-dom", "graphiql", "@graphiql/plugin-explorer", "graphql-ws", "uplot")


def licence(package: str) -> Path | None:
    """The package's licence file; None when it ships none (its package.json names it)."""
    folder = MODULES / package
    for name in ("LICENSE", "LICENSE.md", "LICENSE.txt", "license"):
        if (folder / name).is_file():
            return folder / name
    return None


def wanted() -> dict[str, bytes]:
    """Every vendor/ file's content, read from node_modules."""
    files = {name: (MODULES / source).read_bytes() for name, source in FILES.items()}
    versions = {}
    for package in PACKAGES:
        meta = json.loads((MODULES / package / "package.json").read_text())
        versions[package] = {"version": meta["version"], "license": meta.get("license")}
        found = licence(package)
        if found is not None:
            files[f"LICENSE.{package.replace('/', '-').lstrip('@')}"] = found.read_bytes()
    files["VERSIONS.json"] = (json.dumps(versions, indent=2, sort_keys=True) + "\n").encode()
    return files


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="compare vendor/ with node_modules, change nothing"
    )
    parser.add_argument(
        "--no-install", action="store_true", help="use node_modules as it is (no `npm ci`)"
    )
    args = parser.parse_args()
    if not args.no_install:
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--silent"], cwd=ROOT, check=True)
    files = wanted()
    present = {p.name for p in VENDOR.iterdir()} if VENDOR.is_dir() else set()
    if args.check:
        stale = sorted(
            name
            for name, data in files.items()
            if not (VENDOR / name).is_file() or (VENDOR / name).read_bytes() != data
        )
        extra = sorted(present - set(files))
        if stale or extra:
            print(f"vendor/ differs from node_modules: {stale + extra}", file=sys.stderr)
            return 1
        return 0
    VENDOR.mkdir(parents=True, exist_ok=True)
    for name in present - set(files):
        (VENDOR / name).unlink()
    for name, data in files.items():
        (VENDOR / name).write_bytes(data)
    print(f"copied {len(files)} files into {VENDOR.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
