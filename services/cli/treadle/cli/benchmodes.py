"""`treadle bench --mode …`: measurements against a Treadle the bench starts
itself (`benchsys.System`), so that a figure and the baseline it is compared
with come from the same run, the same database and the same machine load.

- `submit`: one-at-a-time (`--in-flight 1`) or concurrent submits from one
  client, against a bare asyncpg INSERT + commit of a task-shaped row into the
  same database (the baseline) and a no-op gRPC round trip to the same replica
  (the transport's floor), all measured in this run. With `--auth`, also
  submits with an API key to a second replica that requires keys, alternating
  with the first: what authentication costs a submit. With `--submit-rate`
  or `--max-queued`, also with those limits in force for the tenant, on the
  same replica, alternating (what a rate limit and a quota cost a submit);
  with both, the keyed submits run while the limits are in force.
- `latency`: submits at a fixed rate; submit→start percentiles.
- `drain`: N tasks stored before the replicas start; the replicas' drain rate
  with their start-up included, and steady (first start to last finish).
- `startup`: exec of a replica to gRPC SERVING and to its first claim.
- `graphql`: one gateway process under 64 connections (a load generator in
  other processes): `GET /health`, `task(id)` or `submitTask`, and
  `query { __typename }` (the least a GraphQL request can cost this gateway:
  its floor, as the no-op gRPC call is the submit's).

Each report carries the peak memory of every process the bench started; the
submit and graphql modes also the CPU time each operation cost the server
process and the client (µs), which varies far less from run to run than the
rates on a shared machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from treadle.cli.bench import percentiles
from treadle.cli.benchsys import Proc, System, system, wait_for
from treadle.client import Client
from treadle.common.errors import Internal
from treadle.common.tasks import TaskSpec

#: The table the baseline inserts into: the columns a submit sets, with a
#: primary key (the tasks table has more indexes, and a trigger).
BASELINE_TABLE = """
CREATE TABLE IF NOT EXISTS bench_baseline (
    id uuid PRIMARY KEY,
    name text NOT NULL,
    queue text NOT NULL,
    state text NOT NULL,
    payload jsonb,
    priority integer NOT NULL DEFAULT 0,
    max_attempts integer NOT NULL DEFAULT 1,
    run_at timestamptz NOT NULL DEFAULT now(),
    created_at timestamptz NOT NULL DEFAULT now()
)"""
BASELINE_INSERT = (
    "INSERT INTO bench_baseline (id, name, queue, state, payload) "
    "VALUES ($1, $2, $3, 'QUEUED', $4::jsonb)"
)
FINISHED = ("SUCCEEDED", "DEAD", "CANCELLED")


async def _timed(n: int, in_flight: int, call: Any) -> tuple[float, list[float]]:
    """Run `call()` n times with `in_flight` callers; the rate and each call's
    latency (ms)."""
    left = n
    latencies: list[float] = []

    async def caller() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            began = time.perf_counter()
            await call()
            latencies.append((time.perf_counter() - began) * 1000)

    began = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(in_flight)))
    return n / (time.perf_counter() - began), sorted(latencies)


class _Cpu:
    """CPU time spent by a process of the system (`proc`) and by this one
    (the client side), per call, over several measured stretches."""

    def __init__(self, proc: Proc) -> None:
        self.proc = proc
        self.server: list[float] = []
        self.client: list[float] = []

    @contextlib.contextmanager
    def over(self, calls: int) -> Iterator[None]:
        server, client = self.proc.cpu_seconds(), time.process_time()
        yield
        self.server.append((self.proc.cpu_seconds() - server) / calls * 1e6)
        self.client.append((time.process_time() - client) / calls * 1e6)

    def median_us(self) -> dict[str, float]:
        return {
            "server": round(statistics.median(self.server), 1),
            "client": round(statistics.median(self.client), 1),
        }


async def baseline_rate(running: System, n: int) -> float:
    """INSERT + commit of one task-shaped row at a time on one connection."""
    conn = running.db
    await conn.execute(BASELINE_TABLE)

    async def insert() -> None:
        await conn.execute(BASELINE_INSERT, uuid.uuid4(), "noop", "default", "null")

    await _timed(min(n, 200), 1, insert)  # warm: statement prepared, pages cached
    rate, _ = await _timed(n, 1, insert)
    return rate


async def grpc_floor(address: str, n: int, in_flight: int) -> float:
    """No-op gRPC round trips (health Check) to the replica: the transport's own rate."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)

        async def check() -> None:
            await stub.Check(health_pb2.HealthCheckRequest())

        await _timed(min(n, 200), in_flight, check)
        rate, _ = await _timed(n, in_flight, check)
        return rate


