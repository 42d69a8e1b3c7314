"""The client-only install and the server extra (pyproject.toml).

`pip install treadle` brings the client and the CLI's client commands;
`treadle[server]` what a replica and the gateway import. Here a subprocess of
this (full) environment plays a client-only install: every module that only
the server extra brings is made unimportable, and the CLI runs its client
commands against a real replica; what got imported is then checked against the
distributions. Building the wheel and installing it into a clean venv is
`make wheel-check` (CI).
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import sys
import tomllib
from collections.abc import Iterable
from importlib import metadata
from importlib.util import find_spec
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from treadle.common import extras
from treadle.scheduler.supervisor import Replica

#: Server-extra distributions that `extras.SERVER_MODULES` does not check by
#: name, and why.
NOT_CHECKED_BY_NAME = {
    "httptools": "uvicorn parses HTTP with it when present",
    "tzdata": "zoneinfo reads time zones from it where the system has none",
    "uvloop": "process.run_async runs on it when present",
    **dict.fromkeys(
        (
            "opentelemetry-exporter-otlp-proto-grpc",
            "opentelemetry-instrumentation-asgi",
            "opentelemetry-instrumentation-grpc",
            "opentelemetry-sdk",
        ),
        "under `opentelemetry`, shared with the API the client uses",
    ),
}
#: The server's parts of namespaces shared with the client's dependencies.
SERVER_NAMESPACES = ("opentelemetry.sdk", "opentelemetry.exporter", "opentelemetry.instrumentation")


def _project(repo_root: Path) -> dict[str, object]:
    project: dict[str, object] = tomllib.loads((repo_root / "pyproject.toml").read_text())[
        "project"
    ]
    return project


def _names(requirements: Iterable[str]) -> set[str]:
    return {canonicalize_name(Requirement(r).name) for r in requirements}


def _closure(names: Iterable[str]) -> set[str]:
    """`names` and every distribution they require here, transitively."""
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = canonicalize_name(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        for text in metadata.requires(name) or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return seen


def _server_only(repo_root: Path) -> set[str]:
    """The distributions installed for the server extra and not for the client."""
    project = _project(repo_root)
    base = _names(project["dependencies"])  # type: ignore[arg-type]
    server = _names(project["optional-dependencies"]["server"])  # type: ignore[index]
    return _closure(server) - _closure(base)


@functools.cache
def _owners() -> dict[str, str]:
    """The distribution that installed each file here, by absolute path."""
    owners: dict[str, str] = {}
    for dist in metadata.distributions():
        root, name = Path(str(dist.locate_file(""))).resolve(), dist.metadata["Name"]
        for file in dist.files or ():
            owners[os.path.normpath(root / file)] = canonicalize_name(name)
    return owners


def _owner(module: str) -> str:
    """The distribution that installed `module`."""
    spec = find_spec(module)
    assert spec is not None and spec.origin, f"{module} is not a regular module here"
    owner = _owners().get(str(Path(spec.origin).resolve()))
    assert owner, f"no distribution installed {spec.origin}"
    return owner


def test_server_modules_follow_the_server_extra(repo_root: Path) -> None:
    project = _project(repo_root)
    server = _names(project["optional-dependencies"]["server"])  # type: ignore[index]
    owners = {module: _owner(module) for module in extras.SERVER_MODULES}
    outside = {m: d for m, d in owners.items() if d not in server}
    assert outside == {}, "SERVER_MODULES must come from the server extra"
    unchecked = server - set(owners.values()) - set(NOT_CHECKED_BY_NAME)
    assert unchecked == set(), (
        "each server-extra distribution is checked by extras.SERVER_MODULES "
        "or listed in NOT_CHECKED_BY_NAME"
    )
    assert extras.missing() == []


def test_dev_tools_are_not_in_what_is_installed(repo_root: Path) -> None:
    project = _project(repo_root)
    published = _names(project["dependencies"])  # type: ignore[arg-type]
    for extra in project["optional-dependencies"].values():  # type: ignore[attr-defined]
        published |= _names(extra)
    dev_tools = {"grpcio-tools", "mypy", "mypy-protobuf", "ruff", "pytest", "hypothesis"}
    assert published & dev_tools == set()
    assert "grpcio-tools" not in _closure(published)


# A client-only install, played: what the server extra alone installs cannot be
# imported (a finder refuses it, as if absent), then the CLI runs each argv in
# turn and the distributions of every module loaded are written out.
CLIENT_ONLY = """
import json, os, sys
from importlib import metadata
from pathlib import Path

