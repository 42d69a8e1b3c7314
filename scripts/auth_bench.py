"""What authentication costs a submit, measured in one process.

Two replicas on one fresh schema, in this process: one with API keys required
(TREADLE_AUTH=keys), one without. Submits go one at a time (or `--in-flight`
at once) to a paused queue (so no handler runs beside them) through a client
per replica, alternating between the two (off then on, on then off, ...) for
`--rounds` rounds; each round measures the wall time and this process's CPU
time per submit (client, server, authentication: everything but PostgreSQL).
Besides the medians of each side, the report gives the median over rounds of
each round's on/off ratio: the two halves of a round run seconds apart, so
the ratio cancels most of what other work on the machine does to both (many
short rounds measure best on a busy machine).

    .venv/bin/python scripts/auth_bench.py [--url URL] [-n 2000] [--rounds 7] [--in-flight 1]

It also times what authentication adds to one call without the database's
noise: `interceptor_us_per_call`, the interceptor's wrapper around a no-op
method, called directly with the call's metadata, against the bare method;
and `rpc_us_per_call`, round trips over loopback to a server whose
`SubmitTask` does nothing, with and without a key (the metadata on the wire,
the interceptor machinery, the check), alternating: wall time, and the CPU
time of the event loop's thread (client and server both run on it; grpc's
own threads and other processes are left out, so it is the steadiest figure
on a busy machine).

Speed is measured here, never asserted; see docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from typing import Any

import asyncpg
import grpc

from treadle.api.v1 import scheduler_pb2 as pb
from treadle.api.v1 import scheduler_pb2_grpc as pb_grpc
from treadle.client import Client
from treadle.common.access import AccessSettings
from treadle.scheduler import auth
from treadle.scheduler.keys import Authenticator, KeyStore
from treadle.scheduler.principal import ALL_SCOPES, Principal
from treadle.scheduler.registry import load_app
from treadle.scheduler.rpc import DecodeGuard
from treadle.scheduler.settings import Settings
from treadle.scheduler.supervisor import Replica

QUEUE = "auth-bench"


async def _round(client: Client, n: int, in_flight: int) -> tuple[float, float]:
    """Wall and CPU microseconds per submit over `n` submits."""
    left = n

    async def caller() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await client.submit("noop", queue=QUEUE)

    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(caller() for _ in range(in_flight)))
    return (
        (time.perf_counter() - wall) / n * 1e6,
        (time.process_time() - cpu) / n * 1e6,
    )


class _Context:
    """What the wrapper reads of grpc's servicer context: the call's metadata."""

    def __init__(self, token: str) -> None:
        self.metadata = (("user-agent", "grpc-python"), ("authorization", f"Bearer {token}"))

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self.metadata


async def _interceptor_cost(authenticator: Authenticator, token: str, calls: int) -> float:
    """Microseconds the interceptor's wrapper adds to one call (best of 5)."""

    async def method(request: Any, context: Any) -> None:
        return None

    wrapped = auth.Interceptor(authenticator)._guarded(method, "SubmitTask", auth.SUBMIT)
    context = _Context(token)
    best = float("inf")
    for _ in range(5):
        began = time.perf_counter()
        for _ in range(calls):
            await method(None, context)
        bare = time.perf_counter() - began
        began = time.perf_counter()
        for _ in range(calls):
            await wrapped(None, context)
        best = min(best, (time.perf_counter() - began - bare) / calls * 1e6)
    return best


class _NoopService(pb_grpc.SchedulerServiceServicer):
    async def SubmitTask(self, request: Any, context: Any) -> pb.SubmitTaskResponse:
        return pb.SubmitTaskResponse()