async def _api_key(running: System) -> str:
    """A new admin key in the system's schema (through the key store)."""
    from treadle.scheduler import postgres
    from treadle.scheduler.keys import KeyStore
    from treadle.scheduler.principal import ALL_SCOPES, Principal

    pool = await postgres.create_pool(running.database_url, running.schema, 1, "treadle-bench")
    try:
        made = await KeyStore(pool).create(
            "default", "bench", ALL_SCOPES, actor=Principal("default", ALL_SCOPES)
        )
    finally:
        await postgres.close_pool(pool)
    return made.token


async def submit(
    n: int,
    in_flight: int,
    rounds: int = 3,
    limits: Mapping[str, float] | None = None,
    auth: bool = False,
) -> dict[str, Any]:
    """`rounds` alternations of baseline, floor and submit; medians reported.
    With `limits` (tenant limits by name: `submit_rate`, `max_queued`, ...),
    each round also submits with them in force for the default tenant, on the
    same replica, right after or before the submits without (alternately):
    what the limits cost a submit, same run, same process. With `auth`, each
    round also submits with an API key to a second replica that requires keys
    (while the limits are in force, when there are any)."""
    async with system() as running:
        replica = await running.replica()
        keyed = await running.replica(TREADLE_AUTH="keys") if auth else None
        token = await _api_key(running) if auth else None
        figures: dict[str, list[float]] = {"baseline": [], "floor": [], "submit": []}
        latencies: list[float] = []
        auth_latencies: list[float] = []
        async with contextlib.AsyncExitStack() as stack:
            client = await stack.enter_async_context(Client(replica.address))
            authed = None
            if keyed is not None:
                authed = await stack.enter_async_context(Client(keyed.address, api_key=token))
                figures["submit_auth"] = []

            async def one() -> None:
                await client.submit("noop")

            async def one_authed() -> None:
                assert authed is not None
                await authed.submit("noop")

            await _timed(min(n, 200), in_flight, one)
            if authed is not None:
                await _timed(min(n, 200), in_flight, one_authed)
            if limits:
                figures["limited"] = []
                switch = _LimitSwitch(running, limits)
            submit_cpu, floor_cpu = _Cpu(replica), _Cpu(replica)
            for round_ in range(rounds):
                figures["baseline"].append(await baseline_rate(running, n))
                with floor_cpu.over(n):
                    figures["floor"].append(await grpc_floor(replica.address, n, in_flight))
                # With limits, the order alternates: P L | L P | P L ..., so
                # each round switches them once.
                order = ("limited", "submit") if round_ % 2 else ("submit", "limited")
                for kind in order if limits else ("submit",):
                    if kind == "limited":
                        await switch.on()
                        rate, _ = await _timed(n, in_flight, one)
                        await switch.check()
                    else:
                        if limits:
                            await switch.off()
                        with submit_cpu.over(n):
                            rate, latencies = await _timed(n, in_flight, one)
                    figures[kind].append(rate)
                    if authed is not None and (kind == "limited" or not limits):
                        rate, auth_latencies = await _timed(n, in_flight, one_authed)
                        figures["submit_auth"].append(rate)
        medians = {k: statistics.median(v) for k, v in figures.items()}
        submit_us, floor_us = submit_cpu.median_us(), floor_cpu.median_us()
        report = {
            "mode": "submit",
            "in_flight": in_flight,
            "calls": n,
            "rounds": rounds,
            "submit_rate": round(medians["submit"], 1),
            "baseline_rate": round(medians["baseline"], 1),
            "grpc_floor_rate": round(medians["floor"], 1),
            "ratio_to_baseline": round(medians["submit"] / medians["baseline"], 3),
            "ratio_to_grpc_floor": round(medians["submit"] / medians["floor"], 3),
            # CPU time per call (µs, medians of the rounds): the replica's
            # (for a submit: storing it, and running the no-op tasks it drains
            # meanwhile) and this process's (the client's side).
            "replica_cpu_us_per_submit": submit_us["server"],
            "client_cpu_us_per_submit": submit_us["client"],
            "replica_cpu_us_per_floor_call": floor_us["server"],
            "client_cpu_us_per_floor_call": floor_us["client"],
        }
        if limits:
            report["limits"] = dict(limits)
            report["limited_submit_rate"] = round(medians["limited"], 1)
            # How much longer a submit takes with the limits: time per submit.
            report["limited_cost"] = round(medians["submit"] / medians["limited"] - 1, 3)
        if auth:
            report["submit_auth_rate"] = round(medians["submit_auth"], 1)
            # > 0: a submit with authentication (and the limits, if any) takes
            # this much longer than one without either.
            report["auth_cost_per_submit"] = round(
                medians["submit"] / medians["submit_auth"] - 1, 3
            )
            report["auth_call_latency_ms"] = percentiles(auth_latencies)
        return {
            **report,
            "all": {k: [round(x) for x in v] for k, v in figures.items()},
            "call_latency_ms": percentiles(latencies),
            "peak_rss_mb": running.peaks(),
        }


