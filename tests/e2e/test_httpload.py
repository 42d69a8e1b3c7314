"""The load generator the benchmarks use, against a real app served by uvicorn on loopback."""

from __future__ import annotations

import asyncio
import functools
import os
import shutil
from collections.abc import AsyncIterator

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from treadle.cli.httpload import LoadResult, run_load
from treadle.gateway.server import Gateway
from treadle.gateway.settings import Settings


async def ok(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def fail(request: Request) -> Response:
    return JSONResponse({"error": "no"}, status_code=500)


async def graphql(request: Request) -> Response:
    """Echoes a GraphQL-shaped answer: with top-level `errors` when the body says so."""
    body = await request.json()
    if body.get("fail"):
        return JSONResponse({"data": None, "errors": [{"message": "bad"}]})
    # A field named `errors` inside the data is not a GraphQL error.
    return JSONResponse({"data": {"task": {"errors": [], "id": body.get("id")}}})


@pytest.fixture
async def server() -> AsyncIterator[str]:
    app = Starlette(
        routes=[
            Route("/ok", ok),
            Route("/fail", fail),
            Route("/graphql", graphql, methods=["POST"]),
        ]
    )
    gateway = Gateway(Settings(http_port=0), app=app)
    await gateway.start()
    try:
        yield gateway.url
    finally:
        await gateway.stop()


async def load(
    url: str, tool: str, workers: int | None = None, method: str = "GET", body: bytes | None = None
) -> LoadResult:
    """Four connections for a second; off the loop that serves the app (run_load blocks)."""
    run = functools.partial(
        run_load, connections=4, seconds=1.0, tool=tool, workers=workers, method=method, body=body
    )
    return await asyncio.to_thread(run, url)


async def test_python_workers_count_requests_and_latencies(server: str) -> None:
    result = await load(f"{server}/ok", tool="python", workers=2)
    assert result.tool == "python"
    assert result.requests > 20
    assert result.errors == 0
    assert result.rate == result.requests / result.seconds
    assert 0 < result.p50_ms <= result.p90_ms <= result.p99_ms <= result.max_ms < 5000


async def test_python_workers_count_non_2xx_as_errors(server: str) -> None:
    result = await load(f"{server}/fail", tool="python", workers=1)
    assert result.requests > 20
    assert result.errors == result.requests


async def test_python_workers_count_graphql_errors(server: str) -> None:
    good = await load(f"{server}/graphql", tool="python", workers=1, method="POST", body=b"{}")
    bad = await load(
        f"{server}/graphql", tool="python", workers=1, method="POST", body=b'{"fail": true}'
    )
    assert good.requests > 20 and good.errors == 0
    assert bad.requests > 20 and bad.errors == bad.requests


# .ci/run installs wrk and sets TREADLE_TEST_REQUIRE_WRK=1: in CI a missing
# wrk fails this test instead of skipping it.
@pytest.mark.skipif(
    shutil.which("wrk") is None and os.environ.get("TREADLE_TEST_REQUIRE_WRK") != "1",
    reason="wrk is not installed (Debian package wrk; .ci/run installs it)",
)
async def test_wrk_counts_the_same_way(server: str) -> None:
    fine = await load(f"{server}/ok", tool="wrk")
    failed = await load(f"{server}/fail", tool="wrk")
    good = await load(f"{server}/graphql", tool="wrk", method="POST", body=b'{"id": "x\\"}"}')
    bad = await load(f"{server}/graphql", tool="wrk", method="POST", body=b'{"fail": true}')
    assert fine.tool == "wrk"
    assert fine.requests > 20 and fine.errors == 0
    assert 0 < fine.p50_ms <= fine.p99_ms <= fine.max_ms
    assert failed.requests > 20 and failed.errors == failed.requests
    assert good.requests > 20 and good.errors == 0
    assert bad.requests > 20 and bad.errors == bad.requests


def test_only_this_machine_is_loaded() -> None:
    for url in ("http://example.com/", "http://10.0.0.1:8000/health", "https://127.0.0.1/"):
        with pytest.raises(ValueError, match=r"this machine|not an http"):
            run_load(url, connections=1, seconds=0.1)