async def _rpc_cost(
    authenticator: Authenticator, token: str, calls: int, rounds: int = 20
) -> dict[str, float]:
    """Median microseconds per no-op SubmitTask round trip, without and with a
    key: wall time and the loop thread's CPU time."""
    servers, channels, stubs = [], [], {}
    for side, checks in (("off", None), ("on", authenticator)):
        server = grpc.aio.server(interceptors=[auth.Interceptor(checks), DecodeGuard()])
        pb_grpc.add_SchedulerServiceServicer_to_server(_NoopService(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        servers.append(server)
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        channels.append(channel)
        stubs[side] = pb_grpc.SchedulerServiceStub(channel)
    metadata = {"off": None, "on": (("authorization", f"Bearer {token}"),)}
    request = pb.SubmitTaskRequest()
    times: dict[str, list[float]] = {"off": [], "on": [], "off_cpu": [], "on_cpu": []}
    try:
        for i in range(rounds + 1):
            for side in ("off", "on") if i % 2 == 0 else ("on", "off"):
                began, cpu = time.perf_counter(), time.thread_time()
                for _ in range(calls):
                    await stubs[side].SubmitTask(request, metadata=metadata[side])
                if i:  # the first round warms both
                    times[side].append((time.perf_counter() - began) / calls * 1e6)
                    times[f"{side}_cpu"].append((time.thread_time() - cpu) / calls * 1e6)
    finally:
        for channel in channels:
            await channel.close()
        for server in servers:
            await server.stop(None)
    return {side: round(statistics.median(t), 1) for side, t in times.items()}


async def main(url: str, n: int, rounds: int, in_flight: int) -> dict[str, Any]:
    schema = f"authbench_{uuid.uuid4().hex[:10]}"

    def settings() -> Settings:  # each replica its own id
        return Settings(database_schema=schema, grpc_port=0, metrics_port=0, database_pool_size=4)

    app = load_app("treadle.scheduler.example")
    plain = Replica(settings(), app, url)
    keyed = Replica(settings(), app, url, access=AccessSettings(auth="keys"))
    try:
        await plain.start()
        await keyed.start()
        made = await KeyStore(plain.parts.store.pool).create(
            "default", "bench", ALL_SCOPES, actor=Principal("default", ALL_SCOPES)
        )
        assert keyed.parts.authenticator is not None
        interceptor = await _interceptor_cost(keyed.parts.authenticator, made.token, 50_000)
        rpc = await _rpc_cost(keyed.parts.authenticator, made.token, 1000)
        async with Client(plain.address) as off, Client(keyed.address, api_key=made.token) as on:
            await off.submit("noop", queue=QUEUE)
            await off.pause_queue(QUEUE)
            figures: dict[str, list[tuple[float, float]]] = {"off": [], "on": []}
            for client in (off, on):  # warm both paths
                await _round(client, min(n, 300), in_flight)
            for i in range(rounds):  # off-on, on-off, ...: neither side always goes first
                for side in ("off", "on") if i % 2 == 0 else ("on", "off"):
                    client = off if side == "off" else on
                    figures[side].append(await _round(client, n, in_flight))
    finally:
        await keyed.stop()
        await plain.stop()
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()
    wall = {k: statistics.median(w for w, _ in v) for k, v in figures.items()}
    cpu = {k: statistics.median(c for _, c in v) for k, v in figures.items()}
    pairs = list(zip(figures["off"], figures["on"], strict=True))
    paired_wall = statistics.median(on[0] / off[0] for off, on in pairs) - 1
    paired_cpu = statistics.median(on[1] / off[1] for off, on in pairs) - 1
    return {
        "interceptor_us_per_call": round(interceptor, 2),
        "rpc_us_per_call": rpc,
        "submits_per_round": n,
        "rounds": rounds,
        "in_flight": in_flight,
        "wall_us_per_submit": {k: round(v, 1) for k, v in wall.items()},
        "cpu_us_per_submit": {k: round(v, 1) for k, v in cpu.items()},
        "auth_cost_wall": round(wall["on"] / wall["off"] - 1, 3),
        "auth_cost_cpu": round(cpu["on"] / cpu["off"] - 1, 3),
        "auth_cost_paired_wall": round(paired_wall, 3),
        "auth_cost_paired_cpu": round(paired_cpu, 3),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("-n", type=int, default=2000, help="submits per round (default 2000)")
    parser.add_argument("--rounds", type=int, default=7, help="rounds per side (default 7)")
    parser.add_argument("--in-flight", type=int, default=1, help="submits at once (default 1)")
    args = parser.parse_args()
    report = asyncio.run(main(args.url, args.n, args.rounds, args.in_flight))
    for key, value in report.items():
        print(f"{key:22} {value}")