class _LimitSwitch:
    """Puts the default tenant's limits in force on the running replicas, and
    takes them away, through the operator's table (`treadle tenants limits`),
    waiting for the replicas to read it."""

    def __init__(self, running: System, limits: Mapping[str, float]) -> None:
        self.running = running
        self.limits = dict(limits)
        self.state: bool | None = None
        self._since = 0.0

    async def _set(self, on: bool) -> None:
        from treadle.scheduler import postgres
        from treadle.scheduler.limits import LIMITS_REFRESH
        from treadle.scheduler.principal import DEFAULT_TENANT

        if self.state is on:
            return
        conn = self.running.db
        if on:
            await postgres.fetch(
                conn,
                "set_tenant_limits",
                tenant=DEFAULT_TENANT,
                submit_rate=self.limits.get("submit_rate"),
                submit_burst=self.limits.get("submit_burst"),
                key_submit_rate=None,
                key_submit_burst=None,
                max_queued=self.limits.get("max_queued"),
                given=sorted(self.limits),
            )
        else:
            await postgres.fetch(conn, "clear_tenant_limits", tenant=DEFAULT_TENANT)
        self.state = on
        await asyncio.sleep(LIMITS_REFRESH + 1.0)  # every replica has read them
        self._since = await conn.fetchval("SELECT now()")

    async def on(self) -> None:
        await self._set(True)

    async def off(self) -> None:
        await self._set(False)

    async def check(self) -> None:
        """Fail unless the submits just made drew on the shared bucket (the
        replica applied the limits)."""
        if not self.limits.get("submit_rate"):
            return  # no rate limit to check (0: none)
        leased = await self.running.db.fetchval(
            "SELECT max(updated_at) FROM submit_buckets WHERE tenant = 'default'"
        )
        if leased is None or leased < self._since:
            raise Internal("the replica did not apply the rate limit within its refresh")


async def _queue_tasks(running: System, queue: str) -> list[Any]:
    return list(
        await running.db.fetch(
            "SELECT state, created_at, started_at, finished_at FROM tasks WHERE queue = $1",
            queue,
        )
    )


async def _unfinished(running: System, queue: str) -> int:
    count: int = await running.db.fetchval(
        "SELECT count(*) FROM tasks WHERE queue = $1 AND state <> ALL($2::text[])",
        queue,
        list(FINISHED),
    )
    return count


async def latency(rate: float, seconds: float) -> dict[str, Any]:
    """Submit `noop` tasks one by one at `rate` per second (open loop: each at
    its time, whether or not the previous call returned) for `seconds`;
    submit→start from the tasks' own timestamps (database clock)."""
    async with system() as running:
        replica = await running.replica()
        queue = f"latency-{uuid.uuid4().hex[:8]}"
        count = max(1, round(rate * seconds))
        calls: list[float] = []
        async with Client(replica.address) as client:
            for _ in range(20):  # warm the path
                await client.submit("noop", queue=queue + "-warm")

            async def one() -> None:
                began = time.perf_counter()
                await client.submit("noop", queue=queue)
                calls.append((time.perf_counter() - began) * 1000)

            pending = []
            start = time.perf_counter()
            for i in range(count):
                delay = start + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                pending.append(asyncio.create_task(one()))
            await asyncio.gather(*pending)
            late = time.perf_counter() - start - (count - 1) / rate
        await wait_for(lambda: _none_left(running, queue), 60, "latency tasks")
        rows = await _queue_tasks(running, queue)
        waits = sorted(
            (r["started_at"] - r["created_at"]).total_seconds() * 1000
            for r in rows
            if r["started_at"]
        )
        return {
            "mode": "latency",
            "rate": rate,
            "tasks": count,
            "submitting_fell_behind_s": round(max(0.0, late), 3),
            "submit_to_start_ms": percentiles(waits),
            "call_latency_ms": percentiles(sorted(calls)),
            "peak_rss_mb": running.peaks(),
        }


