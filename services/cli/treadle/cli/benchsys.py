"""The Treadle a benchmark measures, started by the benchmark itself.

`System` owns a database schema (a fresh one in `TREADLE_DATABASE_URL`, or an
embedded PostgreSQL in a temporary folder when none is set) and the processes
it starts there: scheduler replicas (`treadle scheduler` running the example
app) and gateways, each its own process on a free loopback port, logging to a
file in the system's folder. On exit every process is stopped with SIGINT (as
an operator would) and the schema dropped.

Each process's peak resident memory is read from `/proc/<pid>/status`
(`VmHWM`) while it still runs, so a report can say what a replica or a gateway
needed at most; its CPU time (user + system, every thread) from
`/proc/<pid>/stat`, so a report can say what one operation cost it. On a
shared, noisy machine CPU time per operation moves far less between runs than
a rate does.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import asyncpg
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from treadle.common.errors import DeadlineExceeded, Unavailable

EXAMPLE_APP = "treadle.scheduler.example"
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def replica_env(url: str, schema: str, grpc_port: int, metrics_port: int = 0) -> dict[str, str]:
    """The environment of a replica process running the example app on
    loopback ports: this one's, without its TREADLE_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TREADLE_")}
    env.update(
        TREADLE_DATABASE_URL=url,
        TREADLE_DATABASE_SCHEMA=schema,
        TREADLE_APP=EXAMPLE_APP,
        TREADLE_GRPC_HOST="127.0.0.1",
        TREADLE_GRPC_PORT=str(grpc_port),
        TREADLE_METRICS_PORT=str(metrics_port),
    )
    return env


async def serving(
    port: int, exited: Callable[[], int | None], poll: float = 0.002, check_timeout: float = 1.0
) -> float:
    """Wall time of the first SERVING answer of the replica's health service
    on `port`; `exited()` is the replica's exit status once it has one.

    The port is polled first, and each health check then uses a new channel:
    a channel that found the port closed retries only after its reconnect
    back-off (1 s at first), which would hide the moment the server answers."""
    request = health_pb2.HealthCheckRequest(service="")
    listening = False
    while True:
        status = exited()
        if status is not None:
            raise Unavailable(f"the replica exited with status {status}")
        if not listening:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                listening = True
            except OSError:
                await asyncio.sleep(poll)
            continue
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            try:
                reply = await stub.Check(request, timeout=check_timeout, wait_for_ready=True)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return time.time()
            except grpc.aio.AioRpcError:
                pass
        await asyncio.sleep(poll)


def peak_rss_mb(pid: int) -> float | None:
    """The process's peak resident set size in MiB (Linux), or None."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int) -> float | None:
    """The process's CPU time so far (user + system, all threads; Linux), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces; fields after it are plain.
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


@dataclasses.dataclass
class Proc:
    """One process the system started."""

    role: str
    popen: subprocess.Popen[bytes]
    log: Path
    #: Wall clock (time.time()) just before the process was started.
    started_at: float
    address: str = ""
    peak_rss_mb: float | None = None

    def sample(self) -> None:
        rss = peak_rss_mb(self.popen.pid)
        if rss is not None:
            self.peak_rss_mb = rss

    def cpu_seconds(self) -> float:
        """CPU time the process has used so far (0 once it is gone)."""
        return cpu_seconds(self.popen.pid) or 0.0

    def failed(self, why: str) -> Unavailable:
        tail = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
        return Unavailable(f"{self.role} {why}; its log ({self.log}) ends:\n{tail}")

    def stop(self) -> None:
        self.sample()
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGINT)
            try:
                self.popen.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