blocked, argvs, out = json.loads(sys.argv[1])

class Absent:
    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in blocked):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Absent())
from treadle.cli.__main__ import main

codes = []
for argv in argvs:
    try:
        codes.append(main(argv))
    except SystemExit as exc:
        codes.append(exc.code)
    print(f"-- end of {argv[0]}", file=sys.stderr, flush=True)
owners = {}
for dist in metadata.distributions():
    root, name = Path(str(dist.locate_file(""))).resolve(), dist.metadata["Name"]
    for file in dist.files or ():
        owners[os.path.normpath(root / file)] = name
loaded = {
    owners.get(str(Path(module.__file__).resolve()))
    for module in list(sys.modules.values())
    if getattr(module, "__file__", None)
}
Path(out).write_text(json.dumps({"codes": codes, "dists": sorted(d for d in loaded if d)}))
"""


def _top_level(file: metadata.PackagePath) -> str | None:
    """The import name a distribution's file belongs to; None for metadata,
    scripts and the like."""
    first = file.parts[0]
    if len(file.parts) > 1:
        skipped = first in ("..", "__pycache__") or first.endswith((".dist-info", ".data", ".libs"))
        return None if skipped else first
    return first.split(".")[0] if first.endswith((".py", ".so")) else None


def _blocked(server_only: set[str]) -> list[str]:
    """The import names that only `server_only` distributions provide, and the
    server's parts of shared namespaces."""
    providers: dict[str, set[str]] = {}
    for dist in metadata.distributions():
        name = canonicalize_name(dist.metadata["Name"])
        for file in dist.files or ():
            top = _top_level(file)
            if top:
                providers.setdefault(top, set()).add(name)
    only = [top for top, names in providers.items() if names <= server_only]
    return sorted({*only, *SERVER_NAMESPACES})


async def test_client_commands_run_without_the_server_extra(
    repo_root: Path, replica: Replica, tmp_path: Path
) -> None:
    server_only = _server_only(repo_root)
    assert {"asyncpg", "strawberry-graphql", "opentelemetry-sdk"} <= server_only
    at = ["--address", replica.address]
    # One command that calls the scheduler: grpc.aio cannot follow a process
    # from one event loop to the next (each command runs its own), and a real
    # `treadle` runs one command. The others stop before any loop starts.
    argvs = [
        ["--help"],
        ["queue", "--help"],
        ["submit", "echo", "--payload", '{"client": "only"}', "--wait", *at],
        ["up", "--help"],
        ["up"],
        ["scheduler", "--app", "taskapp"],
        ["migrate"],
    ]
    out = tmp_path / "loaded.json"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CLIENT_ONLY,
        json.dumps([_blocked(server_only), argvs, str(out)]),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={k: v for k, v in os.environ.items() if k != "TREADLE_SCHEDULER_ADDRESS"},
    )
    async with asyncio.timeout(40):
        stdout, stderr = await proc.communicate()
    assert proc.returncode == 0, stderr.decode()
    result = json.loads(out.read_text())
    assert result["codes"] == [0, 0, 0, 0, 1, 1, 1], stderr.decode()
    assert '"client": "only"' in stdout.decode() and '"state": "SUCCEEDED"' in stdout.decode()
    errors = stderr.decode()
    for command in ("up", "scheduler", "migrate"):
        assert f"treadle {command} needs the server extra" in errors
    assert errors.count("pip install 'treadle[server]'") == 3
    assert "Traceback" not in errors, errors
    loaded = {canonicalize_name(d) for d in result["dists"]}
    assert loaded & server_only == set(), "client commands imported the server extra"
    assert {"grpcio", "protobuf"} <= loaded