async def _none_left(running: System, queue: str) -> bool:
    return await _unfinished(running, queue) == 0


async def _store_tasks(running: System, queue: str, count: int, batch: int = 5000) -> None:
    """`count` ready noop tasks, stored through the scheduler's own insert."""
    from treadle.scheduler import postgres
    from treadle.scheduler.loops import utcnow
    from treadle.scheduler.model import check_spec
    from treadle.scheduler.principal import DEFAULT_TENANT
    from treadle.scheduler.store import Store

    pool = await postgres.create_pool(running.database_url, running.schema, 2)
    try:
        store = Store(pool, running.schema)
        spec = TaskSpec(name="noop", queue=queue, payload_json="null")
        done = 0
        while done < count:
            size = min(batch, count - done)
            now = utcnow()
            await store.insert(
                [
                    check_spec(spec, "", 1 << 20, now, None, 64, tenant=DEFAULT_TENANT)
                    for _ in range(size)
                ]
            )
            done += size
    finally:
        await postgres.close_pool(pool)


async def _store_finished(running: System, count: int) -> None:
    """`count` SUCCEEDED rows in another queue: history a claim must not walk.
    (CHECKPOINT needs a superuser, as the bench's databases have.)"""
    conn = running.db
    await conn.execute(
        "INSERT INTO tasks (id, name, queue, state, payload, run_at, created_at,"
        " started_at, finished_at, attempts, max_attempts)"
        " SELECT gen_random_uuid(), 'noop', 'history', 'SUCCEEDED', 'null'::jsonb,"
        " now(), now(), now(), now(), 1, 1 FROM generate_series(1, $1)",
        count,
    )
    # As a table that grew over time would be: vacuumed and analysed, its
    # pages written out, so that the drain does not pay for this insert.
    await conn.execute("VACUUM (ANALYZE) tasks")
    await conn.execute("CHECKPOINT")


async def drain(count: int, replicas: int, finished_rows: int) -> dict[str, Any]:
    """`count` noop tasks stored first (and `finished_rows` finished ones);
    then `replicas` replica processes start together and drain them."""
    async with system() as running:
        queue = f"drain-{uuid.uuid4().hex[:8]}"
        if finished_rows:
            await _store_finished(running, finished_rows)
        await _store_tasks(running, queue, count)
        exec_at = time.time()
        procs = [running.spawn_replica() for _ in range(replicas)]

        async def done() -> bool:
            running.sample()
            return await _none_left(running, queue)

        await wait_for(done, 600, "drain", poll=0.05)
        for proc in procs:
            if proc.popen.poll() is not None:
                raise proc.failed(f"exited with status {proc.popen.returncode}")
        rows = await _queue_tasks(running, queue)
        first_start = min(r["started_at"] for r in rows if r["started_at"])
        last_finish = max(r["finished_at"] for r in rows if r["finished_at"])
        with_startup = last_finish.timestamp() - exec_at
        steady = (last_finish - first_start).total_seconds()
        states: dict[str, int] = {}
        for r in rows:
            states[r["state"]] = states.get(r["state"], 0) + 1
        return {
            "mode": "drain",
            "tasks": count,
            "replicas": replicas,
            "finished_rows": finished_rows,
            "states": states,
            "first_claim_after_exec_s": round(first_start.timestamp() - exec_at, 3),
            "rate_with_startup": round(count / with_startup, 1),
            "rate_steady": round(count / steady, 1) if steady > 0 else None,
            "peak_rss_mb": running.peaks(),
        }


async def startup(runs: int) -> dict[str, Any]:
    """Exec of a replica → gRPC SERVING and → its first claim (one ready task
    waits for it), `runs` times, each on a fresh schema (`benchstartup`)."""
    from treadle.cli.benchstartup import measure_startup

    async with system() as running:
        report = await measure_startup(
            running.database_url,
            running.schema,
            runs,
            [sys.executable, "-m", "treadle.cli"],
            import_profile=False,
        )
    return {"mode": "startup", **report}