class System:
    """A database schema and the Treadle processes running on it."""

    def __init__(
        self, database_url: str, schema: str, folder: Path, db: asyncpg.Connection
    ) -> None:
        self.database_url = database_url
        self.schema = schema
        self.folder = folder
        #: The bench's own connection to the schema (its search_path), open
        #: while the system runs: for baselines, stored rows and polls.
        self.db = db
        self.procs: list[Proc] = []

    def _env(self, extra: Mapping[str, str]) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TREADLE_")}
        env.update(
            TREADLE_DATABASE_URL=self.database_url,
            TREADLE_DATABASE_SCHEMA=self.schema,
        )
        env.update(extra)
        return env

    def _spawn(self, role: str, command: str, env: Mapping[str, str]) -> Proc:
        log = self.folder / f"{role}-{len(self.procs)}.log"
        with log.open("wb") as out:
            started_at = time.time()
            popen = subprocess.Popen(
                [sys.executable, "-m", "treadle.cli", command],
                env=self._env(env),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        proc = Proc(role, popen, log, started_at)
        self.procs.append(proc)
        return proc

    def spawn_replica(self, **env: str) -> Proc:
        """Start a replica; `ready` waits for it."""
        port = free_port()
        proc = self._spawn(
            "replica", "scheduler", {**replica_env(self.database_url, self.schema, port), **env}
        )
        proc.address = f"127.0.0.1:{port}"
        return proc

    async def replica(self, **env: str) -> Proc:
        """A started replica, serving gRPC."""
        proc = self.spawn_replica(**env)
        await self.ready(proc)
        return proc

    async def gateway(self, scheduler_address: str) -> Proc:
        """A started gateway calling `scheduler_address`, answering /health."""
        port = free_port()
        proc = self._spawn(
            "gateway",
            "gateway",
            {
                "TREADLE_HTTP_HOST": "127.0.0.1",
                "TREADLE_HTTP_PORT": str(port),
                "TREADLE_SCHEDULER_ADDRESS": scheduler_address,
            },
        )
        proc.address = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + READY_TIMEOUT
        while not await _http_ok("127.0.0.1", port, "/health"):
            if proc.popen.poll() is not None:
                raise proc.failed(f"exited with status {proc.popen.returncode}")
            if time.monotonic() > deadline:
                raise proc.failed("did not answer /health in time")
            await asyncio.sleep(0.01)
        return proc

    async def ready(self, proc: Proc) -> float:
        """Wait until the replica's gRPC health says SERVING; returns the wall
        clock time when it first did."""
        port = int(proc.address.rsplit(":", 1)[1])
        try:
            async with asyncio.timeout(READY_TIMEOUT):
                return await serving(port, proc.popen.poll)
        except TimeoutError:
            raise proc.failed("was not SERVING in time") from None
        except Unavailable:
            raise proc.failed(f"exited with status {proc.popen.returncode}") from None

    def sample(self) -> None:
        for proc in self.procs:
            proc.sample()

    def peaks(self) -> dict[str, float | None]:
        """Peak RSS (MiB) of each process, by role and number."""
        self.sample()
        return {f"{p.role}-{i}": p.peak_rss_mb for i, p in enumerate(self.procs)}

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()


@contextlib.contextmanager
def _database(folder: Path) -> Iterator[str]:
    url = os.environ.get("TREADLE_DATABASE_URL")
    if url:
        yield url
        return
    from treadle.scheduler.embedded import embedded_postgres

    with embedded_postgres(folder) as embedded_url:
        yield embedded_url


@contextlib.asynccontextmanager
async def system() -> AsyncIterator[System]:
    """A fresh schema (migrated) and no processes yet; everything is stopped
    and dropped on exit."""
    from treadle.scheduler import postgres

    with tempfile.TemporaryDirectory(prefix="treadle-bench-") as tmp:
        folder = Path(tmp)
        with _database(folder) as url:
            schema = f"bench_{uuid.uuid4().hex[:10]}"
            conn = await postgres.connect(url, schema, "treadle-bench")
            try:
                await postgres.migrate(conn, schema)
                running = System(url, schema, folder, conn)
                try:
                    yield running
                finally:
                    await asyncio.to_thread(running.stop)
                    await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            finally:
                await conn.close()


async def _http_ok(host: str, port: int, path: str) -> bool:
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError:
        return False
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        async with asyncio.timeout(2):
            status = await reader.readline()
        return status.split(b" ")[1:2] == [b"200"]
    except (OSError, TimeoutError, IndexError):
        return False
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def wait_for(check: Any, timeout: float, what: str, poll: float = 0.02) -> None:
    """Poll the coroutine function `check` until it returns true."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise DeadlineExceeded(f"{what} not done in {timeout:g} s")
        await asyncio.sleep(poll)
