"""`treadle up` as a newcomer runs it: embedded PostgreSQL, scheduler and gateway in one process."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
import uuid
from pathlib import Path

import asyncpg
import grpc
import httpx
import psutil
from grpc_health.v1 import health_pb2, health_pb2_grpc

from treadle.api.v1 import scheduler_pb2 as pb
from treadle.api.v1 import scheduler_pb2_grpc as pb_grpc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def graphql(http: httpx.AsyncClient, query: str, **variables: object) -> dict:  # type: ignore[type-arg]
    reply = await http.post("/graphql", json={"query": query, "variables": variables})
    body = reply.json()
    assert "errors" not in body, body
    return body["data"]  # type: ignore[no-any-return]


async def finished(http: httpx.AsyncClient, task_id: str, timeout: float = 10) -> dict:  # type: ignore[type-arg]
    """The task's state and result through GraphQL, once it left QUEUED/RUNNING
    (or as it is after `timeout` seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        data = await graphql(http, "query($id: ID!) { task(id: $id) { state result } }", id=task_id)
        if data["task"]["state"] not in ("QUEUED", "RUNNING") or time.monotonic() > deadline:
            return data["task"]  # type: ignore[no-any-return]
        await asyncio.sleep(0.05)


def postgres_processes(data_dir: Path) -> list[int]:
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        if proc.info["name"] == "postgres" and str(data_dir) in " ".join(
            proc.info["cmdline"] or []
        ):
            found.append(proc.pid)
    return found


async def test_up_serves_graphql_and_grpc_then_stops_on_sigint(pg_dir: Path) -> None:
    http_port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TREADLE_")}
    data_dir = pg_dir / "data"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "treadle.cli",
        "up",
        "--data-dir",
        str(data_dir),
        "--http-port",
        str(http_port),
        "--grpc-port",
        str(grpc_port),
        "--metrics-port",
        str(metrics_port),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
    )
    assert proc.stdout is not None
    output: list[str] = []
    try:
        while not any("Treadle is up" in line for line in output):
            line = (await asyncio.wait_for(proc.stdout.readline(), timeout=30)).decode()
            assert line, "treadle up exited early:\n" + "".join(output)
            output.append(line)
        assert postgres_processes(data_dir), "the embedded PostgreSQL runs"
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}") as http:
            assert (await http.get("/health")).json() == {"status": "ok"}
            assert "treadle_http_requests_total" in (await http.get("/metrics")).text
            scheduler_metrics = await http.get(f"http://127.0.0.1:{metrics_port}/metrics")
            assert "treadle_tasks_submitted_total" in scheduler_metrics.text
            page = await http.get("/graphql", headers={"Accept": "text/html"})
            assert "graphiql" in page.text.lower()

            submitted = await graphql(
                http,
                'mutation($p: JSON!) { submitTask(input: {name: "echo", payload: $p}) { id } }',
                p={"hello": "bar"},
            )
            graphql_id = submitted["submitTask"]["id"]

            # The same task through the generated stub, visible through GraphQL.
            async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
                health = await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service="")
                )
                assert health.status == health_pb2.HealthCheckResponse.SERVING
                reply = await pb_grpc.SchedulerServiceStub(channel).SubmitTask(
                    pb.SubmitTaskRequest(task=pb.TaskSpec(name="echo", payload='{"via": "grpc"}'))
                )
            grpc_id = reply.task.id

            for task_id, payload in ((graphql_id, {"hello": "bar"}), (grpc_id, {"via": "grpc"})):
                assert await finished(http, task_id) == {"state": "SUCCEEDED", "result": payload}

            # A task that fails, retries once, and is DEAD: both show in the log.
            failing = await graphql(
                http,
                'mutation { submitTask(input: {name: "fail", payload: {message: "no luck"}, '
                "maxAttempts: 2, retry: {baseSeconds: 0.05}}) { id } }",
            )
            failing_id = failing["submitTask"]["id"]
            async with asyncio.timeout(10):
                while (await finished(http, failing_id))["state"] != "DEAD":
                    await asyncio.sleep(0.05)

        proc.send_signal(signal.SIGINT)
        rest = (await asyncio.wait_for(proc.stdout.read(), timeout=20)).decode()
        assert await proc.wait() == 0, rest
        lines = rest.splitlines()
        who = f"task {failing_id} (fail, queue default)"
        (warning,) = [line for line in lines if f"WARNING treadle.scheduler.tasks: {who}" in line]
        assert f"{who} attempt 1/2 failed: RuntimeError: no luck; retrying at " in warning
        (error,) = [
            i for i, line in enumerate(lines) if f"ERROR treadle.scheduler.tasks: {who}" in line
        ]
        assert lines[error].endswith(f"{who} is DEAD after attempt 2/2: RuntimeError: no luck")
        # Below it, the handler's short traceback: the only one in the output.
        assert lines[error + 1] == "Traceback (most recent call last):"
        assert rest.count("Traceback") == 1
        assert "cancelled and awaited" in rest
        assert "treadle-dispatch" in rest
        assert postgres_processes(data_dir) == [], "the embedded PostgreSQL stopped too"
        assert (data_dir / "pgdata" / "PG_VERSION").exists(), "its data is kept for next time"
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_up_with_a_database_url_uses_that_database(
    pg_dir: Path, database_url: str, schema: str
) -> None:
    """With TREADLE_DATABASE_URL set, `treadle up` starts no embedded server:
    its tasks land in that database, in TREADLE_DATABASE_SCHEMA."""
    http_port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TREADLE_")}
    env |= {"TREADLE_DATABASE_URL": database_url, "TREADLE_DATABASE_SCHEMA": schema}
    data_dir = pg_dir / "data"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "treadle.cli", "up", "--data-dir", str(data_dir),
        "--http-port", str(http_port), "--grpc-port", str(grpc_port),
        "--metrics-port", str(metrics_port),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env,
    )  # fmt: skip
    assert proc.stdout is not None
    output: list[str] = []
    try:
        while not any("auth " in line for line in output):  # the banner's last line
            line = (await asyncio.wait_for(proc.stdout.readline(), timeout=30)).decode()
            assert line, "treadle up exited early:\n" + "".join(output)
            output.append(line)
        banner = "".join(output)
        assert f"http://127.0.0.1:{http_port}/graphql" in banner
        assert f"127.0.0.1:{grpc_port}" in banner
        assert "database   TREADLE_DATABASE_URL" in banner
        assert "embedded" not in banner
        assert postgres_processes(data_dir) == [], "no embedded PostgreSQL"
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}") as http:
            submitted = await graphql(
                http,
                'mutation($p: JSON!) { submitTask(input: {name: "echo", payload: $p}) { id } }',
                p={"db": "given"},
            )
            task_id = submitted["submitTask"]["id"]
            done = await finished(http, task_id)
            assert done == {"state": "SUCCEEDED", "result": {"db": "given"}}
        conn = await asyncpg.connect(database_url)
        try:
            state = await conn.fetchval(
                f'SELECT state FROM "{schema}".tasks WHERE id = $1', uuid.UUID(task_id)
            )
        finally:
            await conn.close()
        assert state == "SUCCEEDED", "the task is in the given database and schema"
        proc.send_signal(signal.SIGINT)
        rest = (await asyncio.wait_for(proc.stdout.read(), timeout=20)).decode()
        assert await proc.wait() == 0, rest
        assert not data_dir.exists() or not (data_dir / "pgdata").exists()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
