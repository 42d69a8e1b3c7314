"""GET /health/detailed: ok, then degraded while PostgreSQL is away, down while the
scheduler is, and ok again when each comes back. Real replica, real gateway,
and a TCP proxy standing in for PostgreSQL's network."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from pgproxy import PgProxy
from scrape import scrape
from support import make_settings

from treadle.gateway.server import Gateway
from treadle.scheduler.registry import load_app
from treadle.scheduler.supervisor import Replica

from .helpers import closed_port, started


async def detailed(http: httpx.AsyncClient) -> tuple[int, dict[str, Any]]:
    response = await http.get("/health/detailed")
    body: dict[str, Any] = response.json()
    return response.status_code, body


async def until_status(
    http: httpx.AsyncClient, status: str, timeout: float = 15.0
) -> tuple[int, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        code, body = await detailed(http)
        if body["status"] == status:
            return code, body
        assert time.monotonic() < deadline, f"still {body['status']}, wanted {status}: {body}"
        await asyncio.sleep(0.1)


async def test_detailed_health_when_all_is_well(http: httpx.AsyncClient, replica: Replica) -> None:
    for _ in range(250):  # until the first periodic count
        if replica.parts.backlog.latest.as_of is not None:
            break
        await asyncio.sleep(0.02)
    code, body = await until_status(http, "ok")
    assert code == 200
    assert body["problems"] == []
    scheduler = body["scheduler"]
    assert scheduler["reachable"] is True
    assert scheduler["replica_id"] == replica.settings.replica_id
    assert 0 < scheduler["latency_seconds"] < 3
    assert body["database"]["status"] == "ok"
    assert body["database"]["size_bytes"] > 0
    assert body["database"]["latency_seconds"] < 1
    assert body["pool"]["max_size"] == replica.settings.database_pool_size
    assert set(body["pool"]) == {"size", "max_size", "in_use", "waiting"}
    assert body["executor"] == {
        "threads": replica.settings.executor_threads,
        "busy": 0,
        "queued": 0,
    }
    assert body["tasks"] == {"running": 0, "capacity": replica.settings.concurrency}
    assert {q["queue"] for q in body["backlog"]["queues"]} >= {"default", "math"}
    assert body["loops"]["treadle-dispatch"] is True
    assert body["replicas_alive"] >= 1
    assert (await http.get("/health")).json() == {"status": "ok"}


async def test_down_while_the_scheduler_is_unreachable() -> None:
    gateway = await started(f"127.0.0.1:{closed_port()}", rpc_timeout=2)
    try:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as http:
            code, body = await detailed(http)
            assert (await http.get("/health")).json() == {"status": "ok"}
    finally:
        await gateway.stop()
    assert code == 503
    assert body["status"] == "down"
    assert body["scheduler"]["reachable"] is False
    assert body["problems"][0].startswith("scheduler unreachable: UNAVAILABLE")
    assert body["database"] is None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def proxy(database_url: str) -> AsyncIterator[PgProxy]:
    async with PgProxy(database_url) as p:
        yield p


async def test_follows_the_scheduler_and_postgres_going_and_coming_back(
    proxy: PgProxy, schema: str
) -> None:
    settings = make_settings(
        schema, grpc_port=_free_port(), metrics_interval=0.2, poll_interval=0.2
    )
    replica = Replica(settings, load_app("taskapp"), proxy.url)
    await replica.start()
    gateway: Gateway = await started(replica.address, rpc_timeout=5)
    try:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as http:
            code, _ = await until_status(http, "ok")
            assert code == 200

            # PostgreSQL goes away: the scheduler still answers, the database does not.
            await proxy.stop()
            code, body = await until_status(http, "degraded")
            assert code == 200
            assert body["database"]["status"] == "down"
            assert any("database unreachable" in p for p in body["problems"])
            assert body["scheduler"]["reachable"] is True
            assert body["replicas_alive"] is None
            assert replica.metrics_server is not None
            m = await scrape(f"http://{replica.metrics_server.address}/metrics")
            assert m.value("treadle_database_errors_total", kind="connection") >= 1

            # ... and comes back.
            await proxy.start()
            code, body = await until_status(http, "ok")
            assert code == 200 and body["database"]["status"] == "ok"
            m = await scrape(f"http://{replica.metrics_server.address}/metrics")
            assert m.value("treadle_database_reconnects_total") >= 1
            assert m.value("treadle_database_up") == 1

            # The scheduler stops: down, 503.
            await replica.stop()
            code, body = await until_status(http, "down")
            assert code == 503

            # A replica comes back on the same address: ok again.
            replica = Replica(settings, load_app("taskapp"), proxy.url)
            await replica.start()
            code, body = await until_status(http, "ok")
            assert code == 200
            m = await scrape(f"{gateway.url}/metrics")
            checks = "treadle_health_checks_total"
            assert m.value(checks, status="degraded") >= 1
            assert m.value(checks, status="down") >= 1
            assert m.value(checks, status="ok") >= 3
    finally:
        await gateway.stop()
        await replica.stop()