def format_report(r: dict[str, Any]) -> str:
    """The figures for people: one line each."""
    lines = []
    for key, value in r.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k} {v}" for k, v in value.items())
        elif isinstance(value, float):
            value = f"{value:,.3f}".rstrip("0").rstrip(".")
        lines.append(f"{key.replace('_', ' '):28} {value}")
    return "\n".join(lines)


TASK_QUERY = "query Q($id: ID!) { task(id: $id) { id state result } }"
SUBMIT_MUTATION = 'mutation { submitTask(input: {name: "noop"}) { id state } }'
#: The cheapest GraphQL request: what the gateway's stack costs before any field.
FLOOR_QUERY = "query { __typename }"


async def graphql(connections: int, query: str, seconds: float, rounds: int = 3) -> dict[str, Any]:
    """One gateway process under `connections` connections from a load
    generator in other processes: `GET /health`, the GraphQL `query`, and
    `query { __typename }` (the GraphQL floor), alternated `rounds` times;
    medians reported, with the gateway's CPU time per request of each."""
    import json

    from treadle.cli import httpload

    async with system() as running:
        replica = await running.replica()
        gateway = await running.gateway(replica.address)
        async with Client(replica.address) as client:
            task = await client.submit("echo", {"hello": "world"})
            await client.wait(task.id)
        if query == "task":
            body = {"query": TASK_QUERY, "variables": {"id": task.id}}
        else:
            body = {"query": SUBMIT_MUTATION}
        headers = {"content-type": "application/json"}
        posts = {
            "graphql": json.dumps(body).encode(),
            "typename": json.dumps({"query": FLOOR_QUERY}).encode(),
        }
        loads: dict[str, list[httpload.LoadResult]] = {"health": [], "graphql": [], "typename": []}
        cpu: dict[str, list[float]] = {kind: [] for kind in loads}
        for _ in range(rounds):
            for kind in loads:
                post = kind != "health"
                before = gateway.cpu_seconds()
                result = await asyncio.to_thread(
                    httpload.run_load,
                    gateway.address + ("/graphql" if post else "/health"),
                    connections=connections,
                    seconds=seconds,
                    method="POST" if post else "GET",
                    body=posts[kind] if post else None,
                    headers=headers if post else None,
                )
                cpu[kind].append((gateway.cpu_seconds() - before) / max(result.requests, 1) * 1e6)
                loads[kind].append(result)
            running.sample()
        health, graph, floor = loads["health"], loads["graphql"], loads["typename"]
        failed = sum(r.errors for r in graph + health + floor)
        if failed:
            raise Internal(
                f"{failed} of {sum(r.requests for r in graph + health + floor)} requests failed "
                f"(non-2xx or GraphQL errors): the rates would measure failures; "
                f"the gateway's log: {gateway.log}"
            )
        health_rate = statistics.median(r.rate for r in health)
        graph_rate = statistics.median(r.rate for r in graph)
        floor_rate = statistics.median(r.rate for r in floor)
        cpu_us = {kind: round(statistics.median(v), 1) for kind, v in cpu.items()}
        return {
            "mode": "graphql",
            "query": query,
            "connections": connections,
            "seconds": seconds,
            "rounds": rounds,
            "generator": graph[0].tool,
            "health_rate": round(health_rate, 1),
            "graphql_rate": round(graph_rate, 1),
            "ratio_to_health": round(graph_rate / health_rate, 3),
            "typename_rate": round(floor_rate, 1),
            "typename_ratio_to_health": round(floor_rate / health_rate, 3),
            # The gateway's CPU per request (µs): user + system, all threads.
            "gateway_cpu_us_per_request": cpu_us,
            "graphql_p50_ms": round(statistics.median(r.p50_ms for r in graph), 2),
            "graphql_p99_ms": round(statistics.median(r.p99_ms for r in graph), 2),
            "health_p99_ms": round(statistics.median(r.p99_ms for r in health), 2),
            "all": {
                "health": [round(r.rate) for r in health],
                "graphql": [round(r.rate) for r in graph],
                "typename": [round(r.rate) for r in floor],
            },
            "peak_rss_mb": running.peaks(),
        }
